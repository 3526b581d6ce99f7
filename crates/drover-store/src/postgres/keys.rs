//! Token-signing keys and the token deny-list on PostgreSQL.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::{KeyStore, SigningKeyRecord};
use drover_types::Timestamp;

use super::{PgStore, db_err};
use crate::{rows, sql};

#[async_trait]
impl KeyStore for PgStore {
    async fn insert_signing_key(&self, k: &SigningKeyRecord) -> Result<()> {
        sqlx::query(sql::KEY_INSERT)
            .bind(&k.kid)
            .bind(&k.alg)
            .bind(&k.private_key)
            .bind(&k.public_jwk)
            .bind(k.active as i64)
            .bind(k.created_at.0)
            .bind(k.retired_at.map(|t| t.0))
            .bind(&k.cert_subject)
            .bind(k.cert_not_after.map(|t| t.0))
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(sql::KEY_LIST).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::signing_key).collect()
    }

    async fn activate_signing_key(&self, kid: &str, now: Timestamp) -> Result<bool> {
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        let exists: Option<String> =
            sqlx::query_scalar(sql::KEY_EXISTS).bind(kid).fetch_optional(&mut *tx).await.map_err(db_err)?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(sql::KEY_RETIRE_OTHERS).bind(now.0).bind(kid).execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query(sql::KEY_ACTIVATE).bind(kid).execute(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn update_signing_key_material(&self, kid: &str, sealed: &str) -> Result<bool> {
        let r = sqlx::query(sql::KEY_RESEAL).bind(sealed).bind(kid).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn revoke_token(&self, jti: &str, expires_at: Timestamp) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        sqlx::query(sql::REVOKED_PRUNE).bind(Timestamp::now().0).execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query(sql::REVOKED_INSERT).bind(jti).bind(expires_at.0).execute(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        let r: Option<String> =
            sqlx::query_scalar(sql::REVOKED_GET).bind(jti).fetch_optional(&self.pool()).await.map_err(db_err)?;
        Ok(r.is_some())
    }
}
