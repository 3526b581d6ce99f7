//! The audit log (`audit.read`).

use drover_core::Result;
use drover_core::rbac::Privilege;
use drover_core::store::AuditFilter;
use drover_types::audit::{AuditEntry, AuditVerification};

use super::Ctx;

pub async fn list(c: &Ctx<'_>, f: AuditFilter) -> Result<Vec<AuditEntry>> {
    c.require(Privilege::AuditRead)?;
    c.state.store.search_audit(&f).await
}

/// Walks the whole chain in pages (bounded: 10 million entries).
pub async fn verify(c: &Ctx<'_>) -> Result<AuditVerification> {
    c.require(Privilege::AuditRead)?;
    let s = c.state;
    let mut head: Option<(i64, String)> = None;
    let mut count = 0i64;
    for _ in 0..10_000 {
        let after = head.as_ref().map(|h| h.0).unwrap_or(0);
        let page = s.store.audit_entries(after, 1000).await?;
        if page.is_empty() {
            break;
        }
        match drover_core::audit::verify(head.clone(), &page) {
            Ok(h) => {
                count += page.len() as i64;
                head = h;
            }
            Err(broken) => {
                tracing::error!(seq = broken.seq, reason = %broken.reason, "audit log chain is broken");
                // Entries 1..seq-1 are intact (the chain is contiguous up to the break).
                return Ok(AuditVerification {
                    ok: false,
                    entries: broken.seq - 1,
                    head_seq: None,
                    head_hash: None,
                    broken: Some(broken),
                });
            }
        }
    }
    Ok(AuditVerification {
        ok: true,
        entries: count,
        head_seq: head.as_ref().map(|h| h.0),
        head_hash: head.map(|h| h.1),
        broken: None,
    })
}
