//! Portal sessions. The browser holds only a random id in a `__Host-` cookie; the session —
//! the operator's access and refresh tokens, its CSRF token, when it began and was last used —
//! is a record of kind `portal_session` keyed by the SHA-256 of the id, sealed with the master
//! key, so a restart or another node sharing the database keeps it, and a database reader sees
//! no token. A session ends after [`IDLE`] without a request, [`ABSOLUTE`] after sign-in, at
//! sign-out, or when its tokens stop being valid (operator disabled, sessions revoked, refresh
//! family revoked): whatever ends the API's tokens ends the portal's session too, because every
//! request checks the access token exactly as the API guard does (`oauth::verify_bearer`).

use std::time::Duration;

use drover_core::Store;
use drover_core::rbac::Principal;
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::oauth::keys::{KeyError, MasterKey};
use crate::oauth::sessions::TokenSet;
use crate::oauth::{Refused, client_auth::TokenForm, grants, verify_bearer};
use crate::secrets::{new_secret, secret_hash};

/// The session cookie: HTTPS only, this host only, path `/`, never sent cross-site.
pub const COOKIE: &str = "__Host-drover-session";
/// A session ends this long after its last request...
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// ...and this long after sign-in, whatever happens.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// The access token is renewed when it has less than this left.
const RENEW_BEFORE_SECS: i64 = 120;
/// The last request is written at most this often (the idle clock is this coarse).
const TOUCH_EVERY_MS: i64 = 60_000;
/// One renewal at a time per session, across nodes: the others wait this long at most.
const RENEW_LEASE_MS: i64 = 10_000;

const KIND: &str = "portal_session";
const CONTEXT: &str = "portal_session";

#[derive(Serialize, Deserialize, Clone)]
struct Body {
    operator: String,
    /// The refresh-token family (the OAuth login session) behind it.
    family: String,
    csrf: String,
    access_token: String,
    refresh_token: String,
    access_exp_s: i64,
    created_ms: i64,
    last_seen_ms: i64,
    /// A renewal is under way until then (compare-and-swap lease: a refresh token is spent
    /// once; two renewals of it would look like reuse and end the session).
    #[serde(default)]
    renewing_until_ms: i64,
}

impl Body {
    fn expires_at(&self) -> Timestamp {
        Timestamp((self.last_seen_ms + IDLE.as_millis() as i64).min(self.created_ms + ABSOLUTE.as_millis() as i64))
    }
}

/// A signed-in request's session.
#[derive(Clone)]
pub struct Session {
    pub operator: String,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
    /// When the session ends for good (absolute timeout).
    pub ends_at: Timestamp,
}

/// What a session cookie leads to.
pub enum Loaded {
    Active(Session, Principal),
    /// No session, or one that has ended: sign in.
    Ended(&'static str),
    /// The database could not say: 503, and the session is kept.
    Unavailable,
}

fn seal(master: &MasterKey, b: &Body) -> Result<String, KeyError> {
    let json = serde_json::to_vec(b).map_err(|e| KeyError::Key(e.to_string()))?;
    master.seal(&json, CONTEXT)
}

fn open(master: &MasterKey, sealed: &str) -> Option<Body> {
    let plain = master.open(sealed, CONTEXT).ok()?;
    serde_json::from_slice(&plain).ok()
}

fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new session for the tokens of a sign-in; returns its id (the cookie value), always a
/// new random one, so an id planted before sign-in is never the signed-in one.
pub async fn create(s: &AppState, operator: &str, tokens: &TokenSet) -> drover_core::Result<String> {
    let now = Timestamp::now().0;
    let b = Body {
        operator: operator.to_string(),
        family: tokens.claims.sid.clone().unwrap_or_default(),
        csrf: new_secret(),
        access_token: tokens.access_token.clone(),
        refresh_token: tokens.refresh_token.clone().unwrap_or_default(),
        access_exp_s: tokens.claims.exp,
        created_ms: now,
        last_seen_ms: now,
        renewing_until_ms: 0,
    };
    let sealed = seal(s.keys.master(), &b).map_err(|e| drover_core::Error::Store(e.to_string()))?;
    for _ in 0..3 {
        let id = new_secret();
        if s.store.record_insert(KIND, &secret_hash(&id), &sealed, Some(b.expires_at())).await? {
            return Ok(id);
        }
    }
    Err(drover_core::Error::Store("could not store a new portal session".into()))
}

/// The session of a cookie value, its access token renewed when due and checked like any
/// bearer token; the principal it acts as.
pub async fn load(s: &AppState, id: &str) -> Loaded {
    if !well_formed(id) {
        return Loaded::Ended("malformed session id");
    }
    let key = secret_hash(id);
    let mut waited = 0;
    loop {
        let (sealed, version) = match s.store.record_get(KIND, &key).await {
            Ok(Some(x)) => x,
            Ok(None) => return Loaded::Ended("no such session"),
            Err(e) => {
                tracing::error!(error = %e, "portal session: store error");
                return Loaded::Unavailable;
            }
        };
        let Some(mut b) = open(s.keys.master(), &sealed) else {
            tracing::warn!("portal session record does not open under the master key: ended");
            let _ = s.store.record_delete(KIND, &key).await;
            return Loaded::Ended("unreadable session");
        };
        let now = Timestamp::now();
        if b.expires_at() <= now {
            end_body(s, &key, &b).await;
            return Loaded::Ended("session timed out");
        }
        if b.access_exp_s - now.0 / 1000 < RENEW_BEFORE_SECS {
            if b.renewing_until_ms > now.0 {
                // Another request renews it; the current token may still do meanwhile.
                if b.access_exp_s - now.0 / 1000 <= 5 {
                    if waited >= 40 {
                        return Loaded::Unavailable;
                    }
                    waited += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            } else {
                match renew(s, &key, version, &mut b).await {
                    Renewal::Done => {}
                    Renewal::Lost => continue,
                    Renewal::Ended(why) => {
                        let _ = s.store.record_delete(KIND, &key).await;
                        return Loaded::Ended(why);
                    }
                    Renewal::Unavailable => return Loaded::Unavailable,
                }
            }
        } else if now.0 - b.last_seen_ms > TOUCH_EVERY_MS {
            b.last_seen_ms = now.0;
            if let Ok(sealed) = seal(s.keys.master(), &b) {
                // Losing this race is harmless: another request touched it.
                let _ = s.store.record_update(KIND, &key, version, &sealed, Some(b.expires_at())).await;
            }
        }
        return match verify_bearer(s, &b.access_token).await {
            Ok(p) => Loaded::Active(
                Session {
                    operator: b.operator.clone(),
                    csrf: b.csrf.clone(),
                    ends_at: Timestamp(b.created_ms + ABSOLUTE.as_millis() as i64),
                },
                p,
            ),
            Err(Refused::Unavailable) => Loaded::Unavailable,
            Err(Refused::Invalid(why)) => {
                tracing::info!(operator = %b.operator, reason = why, "portal session ended: its access token is refused");
                end_body(s, &key, &b).await;
                Loaded::Ended(why)
            }
        };
    }
}

enum Renewal {
    Done,
    /// Another request took the lease first: read the session again.
    Lost,
    Ended(&'static str),
    Unavailable,
}

/// Takes the renewal lease by compare-and-swap, spends the refresh token, stores the new pair.
async fn renew(s: &AppState, key: &str, version: i64, b: &mut Body) -> Renewal {
    let now = Timestamp::now().0;
    b.renewing_until_ms = now + RENEW_LEASE_MS;
    b.last_seen_ms = now;
    let Ok(sealed) = seal(s.keys.master(), b) else { return Renewal::Unavailable };
    match s.store.record_update(KIND, key, version, &sealed, Some(b.expires_at())).await {
        Ok(true) => {}
        Ok(false) => return Renewal::Lost,
        Err(_) => return Renewal::Unavailable,
    }
    let client = match s.store.get_client(crate::oauth::PORTAL_CLIENT).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => return Renewal::Ended("the portal's client is disabled"),
        Err(_) => return Renewal::Unavailable,
    };
    let form = TokenForm::for_refresh(&b.refresh_token);
    let tokens = match grants::refresh_token::grant(s, &client, &form, "portal").await {
        Ok(t) => t,
        Err(e) if e.status.is_server_error() => {
            // The refresh token may or may not be spent; the lease runs out and the next
            // request tries again (a spent one then ends the session, as reuse would).
            return Renewal::Unavailable;
        }
        Err(e) => {
            tracing::info!(operator = %b.operator, reason = %e.description, "portal session ended: refresh refused");
            return Renewal::Ended("refresh refused");
        }
    };
    b.access_token = tokens.access_token;
    b.refresh_token = tokens.refresh_token.unwrap_or_default();
    b.access_exp_s = tokens.claims.exp;
    b.renewing_until_ms = 0;
    let Ok(sealed) = seal(s.keys.master(), b) else { return Renewal::Unavailable };
    match s.store.record_update(KIND, key, version + 1, &sealed, Some(b.expires_at())).await {
        Ok(true) => Renewal::Done,
        Ok(false) => Renewal::Lost,
        Err(e) => {
            tracing::error!(error = %e, "portal session: the renewed tokens could not be stored");
            Renewal::Unavailable
        }
    }
}

async fn end_body(s: &AppState, key: &str, b: &Body) {
    let _ = s.store.record_delete(KIND, key).await;
    if !b.family.is_empty()
        && let Err(e) = crate::oauth::sessions::revoke_family(s, &b.family).await
    {
        tracing::warn!(error = %e, "portal session: revoking its login session failed");
    }
}

/// Sign-out: the session is deleted and its refresh-token family revoked (its access token
/// stops working at once). Returns the operator it was, if there was one.
pub async fn end(s: &AppState, id: &str) -> drover_core::Result<Option<String>> {
    if !well_formed(id) {
        return Ok(None);
    }
    let key = secret_hash(id);
    let Some(sealed) = s.store.record_take(KIND, &key).await? else { return Ok(None) };
    let Some(b) = open(s.keys.master(), &sealed) else { return Ok(None) };
    if !b.family.is_empty() {
        crate::oauth::sessions::revoke_family(s, &b.family).await?;
    }
    Ok(Some(b.operator))
}

/// Re-seals every live session under `new` (master-key rotation); returns how many.
pub async fn reseal_all(store: &dyn Store, old: &MasterKey, new: &MasterKey) -> Result<usize, KeyError> {
    let mut n = 0;
    for (k, sealed, v) in store.record_list(KIND).await? {
        let Some(b) = open(old, &sealed) else { continue };
        let body = seal(new, &b)?;
        // A session used meanwhile keeps its old seal (and ends when the retired key goes).
        if store.record_update(KIND, &k, v, &body, Some(b.expires_at())).await? {
            n += 1;
        }
    }
    Ok(n)
}
