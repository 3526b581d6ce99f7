//! Operators on SQLite.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::{OperatorRecord, OperatorStore};
use drover_types::Timestamp;
use rusqlite::params;

use super::{SqliteStore, all, err, exec, one};
use crate::{json_err, opt_ts, rows, sql};

#[async_trait]
impl OperatorStore for SqliteStore {
    async fn insert_operator(&self, op: &OperatorRecord) -> Result<bool> {
        let op = op.clone();
        let roles = serde_json::to_string(&op.roles).map_err(json_err)?;
        self.write(move |c| {
            let p = params![op.name, op.password_hash, roles, op.disabled as i64, op.created_at.0, op.email];
            Ok(exec(c, sql::OPERATOR_INSERT, p)? == 1)
        })
        .await
    }

    async fn get_operator(&self, name: &str) -> Result<Option<OperatorRecord>> {
        let name = name.to_string();
        self.read(move |c| one(c, sql::OPERATOR_GET, [name], |r| rows::operator(r))).await
    }

    async fn list_operators(&self) -> Result<Vec<OperatorRecord>> {
        self.read(|c| all(c, sql::OPERATOR_LIST, [], |r| rows::operator(r))).await
    }

    async fn update_operator(&self, op: &OperatorRecord) -> Result<bool> {
        let op = op.clone();
        let roles = serde_json::to_string(&op.roles).map_err(json_err)?;
        self.write(move |c| {
            let p = params![
                op.password_hash,
                roles,
                op.disabled as i64,
                op.email,
                op.failed_logins as i64,
                op.locked_until.map(|t| t.0),
                op.name
            ];
            Ok(exec(c, sql::OPERATOR_UPDATE, p)? == 1)
        })
        .await
    }

    async fn login_failed(
        &self,
        name: &str,
        threshold: u32,
        lock_until: Timestamp,
    ) -> Result<Option<(u32, Option<Timestamp>)>> {
        let name = name.to_string();
        self.write(move |c| {
            one(c, sql::OPERATOR_LOGIN_FAILED, params![threshold as i64, lock_until.0, name], |r| {
                let n: i64 = r.get(0).map_err(err)?;
                let l: Option<i64> = r.get(1).map_err(err)?;
                Ok((n as u32, opt_ts(l)))
            })
        })
        .await
    }

    async fn login_succeeded(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| exec(c, sql::OPERATOR_LOGIN_SUCCEEDED, [name]).map(|_| ())).await
    }
}
