//! What a peer may send and hold: connections per source and in all, the TLS handshake, request
//! heads (hyper: size, count, read timeout — which also ends keep-alive connections idle between
//! requests), request bodies (size, total read time, idle time for uploads) and writes that stall.
//!
//! Invariants:
//! - a connection over either cap is closed before its TLS handshake;
//! - every request body is bounded by a size and a deadline before any handler reads it: the
//!   declared `Content-Length` is checked first (413 without reading), the bytes as they come;
//!   artifact uploads use `[artifacts] max_size` and an idle timeout instead of a total deadline;
//! - a response the peer stops reading fails its write after `write_stall_secs`, so long-polls
//!   and event streams that make progress live as long as they need and no longer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::AppState;
use crate::error::ApiError;

/// `[http.limits]` in `drover.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one address (1,000 agents behind one NAT hold ~2 each).
    pub max_connections_per_source: usize,
    /// From TCP accept to a finished TLS handshake.
    pub handshake_timeout_secs: u64,
    /// To read a request head; also how long a keep-alive connection may sit idle.
    pub header_timeout_secs: u64,
    /// Size of a request head (request line and headers).
    pub max_header_bytes: usize,
    /// Number of request headers.
    pub max_headers: usize,
    /// Size of a request body (artifact uploads: `[artifacts] max_size`).
    pub max_body_bytes: u64,
    /// To read a whole request body (not artifact uploads).
    pub body_timeout_secs: u64,
    /// An artifact upload that sends nothing for this long is cut off.
    pub upload_idle_secs: u64,
    /// A response write the peer does not take for this long ends the connection.
    pub write_stall_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 16_384,
            max_connections_per_source: 4_096,
            handshake_timeout_secs: 10,
            header_timeout_secs: 30,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 4 << 20,
            body_timeout_secs: 20,
            upload_idle_secs: 30,
            write_stall_secs: 60,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_source", self.max_connections_per_source as u64),
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("header_timeout_secs", self.header_timeout_secs),
            ("max_headers", self.max_headers as u64),
            ("max_body_bytes", self.max_body_bytes),
            ("body_timeout_secs", self.body_timeout_secs),
            ("upload_idle_secs", self.upload_idle_secs),
            ("write_stall_secs", self.write_stall_secs),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(format!("[http.limits] {k} must be at least 1"));
            }
        }
        if self.max_header_bytes < 8192 {
            return Err("[http.limits] max_header_bytes must be at least 8192".into());
        }
        Ok(())
    }
}

/// Open connections, in all and per source address.
pub struct Connections {
    total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_source: usize,
    refused: AtomicUsize,
}

/// The source a connection counts against: its IPv4 address, or the /64 of an IPv6 one (one
/// host or site usually holds a whole /64; IPv4-mapped addresses count as IPv4).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Held while a connection is open; dropping it frees the slot.
pub struct Slot {
    of: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    pub fn new(cfg: &LimitsConfig) -> Arc<Self> {
        Arc::new(Connections {
            total: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
            max_total: cfg.max_connections,
            max_per_source: cfg.max_connections_per_source,
            refused: AtomicUsize::new(0),
        })
    }

    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = source_of(ip);
        let mut per = self.per_source.lock().expect("poisoned");
        let n = per.get(&ip).copied().unwrap_or(0);
        if n >= self.max_per_source || self.total.load(Ordering::Relaxed) >= self.max_total {
            drop(per);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        per.insert(ip, n + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Slot { of: self.clone(), ip })
    }

    /// (open, cap, distinct sources, refused so far).
    pub fn stats(&self) -> (usize, usize, usize, usize) {
        let sources = self.per_source.lock().expect("poisoned").len();
        (self.total.load(Ordering::Relaxed), self.max_total, sources, self.refused.load(Ordering::Relaxed))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self.of.per_source.lock().expect("poisoned");
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
        self.of.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream whose writes fail once the peer has taken nothing for `stall`.
pub struct StallGuard<S> {
    inner: S,
    stall: Duration,
    since: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, stall: Duration) -> Self {
        StallGuard { inner, stall, since: None }
    }

    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let stall = self.stall;
        let timer = self.since.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer stopped reading the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            done => {
                self.since = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            done => {
                self.since = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            done => {
                self.since = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a request body was cut off.
#[derive(Debug)]
pub enum BodyError {
    TimedOut(Duration),
    Idle(Duration),
    Inner(axum::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TimedOut(d) => write!(f, "the request body did not arrive within {}s", d.as_secs()),
            BodyError::Idle(d) => write!(f, "the request body stalled for {}s", d.as_secs()),
            BodyError::Inner(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A request body with a total deadline (API bodies) or an idle timeout (uploads); sizes:
/// `Limited`, or the upload reader. The timer is made only when the body is not all there: a
/// small request read in one go costs no timer at all.
struct Bounded {
    inner: Body,
    limit: Limit,
    timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Clone, Copy)]
enum Limit {
    /// The whole body by then.
    Total(tokio::time::Instant, Duration),
    /// At most this long between frames; the last one came then.
    Idle(Duration, tokio::time::Instant),
}

impl Bounded {
    fn new(inner: Body, limit: Limit) -> Self {
        Bounded { inner, limit, timer: None }
    }
}

impl HttpBody for Bounded {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Limit::Idle(_, last) = &mut this.limit {
                    *last = tokio::time::Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Inner(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Bounded: at most two rounds (a timer set before the last frame is moved once).
                for _ in 0..2 {
                    let due = match this.limit {
                        Limit::Total(at, _) => at,
                        Limit::Idle(d, last) => last + d,
                    };
                    let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    if timer.deadline() != due {
                        timer.as_mut().reset(due);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if tokio::time::Instant::now() >= due {
                        return Poll::Ready(Some(Err(match this.limit {
                            Limit::Total(_, d) => BodyError::TimedOut(d),
                            Limit::Idle(d, _) => BodyError::Idle(d),
                        })));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Is this the artifact upload route (`PUT /api/v1/artifacts/{application}/{version}`)?
fn is_upload(method: &Method, path: &str) -> bool {
    method == Method::PUT && path.strip_prefix("/api/v1/artifacts/").is_some_and(|rest| rest.split('/').count() == 2)
}

/// The middleware: bounds every request body before anything reads it.
pub async fn bodies(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let l = &s.limits;
    let upload = is_upload(req.method(), req.uri().path());
    let limit = if upload { s.artifact_policy.max_size.0 } else { l.max_body_bytes };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit
    {
        // Read (and drop) a bounded part of the body while the answer goes out, so a client
        // still writing sees the 413 rather than a reset connection (a "lingering close").
        tracing::warn!(path = %req.uri().path(), declared = n, limit, "request body refused: over its limit");
        tokio::spawn(linger(req.into_body()));
        let what = if upload { "[artifacts] max_size" } else { "[http.limits] max_body_bytes" };
        let mut resp = ApiError::new(
            drover_types::ErrorCode::TooLarge,
            format!("the request body ({n} bytes) is larger than the limit of {limit} bytes ({what})"),
        )
        .into_response();
        // The body is not read: the connection cannot be reused.
        resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return resp;
    }
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let now = tokio::time::Instant::now();
    let body = if upload {
        // The upload's own reader stops at max_size with a message that says so.
        Body::new(Bounded::new(body, Limit::Idle(Duration::from_secs(l.upload_idle_secs), now)))
    } else {
        // `Limited` reports the overflow as the error axum's extractors answer with 413.
        let d = Duration::from_secs(l.body_timeout_secs);
        Body::new(http_body_util::Limited::new(Bounded::new(body, Limit::Total(now + d, d)), limit as usize))
    };
    let resp = next.run(Request::from_parts(parts, body)).await;
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE
        && !resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        // An extractor's plain-text rejection: answer in the API's own terms.
        return ApiError::new(
            drover_types::ErrorCode::TooLarge,
            format!("the request body is larger than the limit of {limit} bytes ([http.limits] max_body_bytes)"),
        )
        .into_response();
    }
    resp
}

/// How much of a refused body is read before the connection closes, and for how long.
const LINGER_BYTES: usize = 16 << 20;
const LINGER_TIME: Duration = Duration::from_secs(5);

async fn linger(body: Body) {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut read = 0usize;
        while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut stream).await {
            read += chunk.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_route_is_recognised_exactly() {
        assert!(is_upload(&Method::PUT, "/api/v1/artifacts/shop/1.0"));
        assert!(!is_upload(&Method::GET, "/api/v1/artifacts/shop/1.0"));
        assert!(!is_upload(&Method::PUT, "/api/v1/artifacts/shop/1.0/content"));
        assert!(!is_upload(&Method::PUT, "/api/v1/pipelines/x"));
        assert!(!is_upload(&Method::PUT, "/api/v1/artifacts/shop"));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let c = Connections::new(&LimitsConfig {
            max_connections: 10,
            max_connections_per_source: 2,
            ..Default::default()
        });
        let a = c.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let b = c.admit("2001:db8:1:2:ffff::9".parse().unwrap()).unwrap();
        assert!(c.admit("2001:db8:1:2:abcd::7".parse().unwrap()).is_none(), "same /64");
        let other = c.admit("2001:db8:1:3::1".parse().unwrap());
        assert!(other.is_some(), "another /64");
        let m1 = c.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        let m2 = c.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(c.admit("10.0.0.1".parse().unwrap()).is_none(), "mapped IPv4 is IPv4");
        drop((a, b, m1, m2));
    }

    #[test]
    fn connection_caps_count_per_source_and_in_all() {
        let c =
            Connections::new(&LimitsConfig { max_connections: 3, max_connections_per_source: 2, ..Default::default() });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = c.admit(a).unwrap();
        let _s2 = c.admit(a).unwrap();
        assert!(c.admit(a).is_none(), "per source");
        let _s3 = c.admit(b).unwrap();
        assert!(c.admit(b).is_none(), "in all");
        drop(s1);
        assert!(c.admit(b).is_some(), "a freed slot is reusable");
        assert_eq!(c.stats().3, 2);
    }
}
