//! The device authorization grant (RFC 8628): the device asks for a code pair
//! (`/oauth2/device_authorization`, [`authorize`]), the operator approves or denies the user
//! code on the device page (`oauth::pages::device`, [`decide`]), and the device polls the token
//! endpoint ([`grant`]) with `authorization_pending`, `slow_down`, `access_denied` and
//! `expired_token` until then.
//!
//! Records: `device` (under the SHA-256 of the device code) and `device_user` (the user code,
//! pointing at it), both expiring 10 minutes after creation; polling does not extend them.

use std::time::Duration;

use drover_core::store::{ClientRecord, OperatorRecord};
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};

use super::scope_within;
use crate::AppState;
use crate::oauth::client_auth::TokenForm;
use crate::oauth::error::OAuthError;
use crate::oauth::sessions::{TokenSet, new_session};
use crate::secrets::secret_hash;

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const DEVICE_TTL: Duration = Duration::from_secs(600);
/// Seconds a device must wait between polls (RFC 8628 §3.5); `slow_down` adds 5.
pub const DEVICE_INTERVAL: u64 = 5;
const USER_CODE_CHARS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

#[derive(Serialize, Deserialize)]
struct DeviceRec {
    client_id: String,
    user_code: String,
    scope: Option<String>,
    /// `pending`, `approved` or `denied`.
    status: String,
    operator: Option<String>,
    roles: Vec<String>,
    interval: u64,
    last_poll_ms: i64,
    /// Fixed at creation: polling does not extend it.
    expires_ms: i64,
    /// When the operator approved.
    approved_ms: i64,
}

fn normalize_user_code(c: &str) -> String {
    c.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).take(16).collect()
}

/// A new device code pair for `client` (RFC 8628 §3.2 response body).
pub(crate) async fn authorize(
    s: &AppState,
    client: &ClientRecord,
    form: &TokenForm,
) -> Result<serde_json::Value, OAuthError> {
    let device_code = hex::encode(rand::random::<[u8; 32]>());
    let user_code: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..8).map(|_| USER_CODE_CHARS[rng.random_range(0..USER_CODE_CHARS.len())] as char).collect()
    };
    let shown = format!("{}-{}", &user_code[..4], &user_code[4..]);
    let until = Some(Timestamp::now().plus(DEVICE_TTL));
    let rec = DeviceRec {
        client_id: client.client_id.clone(),
        user_code: user_code.clone(),
        scope: form.scope.clone(),
        status: "pending".into(),
        operator: None,
        roles: Vec::new(),
        interval: DEVICE_INTERVAL,
        last_poll_ms: 0,
        expires_ms: Timestamp::now().plus(DEVICE_TTL).0,
        approved_ms: 0,
    };
    let dkey = secret_hash(&device_code);
    let body = serde_json::to_string(&rec).map_err(OAuthError::server_error)?;
    if !s.store.record_insert("device_user", &user_code, &dkey, until).await?
        || !s.store.record_insert("device", &dkey, &body, until).await?
    {
        return Err(OAuthError::unavailable("device code collision"));
    }
    let uri = format!("{}/device", s.issuer);
    let complete = format!("{uri}?{}", serde_urlencoded::to_string([("user_code", &shown)]).unwrap_or_default());
    Ok(serde_json::json!({
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": uri,
        "verification_uri_complete": complete,
        "expires_in": DEVICE_TTL.as_secs(),
        "interval": DEVICE_INTERVAL,
    }))
}

/// What a pending device request asks for: (client, roles asked), to show before approval.
pub(crate) async fn pending(s: &AppState, user_code: &str) -> Option<(String, String)> {
    let (dkey, _) = s.store.record_get("device_user", &normalize_user_code(user_code)).await.ok()??;
    let (body, _) = s.store.record_get("device", &dkey).await.ok()??;
    let rec: DeviceRec = serde_json::from_str(&body).ok()?;
    Some((rec.client_id, rec.scope.unwrap_or_else(|| "all of your roles".into())))
}

/// Why a decision on the device page did not go through.
pub(crate) enum DecideError {
    UnknownCode,
    AlreadyUsed,
    /// The device asks for roles the operator does not hold.
    TooMuch(String),
    Changed,
    Unavailable,
}

/// The pending request behind a user code: (normalized code, device key, record, version).
async fn pending_request(s: &AppState, user_code: &str) -> Result<(String, String, DeviceRec, i64), DecideError> {
    let code = normalize_user_code(user_code);
    let get = |kind: &'static str, key: String| async move {
        s.store.record_get(kind, &key).await.map_err(|_| DecideError::Unavailable)?.ok_or(DecideError::UnknownCode)
    };
    let (dkey, _) = get("device_user", code.clone()).await?;
    let (body, version) = get("device", dkey.clone()).await?;
    let rec: DeviceRec = serde_json::from_str(&body).map_err(|_| DecideError::UnknownCode)?;
    if rec.status != "pending" {
        return Err(DecideError::AlreadyUsed);
    }
    Ok((code, dkey, rec, version))
}

/// The client of the device request, if one is pending (before the operator signs in).
pub(crate) async fn client_of(s: &AppState, user_code: &str) -> Result<String, DecideError> {
    Ok(pending_request(s, user_code).await?.2.client_id)
}

/// The signed-in operator approves or denies the request behind `user_code`.
pub(crate) async fn decide(
    s: &AppState,
    user_code: &str,
    op: &OperatorRecord,
    approve: bool,
) -> Result<bool, DecideError> {
    let (code, dkey, mut rec, version) = pending_request(s, user_code).await?;
    if approve {
        let roles =
            scope_within(rec.scope.as_deref(), &operator_roles(op)).map_err(|e| DecideError::TooMuch(e.description))?;
        rec.status = "approved".into();
        rec.roles = roles;
        rec.operator = Some(op.name.clone());
        rec.approved_ms = Timestamp::now().0;
    } else {
        rec.status = "denied".into();
    }
    let until = Some(Timestamp(rec.expires_ms));
    let body = serde_json::to_string(&rec).map_err(|_| DecideError::Unavailable)?;
    match s.store.record_update("device", &dkey, version, &body, until).await {
        Ok(true) => {}
        Ok(false) => return Err(DecideError::Changed),
        Err(_) => return Err(DecideError::Unavailable),
    }
    let _ = s.store.record_delete("device_user", &code).await;
    Ok(approve)
}

/// An operator's roles that a sign-in may hand to a client.
pub(crate) fn operator_roles(op: &OperatorRecord) -> Vec<String> {
    op.roles.iter().filter(|r| r.as_str() != drover_core::rbac::AGENT_ROLE).cloned().collect()
}

/// The device polls: tokens once approved, the RFC 8628 errors until then.
pub(crate) async fn grant(s: &AppState, client: &ClientRecord, form: &TokenForm) -> Result<TokenSet, OAuthError> {
    let Some(code) = form.device_code.as_deref() else {
        return Err(OAuthError::invalid_request("device_code is required"));
    };
    let key = secret_hash(code);
    let (body, version) = s
        .store
        .record_get("device", &key)
        .await?
        .ok_or_else(|| OAuthError::bad("expired_token", "the device code has expired or is unknown"))?;
    let mut rec: DeviceRec =
        serde_json::from_str(&body).map_err(|_| OAuthError::invalid_grant("invalid device code"))?;
    if rec.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("the device code belongs to another client"));
    }
    match rec.status.as_str() {
        "approved" => {
            // Single use: whoever takes the record gets the tokens.
            if s.store.record_take("device", &key).await?.is_none() {
                return Err(OAuthError::invalid_grant("the device code was already used"));
            }
            let operator = rec.operator.clone().unwrap_or_default();
            new_session(s, client, &operator, rec.roles, "device_code", rec.approved_ms).await
        }
        "denied" => {
            let _ = s.store.record_take("device", &key).await;
            Err(OAuthError::bad("access_denied", "the operator denied the request"))
        }
        _ => {
            let now = Timestamp::now().0;
            let too_fast = now - rec.last_poll_ms < (rec.interval * 1000) as i64;
            if too_fast {
                rec.interval += 5;
            }
            rec.last_poll_ms = now;
            let until = Some(Timestamp(rec.expires_ms));
            let body = serde_json::to_string(&rec).map_err(OAuthError::server_error)?;
            let _ = s.store.record_update("device", &key, version, &body, until).await;
            if too_fast {
                Err(OAuthError::bad("slow_down", "polling too often; wait 5 more seconds between polls"))
            } else {
                Err(OAuthError::bad("authorization_pending", "the operator has not approved the request yet"))
            }
        }
    }
}
