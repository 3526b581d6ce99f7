//! `GET /deployments/{id}/logs?follow=true`: server-sent events with log lines (`event: log`),
//! the deployment whenever it changes (`event: deployment`) and `event: end` once it is
//! terminal; `waiting_for` is re-evaluated at least every 15 s, so a change of what it waits for
//! (an agent comes online) is sent too. Bounded: the stream ends after an hour at most, or when
//! the client goes away (the CLI follows on with `after`). A stream re-checks its caller at
//! least every 5 s ([`Recheck`]: the session or token still holds, and the caller may still read
//! the deployment) and ends the moment it may not — nothing more is sent.

use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::AppState;

const MAX_FOLLOW: Duration = Duration::from_secs(3600);
/// A stream with a [`Recheck`] asks it at most this often.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

fn frame(event: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

/// A log line's frame carries its id, so a reconnecting `EventSource` resumes after it
/// (`Last-Event-ID`).
fn log_frame(l: &drover_types::LogLine) -> Bytes {
    let json = serde_json::to_string(l).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("id: {}\nevent: log\ndata: {json}\n\n", l.id))
}

/// Asked at least every [`RECHECK_EVERY`] while a stream runs: may it go on? It ends once its
/// session or token has (sign-out, timeout, revocation) or its caller may no longer read the
/// deployment (a grant removed). A check never counts as activity of a portal session.
pub type Recheck =
    std::sync::Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync>;

/// `caller` may read the deployment (checked before); it shapes `waiting_for`. The stream ends
/// when `recheck` says no.
pub fn follow_while(
    s: AppState,
    caller: drover_core::rbac::Principal,
    id: i64,
    mut after: i64,
    recheck: Option<Recheck>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut changes = s.engine.subscribe();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + MAX_FOLLOW;
        let mut last_check = tokio::time::Instant::now();
        let mut last_view: Option<String> = None;
        loop {
            // Drain logs, then the deployment. A task that prints without pause keeps this
            // loop going: the caller is checked here too when a check is due.
            loop {
                if let Some(ok) = &recheck
                    && last_check.elapsed() >= RECHECK_EVERY
                {
                    last_check = tokio::time::Instant::now();
                    if !ok().await {
                        return;
                    }
                }
                let Ok(lines) = s.store.logs(id, after, 500).await else { return };
                if lines.is_empty() {
                    break;
                }
                for l in &lines {
                    after = l.id;
                    if tx.send(Ok(log_frame(l))).await.is_err() {
                        return;
                    }
                }
            }
            let Ok(Some(st)) = s.store.load_deployment(id).await else { return };
            let mut view = st.to_view();
            let ctx = crate::service::Ctx::new(&s, &caller);
            if crate::service::waiting::annotate(&ctx, &st, &mut view).await.is_err() {
                return;
            }
            let json = serde_json::to_string(&view).unwrap_or_default();
            if last_view.as_deref() != Some(json.as_str()) {
                if tx.send(Ok(frame("deployment", &view))).await.is_err() {
                    return;
                }
                last_view = Some(json);
            }
            if view.status.is_terminal() {
                let _ = tx.send(Ok(frame("end", &view.status))).await;
                return;
            }
            // Wait for a change of this deployment, a keep-alive tick, or the deadline; check
            // the caller again whenever it is due, changes or not.
            let tick = tokio::time::sleep(Duration::from_secs(15));
            tokio::pin!(tick);
            loop {
                let check_at = last_check + RECHECK_EVERY;
                tokio::select! {
                    r = changes.recv() => match r {
                        Ok(x) if x == id => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(_) => return,
                    },
                    _ = &mut tick => {
                        if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() { return; }
                        break;
                    }
                    _ = tokio::time::sleep_until(check_at), if recheck.is_some() => {
                        last_check = tokio::time::Instant::now();
                        if let Some(ok) = &recheck && !ok().await {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => return,
                }
            }
            // Nothing is sent for a change before the caller is checked, when a check is due.
            if let Some(ok) = &recheck
                && last_check.elapsed() >= RECHECK_EVERY
            {
                last_check = tokio::time::Instant::now();
                if !ok().await {
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(stream))
        .into_response()
}
