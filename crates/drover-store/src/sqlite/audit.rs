//! The audit log on SQLite: the one writer connection makes appends a total order.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::audit::{self, AuditEntry, ChainKey, NewAuditEntry};
use drover_core::store::{AuditFilter, AuditStore};
use rusqlite::params;

use super::{SqliteStore, all, err, exec, one};
use crate::{rows, sql};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit_batch(&self, entries: &[NewAuditEntry], key: Option<&ChainKey>) -> Result<Vec<AuditEntry>> {
        let entries = entries.to_vec();
        let key = key.cloned();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let mut last = one(&tx, sql::AUDIT_HEAD, [], |r| {
                Ok((r.get::<_, i64>(0).map_err(err)?, r.get::<_, String>(1).map_err(err)?))
            })?;
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                let a = audit::link(key.as_ref(), last.take(), e);
                let p = params![
                    a.seq,
                    a.entry.ts.0,
                    a.entry.principal,
                    a.entry.action,
                    a.entry.target,
                    a.entry.outcome,
                    a.entry.source,
                    a.entry.request_id,
                    a.entry.detail.to_string(),
                    a.prev_hash,
                    a.hash
                ];
                exec(&tx, sql::AUDIT_INSERT, p)?;
                last = Some((a.seq, a.hash.clone()));
                out.push(a);
            }
            tx.commit().map_err(err)?;
            Ok(out)
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        self.read(|c| {
            one(c, sql::AUDIT_HEAD, [], |r| Ok((r.get::<_, i64>(0).map_err(err)?, r.get::<_, String>(1).map_err(err)?)))
        })
        .await
    }

    async fn audit_entries(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.read(move |c| all(c, sql::AUDIT_AFTER, params![after_seq, limit as i64], |r| rows::audit_entry(r))).await
    }

    async fn search_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let f = f.clone();
        self.read(move |c| {
            let action = f.action.as_ref().map(|a| format!("%{a}%"));
            let limit = f.limit.unwrap_or(100).min(10_000) as i64;
            let p = params![f.principal, action, f.outcome, f.before, limit];
            all(c, sql::AUDIT_SEARCH, p, |r| rows::audit_entry(r))
        })
        .await
    }
}
