//! The audit log (`audit.read`): search, verification against the keyed chain and the signed
//! checkpoints, and export for a third party.

use std::collections::BTreeMap;

use drover_core::rbac::Privilege;
use drover_core::store::AuditFilter;
use drover_core::{Error, Result};
use drover_types::audit::{AuditEntry, AuditVerification, BrokenLink};
use serde_json::{Value, json};

use super::Ctx;

pub async fn list(c: &Ctx<'_>, f: AuditFilter) -> Result<Vec<AuditEntry>> {
    c.require(Privilege::AuditRead)?;
    c.state.store.search_audit(&f).await
}

fn broken(entries: i64, b: BrokenLink, checkpoints: usize, last: Option<i64>) -> AuditVerification {
    tracing::error!(seq = b.seq, reason = %b.reason, "the audit log does not verify");
    AuditVerification {
        ok: false,
        entries,
        head_seq: None,
        head_hash: None,
        broken: Some(b),
        checkpoints,
        last_checkpoint_seq: last,
    }
}

/// Walks the whole chain in pages (bounded: 10 million entries) under the chain key, and
/// compares it with every signed checkpoint: rewritten entries (content or a checkpoint's hash
/// differs), removed ones (a gap), and a truncated tail (the log ends before the last
/// checkpoint) are reported with the first bad sequence number.
pub async fn verify(c: &Ctx<'_>) -> Result<AuditVerification> {
    c.require(Privilege::AuditRead)?;
    let s = c.state;
    let cps = s.audit_keys.read_checkpoints().map_err(|e| Error::Store(e.to_string()))?;
    let last_cp = cps.last().map(|c| c.seq);
    let n_cps = cps.len();
    let by_seq: BTreeMap<i64, String> = cps.into_iter().map(|c| (c.seq, c.hash)).collect();
    let key = &s.audit_keys.chain;
    let mut head: Option<(i64, String)> = None;
    let mut count = 0i64;
    for _ in 0..10_000 {
        let after = head.as_ref().map(|h| h.0).unwrap_or(0);
        let page = s.store.audit_entries(after, 1000).await?;
        if page.is_empty() {
            break;
        }
        match drover_core::audit::verify(Some(key), head.clone(), &page) {
            Ok(h) => head = h,
            Err(b) => return Ok(broken(b.seq - 1, b, n_cps, last_cp)),
        }
        for a in &page {
            if let Some(h) = by_seq.get(&a.seq)
                && *h != a.hash
            {
                let reason = "it differs from the signed checkpoint of that entry (rewritten)".to_string();
                return Ok(broken(a.seq - 1, BrokenLink { seq: a.seq, reason }, n_cps, last_cp));
            }
        }
        count += page.len() as i64;
    }
    let head_seq = head.as_ref().map(|h| h.0).unwrap_or(0);
    if let Some(last) = last_cp
        && head_seq < last
    {
        let reason = format!(
            "the log ends at entry {head_seq} but a signed checkpoint shows it reached {last}: entries {} to {last} were removed (truncated)",
            head_seq + 1
        );
        return Ok(broken(count, BrokenLink { seq: head_seq + 1, reason }, n_cps, last_cp));
    }
    Ok(AuditVerification {
        ok: true,
        entries: count,
        head_seq: head.as_ref().map(|h| h.0),
        head_hash: head.map(|h| h.1),
        broken: None,
        checkpoints: n_cps,
        last_checkpoint_seq: last_cp,
    })
}

/// The first lines of an export: the header (format, chain key, checkpoint public key) and
/// every checkpoint. The chain key is in it so that a third party can recompute the chain:
/// keep an export as safe as the log itself.
pub async fn export_head(c: &Ctx<'_>) -> Result<Vec<Value>> {
    c.require(Privilege::AuditRead)?;
    let k = &c.state.audit_keys;
    let mut out = vec![json!({
        "kind": "header",
        "format": "drover-audit-export/1",
        "exported_at": drover_types::Timestamp::now(),
        "exported_by": c.label(),
        "chain_key": hex::encode(k.chain.key),
        "keyed_from_seq": k.chain.from_seq,
        "checkpoint_public_key": k.public_key(),
    })];
    for cp in k.read_checkpoints().map_err(|e| Error::Store(e.to_string()))? {
        let mut v = serde_json::to_value(&cp).unwrap_or(Value::Null);
        v["kind"] = json!("checkpoint");
        v["ts_ms"] = json!(cp.ts.0);
        out.push(v);
    }
    Ok(out)
}

/// A page of entries for an export, oldest first after `after`, each with `detail_json`: the
/// exact text its hash covers.
pub async fn export_page(c: &Ctx<'_>, after: i64) -> Result<Vec<Value>> {
    c.require(Privilege::AuditRead)?;
    let page = c.state.store.audit_entries(after, 1000).await?;
    Ok(page
        .into_iter()
        .map(|a| {
            let detail_json = a.entry.detail.to_string();
            let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
            v["kind"] = json!("entry");
            v["ts_ms"] = json!(a.entry.ts.0);
            v["detail_json"] = json!(detail_json);
            v
        })
        .collect())
}

/// The whole export as a stream of JSON Lines: the header and checkpoints, then every entry
/// oldest first, a page at a time (the caller may read the log: checked first). A store
/// failure half-way breaks the stream off (the reader sees a truncated export, never a
/// silently short one: the last line is then not the chain head `verify` reports).
pub async fn export_stream(
    state: crate::AppState,
    caller: drover_core::rbac::Principal,
) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
    let head = export_head(&Ctx::new(&state, &caller)).await?;
    let mut first = String::new();
    for v in head {
        first.push_str(&v.to_string());
        first.push('\n');
    }
    let start = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(first)) });
    let pages = futures_util::stream::unfold(Some((state, caller, 0i64)), |st| async move {
        let (state, caller, after) = st?;
        match export_page(&Ctx::new(&state, &caller), after).await {
            Ok(page) if page.is_empty() => None,
            Ok(page) => {
                let next = page.last().and_then(|v| v["seq"].as_i64()).unwrap_or(after);
                let text: String = page.iter().map(|v| v.to_string() + "\n").collect();
                Some((Ok(bytes::Bytes::from(text)), Some((state, caller, next))))
            }
            Err(e) => {
                tracing::error!(error = %e, "audit export broke off");
                Some((Err(std::io::Error::other("the export broke off")), None))
            }
        }
    });
    Ok(futures_util::StreamExt::chain(start, pages))
}
