//! The audit log on PostgreSQL: an advisory lock makes appends a total order across replicas.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::audit::{self, AuditEntry, ChainKey, NewAuditEntry};
use drover_core::store::{AuditFilter, AuditStore};

use super::{PgStore, db_err};
use crate::{rows, sql};

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit_batch(&self, entries: &[NewAuditEntry], key: Option<&ChainKey>) -> Result<Vec<AuditEntry>> {
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        sqlx::query(sql::PG_AUDIT_LOCK).execute(&mut *tx).await.map_err(db_err)?;
        let mut last: Option<(i64, String)> =
            sqlx::query_as(sql::AUDIT_HEAD).fetch_optional(&mut *tx).await.map_err(db_err)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let a = audit::link(key, last.take(), e.clone());
            sqlx::query(sql::AUDIT_INSERT)
                .bind(a.seq)
                .bind(a.entry.ts.0)
                .bind(&a.entry.principal)
                .bind(&a.entry.action)
                .bind(&a.entry.target)
                .bind(&a.entry.outcome)
                .bind(&a.entry.source)
                .bind(&a.entry.request_id)
                .bind(a.entry.detail.to_string())
                .bind(&a.prev_hash)
                .bind(&a.hash)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            last = Some((a.seq, a.hash.clone()));
            out.push(a);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        sqlx::query_as(sql::AUDIT_HEAD).fetch_optional(&self.pool()).await.map_err(db_err)
    }

    async fn audit_entries(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(sql::AUDIT_AFTER)
            .bind(after_seq)
            .bind(limit as i64)
            .fetch_all(&self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::audit_entry).collect()
    }

    async fn search_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(sql::AUDIT_SEARCH)
            .bind(f.principal.as_deref())
            .bind(f.action.as_ref().map(|a| format!("%{a}%")))
            .bind(f.outcome.as_deref())
            .bind(f.before)
            .bind(f.limit.unwrap_or(100).min(10_000) as i64)
            .fetch_all(&self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::audit_entry).collect()
    }
}
