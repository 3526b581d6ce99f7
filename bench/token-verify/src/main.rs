//! Access-token verification speed on one core, with the orchestrator's own codec
//! (`drover_server::oauth::jwt`: aws-lc-rs keys parsed once, algorithm pinned to the key) and
//! the claim checks the API makes (typed claims, iss, aud, exp with skew). One line per algorithm.

use std::time::Instant;

use drover_server::oauth::Claims;
use drover_server::oauth::jwt::{Alg, SigningKey, generate, header};

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = Claims {
        iss: "https://127.0.0.1:8443".into(),
        sub: "ci".into(),
        aud: "drover-api".into(),
        exp: now + 600,
        iat: now,
        iat_ms: now * 1000,
        jti: "0123456789abcdef0123456789abcdef".into(),
        client_id: "ci".into(),
        scope: "api".into(),
        roles: vec!["api".into()],
        act: None,
        sid: None,
    };
    for alg in Alg::ALL {
        let key = SigningKey::from_pkcs8(&generate(alg).expect("key"), Some(alg)).expect("key");
        let verifier = key.verifier().expect("verifier");
        let token = key.sign(&claims).expect("sign");
        let check = |t: &str| {
            let h = header(t).expect("header");
            assert_eq!(h.kid.as_deref(), Some(key.kid.as_str()));
            let c: Claims = verifier.verify(t).expect("verify");
            assert!(c.iss == claims.iss && c.aud == "drover-api" && c.exp + 30 > now);
        };
        for _ in 0..1000 {
            check(&token);
        }
        let t = Instant::now();
        for _ in 0..n {
            check(&token);
        }
        let s = t.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let m = (n / 10).max(1);
        for _ in 0..m {
            std::hint::black_box(key.sign(&claims).expect("sign"));
        }
        let s2 = t2.elapsed().as_secs_f64();
        println!(
            "token-verify: {alg:<5} {n} access tokens verified on one thread in {s:.2} s: {:.0} verifications/s; signing {:.0}/s",
            n as f64 / s,
            m as f64 / s2
        );
    }
}
