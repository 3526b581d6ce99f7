//! Verification of the RFC 9068 access tokens this server issues: signature and fixed claims
//! (remembered per token until it expires), then revocation and the principal, on every call.

use drover_core::rbac::{AGENT_ROLE, Principal, PrincipalKind};
use drover_types::Timestamp;

use super::{AUDIENCE, CLOCK_SKEW_SECS, Claims, jwt, sessions};
use crate::AppState;

/// Tokens whose signature and claims were verified, by SHA-256 of the whole token, until they
/// expire: clients and agents present the same token for minutes, and one ES256 verification
/// costs a P-256 signature check. Only the signature and the fixed claims are remembered;
/// revocation (client, `jti`, session, operator) is checked on every call after this.
#[derive(Default)]
pub struct VerifiedTokens {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// Entries at most; when full, the cache starts over (no eviction order to maintain).
const VERIFIED_CAP: usize = 100_000;

impl VerifiedTokens {
    fn get(&self, digest: &[u8; 32]) -> Option<Claims> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.map.lock().expect("poisoned").get(digest).cloned();
        if c.is_some() { &self.hits } else { &self.misses }.fetch_add(1, Relaxed);
        c
    }
    /// (entries, hits, misses), for `/system/caches`.
    pub fn stats(&self) -> (usize, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.map.lock().expect("poisoned").len(), self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
    /// Forgets every verified token (each is verified again at its next use).
    pub fn clear(&self) -> usize {
        let mut m = self.map.lock().expect("poisoned");
        let n = m.len();
        m.clear();
        n
    }
    fn put(&self, digest: [u8; 32], c: &Claims) {
        let mut m = self.map.lock().expect("poisoned");
        if m.len() >= VERIFIED_CAP {
            let now = Timestamp::now().0 / 1000;
            m.retain(|_, v| v.exp + CLOCK_SKEW_SECS as i64 > now);
            if m.len() >= VERIFIED_CAP {
                m.clear();
            }
        }
        m.insert(digest, c.clone());
    }
}

/// [`verify_signature`], remembered per token until it expires.
pub(crate) fn decode(s: &AppState, token: &str) -> Result<Claims, &'static str> {
    use sha2::Digest as _;
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let now = Timestamp::now().0 / 1000;
    if let Some(c) = s.verified.get(&digest) {
        return if c.exp + CLOCK_SKEW_SECS as i64 <= now { Err("expired") } else { Ok(c) };
    }
    let c = verify_signature(s, token)?;
    s.verified.put(digest, &c);
    Ok(c)
}

/// Signature and claim checks. The algorithm comes from the key the `kid` names, never from
/// the token; `exp`, `iss` and `aud` are required with their JSON types.
fn verify_signature(s: &AppState, token: &str) -> Result<Claims, &'static str> {
    let header = jwt::header(token)?;
    // RFC 9068 §4: only access tokens (not, say, an ID token signed with the same key).
    let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
    if typ != "at+jwt" && typ != "application/at+jwt" {
        return Err("not an access token (typ)");
    }
    let kid = header.kid.ok_or("token without kid")?;
    let key = s.keys.verifying_key(&kid).ok_or("unknown kid")?;
    let c: Claims = key.key.verify(token)?;
    if c.iss != s.issuer {
        return Err("wrong issuer");
    }
    if c.aud != AUDIENCE {
        return Err("wrong audience");
    }
    if c.exp + CLOCK_SKEW_SECS as i64 <= Timestamp::now().0 / 1000 {
        return Err("expired");
    }
    Ok(c)
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The token is not (or no longer) valid: 401.
    Invalid(&'static str),
    /// It could not be checked (the store failed): the caller should retry and keep the token.
    Unavailable,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Invalid(r) => r,
            Refused::Unavailable => "store error",
        }
    }
}

impl From<&'static str> for Refused {
    fn from(r: &'static str) -> Self {
        Refused::Invalid(r)
    }
}

fn unavailable(e: drover_core::Error) -> Refused {
    tracing::error!(error = %e, "token verification: store error");
    Refused::Unavailable
}

/// Revocations win ties: a token issued in the same millisecond as a revocation is revoked.
///
/// Verifies a bearer token for the API: signature and claims, then the client still exists, is
/// enabled, has not revoked its tokens since this one was issued, and neither the token id nor
/// its login session is revoked; for a token acting for an operator, the operator is enabled and
/// has not had their sessions revoked since.
pub async fn verify_bearer(s: &AppState, token: &str) -> Result<Principal, Refused> {
    principal_of(s, decode(s, token)?).await
}

/// [`verify_bearer`] again for a stream the token opened, which may outlive the token (streams
/// have bounds of their own): everything but the expiry, so a revocation, a disabled client or
/// operator, and a changed grant all count.
pub async fn reverify_bearer(s: &AppState, token: &str) -> Result<Principal, Refused> {
    use sha2::Digest as _;
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let c = match s.verified.get(&digest) {
        Some(c) => c,
        None => verify_signature(s, token)?,
    };
    principal_of(s, c).await
}

/// The principal a token's verified claims stand for, checked against the store now.
async fn principal_of(s: &AppState, c: Claims) -> Result<Principal, Refused> {
    let client = s.store.get_client(&c.client_id).await.map_err(unavailable)?.ok_or("unknown client")?;
    if client.disabled {
        return Err("client disabled".into());
    }
    if c.iat_ms <= client.tokens_not_before.0 {
        return Err("token revoked (client tokens revoked)".into());
    }
    if s.store.is_token_revoked(&c.jti).await.map_err(unavailable)? {
        return Err("token revoked".into());
    }
    if let Some(sid) = &c.sid
        && s.store.is_token_revoked(sid).await.map_err(unavailable)?
    {
        return Err("token revoked (login session ended)".into());
    }
    if let Some(agent) = &client.metadata.agent {
        if !c.roles.iter().any(|r| r == AGENT_ROLE) || !client.roles.iter().any(|r| r == AGENT_ROLE) {
            return Err("agent token without the agent role".into());
        }
        s.auth.touch(agent).await;
        return Ok(Principal::new(PrincipalKind::Agent, agent.clone(), vec![AGENT_ROLE.into()]));
    }
    let Some(act) = &c.act else {
        // A token carries the roles granted at issue, limited to the client's current roles; a
        // token whose scope was narrowed does not carry the client's access groups either.
        let full = client.roles.iter().all(|r| c.roles.contains(r));
        let roles = c.roles.into_iter().filter(|r| client.roles.contains(r) && r != AGENT_ROLE).collect();
        return Ok(s.principals.resolve_scoped(PrincipalKind::Client, &client.client_id, roles, full));
    };
    let op = s.store.get_operator(&act.sub).await.map_err(unavailable)?.ok_or("unknown operator")?;
    if op.disabled {
        return Err("operator disabled".into());
    }
    if c.iat_ms <= sessions::not_before(s, &op.name).await.map_err(unavailable)?.0 {
        return Err("token revoked (operator sessions revoked)".into());
    }
    let full = op.roles.iter().filter(|r| r.as_str() != AGENT_ROLE).all(|r| c.roles.contains(r));
    let roles = c.roles.into_iter().filter(|r| op.roles.contains(r) && r != AGENT_ROLE).collect();
    let mut p = s.principals.resolve_scoped(PrincipalKind::Operator, &op.name, roles, full);
    p.via = Some(client.client_id);
    Ok(p)
}
