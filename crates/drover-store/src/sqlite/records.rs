//! Small versioned records on SQLite.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::RecordStore;
use drover_types::Timestamp;
use rusqlite::params;

use super::{SqliteStore, all, err, exec, one};
use crate::{rows, sql};

#[async_trait]
impl RecordStore for SqliteStore {
    async fn record_insert(&self, kind: &str, key: &str, body: &str, expires_at: Option<Timestamp>) -> Result<bool> {
        let (kind, key, body) = (kind.to_string(), key.to_string(), body.to_string());
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            exec(&tx, sql::RECORD_PRUNE, params![Timestamp::now().0, kind])?;
            let n = exec(&tx, sql::RECORD_INSERT, params![kind, key, body, expires_at.map(|t| t.0)])?;
            tx.commit().map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_get(&self, kind: &str, key: &str) -> Result<Option<(String, i64)>> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.read(move |c| one(c, sql::RECORD_GET, params![kind, key, Timestamp::now().0], |r| rows::record(r))).await
    }

    async fn record_list(&self, kind: &str) -> Result<Vec<(String, String, i64)>> {
        let kind = kind.to_string();
        self.read(move |c| all(c, sql::RECORD_LIST, params![kind, Timestamp::now().0], |r| rows::keyed_record(r))).await
    }

    async fn record_update(
        &self,
        kind: &str,
        key: &str,
        version: i64,
        body: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<bool> {
        let (kind, key, body) = (kind.to_string(), key.to_string(), body.to_string());
        self.write(move |c| {
            let p = params![body, expires_at.map(|t| t.0), kind, key, version, Timestamp::now().0];
            Ok(exec(c, sql::RECORD_UPDATE, p)? == 1)
        })
        .await
    }

    async fn record_take(&self, kind: &str, key: &str) -> Result<Option<String>> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let taken = one(&tx, sql::RECORD_TAKE, params![kind, key], |r| {
                Ok((r.get::<_, String>(0).map_err(err)?, r.get::<_, Option<i64>>(1).map_err(err)?))
            })?;
            tx.commit().map_err(err)?;
            Ok(taken.filter(|(_, exp)| exp.is_none_or(|e| e > Timestamp::now().0)).map(|(b, _)| b))
        })
        .await
    }

    async fn record_delete(&self, kind: &str, key: &str) -> Result<bool> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.write(move |c| Ok(exec(c, sql::RECORD_DELETE, params![kind, key])? == 1)).await
    }
}
