//! Client authentication at the token, revocation, introspection and device endpoints
//! (RFC 6749 §2.3.1 `client_secret_basic` / `client_secret_post`, RFC 7523 `private_key_jwt`,
//! and `none` for public clients), and the form those endpoints read.

use axum::extract::Form;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use drover_core::store::ClientRecord;
use drover_types::Timestamp;
use jsonwebtoken::Validation;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::OAuthError;
use super::{ASSERTION_MAX_LIFETIME, CLOCK_SKEW_SECS, JWT_BEARER_ASSERTION, keys};
use crate::AppState;
use crate::secrets::secret_hash;

#[derive(Debug, Deserialize, Default)]
pub struct TokenForm {
    pub(crate) grant_type: Option<String>,
    pub(crate) scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) code_verifier: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) device_code: Option<String>,
}

impl TokenForm {
    /// The exchange of an authorization code, for a client inside the orchestrator (the portal).
    pub(crate) fn for_code(code: &str, redirect_uri: &str, verifier: &str) -> Self {
        TokenForm {
            grant_type: Some("authorization_code".into()),
            code: Some(code.into()),
            redirect_uri: Some(redirect_uri.into()),
            code_verifier: Some(verifier.into()),
            ..Default::default()
        }
    }
}

pub(crate) type FormInput = Result<Form<TokenForm>, axum::extract::rejection::FormRejection>;

/// The form, and the client that authenticated with it: the preamble of every endpoint here.
pub(crate) async fn authenticated_form(
    s: &AppState,
    headers: &HeaderMap,
    form: FormInput,
    source: &str,
) -> Result<(TokenForm, ClientRecord), OAuthError> {
    let Ok(Form(form)) = form else {
        return Err(OAuthError::invalid_request("expected an application/x-www-form-urlencoded body"));
    };
    let client = authenticate_client(s, headers, &form, source).await?;
    Ok((form, client))
}

/// How a client presents itself.
enum Presented {
    Secret {
        id: String,
        secret: String,
        basic: bool,
    },
    Assertion {
        id: Option<String>,
        assertion: String,
    },
    /// A public client: its id, nothing else.
    Public {
        id: String,
    },
}

/// How the client authenticated: HTTP Basic, the body parameters, a signed assertion, or
/// (public clients) only `client_id`; never two at once.
fn presented(headers: &HeaderMap, form: &TokenForm) -> Result<Presented, &'static str> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .map(|b| b.trim().to_string());
    let assertion = match (&form.client_assertion_type, &form.client_assertion) {
        (None, None) => None,
        (Some(t), Some(a)) if t == JWT_BEARER_ASSERTION => Some(a.clone()),
        (Some(_), Some(_)) => return Err("unsupported client_assertion_type"),
        _ => return Err("client_assertion and client_assertion_type go together"),
    };
    match (basic, assertion, &form.client_id, &form.client_secret) {
        (Some(_), Some(_), _, _)
        | (Some(_), None, Some(_), _)
        | (Some(_), None, _, Some(_))
        | (None, Some(_), _, Some(_)) => Err("use one client authentication method"),
        (Some(b), None, None, None) => {
            let raw = base64::engine::general_purpose::STANDARD.decode(b).map_err(|_| "malformed Basic credentials")?;
            let s = String::from_utf8(raw).map_err(|_| "malformed Basic credentials")?;
            let (id, secret) = s.split_once(':').ok_or("malformed Basic credentials")?;
            let dec = |x: &str| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={x}"))
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(|p| p.1)
            };
            Ok(Presented::Secret {
                id: dec(id).ok_or("malformed Basic credentials")?,
                secret: dec(secret).ok_or("malformed Basic credentials")?,
                basic: true,
            })
        }
        (None, Some(assertion), id, None) => Ok(Presented::Assertion { id: id.clone(), assertion }),
        (None, None, Some(id), Some(secret)) => {
            Ok(Presented::Secret { id: id.clone(), secret: secret.clone(), basic: false })
        }
        (None, None, Some(id), None) => Ok(Presented::Public { id: id.clone() }),
        _ => Err("client authentication required"),
    }
}

/// Checks a client secret against the current one, or the previous one within its grace period.
fn secret_matches(c: &ClientRecord, secret: &str, now: Timestamp) -> bool {
    let given = secret_hash(secret);
    let current = bool::from(given.as_bytes().ct_eq(c.secret_hash.as_bytes()));
    let previous = match (&c.previous_secret_hash, c.previous_valid_until) {
        (Some(h), Some(until)) if until > now => bool::from(given.as_bytes().ct_eq(h.as_bytes())),
        _ => false,
    };
    current | previous
}

/// The `sub` of an assertion, read before its signature is checked (only to find the key).
fn unverified_subject(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v.get("sub")?.as_str().map(String::from)
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    jti: String,
}

/// RFC 7523 §3: signed by a key registered for the client, `iss` = `sub` = client id, `aud` the
/// token endpoint, a bounded lifetime, and a `jti` never seen before (replay cache until `exp`).
async fn check_assertion(s: &AppState, c: &ClientRecord, assertion: &str) -> Result<(), &'static str> {
    let jwks = c.metadata.jwks.as_ref().ok_or("client has no registered keys")?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|_| "registered keys unusable")?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| "malformed assertion")?;
    let jwk = match &header.kid {
        Some(kid) => set.find(kid).ok_or("unknown kid")?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return Err("assertion without kid"),
    };
    let alg = keys::jwk_algorithm(jwk, header.alg).ok_or("algorithm does not fit the key")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| "registered key unusable")?;
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.set_audience(&[format!("{}/oauth2/token", s.issuer)]);
    v.set_issuer(&[c.client_id.as_str()]);
    v.sub = Some(c.client_id.clone());
    v.leeway = CLOCK_SKEW_SECS;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v).map_err(|_| "invalid assertion")?.claims;
    debug_assert!(claims.iss == c.client_id && claims.sub == c.client_id);
    let now = Timestamp::now().0 / 1000;
    let max = ASSERTION_MAX_LIFETIME.as_secs() as i64;
    if claims.exp - now > max + CLOCK_SKEW_SECS as i64 || claims.iat.is_some_and(|iat| claims.exp - iat > max) {
        return Err("assertion lifetime too long");
    }
    if claims.jti.is_empty() || claims.jti.len() > 200 {
        return Err("assertion without usable jti");
    }
    let until = Timestamp((claims.exp + CLOCK_SKEW_SECS as i64) * 1000);
    let fresh = s
        .store
        .record_insert("assertion_jti", &format!("{}:{}", c.client_id, claims.jti), "{}", Some(until))
        .await
        .map_err(|_| "store error")?;
    if !fresh {
        return Err("assertion replayed (jti seen before)");
    }
    Ok(())
}

async fn authenticate_client(
    s: &AppState,
    headers: &HeaderMap,
    form: &TokenForm,
    source: &str,
) -> Result<ClientRecord, OAuthError> {
    let how = presented(headers, form).map_err(|why| {
        if why.starts_with("use one") || why.contains("assertion") {
            OAuthError::invalid_request(why)
        } else {
            OAuthError { description: why.into(), ..OAuthError::invalid_client(true) }
        }
    })?;
    let (id, basic) = match &how {
        Presented::Secret { id, basic, .. } => (id.clone(), *basic),
        Presented::Public { id } => (id.clone(), false),
        Presented::Assertion { id, assertion } => match id.clone().or_else(|| unverified_subject(assertion)) {
            Some(id) => (id, false),
            None => return Err(OAuthError::invalid_client(false)),
        },
    };
    let client = s.store.get_client(&id).await.map_err(OAuthError::unavailable)?;
    let now = Timestamp::now();
    let why = match (client, how) {
        (None, _) => "unknown client",
        // The portal's client exists only inside the orchestrator.
        (Some(c), _) if c.client_id == super::PORTAL_CLIENT => "the portal's client is not usable from outside",
        (Some(c), _) if c.disabled => "client disabled",
        (Some(c), Presented::Secret { secret, .. }) if !c.metadata.public && secret_matches(&c, &secret, now) => {
            return Ok(c);
        }
        (Some(_), Presented::Secret { .. }) => "wrong secret",
        (Some(c), Presented::Public { .. }) if c.metadata.public => return Ok(c),
        (Some(_), Presented::Public { .. }) => "confidential client without credentials",
        (Some(c), Presented::Assertion { assertion, .. }) => match check_assertion(s, &c, &assertion).await {
            Ok(()) => return Ok(c),
            Err("store error") => return Err(OAuthError::unavailable("client assertion replay cache")),
            Err(why) => why,
        },
    };
    tracing::warn!(client = %id, reason = why, "client authentication failed");
    let detail = serde_json::json!({"reason": why, "endpoint": "token"});
    // Refused either way; a refusal that cannot be recorded is logged by the sink.
    let _ =
        s.audit_sink.record(super::event("anonymous".into(), "token.refused", &id, "failure", source, detail)).await;
    Err(OAuthError::invalid_client(basic))
}
