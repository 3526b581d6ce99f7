//! Limits on what a peer can send and hold, tried over real TLS connections: a body trickled
//! a byte at a time, oversized heads and bodies, more connections than a source may open.

use std::sync::Arc;
use std::time::Duration;

use drover_testkit::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

async fn tls(s: &TestServer) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let cfg = drover_tls::client_config(&s.ca).unwrap();
    let addr = s.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await
}

/// Reads what the server sends until it closes (bounded by `limit`).
async fn read_reply(c: &mut TlsStream<tokio::net::TcpStream>, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, c.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trickled_body_is_cut_off_and_its_connection_closed() {
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| cfg.limits.body_timeout_secs = 1).await.unwrap();
    let mut c = tls(&s).await.unwrap();
    let head = "POST /oauth2/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\n";
    c.write_all(head.as_bytes()).await.unwrap();
    // One byte every 100 ms would take 10 s; the server gives up after 1 s. Bounded: 100 bytes.
    let mut sent = 0;
    let mut cut = false;
    for _ in 0..100 {
        if c.write_all(b"g").await.is_err() || c.flush().await.is_err() {
            cut = true;
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Has the server answered (or closed) already?
        let mut probe = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), c.read(&mut probe)).await {
            cut = true;
            let _ = r;
            break;
        }
    }
    assert!(cut, "the server still waited after {sent} bytes");
    assert!(sent < 100, "cut off before the body was complete ({sent} of 100 bytes)");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_heads_and_bodies_are_refused() {
    // Small enough that the socket buffers take a whole oversized body before the answer.
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| cfg.limits.max_body_bytes = 64 * 1024).await.unwrap();
    let http =
        reqwest::Client::builder().use_preconfigured_tls(drover_tls::client_config(&s.ca).unwrap()).build().unwrap();
    // A 100 KiB header (limit 64 KiB).
    let r = http.get(format!("{}/healthz", s.url)).header("x-big", "a".repeat(100 * 1024)).send().await;
    match r {
        Ok(r) => assert_eq!(r.status().as_u16(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "the server refused the head: {e}"),
    }
    // A 100 KiB declared body (limit 64 KiB): 413 from the head alone, before any of it is sent.
    let mut c = tls(&s).await.unwrap();
    let head = "POST /api/v1/pipelines HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 102400\r\n\r\n";
    c.write_all(head.as_bytes()).await.unwrap();
    c.flush().await.unwrap();
    let reply = read_reply(&mut c, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"code\":\"too_large\"") && reply.contains("max_body_bytes"), "{reply}");
    // The same without a declared length (chunked): cut off at the limit as it arrives.
    let chunks = futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 10 * 1024])));
    let r = http
        .post(format!("{}/api/v1/pipelines", s.url))
        .basic_auth("admin", Some(&s.admin_password))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "too_large", "{v}");
    }
    // Under the limit, the request is served as before.
    let r = http.get(format!("{}/healthz", s.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_the_cap_are_closed_and_slots_come_back() {
    let s =
        TestServer::start_configured(Backend::Sqlite, |cfg| cfg.limits.max_connections_per_source = 3).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tls(&s).await.expect("within the cap"));
    }
    // The fourth from the same address is closed before its handshake.
    assert!(tls(&s).await.is_err(), "a fourth connection from one source");
    // One slot freed: a new connection gets in (bounded wait for the server to notice the close).
    drop(held.pop());
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(c) = tls(&s).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = admitted.expect("a freed slot is reused");
    c.write_all(b"GET /api/v1/system/pools HTTP/1.1\r\nhost: x\r\nconnection: close\r\n").await.unwrap();
    use base64::Engine as _;
    let auth =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", s.admin_password)));
    c.write_all(format!("authorization: {auth}\r\n\r\n").as_bytes()).await.unwrap();
    c.flush().await.unwrap();
    let reply = read_reply(&mut c, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("\"name\":\"connections\""), "{body}");
    assert!(body.contains("\"max_per_source\":3"), "{body}");
    assert!(!body.contains("\"refused\":0"), "the refusal is counted: {body}");
    drop(held);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_stops_reading_is_cut_off_while_a_long_poll_lives() {
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| {
        cfg.limits.write_stall_secs = 1;
        cfg.limits.header_timeout_secs = 1;
    })
    .await
    .unwrap();
    let admin = s.admin();
    // A long-poll three times as long as the write-stall limit still answers.
    let cred = admin.add_agent("a1", "dev").await.unwrap();
    let agent = s.agent_client("a1", &cred.secret);
    let req = drover_types::agent::PollRequest { running: vec![], capacity: 1, wait_ms: 3000, ..Default::default() };
    let r = agent.poll(&req).await.unwrap();
    assert!(r.tasks.is_empty());
    // A download the peer never reads: the server gives up on it instead of holding it.
    let size = 32 << 20;
    admin.push_artifact_bytes("big", "1", vec![7u8; size]).await.unwrap();
    let mut c = tls(&s).await.unwrap();
    use base64::Engine as _;
    let auth =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", s.admin_password)));
    let req = format!("GET /api/v1/artifacts/big/1/content HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    c.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got)).await;
    assert!(got.len() < size, "the stalled response was cut off ({} of {size} bytes arrived)", got.len());
    s.shutdown().await;
}

/// The defaults serve 1,000 agents behind one address: two connections each (a long-poll and
/// a report), all open at once from 127.0.0.1, all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_defaults_hold_a_thousand_agents_behind_one_address() {
    let s = Arc::new(TestServer::start(Backend::Sqlite).await.unwrap());
    let mut conns = Vec::new();
    for _ in 0..20 {
        let batch: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn({
                    let s = s.clone();
                    async move { tls(&s).await }
                })
            })
            .collect();
        for h in batch {
            conns.push(h.await.unwrap().expect("admitted under the default caps"));
        }
    }
    assert_eq!(conns.len(), 2000);
    let mut answered = 0;
    for c in conns.iter_mut() {
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        c.flush().await.unwrap();
    }
    for c in conns.iter_mut() {
        let mut buf = [0u8; 256];
        let n = match tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf)).await.unwrap() {
            Ok(n) => n,
            Err(e) => panic!("after {answered} answers: {e}"),
        };
        if buf[..n].starts_with(b"HTTP/1.1 200") {
            answered += 1;
        }
    }
    assert_eq!(answered, 2000);
    drop(conns);
    Arc::try_unwrap(s).ok().unwrap().shutdown().await;
}
