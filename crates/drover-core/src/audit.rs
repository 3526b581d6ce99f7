//! The audit log: append-only and hash-chained. Each entry's hash covers its own fields and
//! the previous entry's hash, so altering or removing a row breaks the chain at that row.

use sha2::{Digest, Sha256};

/// The hash that precedes the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use drover_types::audit::{AuditEntry, BrokenLink, NewAuditEntry};

/// The chained hash of an entry: SHA-256 over the previous hash and the entry's fields, each
/// length-prefixed so that no two different entries encode the same.
pub fn chain_hash(prev_hash: &str, seq: i64, e: &NewAuditEntry) -> String {
    let mut h = Sha256::new();
    let detail = e.detail.to_string();
    let fields: [&[u8]; 10] = [
        prev_hash.as_bytes(),
        &seq.to_be_bytes(),
        &e.ts.0.to_be_bytes(),
        e.principal.as_bytes(),
        e.action.as_bytes(),
        e.target.as_bytes(),
        e.outcome.as_bytes(),
        e.source.as_bytes(),
        e.request_id.as_bytes(),
        detail.as_bytes(),
    ];
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    hex::encode(h.finalize())
}

/// Links a new entry after `(last_seq, last_hash)` (or the genesis).
pub fn link(last: Option<(i64, String)>, e: NewAuditEntry) -> AuditEntry {
    let (seq, prev_hash) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_string()),
    };
    let hash = chain_hash(&prev_hash, seq, &e);
    AuditEntry { seq, entry: e, prev_hash, hash }
}

/// Checks entries in `seq` order, continuing from `prev` (the last verified `(seq, hash)`).
pub fn verify(prev: Option<(i64, String)>, entries: &[AuditEntry]) -> Result<Option<(i64, String)>, BrokenLink> {
    let mut last = prev;
    for a in entries {
        let (want_seq, want_prev) = match &last {
            Some((s, h)) => (s + 1, h.clone()),
            None => (1, GENESIS.to_string()),
        };
        if a.seq != want_seq {
            return Err(BrokenLink {
                seq: want_seq,
                reason: format!("entry {want_seq} is missing (next present entry is {})", a.seq),
            });
        }
        if a.prev_hash != want_prev {
            return Err(BrokenLink { seq: a.seq, reason: "its link to the previous entry does not match".into() });
        }
        if chain_hash(&a.prev_hash, a.seq, &a.entry) != a.hash {
            return Err(BrokenLink { seq: a.seq, reason: "its content does not match its hash (altered)".into() });
        }
        last = Some((a.seq, a.hash.clone()));
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_types::Timestamp;

    fn entry(n: i64) -> NewAuditEntry {
        NewAuditEntry {
            ts: Timestamp(n),
            principal: "operator:admin".into(),
            action: "POST /api/v1/deployments".into(),
            target: format!("d{n}"),
            outcome: "success".into(),
            source: "127.0.0.1:5000".into(),
            request_id: format!("r{n}"),
            detail: serde_json::json!({"status": 201}),
        }
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let last = out.last().map(|a| (a.seq, a.hash.clone()));
            out.push(link(last, entry(i)));
        }
        out
    }

    #[test]
    fn a_clean_chain_verifies_and_can_continue() {
        let c = chain(5);
        let head = verify(None, &c[..3]).unwrap();
        assert_eq!(verify(head, &c[3..]).unwrap().unwrap().0, 5);
    }

    #[test]
    fn alteration_removal_and_relinking_are_found() {
        let mut c = chain(5);
        c[2].entry.outcome = "failure".into();
        assert_eq!(verify(None, &c).unwrap_err().seq, 3);

        let mut c = chain(5);
        c.remove(1);
        let e = verify(None, &c).unwrap_err();
        assert_eq!(e.seq, 2);
        assert!(e.reason.contains("missing"));

        // Re-hashing an altered row still breaks the next link.
        let mut c = chain(5);
        c[1].entry.target = "other".into();
        c[1].hash = chain_hash(&c[1].prev_hash, c[1].seq, &c[1].entry);
        assert_eq!(verify(None, &c).unwrap_err().seq, 3);
    }
}
