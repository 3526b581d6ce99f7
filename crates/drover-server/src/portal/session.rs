//! Portal sessions. The browser holds only a random id in a `__Host-` cookie; the session —
//! the operator's access and refresh tokens, its CSRF token, when it began and was last used —
//! is a record of kind `portal_session` keyed by the SHA-256 of the id, sealed with the master
//! key, so a restart or another node sharing the database keeps it, and a database reader sees
//! no token. A session ends after [`IDLE`] without a request, [`ABSOLUTE`] after sign-in, at
//! sign-out, or when its tokens stop being valid (operator disabled, sessions revoked, refresh
//! family revoked): whatever ends the API's tokens ends the portal's session too, because every
//! request checks the access token exactly as the API guard does (`oauth::verify_bearer`).
//!
//! The session holds its login session (the refresh-token family), not a refresh token: a new
//! access token is issued for the family when the current one has less than two minutes left
//! (`oauth::sessions::reissue`, the refresh grant's checks without spending a token), so two
//! requests renewing at once, or a database error half-way, can never look like refresh-token
//! reuse and end the session.

use std::time::Duration;

use drover_core::Store;
use drover_core::rbac::Principal;
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::oauth::keys::{KeyError, MasterKey};
use crate::oauth::sessions::{self, TokenSet};
use crate::oauth::{Refused, verify_bearer};
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

const KIND: &str = "portal_session";

#[derive(Serialize, Deserialize, Clone)]
struct Body {
    operator: String,
    /// The refresh-token family (the OAuth login session) behind it.
    family: String,
    csrf: String,
    /// The roles the sign-in granted (each renewal asks for them again).
    roles: Vec<String>,
    access_token: String,
    access_exp_s: i64,
    created_ms: i64,
    last_seen_ms: i64,
}

impl Body {
    fn expires_at(&self) -> Timestamp {
        Timestamp((self.last_seen_ms + IDLE.as_millis() as i64).min(self.created_ms + ABSOLUTE.as_millis() as i64))
    }
}

/// A signed-in request's session.
#[derive(Clone)]
pub struct Session {
    /// The cookie value (kept in memory for the request only, to check the session again).
    pub(crate) id: String,
    pub operator: String,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
}

/// What a session cookie leads to.
pub enum Loaded {
    Active(Session, Principal),
    /// No session, or one that has ended: sign in.
    Ended(&'static str),
    /// The database could not say: 503, and the session is kept.
    Unavailable,
}

/// Sealed for its record only (the record key is in the associated data): a sealed session
/// copied onto another session's record does not open.
fn context(key: &str) -> String {
    format!("portal_session:{key}")
}

fn seal(master: &MasterKey, key: &str, b: &Body) -> Result<String, KeyError> {
    let json = serde_json::to_vec(b).map_err(|e| KeyError::Key(e.to_string()))?;
    master.seal(&json, &context(key))
}

fn open(master: &MasterKey, key: &str, sealed: &str) -> Option<Body> {
    let plain = master.open(sealed, &context(key)).ok()?;
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
        roles: tokens.claims.roles.clone(),
        access_token: tokens.access_token.clone(),
        access_exp_s: tokens.claims.exp,
        created_ms: now,
        last_seen_ms: now,
    };
    for _ in 0..3 {
        let id = new_secret();
        let key = secret_hash(&id);
        let sealed = seal(s.keys.master(), &key, &b).map_err(|e| drover_core::Error::Store(e.to_string()))?;
        if s.store.record_insert(KIND, &key, &sealed, Some(b.expires_at())).await? {
            return Ok(id);
        }
    }
    Err(drover_core::Error::Store("could not store a new portal session".into()))
}

/// The session of a cookie value, its access token renewed when due and checked like any
/// bearer token; the principal it acts as. The request counts as activity (the idle clock
/// starts again) when `activity`: what a page does by itself — a live stream's checks, the
/// fragments its updates fetch — does not, so an open page keeps no session alive.
pub async fn load(s: &AppState, id: &str, activity: bool) -> Loaded {
    if !well_formed(id) {
        return Loaded::Ended("malformed session id");
    }
    let key = secret_hash(id);
    let (sealed, version) = match s.store.record_get(KIND, &key).await {
        Ok(Some(x)) => x,
        Ok(None) => return Loaded::Ended("no such session"),
        Err(e) => {
            tracing::error!(error = %e, "portal session: store error");
            return Loaded::Unavailable;
        }
    };
    let Some(mut b) = open(s.keys.master(), &key, &sealed) else {
        // Kept: another node may hold the key it was sealed with (a re-seal under way).
        tracing::warn!("portal session record does not open under this node's master key");
        return Loaded::Ended("unreadable session");
    };
    let now = Timestamp::now();
    if b.expires_at() <= now {
        end_body(s, &key, &b).await;
        return Loaded::Ended("session timed out");
    }
    let renew = b.access_exp_s - now.0 / 1000 < RENEW_BEFORE_SECS;
    if renew {
        match renew_token(s, &mut b).await {
            Ok(()) => {}
            Err(Some(why)) => {
                end_body(s, &key, &b).await;
                return Loaded::Ended(why);
            }
            Err(None) => return Loaded::Unavailable,
        }
    }
    let touch = touch_due(activity, now.0, b.last_seen_ms);
    if renew || touch {
        if touch {
            b.last_seen_ms = now.0;
        }
        if let Ok(sealed) = seal(s.keys.master(), &key, &b) {
            // Losing this race is harmless: another request wrote a session as good as this.
            let _ = s.store.record_update(KIND, &key, version, &sealed, Some(b.expires_at())).await;
        }
    }
    match verify_bearer(s, &b.access_token).await {
        Ok(p) => Loaded::Active(Session { id: id.to_string(), operator: b.operator.clone(), csrf: b.csrf.clone() }, p),
        Err(Refused::Unavailable) => Loaded::Unavailable,
        Err(Refused::Invalid(why)) => {
            tracing::info!(operator = %b.operator, reason = why, "portal session ended: its access token is refused");
            end_body(s, &key, &b).await;
            Loaded::Ended(why)
        }
    }
}

/// Does this request restart the idle clock (written at most once a minute)? Only the
/// operator's own requests do.
fn touch_due(activity: bool, now_ms: i64, last_seen_ms: i64) -> bool {
    activity && now_ms - last_seen_ms > TOUCH_EVERY_MS
}

/// A new access token for the session's login session. `Err(Some(why))`: the session is over;
/// `Err(None)`: the database could not say (503, the session is kept).
async fn renew_token(s: &AppState, b: &mut Body) -> Result<(), Option<&'static str>> {
    let client = match s.store.get_client(crate::oauth::PORTAL_CLIENT).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => return Err(Some("the portal's client is disabled")),
        Err(_) => return Err(None),
    };
    match sessions::reissue(s, &client, &b.family, b.roles.clone()).await {
        Ok(t) => {
            b.access_token = t.access_token;
            b.access_exp_s = t.claims.exp;
            Ok(())
        }
        Err(e) if e.status.is_server_error() => Err(None),
        Err(e) => {
            tracing::info!(operator = %b.operator, reason = %e.description, "portal session ended: renewal refused");
            Err(Some("renewal refused"))
        }
    }
}

/// A session that is over: its login session revoked, its record deleted.
async fn end_body(s: &AppState, key: &str, b: &Body) {
    if !b.family.is_empty()
        && let Err(e) = sessions::revoke_family(s, &b.family).await
    {
        tracing::warn!(error = %e, "portal session: revoking its login session failed");
    }
    let _ = s.store.record_delete(KIND, key).await;
}

/// Sign-out: the session's refresh-token family is revoked (its access token stops working at
/// once), then the session is deleted; if the revocation fails, nothing is deleted (503, try
/// again). Returns the operator it was, if there was one.
pub async fn end(s: &AppState, id: &str) -> drover_core::Result<Option<String>> {
    if !well_formed(id) {
        return Ok(None);
    }
    let key = secret_hash(id);
    let Some((sealed, _)) = s.store.record_get(KIND, &key).await? else { return Ok(None) };
    let operator = match open(s.keys.master(), &key, &sealed) {
        Some(b) => {
            if !b.family.is_empty() {
                sessions::revoke_family(s, &b.family).await?;
            }
            Some(b.operator)
        }
        None => None,
    };
    s.store.record_delete(KIND, &key).await?;
    Ok(operator)
}

/// The session as of now, for a stream that outlives its request: not activity.
pub async fn check(s: &AppState, id: &str) -> Loaded {
    load(s, id, false).await
}

/// Re-seals every live session under `new` (master-key rotation); returns how many.
pub async fn reseal_all(store: &dyn Store, old: &MasterKey, new: &MasterKey) -> Result<usize, KeyError> {
    let mut n = 0;
    for (k, sealed, v) in store.record_list(KIND).await? {
        let Some(b) = open(old, &k, &sealed) else { continue };
        let body = seal(new, &k, &b)?;
        // A session used meanwhile keeps its old seal (and ends when the retired key goes).
        if store.record_update(KIND, &k, v, &body, Some(b.expires_at())).await? {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(created_ms: i64, last_seen_ms: i64) -> Body {
        Body {
            operator: "ann".into(),
            family: "f".into(),
            csrf: "c".into(),
            roles: vec![],
            access_token: "t".into(),
            access_exp_s: 0,
            created_ms,
            last_seen_ms,
        }
    }

    #[test]
    fn only_the_operators_own_requests_restart_the_idle_clock() {
        let minute = TOUCH_EVERY_MS;
        assert!(touch_due(true, 10 * minute, 0));
        assert!(!touch_due(false, 10 * minute, 0), "a stream's check or a live fragment is not activity");
        assert!(!touch_due(true, minute / 2, 0), "written at most once a minute");
    }

    #[test]
    fn a_session_ends_idle_or_at_its_absolute_end() {
        let (idle, abs) = (IDLE.as_millis() as i64, ABSOLUTE.as_millis() as i64);
        assert_eq!(body(0, 0).expires_at(), Timestamp(idle), "idle from sign-in");
        assert_eq!(body(0, 1000).expires_at(), Timestamp(1000 + idle), "each request pushes it");
        assert_eq!(body(0, abs).expires_at(), Timestamp(abs), "never past the absolute end");
    }

    #[test]
    fn a_seal_opens_only_for_its_own_record() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let sealed = seal(&key, "record-a", &body(1, 1)).unwrap();
        assert!(open(&key, "record-a", &sealed).is_some());
        assert!(open(&key, "record-b", &sealed).is_none(), "copied onto another session's record");
    }
}
