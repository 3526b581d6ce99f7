//! OAuth 2.0 client registrations on SQLite.

use async_trait::async_trait;
use drover_core::store::{ClientRecord, ClientStore};
use drover_core::{Error, Result};
use rusqlite::params;

use super::{SqliteStore, all, err, exec, is_conflict, one};
use crate::{json_err, rows, sql};

#[async_trait]
impl ClientStore for SqliteStore {
    async fn insert_client(&self, c: &ClientRecord) -> Result<()> {
        let c = c.clone();
        let roles = serde_json::to_string(&c.roles).map_err(json_err)?;
        let meta = serde_json::to_string(&c.metadata).map_err(json_err)?;
        self.write(move |conn| {
            let p = params![
                c.client_id,
                c.secret_hash,
                c.previous_secret_hash,
                c.previous_valid_until.map(|t| t.0),
                roles,
                c.disabled as i64,
                c.tokens_not_before.0,
                c.created_at.0,
                c.secret_rotated_at.map(|t| t.0),
                meta
            ];
            match conn.prepare_cached(sql::CLIENT_INSERT).and_then(|mut s| s.execute(p)) {
                Ok(_) => Ok(()),
                Err(e) if is_conflict(&e) => Err(Error::Conflict(format!("client {} exists already", c.client_id))),
                Err(e) => Err(err(e)),
            }
        })
        .await
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        let id = client_id.to_string();
        self.read(move |c| one(c, sql::CLIENT_GET, [id], |r| rows::client(r))).await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        self.read(|c| all(c, sql::CLIENT_LIST, [], |r| rows::client(r))).await
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<bool> {
        let c = c.clone();
        let roles = serde_json::to_string(&c.roles).map_err(json_err)?;
        let meta = serde_json::to_string(&c.metadata).map_err(json_err)?;
        self.write(move |conn| {
            let p = params![
                c.secret_hash,
                c.previous_secret_hash,
                c.previous_valid_until.map(|t| t.0),
                roles,
                c.disabled as i64,
                c.tokens_not_before.0,
                c.secret_rotated_at.map(|t| t.0),
                meta,
                c.client_id
            ];
            Ok(exec(conn, sql::CLIENT_UPDATE, p)? == 1)
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        let id = client_id.to_string();
        self.write(move |c| Ok(exec(c, sql::CLIENT_DELETE, [id])? == 1)).await
    }
}
