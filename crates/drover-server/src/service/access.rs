//! Custom roles and access groups (`role.manage`), under the grant ceiling: a role holds only
//! privileges its author holds globally; a group confers (with its scope) only what its author
//! holds globally; roles and groups that confer more than the caller holds cannot be changed or
//! deleted by them. A group's answer lists the privileges of its roles that have no effect
//! under its scope (global privileges count only through unscoped grants).

use drover_core::rbac::{self, AGENT_ROLE, Privilege};
use drover_core::{Error, Result, validate_name};
use drover_types::{AccessGroup, Role};

use super::Ctx;
use super::operators::check_roles;
use crate::access::{GROUP, ROLE};

fn builtin_view(name: &str) -> Role {
    Role {
        name: name.into(),
        privileges: rbac::role_privileges(name).unwrap_or_default().iter().map(|p| p.as_str().to_string()).collect(),
        built_in: true,
        description: None,
    }
}

fn is_builtin(name: &str) -> bool {
    rbac::role_privileges(name).is_some()
}

pub async fn list_roles(c: &Ctx<'_>) -> Result<Vec<Role>> {
    c.require(Privilege::RoleManage)?;
    let mut out: Vec<Role> =
        rbac::BUILT_IN_ROLES.iter().filter(|r| **r != AGENT_ROLE).map(|r| builtin_view(r)).collect();
    for (_, body, _) in c.state.store.record_list(ROLE).await? {
        if let Ok(r) = serde_json::from_str(&body) {
            out.push(r);
        }
    }
    Ok(out)
}

async fn load_role(c: &Ctx<'_>, name: &str) -> Result<Option<(Role, i64)>> {
    match c.state.store.record_get(ROLE, name).await? {
        Some((body, v)) => Ok(Some((serde_json::from_str(&body).map_err(|e| Error::Store(e.to_string()))?, v))),
        None => Ok(None),
    }
}

pub async fn get_role(c: &Ctx<'_>, name: &str) -> Result<Role> {
    c.require(Privilege::RoleManage)?;
    if is_builtin(name) && name != AGENT_ROLE {
        return Ok(builtin_view(name));
    }
    load_role(c, name).await?.map(|(r, _)| r).ok_or_else(|| Error::NotFound(format!("role {name} not found")))
}

fn parse_privileges(names: &[String]) -> Result<Vec<Privilege>> {
    names
        .iter()
        .map(|p| match Privilege::parse(p) {
            Some(x) if x != Privilege::AgentWork => Ok(x),
            _ => Err(Error::BadRequest(format!(
                "unknown privilege {p:?}; privileges: {}",
                Privilege::ALL
                    .iter()
                    .filter(|x| **x != Privilege::AgentWork)
                    .map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        })
        .collect()
}

fn check_role_def(c: &Ctx<'_>, r: &mut Role) -> Result<()> {
    validate_name("role", &r.name)?;
    if is_builtin(&r.name) {
        return Err(Error::Conflict(format!("{} is a built-in role and cannot be changed", r.name)));
    }
    if r.privileges.is_empty() {
        return Err(Error::BadRequest("a role needs at least one privilege".into()));
    }
    let privileges = parse_privileges(&r.privileges)?;
    c.within_ceiling(&privileges, &format!("role {}", r.name))?;
    r.built_in = false;
    r.privileges.sort();
    r.privileges.dedup();
    Ok(())
}

pub async fn create_role(c: &Ctx<'_>, mut r: Role) -> Result<Role> {
    c.require(Privilege::RoleManage)?;
    check_role_def(c, &mut r)?;
    let body = serde_json::to_string(&r).map_err(|e| Error::Store(e.to_string()))?;
    if !c.state.store.record_insert(ROLE, &r.name, &body, None).await? {
        return Err(Error::Conflict(format!("role {} exists already", r.name)));
    }
    c.state.principals.reload(c.state.store.as_ref()).await?;
    Ok(r)
}

pub async fn put_role(c: &Ctx<'_>, name: &str, mut r: Role) -> Result<Role> {
    c.require(Privilege::RoleManage)?;
    if r.name != name {
        return Err(Error::BadRequest(format!("the body names role {:?}, the path {name:?}", r.name)));
    }
    check_role_def(c, &mut r)?;
    if let Some((old, _)) = load_role(c, name).await? {
        c.within_ceiling(&parse_privileges(&old.privileges)?, &format!("role {name}"))?;
    }
    put_record(c, ROLE, name, &r).await?;
    Ok(r)
}

/// Creates or replaces a record (compare-and-swap, a few tries), then reloads the access table.
async fn put_record<T: serde::Serialize>(c: &Ctx<'_>, kind: &str, key: &str, value: &T) -> Result<()> {
    let s = c.state;
    let body = serde_json::to_string(value).map_err(|e| Error::Store(e.to_string()))?;
    for _ in 0..5 {
        let done = match s.store.record_get(kind, key).await? {
            Some((_, v)) => s.store.record_update(kind, key, v, &body, None).await?,
            None => s.store.record_insert(kind, key, &body, None).await?,
        };
        if done {
            s.principals.reload(s.store.as_ref()).await?;
            return Ok(());
        }
    }
    Err(Error::Conflict(format!("{key} is being changed by someone else; try again")))
}

pub async fn delete_role(c: &Ctx<'_>, name: &str) -> Result<()> {
    c.require(Privilege::RoleManage)?;
    let s = c.state;
    if is_builtin(name) {
        return Err(Error::Conflict(format!("{name} is a built-in role and cannot be deleted")));
    }
    let Some((old, _)) = load_role(c, name).await? else {
        return Err(Error::NotFound(format!("role {name} not found")));
    };
    c.within_ceiling(&parse_privileges(&old.privileges)?, &format!("role {name}"))?;
    let in_use =
        s.store.list_operators().await?.iter().any(|o| o.roles.iter().any(|r| r == name))
            || s.store.list_clients().await?.iter().any(|c| c.roles.iter().any(|r| r == name))
            || s.store.record_list(GROUP).await?.iter().any(|(_, b, _)| {
                serde_json::from_str::<AccessGroup>(b).is_ok_and(|g| g.roles.iter().any(|r| r == name))
            });
    if in_use {
        return Err(Error::Conflict(format!("role {name} is still held by operators, clients or access groups")));
    }
    if !s.store.record_delete(ROLE, name).await? {
        return Err(Error::NotFound(format!("role {name} not found")));
    }
    s.principals.reload(s.store.as_ref()).await?;
    Ok(())
}

/// A group as the API shows it: with the privileges its scope leaves without effect.
fn group_view(c: &Ctx<'_>, mut g: AccessGroup) -> AccessGroup {
    let (_, ineffective) = c.state.principals.group_privileges(&g);
    g.ineffective_privileges = ineffective.iter().map(|p| p.as_str().to_string()).collect();
    g
}

async fn load_group(c: &Ctx<'_>, name: &str) -> Result<Option<AccessGroup>> {
    match c.state.store.record_get(GROUP, name).await? {
        Some((body, _)) => Ok(Some(serde_json::from_str(&body).map_err(|e| Error::Store(e.to_string()))?)),
        None => Ok(None),
    }
}

pub async fn list_groups(c: &Ctx<'_>) -> Result<Vec<AccessGroup>> {
    c.require(Privilege::RoleManage)?;
    let rows = c.state.store.record_list(GROUP).await?;
    Ok(rows.iter().filter_map(|(_, b, _)| serde_json::from_str(b).ok()).map(|g| group_view(c, g)).collect())
}

pub async fn get_group(c: &Ctx<'_>, name: &str) -> Result<AccessGroup> {
    c.require(Privilege::RoleManage)?;
    let g = load_group(c, name).await?.ok_or_else(|| Error::NotFound(format!("access group {name} not found")))?;
    Ok(group_view(c, g))
}

/// Operators, clients or applications an access group may list.
pub const MAX_GROUP_LIST: usize = 500;

async fn check_group(c: &Ctx<'_>, g: &mut AccessGroup) -> Result<()> {
    let s = c.state;
    validate_name("access group", &g.name)?;
    g.ineffective_privileges.clear();
    if g.roles.is_empty() {
        return Err(Error::BadRequest("an access group needs at least one role".into()));
    }
    check_roles(c, &g.roles)?;
    // Each member is looked up: bounded.
    for (what, list) in [("operators", &g.operators), ("clients", &g.clients), ("applications", &g.applications)] {
        if list.len() > MAX_GROUP_LIST {
            return Err(Error::BadRequest(format!("an access group lists at most {MAX_GROUP_LIST} {what}")));
        }
    }
    for o in &g.operators {
        if s.store.get_operator(o).await?.is_none() {
            return Err(Error::BadRequest(format!("operator {o} does not exist")));
        }
    }
    for cl in &g.clients {
        match s.store.get_client(cl).await? {
            None => return Err(Error::BadRequest(format!("client {cl} does not exist"))),
            Some(x) if x.metadata.agent.is_some() => {
                return Err(Error::BadRequest(format!("{cl} is an agent's client; agents do not join access groups")));
            }
            Some(_) => {}
        }
    }
    for a in &g.applications {
        validate_name("application", a)?;
    }
    for v in [&mut g.roles, &mut g.operators, &mut g.clients, &mut g.applications] {
        v.sort();
        v.dedup();
    }
    let (confers, _) = s.principals.group_privileges(g);
    c.within_ceiling(&confers, &format!("access group {}", g.name))
}

pub async fn create_group(c: &Ctx<'_>, mut g: AccessGroup) -> Result<AccessGroup> {
    c.require(Privilege::RoleManage)?;
    check_group(c, &mut g).await?;
    let body = serde_json::to_string(&g).map_err(|e| Error::Store(e.to_string()))?;
    if !c.state.store.record_insert(GROUP, &g.name, &body, None).await? {
        return Err(Error::Conflict(format!("access group {} exists already", g.name)));
    }
    c.state.principals.reload(c.state.store.as_ref()).await?;
    Ok(group_view(c, g))
}

pub async fn put_group(c: &Ctx<'_>, name: &str, mut g: AccessGroup) -> Result<AccessGroup> {
    c.require(Privilege::RoleManage)?;
    if g.name != name {
        return Err(Error::BadRequest(format!("the body names access group {:?}, the path {name:?}", g.name)));
    }
    check_group(c, &mut g).await?;
    if let Some(old) = load_group(c, name).await? {
        let (confers, _) = c.state.principals.group_privileges(&old);
        c.within_ceiling(&confers, &format!("access group {name}"))?;
    }
    put_record(c, GROUP, name, &g).await?;
    Ok(group_view(c, g))
}

pub async fn delete_group(c: &Ctx<'_>, name: &str) -> Result<()> {
    c.require(Privilege::RoleManage)?;
    let Some(old) = load_group(c, name).await? else {
        return Err(Error::NotFound(format!("access group {name} not found")));
    };
    let (confers, _) = c.state.principals.group_privileges(&old);
    c.within_ceiling(&confers, &format!("access group {name}"))?;
    if !c.state.store.record_delete(GROUP, name).await? {
        return Err(Error::NotFound(format!("access group {name} not found")));
    }
    c.state.principals.reload(c.state.store.as_ref()).await?;
    Ok(())
}

/// Removes a deleted operator or client from every access group naming it (so the next
/// principal of that name does not inherit the group's grants). Runs as the orchestrator: the
/// deletion itself was authorized.
pub(crate) async fn forget_member(c: &Ctx<'_>, operator: Option<&str>, client: Option<&str>) -> Result<()> {
    let s = c.state;
    let mut changed = false;
    for (name, body, version) in s.store.record_list(GROUP).await? {
        let Ok(mut g) = serde_json::from_str::<AccessGroup>(&body) else { continue };
        let before = (g.operators.len(), g.clients.len());
        g.operators.retain(|o| Some(o.as_str()) != operator);
        g.clients.retain(|x| Some(x.as_str()) != client);
        if before == (g.operators.len(), g.clients.len()) {
            continue;
        }
        let body = serde_json::to_string(&g).map_err(|e| Error::Store(e.to_string()))?;
        if !s.store.record_update(GROUP, &name, version, &body, None).await? {
            return Err(Error::Conflict(format!("access group {name} changed meanwhile; try again")));
        }
        changed = true;
    }
    if changed {
        s.principals.reload(s.store.as_ref()).await?;
    }
    Ok(())
}
