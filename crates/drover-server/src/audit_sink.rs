//! Audit entries for high-rate security events (tokens issued and refused at the token
//! endpoint) go through this sink: a bounded queue and one writer that appends them in batches
//! (one transaction per batch keeps the hash chain and the rate). A full queue slows callers
//! down rather than dropping an entry; at shutdown the queue is drained.

use std::sync::Arc;
use std::time::Duration;

use drover_core::Store;
use drover_types::audit::NewAuditEntry;
use tokio::sync::{mpsc, watch};

const QUEUE: usize = 65_536;
const BATCH: usize = 512;

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<NewAuditEntry>,
}

impl AuditSink {
    /// The sink, and its writer (runs until `shutdown`, then drains what is queued).
    pub fn start(store: Arc<dyn Store>, shutdown: watch::Receiver<bool>) -> (AuditSink, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AuditSink { tx }, tokio::spawn(writer(store, rx, shutdown)))
    }

    /// Queues an entry; waits while the queue is full.
    pub async fn record(&self, e: NewAuditEntry) {
        if let Err(e) = self.tx.send(e).await {
            tracing::error!(action = %e.0.action, "audit sink closed; entry written directly");
        }
    }
}

async fn append(store: &dyn Store, batch: &[NewAuditEntry]) {
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=6 {
        match store.append_audit_batch(batch).await {
            Ok(_) => return,
            Err(e) if attempt < 6 => {
                tracing::warn!(error = %e, entries = batch.len(), attempt, "audit append failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                for x in batch {
                    tracing::error!(error = %e, action = %x.action, principal = %x.principal, target = %x.target, "audit entry could not be written");
                }
            }
        }
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<NewAuditEntry>, mut shutdown: watch::Receiver<bool>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            _ = shutdown.changed() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        append(store.as_ref(), &batch).await;
        batch.clear();
    }
    // Drain what is queued.
    rx.close();
    while let Some(e) = rx.recv().await {
        batch.push(e);
        if batch.len() == BATCH {
            append(store.as_ref(), &batch).await;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        append(store.as_ref(), &batch).await;
    }
}
