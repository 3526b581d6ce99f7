//! The OAuth 2.0 authorization server: client credentials, JWT access tokens, revocation,
//! secret rotation, and hostile tokens, on both backends.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use drover_client::{Client, Credentials};
use drover_testkit::{Backend, TestServer};
use serde_json::{Value, json};

drover_testkit::on_both_backends!(
    client_credentials_tokens_and_revocation,
    hostile_tokens_are_refused,
    keys_rotate_and_import_without_failing_a_request
);

fn http(s: &TestServer) -> reqwest::Client {
    reqwest::Client::builder().use_preconfigured_tls(drover_tls::client_config(&s.ca).unwrap()).build().unwrap()
}

async fn token_request(
    s: &TestServer,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut rb = http(s).post(format!("{}/oauth2/token", s.url)).form(form);
    if let Some((u, p)) = basic {
        rb = rb.basic_auth(u, Some(p));
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    (status, r.json().await.unwrap(), challenge)
}

async fn token(s: &TestServer, id: &str, secret: &str) -> String {
    let (st, v, _) = token_request(s, Some((id, secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(st, 200, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

fn bearer(s: &TestServer, t: &str) -> Client {
    Client::new(&s.url, Some(&s.ca), Credentials::Bearer(t.to_string())).unwrap()
}

async fn client_credentials_tokens_and_revocation(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    // Metadata and keys.
    let meta: Value =
        http(&s).get(format!("{}/.well-known/oauth-authorization-server", s.url)).send().await?.json().await?;
    assert_eq!(meta["issuer"], s.url);
    assert_eq!(meta["token_endpoint"], format!("{}/oauth2/token", s.url));
    let oidc: Value = http(&s).get(format!("{}/.well-known/openid-configuration", s.url)).send().await?.json().await?;
    assert_eq!(oidc, meta);
    let jwks: Value = http(&s).get(meta["jwks_uri"].as_str().unwrap()).send().await?.json().await?;
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "no private part in the JWKS");

    let created = admin.create_client("ci", &["api".to_string()]).await?;
    assert!(
        created.client_secret.len() == 64
            && created.client_secret.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(admin.create_client("ci", &["api".to_string()]).await.unwrap_err().status(), Some(409));

    // client_secret_basic and client_secret_post both work; the token is an RFC 9068 JWT.
    let t = token(&s, "ci", &created.client_secret).await;
    let parts: Vec<&str> = t.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0])?)?;
    assert_eq!(
        (header["alg"].as_str(), header["typ"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("at+jwt"), key["kid"].as_str())
    );
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1])?)?;
    for c in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"] {
        assert!(claims.get(c).is_some(), "claim {c} missing: {claims}");
    }
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    let (st, v, _) = token_request(
        &s,
        None,
        &[("grant_type", "client_credentials"), ("client_id", "ci"), ("client_secret", &created.client_secret)],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");

    // The token works on the API with the client's roles, and actions name the client.
    let ci = bearer(&s, &t);
    ci.pipelines().await?;
    assert_eq!(ci.operators().await.unwrap_err().status(), Some(403));
    admin.apply_yaml("application: setup\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: wait, duration: 1ms}]\n").await?;
    ci.apply_yaml(
        "application: tok\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: wait, duration: 10ms}]\n",
    )
    .await?;
    let d = ci.deploy("tok", "1").await?;
    assert_eq!(d.created_by, "client:ci");

    // RFC 6749 errors.
    let (st, v, ch) = token_request(&s, Some(("ci", "0000")), &[("grant_type", "client_credentials")]).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(ch.unwrap().starts_with("Basic"));
    let (st, v, _) = token_request(&s, Some(("nobody", "x")), &[("grant_type", "client_credentials")]).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")));
    let (st, v, _) = token_request(&s, Some(("ci", &created.client_secret)), &[("grant_type", "password")]).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (st, v, _) = token_request(&s, Some(("ci", &created.client_secret)), &[]).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")));
    let (st, v, _) = token_request(
        &s,
        Some(("ci", &created.client_secret)),
        &[("grant_type", "client_credentials"), ("scope", "release-admin")],
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_scope")));
    let (st, v, _) = token_request(
        &s,
        Some(("ci", &created.client_secret)),
        &[("grant_type", "client_credentials"), ("client_id", "ci")],
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")), "one authentication method only");
    // Tokens issued and refused are in the audit log (written in batches: wait for them).
    let mut found = (false, false);
    for _ in 0..200 {
        let all = admin.audit(None, None, None, Some(500)).await?;
        let issued = all.iter().any(|a| {
            a.entry.action == "token.issued"
                && a.entry.principal == "client:ci"
                && a.entry.source.starts_with("127.0.0.1:")
        });
        let refused = all.iter().any(|a| {
            a.entry.action == "token.refused" && a.entry.target == "ci" && a.entry.detail["reason"] == "wrong secret"
        });
        assert!(!serde_json::to_string(&all)?.contains(&created.client_secret), "no secret in the audit log");
        found = (issued, refused);
        if issued && refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(found, (true, true));

    // RFC 7009: a client revokes its own token; another client cannot.
    let other = admin.create_client("other", &["viewer".to_string()]).await?;
    let t2 = token(&s, "ci", &created.client_secret).await;
    let r = http(&s)
        .post(format!("{}/oauth2/revoke", s.url))
        .basic_auth("other", Some(&other.client_secret))
        .form(&[("token", t2.as_str())])
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    bearer(&s, &t2).pipelines().await?;
    let r = http(&s)
        .post(format!("{}/oauth2/revoke", s.url))
        .basic_auth("ci", Some(&created.client_secret))
        .form(&[("token", t2.as_str())])
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let e = bearer(&s, &t2).pipelines().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    ci.pipelines().await?;

    // Revoke all of a client's tokens in one call: at once, and new tokens work.
    admin.revoke_client_tokens("ci").await?;
    assert_eq!(ci.pipelines().await.unwrap_err().status(), Some(401));
    let t3 = token(&s, "ci", &created.client_secret).await;
    bearer(&s, &t3).pipelines().await?;

    // Secret rotation with a grace period: both secrets work until it ends.
    let rotated = admin.regenerate_client_secret("ci", Duration::from_secs(3600)).await?;
    assert!(rotated.previous_secret_valid_until.is_some());
    token(&s, "ci", &created.client_secret).await;
    token(&s, "ci", &rotated.client_secret).await;
    let again = admin.regenerate_client_secret("ci", Duration::ZERO).await?;
    for old in [&created.client_secret, &rotated.client_secret] {
        let (st, _, _) = token_request(&s, Some(("ci", old)), &[("grant_type", "client_credentials")]).await;
        assert_eq!(st, 401);
    }
    let t4 = token(&s, "ci", &again.client_secret).await;

    // A disabled client gets no token and its tokens stop working.
    admin.update_client("ci", &drover_types::ClientUpdate { disabled: Some(true), ..Default::default() }).await?;
    assert_eq!(bearer(&s, &t4).pipelines().await.unwrap_err().status(), Some(401));
    let (st, _, _) =
        token_request(&s, Some(("ci", &again.client_secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(st, 401);
    let listed = admin.clients().await?;
    assert!(listed.iter().any(|c| c.client_id == "ci" && c.disabled));
    assert!(!serde_json::to_string(&listed)?.contains(&again.client_secret));
    s.shutdown().await;
    Ok(())
}

fn sign_raw(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()), B64.encode(sig))
}

async fn hostile_tokens_are_refused(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    let created = admin.create_client("ci", &["api".to_string()]).await?;
    let good = token(&s, "ci", &created.client_secret).await;
    let parts: Vec<&str> = good.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0])?)?;
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1])?)?;
    let state = s.running.as_ref().unwrap().state.clone();
    let now = drover_types::Timestamp::now().0 / 1000;
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let jwks: Value = reqwest::Client::builder()
        .use_preconfigured_tls(drover_tls::client_config(&s.ca).unwrap())
        .build()?
        .get(format!("{}/oauth2/jwks", s.url))
        .send()
        .await?
        .json()
        .await?;
    let x = B64.decode(jwks["keys"][0]["x"].as_str().unwrap())?;
    let y = B64.decode(jwks["keys"][0]["y"].as_str().unwrap())?;
    let mut public = vec![4u8];
    public.extend(x);
    public.extend(y);
    let hs256_with_public_key = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = header["kid"].as_str().map(String::from);
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(&public))?
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", sign_raw(&json!({"alg": "none", "kid": header["kid"]}), &claims, b"")),
        ("HS256 signed with the public key", hs256_with_public_key),
        (
            "unknown kid",
            sign_raw(&json!({"alg": "ES256", "kid": "nope", "typ": "at+jwt"}), &claims, &B64.decode(parts[2])?),
        ),
        ("no kid", sign_raw(&json!({"alg": "ES256", "typ": "at+jwt"}), &claims, &B64.decode(parts[2])?)),
        (
            "header changed after signing (typ JWT)",
            sign_raw(&json!({"alg": "ES256", "typ": "JWT", "kid": header["kid"]}), &claims, &B64.decode(parts[2])?),
        ),
        (
            "payload changed after signing",
            format!("{}.{}.{}", parts[0], B64.encode(with("roles", json!(["release-admin"])).to_string()), parts[2]),
        ),
        ("expired", state.keys.sign(&with("exp", json!(now - 120)))?),
        ("other audience", state.keys.sign(&with("aud", json!("someone-else")))?),
        ("other issuer", state.keys.sign(&with("iss", json!("https://evil.example")))?),
        ("exp as a string", state.keys.sign(&with("exp", json!((now + 600).to_string())))?),
        ("iss as a number", state.keys.sign(&with("iss", json!(42)))?),
        (
            "no exp",
            state.keys.sign(&{
                let mut c = claims.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            })?,
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, t) in cases {
        let e = bearer(&s, &t).pipelines().await.unwrap_err();
        assert_eq!(e.status(), Some(401), "{what} must be refused");
    }
    // Within the allowed clock skew, a just-expired token still works; the real one works.
    bearer(&s, &state.keys.sign(&with("exp", json!(now - 5)))?).pipelines().await?;
    bearer(&s, &good).pipelines().await?;
    // Refusals are audited, without the token.
    let refused = admin.audit(None, Some("auth.failed"), None, Some(100)).await?;
    assert!(refused.len() >= 12);
    assert!(!serde_json::to_string(&refused)?.contains(parts[2]));
    s.shutdown().await;
    Ok(())
}

fn kid_of(t: &str) -> String {
    let h: Value = serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_string()
}

fn keytool_key(dir: &std::path::Path, name: &str, alg: &[&str]) -> drover_keystore::Keystore {
    let file = dir.join(name);
    let out = std::process::Command::new("keytool")
        .args([
            "-genkeypair",
            "-alias",
            "jwt",
            "-dname",
            "CN=Imported",
            "-validity",
            "30",
            "-storepass",
            "changeit",
            "-keypass",
            "changeit",
        ])
        .args(alg)
        .arg("-keystore")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drover_keystore::open(&std::fs::read(&file).unwrap(), Some("changeit")).unwrap()
}

async fn keys_rotate_and_import_without_failing_a_request(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    let created = admin.create_client("ci", &["viewer".to_string()]).await?;
    let keys = admin.keys().await?;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].active && keys[0].in_jwks);
    let k1 = keys[0].kid.clone();
    let t1 = token(&s, "ci", &created.client_secret).await;
    assert_eq!(kid_of(&t1), k1);

    // Rotation under load: a stream of calls with old and new tokens sees no failure.
    let load = {
        let (url, ca, secret, t1) = (s.url.clone(), s.ca.clone(), created.client_secret.clone(), t1.clone());
        tokio::spawn(async move {
            let anon = Client::new(&url, Some(&ca), Credentials::None).unwrap();
            let mut n = 0;
            for i in 0..150 {
                let t = if i % 2 == 0 {
                    t1.clone()
                } else {
                    anon.client_credentials_token("ci", &secret, None).await.unwrap()["access_token"]
                        .as_str()
                        .unwrap()
                        .to_string()
                };
                Client::new(&url, Some(&ca), Credentials::Bearer(t)).unwrap().pipelines().await.unwrap();
                n += 1;
            }
            n
        })
    };
    let r1 = admin.rotate_key().await?;
    let r2 = admin.rotate_key().await?;
    assert_eq!(load.await?, 150, "no request failed during rotation");
    let k3 = r2["kid"].as_str().unwrap().to_string();
    assert_ne!(r1["kid"], r2["kid"]);
    let keys = admin.keys().await?;
    assert_eq!(keys.len(), 3);
    assert_eq!(keys.iter().filter(|k| k.active).count(), 1);
    assert!(keys.iter().all(|k| k.in_jwks), "retired keys stay published while their tokens live");
    assert!(keys.iter().find(|k| k.kid == k1).unwrap().retired_at.is_some());
    bearer(&s, &t1).pipelines().await?;
    assert_eq!(kid_of(&token(&s, "ci", &created.client_secret).await), k3);

    // Import from a keytool keystore by alias, and activate it.
    let dir = tempfile::tempdir()?;
    let ks = keytool_key(dir.path(), "signer.p12", &["-keyalg", "EC", "-groupname", "secp256r1"]);
    let (key, certs) = ks.signing_key("jwt")?;
    // With the certificates of another key first and its own second: the orchestrator keeps
    // the one that is this key's, and lists its subject and expiry with the key.
    let other = keytool_key(dir.path(), "other.p12", &["-keyalg", "EC", "-groupname", "secp256r1"]);
    let mut other_cert = other.signing_key("jwt")?.1[0].der.clone();
    let sent: Vec<&[u8]> = vec![&other_cert, &certs[0].der];
    let imported = admin.import_key_with_certificates(key.pkcs8_der(), &sent, None, true).await?;
    assert_eq!(imported["certificate"]["subject"], "CN=Imported", "{imported}");
    let k4 = imported["kid"].as_str().unwrap().to_string();
    let listed = admin.keys().await?.into_iter().find(|k| k.kid == k4).unwrap();
    let cert = listed.certificate.expect("the key's certificate is listed");
    assert_eq!(cert.subject, "CN=Imported");
    assert_eq!(cert.not_after.0, certs[0].not_after * 1000);
    assert!(admin.keys().await?.iter().filter(|k| k.kid != k4).all(|k| k.certificate.is_none()));
    // A certificate that is not the key's is not kept; one that is not a certificate, or too
    // many, are refused before anything is imported.
    let other_key = other.signing_key("jwt")?.0.pkcs8_der().to_vec();
    let alone = admin.import_key_with_certificates(&other_key, &[&certs[0].der], None, false).await?;
    assert!(alone["certificate"].is_null(), "{alone}");
    let third = keytool_key(dir.path(), "third.p12", &["-keyalg", "EC", "-groupname", "secp256r1"]);
    let third_key = third.signing_key("jwt")?.0.pkcs8_der().to_vec();
    other_cert.truncate(40);
    let e = admin.import_key_with_certificates(&third_key, &[&other_cert], None, false).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let many: Vec<&[u8]> = vec![&certs[0].der; 11];
    let e = admin.import_key_with_certificates(&third_key, &many, None, false).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert_eq!(admin.keys().await?.len(), 5, "the refused imports left nothing");
    let t4 = token(&s, "ci", &created.client_secret).await;
    assert_eq!(kid_of(&t4), k4);
    bearer(&s, &t4).pipelines().await?;
    assert_eq!(admin.import_key(key.pkcs8_der(), None, false).await.unwrap_err().status(), Some(409));
    // An RSA key from keytool, as PS256 (Java interop); then EdDSA and RS256 by rotation. Each
    // token verifies with an independent JWT library against the published JWKS.
    let rsa = keytool_key(dir.path(), "rsa.p12", &["-keyalg", "RSA", "-keysize", "2048"]);
    let e = admin.import_key(rsa.signing_key("jwt")?.0.pkcs8_der(), Some("ES256"), false).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "an RSA key cannot sign ES256: {e}");
    let ps = admin.import_key(rsa.signing_key("jwt")?.0.pkcs8_der(), Some("PS256"), true).await?;
    assert_eq!(ps["alg"], "PS256");
    for (alg, expect) in [(None, "PS256"), (Some("EdDSA"), "EdDSA"), (Some("RS256"), "RS256"), (Some("ES256"), "ES256")]
    {
        if let Some(a) = alg {
            assert_eq!(admin.rotate_key_to(Some(a)).await?["alg"], a);
        }
        let t = token(&s, "ci", &created.client_secret).await;
        let h = jsonwebtoken::decode_header(&t)?;
        assert_eq!(format!("{:?}", h.alg), expect);
        bearer(&s, &t).pipelines().await?;
        let jwks: jsonwebtoken::jwk::JwkSet =
            http(&s).get(format!("{}/oauth2/jwks", s.url)).send().await?.json().await?;
        let jwk = jwks.find(h.kid.as_deref().unwrap()).expect("published");
        let mut v = jsonwebtoken::Validation::new(h.alg);
        v.set_audience(&["drover-api"]);
        let claims = jsonwebtoken::decode::<Value>(&t, &jsonwebtoken::DecodingKey::from_jwk(jwk)?, &v)?.claims;
        assert_eq!(claims["client_id"], "ci");
    }
    let t4 = token(&s, "ci", &created.client_secret).await;
    // The keys in the store are sealed: no PKCS#8 in clear.
    let state = s.running.as_ref().unwrap().state.clone();
    for k in state.store.list_signing_keys().await? {
        assert!(k.private_key.starts_with("v1."), "sealed");
        // (Not "MIG…", the base64 of a DER prefix: random ciphertext contains it now and then.)
        assert!(!k.private_key.contains("-----BEGIN") && !k.private_key.contains("PRIVATE KEY"), "no PEM in clear");
    }

    // RFC 7662 introspection, for authenticated clients holding token.introspect only.
    let rs = admin.create_client("resource-server", &["api-sysadmin".to_string()]).await?;
    let intro = |tok: String, auth: Option<(String, String)>| {
        let (url, c) = (s.url.clone(), http(&s));
        async move {
            let mut rb = c.post(format!("{url}/oauth2/introspect")).form(&[("token", tok.as_str())]);
            if let Some((u, p)) = auth {
                rb = rb.basic_auth(u, Some(p));
            }
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, _) = intro(t4.clone(), Some(("ci".to_string(), created.client_secret.clone()))).await;
    assert_eq!(st, 403, "a viewer client may not introspect");
    let auth = Some(("resource-server".to_string(), rs.client_secret.clone()));
    let (st, v) = intro(t4.clone(), auth.clone()).await;
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)));
    assert_eq!(v["client_id"], "ci");
    let (st, _) = intro(t4.clone(), None).await;
    assert_eq!(st, 401);
    admin.revoke_client_tokens("ci").await?;
    let (_, v) = intro(t4, auth.clone()).await;
    assert_eq!(v, json!({"active": false}));
    let (_, v) = intro("garbage".into(), auth).await;
    assert_eq!(v, json!({"active": false}));
    s.shutdown().await;
    Ok(())
}
