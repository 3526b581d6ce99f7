//! Access-token verification speed on one core: ES256 JWTs shaped like the orchestrator's
//! (RFC 9068 claims), verified with the same library and settings (algorithm pinned to the key,
//! iss/aud/exp required, 30 s leeway). Prints verifications per second.

use std::time::Instant;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).expect("key");
    let public = pair.public_key().as_ref();
    let decoding =
        DecodingKey::from_ec_components(&B64.encode(&public[1..33]), &B64.encode(&public[33..65])).expect("jwk");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = serde_json::json!({
        "iss": "https://127.0.0.1:8443", "sub": "ci", "aud": "drover-api", "exp": now + 600, "iat": now,
        "iat_ms": now * 1000, "jti": "0123456789abcdef0123456789abcdef", "client_id": "ci", "scope": "api", "roles": ["api"],
    });
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("bench".into());
    h.typ = Some("at+jwt".into());
    let token = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(doc.as_ref())).expect("sign");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&["https://127.0.0.1:8443"]);
    v.set_audience(&["drover-api"]);
    v.leeway = 30;
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    for _ in 0..1000 {
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v).expect("verify");
    }
    let t = Instant::now();
    for _ in 0..n {
        let h = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(h.kid.as_deref(), Some("bench"));
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v).expect("verify");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "token-verify: {n} ES256 access tokens verified on one thread in {s:.2} s: {:.0} verifications/s",
        n as f64 / s
    );
}
