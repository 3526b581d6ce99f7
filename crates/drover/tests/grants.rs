//! Operator sign-in flows driven by an independent OAuth 2.0 client library (the `oauth2`
//! crate) and a hand-driven "browser": authorization code + PKCE, refresh-token rotation and
//! reuse detection, the device grant, private_key_jwt, operator sessions, and custom roles with
//! access groups scoped to applications. Both backends.

use std::collections::HashMap;

use drover_client::{Client, Credentials};
use drover_testkit::{Backend, TestServer};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, DeviceAuthorizationUrl, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    TokenResponse, TokenUrl,
};
use serde_json::{Value, json};

drover_testkit::on_both_backends!(
    authorization_code_pkce_and_refresh_rotation,
    device_grant_and_operator_sessions,
    private_key_jwt_client_authentication,
    custom_roles_and_scoped_access_groups
);

fn bearer(s: &TestServer, t: &str) -> Client {
    Client::new(&s.url, Some(&s.ca), Credentials::Bearer(t.to_string())).unwrap()
}

/// The CSRF cookie a page set, and its token (the hidden `csrf_token` field carries the same).
fn csrf_of(page: &reqwest::Response) -> (String, String) {
    let set = page.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.starts_with("__Host-drover-csrf=")
            && set.contains("Secure")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let token = cookie.split_once('=').unwrap().1.to_string();
    (cookie, token)
}

/// Fills in the login page as a browser would: GET the authorization URL, POST the form with
/// its hidden fields and the CSRF cookie. Returns the status and the `Location` of the answer.
async fn sign_in(s: &TestServer, authorize_url: &str, user: &str, password: &str) -> (u16, Option<String>) {
    let c = s.http();
    let page = c.get(authorize_url).send().await.unwrap();
    let status = page.status().as_u16();
    if status != 200 {
        return (status, page.headers().get("location").map(|v| v.to_str().unwrap().to_string()));
    }
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let (cookie, token) = csrf_of(&page);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\" action=\"/oauth2/authorize\">"), "{html}");
    assert!(html.contains(&format!("name=\"csrf_token\" value=\"{token}\"")), "{html}");
    let query = authorize_url.split_once('?').unwrap().1;
    let mut form: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    form.push(("username".into(), user.into()));
    form.push(("password".into(), password.into()));
    form.push(("csrf_token".into(), token));
    let r = c.post(format!("{}/oauth2/authorize", s.url)).header("cookie", cookie).form(&form).send().await.unwrap();
    (r.status().as_u16(), r.headers().get("location").map(|v| v.to_str().unwrap().to_string()))
}

fn query_of(location: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str(location.split_once('?').map(|x| x.1).unwrap_or("")).unwrap()
}

fn grant_error<E: std::error::Error + 'static>(
    e: RequestTokenError<E, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
) -> BasicErrorResponseType {
    match e {
        RequestTokenError::ServerResponse(r) => r.error().clone(),
        other => panic!("expected an OAuth error response, got {other:?}"),
    }
}

async fn authorization_code_pkce_and_refresh_rotation(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    let pw = s.add_operator("alice", &["deployer", "viewer"]).await;
    let redirect = "https://portal.example.com/oauth/callback";
    let reg = admin
        .register_client(&drover_types::NewClient {
            name: "portal".into(),
            roles: vec!["viewer".into()],
            redirect_uris: vec![redirect.into()],
            ..Default::default()
        })
        .await?;
    let secret = reg.client_secret.clone();
    assert_eq!(secret.len(), 64);
    let oauth = BasicClient::new(ClientId::new("portal".into()))
        .set_client_secret(ClientSecret::new(secret.clone()))
        .set_auth_uri(AuthUrl::new(format!("{}/oauth2/authorize", s.url))?)
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", s.url))?)
        .set_redirect_uri(RedirectUrl::new(redirect.into())?);
    let h = s.http();

    // The whole flow: sign in, back to the client with a code, exchange it with the verifier.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = oauth
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("deployer".into()))
        .set_pkce_challenge(challenge)
        .url();
    // A wrong password: the page again, 401, no redirect.
    let (st, loc) = sign_in(&s, url.as_str(), "alice", "not-her-password").await;
    assert_eq!((st, loc), (401, None));
    let (st, loc) = sign_in(&s, url.as_str(), "alice", &pw).await;
    assert_eq!(st, 303);
    let loc = loc.unwrap();
    assert!(loc.starts_with(&format!("{redirect}?")), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["state"], *csrf.secret());
    assert_eq!(q["iss"], s.url, "RFC 9207 issuer in the response");
    let code = q["code"].clone();
    let tok =
        oauth.exchange_code(AuthorizationCode::new(code.clone())).set_pkce_verifier(verifier).request_async(&h).await?;
    assert_eq!(tok.scopes().unwrap()[0].as_str(), "deployer");
    let access = tok.access_token().secret().clone();
    let refresh1 = tok.refresh_token().expect("a refresh token").secret().clone();
    // The token acts for alice through the portal: `sub` is the client, `act` the operator.
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&access)?.claims;
    assert_eq!((claims["sub"].as_str(), claims["act"]["sub"].as_str()), (Some("portal"), Some("alice")));
    let alice = bearer(&s, &access);
    alice.pipelines().await?;
    // deployer has no operator.manage.
    assert_eq!(alice.operators().await.unwrap_err().status(), Some(403));
    let audit = admin.audit(None, Some("permission.denied"), None, None).await?;
    assert!(audit.iter().any(|e| e.entry.principal == "operator:alice via client:portal"), "{audit:?}");
    // The code works once.
    let (_, v2) = PkceCodeChallenge::new_random_sha256();
    let e =
        oauth.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(v2).request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);

    // PKCE verifier mismatch.
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = oauth.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
    let (_, loc) = sign_in(&s, url.as_str(), "alice", &pw).await;
    let code = query_of(&loc.unwrap())["code"].clone();
    let wrong = PkceCodeVerifier::new("x".repeat(64));
    let e =
        oauth.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(wrong).request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);
    // No PKCE at all: refused back at the redirect URI.
    let (url, _) = oauth.authorize_url(CsrfToken::new_random).url();
    let r = h.get(url.as_str()).send().await?;
    assert_eq!(r.status().as_u16(), 303);
    let q = query_of(r.headers()["location"].to_str()?);
    assert_eq!(q["error"], "invalid_request");
    // A redirect URI one character off: an error page, and no redirect anywhere.
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let off = oauth.clone().set_redirect_uri(RedirectUrl::new("https://portal.example.com/oauth/callbacc".into())?);
    let (url, _) = off.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
    let r = h.get(url.as_str()).send().await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().get("location").is_none());
    // ... and at the token endpoint, a redirect_uri other than the authorization request's.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = oauth.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
    let (_, loc) = sign_in(&s, url.as_str(), "alice", &pw).await;
    let code = query_of(&loc.unwrap())["code"].clone();
    let e = off
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&h)
        .await
        .unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);
    // Scope beyond the operator's roles.
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = oauth
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("release-admin".into()))
        .set_pkce_challenge(challenge)
        .url();
    let (_, loc) = sign_in(&s, url.as_str(), "alice", &pw).await;
    assert_eq!(query_of(&loc.unwrap())["error"], "invalid_scope");

    // Refresh: rotated on every use.
    let t2 = oauth.exchange_refresh_token(&RefreshToken::new(refresh1.clone())).request_async(&h).await?;
    let refresh2 = t2.refresh_token().unwrap().secret().clone();
    assert_ne!(refresh1, refresh2);
    let access2 = t2.access_token().secret().clone();
    bearer(&s, &access2).pipelines().await?;
    // Another client cannot use it.
    let other = admin.create_client("other", &["viewer".into()]).await?;
    let other_oauth = BasicClient::new(ClientId::new("other".into()))
        .set_client_secret(ClientSecret::new(other.client_secret))
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", s.url))?);
    let e =
        other_oauth.exchange_refresh_token(&RefreshToken::new(refresh2.clone())).request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);
    // Reuse of a spent refresh token revokes the whole family: the newest refresh token and
    // the access tokens of the session stop working too.
    let e = oauth.exchange_refresh_token(&RefreshToken::new(refresh1)).request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);
    let e = oauth.exchange_refresh_token(&RefreshToken::new(refresh2)).request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);
    assert_eq!(bearer(&s, &access2).pipelines().await.unwrap_err().status(), Some(401));
    assert_eq!(bearer(&s, &access).pipelines().await.unwrap_err().status(), Some(401));
    let audit = admin.audit(None, Some("token.refresh_reused"), None, None).await?;
    assert_eq!(audit.len(), 1);

    // RFC 7009 on a refresh token ends its session.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = oauth.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
    let (_, loc) = sign_in(&s, url.as_str(), "alice", &pw).await;
    let code = query_of(&loc.unwrap())["code"].clone();
    let tok = oauth.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(verifier).request_async(&h).await?;
    let r = h
        .post(format!("{}/oauth2/revoke", s.url))
        .basic_auth("portal", Some(&secret))
        .form(&[("token", tok.refresh_token().unwrap().secret().as_str()), ("token_type_hint", "refresh_token")])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(bearer(&s, tok.access_token().secret()).pipelines().await.unwrap_err().status(), Some(401));
    let e = oauth.exchange_refresh_token(tok.refresh_token().unwrap()).request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);

    // The CLI's public client: no secret, loopback redirect on any port; client_credentials refused.
    let cli = BasicClient::new(ClientId::new("drover-cli".into()))
        .set_auth_uri(AuthUrl::new(format!("{}/oauth2/authorize", s.url))?)
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", s.url))?)
        .set_auth_type(oauth2::AuthType::RequestBody)
        .set_redirect_uri(RedirectUrl::new("http://127.0.0.1:53117/callback".into())?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = cli.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
    let (_, loc) = sign_in(&s, url.as_str(), "alice", &pw).await;
    let loc = loc.unwrap();
    assert!(loc.starts_with("http://127.0.0.1:53117/callback?"), "{loc}");
    let tok = cli
        .exchange_code(AuthorizationCode::new(query_of(&loc)["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&h)
        .await?;
    bearer(&s, tok.access_token().secret()).pipelines().await?;
    let e = cli.exchange_client_credentials().request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::UnauthorizedClient);
    s.shutdown().await;
    Ok(())
}

async fn device_grant_and_operator_sessions(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    let pw = s.add_operator("bob", &["approver"]).await;
    let h = s.http();
    let cli = BasicClient::new(ClientId::new("drover-cli".into()))
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", s.url))?)
        .set_auth_type(oauth2::AuthType::RequestBody)
        .set_device_authorization_url(DeviceAuthorizationUrl::new(format!("{}/oauth2/device_authorization", s.url))?);
    let details: StandardDeviceAuthorizationResponse = cli.exchange_device_code().request_async(&h).await?;
    assert_eq!(details.verification_uri().as_str(), format!("{}/device", s.url));
    let user_code = details.user_code().secret().clone();
    assert_eq!(user_code.len(), 9, "XXXX-XXXX");
    // Polling before approval: pending, and too fast: slow_down.
    let poll = |code: String| {
        let (h, url) = (h.clone(), s.url.clone());
        async move {
            let r = h
                .post(format!("{url}/oauth2/token"))
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", code.as_str()),
                    ("client_id", "drover-cli"),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let dc = details.device_code().secret().clone();
    let (st, v) = poll(dc.clone()).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("authorization_pending")));
    let (st, v) = poll(dc.clone()).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("slow_down")));
    // The operator approves on the device page (wrong password first, and a wrong code).
    let page = h.get(format!("{}/device?user_code={user_code}", s.url)).send().await?;
    let (cookie, token) = csrf_of(&page);
    let page = page.text().await?;
    assert!(page.contains(&user_code));
    let approve = |code: &str, pw: &str, action: &str| {
        let form = [
            ("user_code", code.to_string()),
            ("username", "bob".into()),
            ("password", pw.to_string()),
            ("action", action.into()),
            ("csrf_token", token.clone()),
        ];
        let (h, url, cookie) = (h.clone(), s.url.clone(), cookie.clone());
        async move {
            h.post(format!("{url}/device")).header("cookie", cookie).form(&form).send().await.unwrap().status().as_u16()
        }
    };
    // Without the cookie's token (a post from another site), nothing is checked: 403.
    let forged = h
        .post(format!("{}/device", s.url))
        .form(&[
            ("user_code", user_code.as_str()),
            ("username", "bob"),
            ("password", pw.as_str()),
            ("action", "approve"),
        ])
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(approve(&user_code, "wrong-password-0000", "approve").await, 401);
    assert_eq!(approve("BBBB-BBBB", &pw, "approve").await, 400);
    assert_eq!(approve(&user_code.to_lowercase(), &pw, "approve").await, 200, "codes are case-insensitive");
    assert_eq!(approve(&user_code, &pw, "approve").await, 400, "a code is used once");
    // The library's own polling now gets the tokens at its first poll.
    let tok = cli
        .exchange_device_access_token(&details)
        .request_async(&h, |_| async {}, Some(std::time::Duration::from_secs(30)))
        .await?;
    let access = tok.access_token().secret().clone();
    let refresh = tok.refresh_token().unwrap().clone();
    assert_eq!(tok.scopes().unwrap()[0].as_str(), "approver");
    bearer(&s, &access).pipelines().await?;
    let (st, v) = poll(dc).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("expired_token")), "the device code is spent");
    // A denied request.
    let d2: StandardDeviceAuthorizationResponse = cli.exchange_device_code().request_async(&h).await?;
    assert_eq!(approve(d2.user_code().secret(), &pw, "deny").await, 200);
    let (st, v) = poll(d2.device_code().secret().clone()).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("access_denied")));

    // Revoking the operator's sessions: access and refresh tokens fail at once.
    admin.revoke_operator_sessions("bob").await?;
    assert_eq!(bearer(&s, &access).pipelines().await.unwrap_err().status(), Some(401));
    let e = cli.exchange_refresh_token(&refresh).request_async(&h).await.unwrap_err();
    assert_eq!(grant_error(e), BasicErrorResponseType::InvalidGrant);
    // An approval from before a session revocation does not start a session.
    let d4: StandardDeviceAuthorizationResponse = cli.exchange_device_code().request_async(&h).await?;
    assert_eq!(approve(d4.user_code().secret(), &pw, "approve").await, 200);
    admin.revoke_operator_sessions("bob").await?;
    let e = cli.exchange_device_access_token(&d4).request_async(&h, |_| async {}, None).await.unwrap_err();
    assert!(format!("{e:?}").contains("invalid_grant"), "{e:?}");
    // Public clients cannot introspect.
    let r = h
        .post(format!("{}/oauth2/introspect", s.url))
        .form(&[("token", access.as_str()), ("client_id", "drover-cli")])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    // A new sign-in works; disabling the operator ends it.
    let d3: StandardDeviceAuthorizationResponse = cli.exchange_device_code().request_async(&h).await?;
    assert_eq!(approve(d3.user_code().secret(), &pw, "approve").await, 200);
    let tok = cli.exchange_device_access_token(&d3).request_async(&h, |_| async {}, None).await?;
    let b3 = bearer(&s, tok.access_token().secret());
    b3.pipelines().await?;
    admin
        .update_operator("bob", &drover_types::OperatorUpdate { email: None, roles: None, disabled: Some(true) })
        .await?;
    assert_eq!(b3.pipelines().await.unwrap_err().status(), Some(401));
    s.shutdown().await;
    Ok(())
}

async fn private_key_jwt_client_authentication(b: Backend) -> anyhow::Result<()> {
    use drover_server::oauth::jwt::{Alg, SigningKey, generate};
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    let der = generate(Alg::ES256).map_err(anyhow::Error::msg)?;
    let key = SigningKey::from_pkcs8(&der, None).map_err(anyhow::Error::msg)?;
    let reg = admin
        .register_client(&drover_types::NewClient {
            name: "signer".into(),
            roles: vec!["viewer".into()],
            jwks: Some(json!({"keys": [key.public_jwk()]})),
            ..Default::default()
        })
        .await?;
    assert!(reg.client_secret.is_empty(), "a key-authenticated client gets no secret");
    // A private key is refused as registration material.
    let bad = admin
        .register_client(&drover_types::NewClient {
            name: "leaky".into(),
            roles: vec!["viewer".into()],
            jwks: Some(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400));

    let token_endpoint = format!("{}/oauth2/token", s.url);
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // The assertion is signed by an independent JWT library.
    let assertion = |claims: Value, der: &[u8], alg: jsonwebtoken::Algorithm, kid: &str| {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid.to_string());
        let k = match alg {
            jsonwebtoken::Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(der),
            _ => jsonwebtoken::EncodingKey::from_ec_der(der),
        };
        jsonwebtoken::encode(&h, &claims, &k).unwrap()
    };
    let claims = |aud: &str, exp: i64, jti: &str| json!({"iss": "signer", "sub": "signer", "aud": aud, "exp": exp, "iat": now(), "jti": jti});
    let ask = |a: String| {
        let (h, url) = (s.http(), token_endpoint.clone());
        async move {
            let r = h
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", a.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let good = assertion(claims(&token_endpoint, now() + 60, "a1"), &der, jsonwebtoken::Algorithm::ES256, &key.kid);
    let (st, v) = ask(good.clone()).await;
    assert_eq!(st, 200, "{v}");
    bearer(&s, v["access_token"].as_str().unwrap()).pipelines().await?;
    // Replayed: the jti was seen.
    let (st, v) = ask(good).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")));
    // Wrong audience, too long a lifetime, another key, HMAC with the public key, expired.
    let cases = [
        assertion(claims(&s.url, now() + 60, "a2"), &der, jsonwebtoken::Algorithm::ES256, &key.kid),
        assertion(claims(&token_endpoint, now() + 3600, "a3"), &der, jsonwebtoken::Algorithm::ES256, &key.kid),
        assertion(
            claims(&token_endpoint, now() + 60, "a4"),
            &generate(Alg::ES256).map_err(anyhow::Error::msg)?,
            jsonwebtoken::Algorithm::ES256,
            &key.kid,
        ),
        assertion(
            claims(&token_endpoint, now() + 60, "a5"),
            key.public_jwk().to_string().as_bytes(),
            jsonwebtoken::Algorithm::HS256,
            &key.kid,
        ),
        assertion(claims(&token_endpoint, now() - 120, "a6"), &der, jsonwebtoken::Algorithm::ES256, &key.kid),
    ];
    for (i, a) in cases.into_iter().enumerate() {
        let (st, v) = ask(a).await;
        assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")), "case {i}");
    }
    // A disabled client is refused even with a good assertion.
    admin.update_client("signer", &drover_types::ClientUpdate { disabled: Some(true), ..Default::default() }).await?;
    let (st, _) =
        ask(assertion(claims(&token_endpoint, now() + 60, "a7"), &der, jsonwebtoken::Algorithm::ES256, &key.kid)).await;
    assert_eq!(st, 401);
    s.shutdown().await;
    Ok(())
}

async fn custom_roles_and_scoped_access_groups(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    // A custom role; built-in roles are fixed; unknown privileges are refused.
    let role = drover_types::Role {
        name: "pipeline-editor".into(),
        privileges: vec!["pipeline.manage".into(), "pipeline.read".into()],
        built_in: false,
        description: None,
    };
    admin.create_role(&role).await?;
    assert_eq!(admin.create_role(&role).await.unwrap_err().status(), Some(409));
    let mut bad = role.clone();
    bad.name = "x".into();
    bad.privileges = vec!["pipeline.teleport".into()];
    assert_eq!(admin.create_role(&bad).await.unwrap_err().status(), Some(400));
    bad.name = "viewer".into();
    bad.privileges = vec!["pipeline.read".into()];
    assert_eq!(admin.create_role(&bad).await.unwrap_err().status(), Some(409));
    assert!(admin.roles().await?.iter().any(|r| r.name == "pipeline-editor" && !r.built_in));

    // carol is a viewer everywhere, and edits pipelines of "shop" only, through a group.
    let pw = s.add_operator("carol", &["viewer"]).await;
    let carol = s.client("carol", &pw);
    let yaml = |app: &str| {
        format!(
            "application: {app}\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: run\n        command: 'true'\n"
        )
    };
    assert_eq!(carol.apply_yaml(&yaml("shop")).await.unwrap_err().status(), Some(403));
    // Environments are global: carol may use dev once it exists, not create it.
    admin.apply_yaml(&yaml("setup")).await?;
    let group = drover_types::AccessGroup {
        name: "shop-team".into(),
        roles: vec!["pipeline-editor".into()],
        operators: vec!["carol".into()],
        clients: vec![],
        applications: vec!["shop".into()],
        ineffective_privileges: vec![],
    };
    admin.create_access_group(&group).await?;
    carol.apply_yaml(&yaml("shop")).await?;
    assert_eq!(carol.apply_yaml(&yaml("billing")).await.unwrap_err().status(), Some(403));
    admin.apply_yaml(&yaml("billing")).await?;
    // A role in use cannot be deleted; a group naming an unknown operator is refused.
    assert_eq!(admin.delete_role("pipeline-editor").await.unwrap_err().status(), Some(409));
    let mut g2 = group.clone();
    g2.name = "ghosts".into();
    g2.operators = vec!["nobody".into()];
    assert_eq!(admin.create_access_group(&g2).await.unwrap_err().status(), Some(400));
    // Clients too: a client in the group, scoped the same way.
    let ci = admin.create_client("shop-ci", &["viewer".into(), "approver".into()]).await?;
    let mut g = group.clone();
    g.clients = vec!["shop-ci".into()];
    admin.put_access_group(&g).await?;
    let ci_secret = ci.client_secret.clone();
    let t = s.anonymous().client_credentials_token("shop-ci", &ci_secret, None).await?;
    let ci = bearer(&s, t["access_token"].as_str().unwrap());
    ci.apply_yaml(&yaml("shop")).await?;
    assert_eq!(ci.apply_yaml(&yaml("billing")).await.unwrap_err().status(), Some(403));
    // A token narrowed to `viewer` carries only that role, not the client's access groups.
    let narrowed = s.anonymous().client_credentials_token("shop-ci", &ci_secret, Some("viewer")).await?;
    let narrowed = bearer(&s, narrowed["access_token"].as_str().unwrap());
    narrowed.pipelines().await?;
    assert_eq!(narrowed.apply_yaml(&yaml("shop")).await.unwrap_err().status(), Some(403));
    // Removing carol from the group takes effect on her next call.
    admin.delete_access_group("shop-team").await?;
    assert_eq!(carol.apply_yaml(&yaml("shop")).await.unwrap_err().status(), Some(403));
    admin.delete_role("pipeline-editor").await?;
    s.shutdown().await;
    Ok(())
}
