//! Token-signing keys and the token deny-list on SQLite.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::{KeyStore, SigningKeyRecord};
use drover_types::Timestamp;
use rusqlite::params;

use super::{SqliteStore, all, err, exec, one};
use crate::{rows, sql};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_signing_key(&self, k: &SigningKeyRecord) -> Result<()> {
        let k = k.clone();
        self.write(move |c| {
            let p = params![
                k.kid,
                k.alg,
                k.private_key,
                k.public_jwk,
                k.active as i64,
                k.created_at.0,
                k.retired_at.map(|t| t.0),
                k.cert_subject,
                k.cert_not_after.map(|t| t.0)
            ];
            exec(c, sql::KEY_INSERT, p).map(|_| ())
        })
        .await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.read(|c| all(c, sql::KEY_LIST, [], |r| rows::signing_key(r))).await
    }

    async fn activate_signing_key(&self, kid: &str, now: Timestamp) -> Result<bool> {
        let kid = kid.to_string();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            if one(&tx, sql::KEY_EXISTS, [&kid], |_| Ok(()))?.is_none() {
                return Ok(false);
            }
            exec(&tx, sql::KEY_RETIRE_OTHERS, params![now.0, kid])?;
            exec(&tx, sql::KEY_ACTIVATE, [&kid])?;
            tx.commit().map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn update_signing_key_material(&self, kid: &str, sealed: &str) -> Result<bool> {
        let (kid, sealed) = (kid.to_string(), sealed.to_string());
        self.write(move |c| Ok(exec(c, sql::KEY_RESEAL, params![sealed, kid])? == 1)).await
    }

    async fn revoke_token(&self, jti: &str, expires_at: Timestamp) -> Result<()> {
        let jti = jti.to_string();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            exec(&tx, sql::REVOKED_PRUNE, [Timestamp::now().0])?;
            exec(&tx, sql::REVOKED_INSERT, params![jti, expires_at.0])?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        let jti = jti.to_string();
        self.read(move |c| Ok(one(c, sql::REVOKED_GET, [jti], |_| Ok(()))?.is_some())).await
    }
}
