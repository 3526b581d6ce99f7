//! OAuth 2.0 client registrations (`client.manage`). The grant ceiling holds: a client gets no
//! role whose privileges the caller does not hold globally, and a client that holds more than
//! the caller cannot be changed, re-keyed or deleted by them. The `agent` role is not given
//! here (agents are registered through `/agents`); agents' own clients are managed here only by
//! holders of `agent.manage` too.

use std::time::Duration;

use drover_core::rbac::{AGENT_ROLE, PrincipalKind, Privilege};
use drover_core::store::{ClientMetadata, ClientRecord};
use drover_core::{Error, Result, validate_name};
use drover_types::{Client, ClientSecret, ClientUpdate, NewClient, RegenerateSecret, Timestamp};

use super::Ctx;
use super::operators::check_roles;
use crate::secrets::{new_secret, secret_hash};

pub fn view(c: ClientRecord) -> Client {
    let now = Timestamp::now();
    Client {
        client_id: c.client_id,
        roles: c.roles,
        disabled: c.disabled,
        created_at: c.created_at,
        secret_rotated_at: c.secret_rotated_at,
        previous_secret_valid_until: c.previous_valid_until.filter(|t| *t > now),
        tokens_not_before: Some(c.tokens_not_before).filter(|t| t.0 > 0),
        redirect_uris: c.metadata.redirect_uris,
        public: c.metadata.public,
        key_ids: c
            .metadata
            .jwks
            .as_ref()
            .and_then(|j| j["keys"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k["kid"].as_str().map(String::from))
            .collect(),
        agent: c.metadata.agent,
    }
}

fn check_redirects(uris: &[String]) -> Result<()> {
    for u in uris {
        crate::oauth::redirects::redirect_registrable(u).map_err(Error::BadRequest)?;
    }
    Ok(())
}

/// A JWKS for `private_key_jwt`: public keys only, each usable for signatures.
pub fn check_jwks(jwks: &serde_json::Value) -> Result<()> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| Error::BadRequest(format!("jwks is not a JWK set: {e}")))?;
    if set.keys.is_empty() {
        return Err(Error::BadRequest("jwks has no keys".into()));
    }
    for (i, k) in set.keys.iter().enumerate() {
        let raw = &jwks["keys"][i];
        if ["d", "p", "q", "k"].iter().any(|f| raw.get(f).is_some()) {
            return Err(Error::BadRequest(
                "jwks must hold public keys only (a private or symmetric key was sent)".into(),
            ));
        }
        if matches!(k.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
            return Err(Error::BadRequest("symmetric keys are not accepted".into()));
        }
        jsonwebtoken::DecodingKey::from_jwk(k).map_err(|e| Error::BadRequest(format!("unusable key: {e}")))?;
    }
    Ok(())
}

async fn load(c: &Ctx<'_>, id: &str) -> Result<ClientRecord> {
    c.state.store.get_client(id).await?.ok_or_else(|| Error::NotFound(format!("client {id} not found")))
}

/// A client that operators sign in through (public, or with redirect URIs) obtains tokens
/// acting for any operator who signs in there, up to `release-admin`: changing where it sends
/// codes, or re-keying, disabling or deleting it, is held to the ceiling of every privilege.
fn acts_for_operators(m: &ClientMetadata) -> bool {
    m.public || !m.redirect_uris.is_empty()
}

fn every_privilege() -> Vec<Privilege> {
    Privilege::ALL.iter().copied().filter(|p| *p != Privilege::AgentWork).collect()
}

/// The privileges a client named `id` with `roles` would hold: its roles and every access group
/// naming it (a group may still name a deleted client's id).
fn confers(c: &Ctx<'_>, id: &str, roles: &[String], metadata: &ClientMetadata) -> Vec<Privilege> {
    let mut all = c.state.principals.resolve(PrincipalKind::Client, id, roles.to_vec()).all_privileges();
    if acts_for_operators(metadata) {
        all.extend(every_privilege());
    }
    all
}

/// Whoever gives an agent's client a new secret or new keys can poll as that agent and receive
/// its environment's secrets: as much as placing an agent there (`agents::may_place`).
async fn may_rekey(c: &Ctx<'_>, client: &ClientRecord) -> Result<()> {
    let Some(agent) = &client.metadata.agent else { return Ok(()) };
    match c.state.store.get_agent(agent).await? {
        Some(a) => super::agents::may_place(c, &a.environment, "re-keying").await,
        None => Ok(()),
    }
}

/// The caller may change this client only if it holds nothing the caller does not.
fn may_change(c: &Ctx<'_>, client: &ClientRecord) -> Result<()> {
    let all = confers(c, &client.client_id, &client.roles, &client.metadata);
    c.within_ceiling(&all, &format!("client {}", client.client_id))
}

pub async fn list(c: &Ctx<'_>) -> Result<Vec<Client>> {
    c.require(Privilege::ClientManage)?;
    Ok(c.state.store.list_clients().await?.into_iter().map(view).collect())
}

pub async fn get(c: &Ctx<'_>, id: &str) -> Result<Client> {
    c.require(Privilege::ClientManage)?;
    Ok(view(load(c, id).await?))
}

pub async fn create(c: &Ctx<'_>, n: NewClient) -> Result<ClientSecret> {
    c.require(Privilege::ClientManage)?;
    validate_name("client", &n.name)?;
    if n.public && !n.roles.is_empty() {
        return Err(Error::BadRequest("a public client acts only for operators and holds no roles of its own".into()));
    }
    check_roles(c, &n.roles)?;
    let metadata = ClientMetadata { redirect_uris: n.redirect_uris.clone(), public: n.public, ..Default::default() };
    c.within_ceiling(&confers(c, &n.name, &n.roles, &metadata), &format!("client {}", n.name))?;
    check_redirects(&n.redirect_uris)?;
    if let Some(j) = &n.jwks {
        check_jwks(j)?;
    }
    if c.state.store.get_operator(&n.name).await?.is_some() || c.state.store.get_agent(&n.name).await?.is_some() {
        return Err(Error::Conflict(format!("{} is taken by an operator or agent", n.name)));
    }
    // Clients that authenticate with keys, and public clients, get no secret.
    let secret = if n.public || n.jwks.is_some() { String::new() } else { new_secret() };
    let rec = ClientRecord {
        client_id: n.name.clone(),
        secret_hash: if secret.is_empty() { String::new() } else { secret_hash(&secret) },
        roles: n.roles,
        created_at: Timestamp::now(),
        metadata: ClientMetadata { redirect_uris: n.redirect_uris, public: n.public, jwks: n.jwks, agent: None },
        ..Default::default()
    };
    c.state.store.insert_client(&rec).await?;
    Ok(ClientSecret { client_id: n.name, client_secret: secret, previous_secret_valid_until: None })
}

pub async fn update(c: &Ctx<'_>, id: &str, u: ClientUpdate) -> Result<Client> {
    c.require(Privilege::ClientManage)?;
    let s = c.state;
    let mut client = load(c, id).await?;
    may_change(c, &client)?;
    if u.disabled == Some(true) {
        builtin_unchanged(id)?;
    }
    if let Some(roles) = u.roles {
        if client.metadata.agent.is_some() {
            return Err(Error::BadRequest("an agent's client keeps the agent role; manage agents with /agents".into()));
        }
        if client.metadata.public && !roles.is_empty() {
            return Err(Error::BadRequest("a public client holds no roles of its own".into()));
        }
        check_roles(c, &roles)?;
        client.roles = roles;
    }
    if let Some(uris) = u.redirect_uris {
        check_redirects(&uris)?;
        client.metadata.redirect_uris = uris;
    }
    // What the client confers after the change, too.
    may_change(c, &client)?;
    if u.jwks.is_some() {
        may_rekey(c, &client).await?;
    }
    if let Some(j) = u.jwks {
        if j.is_null() {
            client.metadata.jwks = None;
        } else {
            check_jwks(&j)?;
            client.metadata.jwks = Some(j);
        }
    }
    if let Some(d) = u.disabled {
        client.disabled = d;
    }
    s.store.update_client(&client).await?;
    if client.disabled
        && let Some(agent) = &client.metadata.agent
    {
        s.engine.cut_off_agent(agent, "its client registration was disabled").await?;
    }
    Ok(view(client))
}

pub async fn delete(c: &Ctx<'_>, id: &str) -> Result<()> {
    c.require(Privilege::ClientManage)?;
    let s = c.state;
    let client = load(c, id).await?;
    may_change(c, &client)?;
    if id == crate::oauth::CLI_CLIENT || id == crate::oauth::PORTAL_CLIENT {
        return Err(Error::Conflict(format!("{id} is a built-in client; disable it instead")));
    }
    if s.store.delete_client(id).await? {
        // A group naming the id would hand its grants to the next client of that name.
        crate::service::access::forget_member(c, None, Some(id)).await?;
        if let Some(agent) = client.metadata.agent {
            s.engine.cut_off_agent(&agent, "its client registration was deleted").await?;
        }
        Ok(())
    } else {
        Err(Error::NotFound(format!("client {id} not found")))
    }
}

/// A new secret; with a grace period the previous one keeps working until it ends, so running
/// agents and CI roll over without a failed call.
pub async fn regenerate_secret(c: &Ctx<'_>, id: &str, req: RegenerateSecret) -> Result<ClientSecret> {
    c.require(Privilege::ClientManage)?;
    if req.grace_secs > 30 * 24 * 3600 {
        return Err(Error::BadRequest("the grace period is at most 30 days".into()));
    }
    let mut client = load(c, id).await?;
    may_change(c, &client)?;
    may_rekey(c, &client).await?;
    if client.metadata.public {
        return Err(Error::BadRequest(format!("{id} is a public client: it has no secret")));
    }
    if client.metadata.jwks.is_some() {
        return Err(Error::BadRequest(format!(
            "{id} authenticates with its keys (private_key_jwt); a shared secret would weaken it"
        )));
    }
    builtin_unchanged(id)?;
    let now = Timestamp::now();
    let secret = new_secret();
    let grace_running = client.previous_valid_until.is_some_and(|t| t > now) && client.previous_secret_hash.is_some();
    if req.grace_secs > 0 && grace_running {
        // Regenerated again within a grace period (a second click, a re-posted form): the
        // secret the systems still use stays the previous one, not the one nobody kept.
        let until = now.plus(Duration::from_secs(req.grace_secs));
        client.previous_valid_until = client.previous_valid_until.max(Some(until));
    } else if req.grace_secs > 0 && !client.secret_hash.is_empty() {
        client.previous_secret_hash = Some(client.secret_hash.clone());
        client.previous_valid_until = Some(now.plus(Duration::from_secs(req.grace_secs)));
    } else {
        client.previous_secret_hash = None;
        client.previous_valid_until = None;
    }
    client.secret_hash = secret_hash(&secret);
    client.secret_rotated_at = Some(now);
    c.state.store.update_client(&client).await?;
    Ok(ClientSecret {
        client_id: id.to_string(),
        client_secret: secret,
        previous_secret_valid_until: client.previous_valid_until,
    })
}

/// The CLI's and the portal's clients are built in: disabling one, revoking its tokens or giving
/// it a secret would sign every operator out of it (re-enable it through the API if it was
/// disabled before this rule).
fn builtin_unchanged(id: &str) -> Result<()> {
    if id == crate::oauth::CLI_CLIENT || id == crate::oauth::PORTAL_CLIENT {
        return Err(Error::Conflict(format!(
            "{id} is a built-in client; end an operator's sessions with operators revoke-sessions instead"
        )));
    }
    Ok(())
}

/// Every token the client holds stops working at once.
pub async fn revoke_tokens(c: &Ctx<'_>, id: &str) -> Result<Client> {
    c.require(Privilege::ClientManage)?;
    let mut client = load(c, id).await?;
    may_change(c, &client)?;
    builtin_unchanged(id)?;
    client.tokens_not_before = Timestamp::now();
    c.state.store.update_client(&client).await?;
    if let Some(agent) = &client.metadata.agent {
        c.state.engine.cut_off_agent(agent, "its tokens were revoked").await?;
    }
    Ok(view(client))
}

/// Whether a role name may be given to clients and operators here.
pub fn grantable(role: &str) -> bool {
    role != AGENT_ROLE
}
