//! Operators (`operator.manage`). An operator may have no direct role and all rights from
//! access groups. The grant ceiling holds both ways: no operator gets a role conferring what
//! the caller does not hold globally, and an operator who holds more than the caller cannot be
//! changed (password, roles, disable, unlock, sessions) by them.

use drover_core::rbac::{BUILT_IN_ROLES, PrincipalKind, Privilege};
use drover_core::store::OperatorRecord;
use drover_core::{Error, Result, validate_name};
use drover_types::{NewOperator, Operator, OperatorCreated, OperatorUpdate, PasswordChange, Timestamp};

use super::Ctx;
use super::clients::grantable;
use crate::auth::limiter;
use crate::secrets::new_secret;

const MIN_PASSWORD_LEN: usize = 12;
use crate::bootstrap::ADMIN;

/// The privileges `roles` confer (unscoped), after checking each role exists and may be given
/// to operators and clients (never `agent`).
pub fn check_roles(c: &Ctx<'_>, roles: &[String]) -> Result<Vec<Privilege>> {
    let mut all = Vec::new();
    for r in roles {
        match c.state.principals.role(r).filter(|_| grantable(r)) {
            Some(ps) => all.extend(ps),
            None => {
                return Err(Error::BadRequest(format!(
                    "unknown role {r:?}; built-in roles: {} (and custom roles, see GET /api/v1/roles)",
                    BUILT_IN_ROLES.iter().filter(|x| grantable(x)).copied().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    all.sort();
    all.dedup();
    Ok(all)
}

async fn view(c: &Ctx<'_>, o: OperatorRecord) -> Result<Operator> {
    let locked_until = limiter::locked_until(c.state.store.as_ref(), &o.name).await?;
    Ok(Operator {
        name: o.name,
        email: o.email,
        roles: o.roles,
        disabled: o.disabled,
        failed_logins: o.failed_logins,
        locked_until,
        created_at: o.created_at,
    })
}

async fn hash_new_password(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(Error::BadRequest(format!("passwords need at least {MIN_PASSWORD_LEN} characters")));
    }
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || crate::secrets::hash_password(&pw))
        .await
        .map_err(|e| Error::Store(e.to_string()))?
        .map_err(Error::Store)
}

async fn load(c: &Ctx<'_>, name: &str) -> Result<OperatorRecord> {
    c.state.store.get_operator(name).await?.ok_or_else(|| Error::NotFound(format!("operator {name} not found")))
}

/// The caller may change this operator only if the operator holds nothing the caller does not.
fn may_change(c: &Ctx<'_>, o: &OperatorRecord) -> Result<()> {
    let target = c.state.principals.resolve(PrincipalKind::Operator, &o.name, o.roles.clone());
    c.within_ceiling(&target.all_privileges(), &format!("operator {}", o.name))
}

pub async fn list(c: &Ctx<'_>) -> Result<Vec<Operator>> {
    c.require(Privilege::OperatorManage)?;
    let mut out = Vec::new();
    for o in c.state.store.list_operators().await? {
        out.push(view(c, o).await?);
    }
    Ok(out)
}

pub async fn get(c: &Ctx<'_>, name: &str) -> Result<Operator> {
    c.require(Privilege::OperatorManage)?;
    view(c, load(c, name).await?).await
}

/// An e-mail address as an operator's: at most 254 characters, one `@` between a local part
/// and a domain, no spaces or control characters (it is shown, and later mailed to).
fn validate_email(e: &str) -> Result<()> {
    let ok = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("{e:?} is not an e-mail address (name@domain, at most 254 characters)")))
    }
}

pub async fn create(c: &Ctx<'_>, n: NewOperator) -> Result<OperatorCreated> {
    c.require(Privilege::OperatorManage)?;
    let s = c.state;
    validate_name("operator", &n.name)?;
    if let Some(e) = n.email.as_deref().filter(|e| !e.is_empty()) {
        validate_email(e)?;
    }
    check_roles(c, &n.roles)?;
    let would_hold = c.state.principals.resolve(PrincipalKind::Operator, &n.name, n.roles.clone());
    c.within_ceiling(&would_hold.all_privileges(), &format!("operator {}", n.name))?;
    if s.store.get_agent(&n.name).await?.is_some() || s.store.get_client(&n.name).await?.is_some() {
        return Err(Error::Conflict(format!("{} is an agent's or client's name", n.name)));
    }
    let generated = n.password.is_none().then(new_secret);
    let password = n.password.clone().or_else(|| generated.clone()).unwrap_or_default();
    let rec = OperatorRecord {
        name: n.name.clone(),
        password_hash: hash_new_password(&password).await?,
        roles: n.roles,
        email: n.email,
        created_at: Timestamp::now(),
        ..Default::default()
    };
    if !s.store.insert_operator(&rec).await? {
        return Err(Error::Conflict(format!("operator {} exists already", n.name)));
    }
    Ok(OperatorCreated { operator: view(c, rec).await?, password: generated })
}

pub async fn update(c: &Ctx<'_>, name: &str, u: OperatorUpdate) -> Result<Operator> {
    c.require(Privilege::OperatorManage)?;
    let mut o = load(c, name).await?;
    may_change(c, &o)?;
    if let Some(roles) = u.roles {
        check_roles(c, &roles)?;
        o.roles = roles;
        may_change(c, &o)?;
    }
    if let Some(e) = u.email {
        if !e.is_empty() {
            validate_email(&e)?;
        }
        o.email = Some(e).filter(|e| !e.is_empty());
    }
    if let Some(d) = u.disabled {
        if d && name == c.caller.name && c.caller.kind == PrincipalKind::Operator {
            return Err(Error::Conflict("you cannot disable yourself".into()));
        }
        o.disabled = d;
    }
    c.state.store.update_operator(&o).await?;
    if o.disabled {
        crate::oauth::sessions::revoke_sessions(c.state, &o.name).await?;
    }
    view(c, o).await
}

pub async fn unlock(c: &Ctx<'_>, name: &str) -> Result<Operator> {
    c.require(Privilege::OperatorManage)?;
    let mut o = load(c, name).await?;
    may_change(c, &o)?;
    limiter::unlock(c.state.store.as_ref(), name).await?;
    o.failed_logins = 0;
    o.locked_until = None;
    c.state.store.update_operator(&o).await?;
    view(c, o).await
}

pub async fn set_password(c: &Ctx<'_>, name: &str, pc: PasswordChange) -> Result<()> {
    c.require(Privilege::OperatorManage)?;
    let mut o = load(c, name).await?;
    may_change(c, &o)?;
    o.password_hash = hash_new_password(&pc.password).await?;
    o.failed_logins = 0;
    o.locked_until = None;
    c.state.store.update_operator(&o).await?;
    // Addresses locked out by guessing stay locked out (`unlock` lifts that).
    // A new password ends the sessions signed in with the old one.
    crate::oauth::sessions::revoke_sessions(c.state, &o.name).await?;
    if name == ADMIN {
        crate::bootstrap::forget_initial_password(&c.state.data_dir);
    }
    Ok(())
}

/// Ends every login session of the operator: their access and refresh tokens stop working now.
pub async fn revoke_sessions(c: &Ctx<'_>, name: &str) -> Result<()> {
    c.require(Privilege::OperatorManage)?;
    let o = load(c, name).await?;
    may_change(c, &o)?;
    crate::oauth::sessions::revoke_sessions(c.state, name).await?;
    tracing::info!(operator = %name, by = %c.label(), "operator sessions revoked");
    Ok(())
}
