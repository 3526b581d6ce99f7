//! Every audit entry of the orchestrator goes through this sink: a bounded queue and one writer
//! that appends entries in batches (group commit: one transaction per batch keeps the hash
//! chain and the rate). [`AuditSink::record`] returns only once its entry is durable — or says
//! it could not be written, and the caller refuses what it was about to do: no change and no
//! security event goes unrecorded. A full queue slows callers down; at shutdown the queue is
//! drained.

use std::sync::Arc;
use std::time::Duration;

use drover_core::Store;
use drover_core::audit::ChainKey;
use drover_types::audit::NewAuditEntry;
use tokio::sync::{mpsc, oneshot, watch};

const QUEUE: usize = 65_536;
const BATCH: usize = 512;
/// Tries of one batch before its callers are told it failed (the last wait 80 ms).
const TRIES: u32 = 3;

/// The audit log cannot be written: refuse the action (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditUnavailable;

type Item = (NewAuditEntry, oneshot::Sender<bool>);

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Item>,
}

impl AuditSink {
    /// The sink, and its writer (runs until `shutdown`, then drains what is queued).
    pub fn start(
        store: Arc<dyn Store>,
        key: ChainKey,
        shutdown: watch::Receiver<bool>,
    ) -> (AuditSink, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AuditSink { tx }, tokio::spawn(writer(store, key, rx, shutdown)))
    }

    /// Appends an entry; returns once it is durable (in the batch that committed it).
    pub async fn record(&self, e: NewAuditEntry) -> Result<(), AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        if self.tx.send((e, done)).await.is_err() {
            tracing::error!("audit sink closed");
            return Err(AuditUnavailable);
        }
        match wait.await {
            Ok(true) => Ok(()),
            _ => Err(AuditUnavailable),
        }
    }
}

async fn append(store: &dyn Store, key: &ChainKey, batch: Vec<Item>) {
    let (entries, acks): (Vec<NewAuditEntry>, Vec<oneshot::Sender<bool>>) = batch.into_iter().unzip();
    let mut wait = Duration::from_millis(20);
    for attempt in 1..=TRIES {
        match store.append_audit_batch(&entries, Some(key)).await {
            Ok(_) => {
                for a in acks {
                    let _ = a.send(true);
                }
                return;
            }
            Err(e) if attempt < TRIES => {
                tracing::warn!(error = %e, entries = entries.len(), attempt, "audit append failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                for x in &entries {
                    tracing::error!(error = %e, action = %x.action, principal = %x.principal, target = %x.target, "audit entry could not be written; the action is refused");
                }
            }
        }
    }
    for a in acks {
        let _ = a.send(false);
    }
}

async fn writer(
    store: Arc<dyn Store>,
    key: ChainKey,
    mut rx: mpsc::Receiver<Item>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            _ = shutdown.changed() => None,
        };
        let Some(first) = first else { break };
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        append(store.as_ref(), &key, batch).await;
    }
    // Drain what is queued.
    rx.close();
    let mut batch = Vec::new();
    while let Some(e) = rx.recv().await {
        batch.push(e);
        if batch.len() == BATCH {
            append(store.as_ref(), &key, std::mem::take(&mut batch)).await;
        }
    }
    if !batch.is_empty() {
        append(store.as_ref(), &key, batch).await;
    }
}
