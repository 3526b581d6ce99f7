//! The audit log: append-only and hash-chained. Each entry's hash covers its own fields and
//! the previous entry's hash, so altering or removing a row breaks the chain at that row. From
//! [`ChainKey::from_seq`] on, the hash is an HMAC-SHA256 under a key kept outside the database:
//! whoever can write the database cannot recompute a valid chain after changing it.

use sha2::{Digest, Sha256};

/// The hash that precedes the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use drover_types::audit::{AuditEntry, BrokenLink, NewAuditEntry};

/// The key of the chain, and the first entry it covers (entries before it, written before the
/// chain was keyed, are plain SHA-256).
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey {
    pub key: [u8; 32],
    pub from_seq: i64,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKey {{ key: ***, from_seq: {} }}", self.from_seq)
    }
}

/// The encoding an entry's hash covers: each field length-prefixed, so that no two different
/// entries encode the same. `detail` is its compact JSON text (`detail_json` in an export).
pub fn encoding(prev_hash: &str, seq: i64, e: &NewAuditEntry) -> Vec<u8> {
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
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |x: u8| block.map(|b| b ^ x);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(data).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// The chained hash of entry `seq`: HMAC-SHA256 under the chain key from its first entry on,
/// plain SHA-256 before (and without a key).
pub fn chain_hash_with(key: Option<&ChainKey>, prev_hash: &str, seq: i64, e: &NewAuditEntry) -> String {
    let data = encoding(prev_hash, seq, e);
    match key {
        Some(k) if seq >= k.from_seq => hex::encode(hmac_sha256(&k.key, &data)),
        _ => hex::encode(Sha256::digest(&data)),
    }
}

/// The unkeyed chained hash (entries before the chain was keyed).
pub fn chain_hash(prev_hash: &str, seq: i64, e: &NewAuditEntry) -> String {
    chain_hash_with(None, prev_hash, seq, e)
}

/// Links a new entry after `(last_seq, last_hash)` (or the genesis).
pub fn link(key: Option<&ChainKey>, last: Option<(i64, String)>, e: NewAuditEntry) -> AuditEntry {
    let (seq, prev_hash) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_string()),
    };
    let hash = chain_hash_with(key, &prev_hash, seq, &e);
    AuditEntry { seq, entry: e, prev_hash, hash }
}

/// Checks entries in `seq` order, continuing from `prev` (the last verified `(seq, hash)`).
pub fn verify(
    key: Option<&ChainKey>,
    prev: Option<(i64, String)>,
    entries: &[AuditEntry],
) -> Result<Option<(i64, String)>, BrokenLink> {
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
        if chain_hash_with(key, &a.prev_hash, a.seq, &a.entry) != a.hash {
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

    /// The hash as written before the chain was keyed: logs of earlier versions still verify.
    fn unkeyed_reference(prev_hash: &str, seq: i64, e: &NewAuditEntry) -> String {
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

    #[test]
    fn unkeyed_entries_hash_as_before_and_hmac_is_rfc_4231() {
        let e = entry(7);
        assert_eq!(chain_hash(GENESIS, 1, &e), unkeyed_reference(GENESIS, 1, &e));
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Keyed from entry 3 on: 1 and 2 are plain, 3 is not; a wrong key fails from 3.
        let k = ChainKey { key: [7; 32], from_seq: 3 };
        let mut c: Vec<AuditEntry> = Vec::new();
        for i in 0..5 {
            let last = c.last().map(|a| (a.seq, a.hash.clone()));
            c.push(link(Some(&k), last, entry(i)));
        }
        assert_eq!(c[1].hash, chain_hash(&c[1].prev_hash, 2, &c[1].entry));
        assert_ne!(c[2].hash, chain_hash(&c[2].prev_hash, 3, &c[2].entry));
        assert_eq!(verify(Some(&k), None, &c).unwrap().unwrap().0, 5);
        let wrong = ChainKey { key: [8; 32], from_seq: 3 };
        assert_eq!(verify(Some(&wrong), None, &c).unwrap_err().seq, 3);
        // Rewriting an entry and re-chaining it without the key is found.
        let mut forged = c.clone();
        forged[3].entry.outcome = "failure".into();
        for i in 3..5 {
            forged[i].prev_hash = forged[i - 1].hash.clone();
            forged[i].hash = chain_hash(&forged[i].prev_hash, forged[i].seq, &forged[i].entry);
        }
        assert_eq!(verify(Some(&k), None, &forged).unwrap_err().seq, 4);
    }

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
            out.push(link(None, last, entry(i)));
        }
        out
    }

    #[test]
    fn a_clean_chain_verifies_and_can_continue() {
        let c = chain(5);
        let head = verify(None, None, &c[..3]).unwrap();
        assert_eq!(verify(None, head, &c[3..]).unwrap().unwrap().0, 5);
    }

    #[test]
    fn alteration_removal_and_relinking_are_found() {
        let mut c = chain(5);
        c[2].entry.outcome = "failure".into();
        assert_eq!(verify(None, None, &c).unwrap_err().seq, 3);

        let mut c = chain(5);
        c.remove(1);
        let e = verify(None, None, &c).unwrap_err();
        assert_eq!(e.seq, 2);
        assert!(e.reason.contains("missing"));

        // Re-hashing an altered row still breaks the next link.
        let mut c = chain(5);
        c[1].entry.target = "other".into();
        c[1].hash = chain_hash(&c[1].prev_hash, c[1].seq, &c[1].entry);
        assert_eq!(verify(None, None, &c).unwrap_err().seq, 3);
    }
}
