//! Token-signing keys and the master key that seals them at rest.
//!
//! The master key (32 random bytes, hex) lives in `DATA_DIR/master.key` (mode 0600), in the
//! file named by `DROVER_MASTER_KEY_FILE`, or in the `DROVER_MASTER_KEY` environment variable;
//! sealed values carry its id, so it can be rotated.
//! Signing keys are stored sealed (AES-256-GCM); the active one signs, all of them verify, so a
//! rotated-out key keeps verifying the tokens it signed until they expire.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use drover_core::Store;
use drover_core::store::SigningKeyRecord;
use drover_types::Timestamp;
use sha2::{Digest, Sha256};

use super::jwt::{self, Alg, SigningKey, VerifyKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key {0}: {1}")]
    MasterKey(String, String),
    #[error("sealed value: {0}")]
    Sealed(String),
    #[error("key: {0}")]
    Key(String),
    #[error("{0}")]
    Store(#[from] drover_core::Error),
}

/// Seals and opens secrets at rest. Values sealed under a retired master key (kept beside the
/// current one as `PATH.retired-<id>` after a rotation) still open.
pub struct MasterKey {
    id: String,
    key: LessSafeKey,
    retired: Vec<(String, LessSafeKey)>,
}

fn key_from_hex(text: &str, shown: &str) -> Result<(String, LessSafeKey), KeyError> {
    let bytes =
        hex::decode(text.trim()).map_err(|_| KeyError::MasterKey(shown.into(), "not 64 hex characters".into()))?;
    if bytes.len() != 32 {
        return Err(KeyError::MasterKey(shown.into(), "not 64 hex characters".into()));
    }
    let id = hex::encode(&Sha256::digest(&bytes)[..8]);
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyError::MasterKey(shown.into(), "unusable".into()))?,
    );
    Ok((id, key))
}

fn read_key_file(path: &Path) -> Result<(String, LessSafeKey), KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::MasterKey(shown.clone(), e.to_string()))?;
    key_from_hex(&text, &shown)
}

fn write_key_file(path: &Path) -> Result<(), KeyError> {
    use std::io::Write;
    let shown = path.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| KeyError::MasterKey(shown.clone(), e.to_string()))?;
    writeln!(f, "{}", hex::encode(rand::random::<[u8; 32]>()))
        .map_err(|e| KeyError::MasterKey(shown.clone(), e.to_string()))?;
    f.sync_all().map_err(|e| KeyError::MasterKey(shown, e.to_string()))
}

impl MasterKey {
    /// Loads `path` (and the retired keys beside it), creating it (0600) with a fresh random
    /// key when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        if !path.exists() {
            write_key_file(path)?;
        }
        let (id, key) = read_key_file(path)?;
        let mut retired = Vec::new();
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            let prefix = format!("{name}.retired-");
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                        retired.push(read_key_file(&e.path())?);
                    }
                }
            }
        }
        Ok(MasterKey { id, key, retired })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The master key from `DROVER_MASTER_KEY` (64 hex characters), with retired keys from
    /// `DROVER_MASTER_KEY_RETIRED` (comma-separated); `None` when the variable is not set.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        let Ok(current) = std::env::var("DROVER_MASTER_KEY") else { return Ok(None) };
        let (id, key) = key_from_hex(&current, "DROVER_MASTER_KEY")?;
        let mut retired = Vec::new();
        if let Ok(list) = std::env::var("DROVER_MASTER_KEY_RETIRED") {
            for k in list.split(',').filter(|k| !k.trim().is_empty()) {
                retired.push(key_from_hex(k, "DROVER_MASTER_KEY_RETIRED")?);
            }
        }
        Ok(Some(MasterKey { id, key, retired }))
    }

    /// `DROVER_MASTER_KEY` when set, else the key file (created when missing).
    pub fn configured(path: &Path) -> Result<Self, KeyError> {
        match Self::from_env()? {
            Some(k) => Ok(k),
            None => Self::load_or_create(path),
        }
    }

    /// Master-key rotation, step one: the current key file moves to `PATH.retired-<id>` and a
    /// new key takes its place. Returns the new key (which still opens the old values); the
    /// caller re-seals everything, after which the retired file may be deleted.
    pub fn rotate_file(path: &Path) -> Result<MasterKey, KeyError> {
        let old = Self::load_or_create(path)?;
        let retired = path.with_file_name(format!(
            "{}.retired-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("master.key"),
            old.id
        ));
        std::fs::rename(path, &retired).map_err(|e| KeyError::MasterKey(path.display().to_string(), e.to_string()))?;
        write_key_file(path)?;
        Self::load_or_create(path)
    }

    /// `v1.<master key id>.<base64url(nonce || ciphertext || tag)>`.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<String, KeyError> {
        let nonce_bytes: [u8; 12] = rand::random();
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Sealed("sealing failed".into()))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("v1.{}.{}", self.id, B64.encode(out)))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, KeyError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Sealed("unknown format".into()));
        };
        let key = if id == self.id {
            &self.key
        } else if let Some((_, k)) = self.retired.iter().find(|(rid, _)| rid == id) {
            k
        } else {
            return Err(KeyError::Sealed(format!("sealed with master key {id}, this one is {}", self.id)));
        };
        let raw = B64.decode(body).map_err(|_| KeyError::Sealed("not base64".into()))?;
        if raw.len() < 12 + 16 {
            return Err(KeyError::Sealed("too short".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        let mut buf = ct.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Sealed("bad nonce".into()))?;
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Sealed("does not open with this master key (tampered, or another key)".into()))?;
        Ok(plain.to_vec())
    }
}

/// Re-seals every stored signing key under `new` (master-key rotation); `new` must still open
/// what the old key sealed (it keeps the retired key). Returns how many.
pub async fn reseal_signing_keys(store: &dyn Store, new: &MasterKey) -> Result<usize, KeyError> {
    let mut n = 0;
    for r in store.list_signing_keys().await? {
        let plain = new.open(&r.private_key, &r.kid)?;
        store.update_signing_key_material(&r.kid, &new.seal(&plain, &r.kid)?).await?;
        n += 1;
    }
    Ok(n)
}

/// A key that can verify tokens (and sign them, when active).
pub struct VerifyingKey {
    pub key: VerifyKey,
    pub jwk: serde_json::Value,
    pub retired_at: Option<Timestamp>,
}

/// The keys that sign and verify access tokens, kept in step with the store.
pub struct KeyRing {
    master: MasterKey,
    active: RwLock<Option<Arc<SigningKey>>>,
    verifying: RwLock<HashMap<String, Arc<VerifyingKey>>>,
}

/// A retired key stays in the JWKS until every token it signed has expired.
fn still_verifies(retired_at: Option<Timestamp>, now: Timestamp) -> bool {
    let keep = super::ACCESS_TOKEN_TTL + std::time::Duration::from_secs(super::CLOCK_SKEW_SECS + 60);
    retired_at.is_none_or(|r| r.plus(keep) > now)
}

/// The algorithm a client's JWK allows for an assertion: the JWK's `alg` when it has one, else
/// the header's if it fits the key type. Never HMAC, never `none`.
pub fn jwk_algorithm(
    jwk: &jsonwebtoken::jwk::Jwk,
    header_alg: jsonwebtoken::Algorithm,
) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm as A;
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    let fits = |a: A| match &jwk.algorithm {
        P::EllipticCurve(_) => matches!(a, A::ES256 | A::ES384),
        P::OctetKeyPair(_) => a == A::EdDSA,
        P::RSA(_) => matches!(a, A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512),
        P::OctetKey(_) => false,
    };
    let declared = jwk.common.key_algorithm.and_then(|k| k.to_string().parse::<A>().ok());
    match declared {
        Some(a) if a == header_alg && fits(a) => Some(a),
        Some(_) => None,
        None => fits(header_alg).then_some(header_alg),
    }
}

impl KeyRing {
    /// Loads every key from the store; creates an ES256 key when there is none.
    pub async fn load(store: &dyn Store, master: MasterKey) -> Result<Self, KeyError> {
        let ring = KeyRing { master, active: RwLock::new(None), verifying: RwLock::new(HashMap::new()) };
        if store.list_signing_keys().await?.is_empty() {
            let rec = ring.generate(Alg::ES256, true)?;
            store.insert_signing_key(&rec).await?;
            tracing::info!(kid = %rec.kid, "created a token-signing key (ES256)");
        }
        ring.reload(store).await?;
        Ok(ring)
    }

    /// A new key, sealed.
    fn generate(&self, alg: Alg, active: bool) -> Result<SigningKeyRecord, KeyError> {
        let der = jwt::generate(alg).map_err(KeyError::Key)?;
        self.record(&der, Some(alg), active)
    }

    /// Seals a PKCS#8 key into a record (its kid derives from the public key).
    pub fn record(&self, pkcs8: &[u8], alg: Option<Alg>, active: bool) -> Result<SigningKeyRecord, KeyError> {
        let key = SigningKey::from_pkcs8(pkcs8, alg).map_err(KeyError::Key)?;
        Ok(SigningKeyRecord {
            private_key: self.master.seal(pkcs8, &key.kid)?,
            kid: key.kid.clone(),
            alg: key.alg.as_str().into(),
            public_jwk: key.public_jwk().to_string(),
            active,
            created_at: Timestamp::now(),
            retired_at: None,
            cert_subject: None,
            cert_not_after: None,
        })
    }

    /// Re-reads the keys from the store (after a rotation or an import).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), KeyError> {
        let mut verifying = HashMap::new();
        let mut active = None;
        for r in store.list_signing_keys().await? {
            let pkcs8 = self.master.open(&r.private_key, &r.kid)?;
            let alg = Alg::parse(&r.alg)
                .ok_or_else(|| KeyError::Key(format!("key {} has unsupported algorithm {}", r.kid, r.alg)))?;
            let key = SigningKey::from_pkcs8(&pkcs8, Some(alg))
                .map_err(|e| KeyError::Key(format!("key {} does not load: {e}", r.kid)))?;
            let verify = key.verifier().map_err(KeyError::Key)?;
            verifying.insert(
                r.kid.clone(),
                Arc::new(VerifyingKey { key: verify, jwk: key.public_jwk(), retired_at: r.retired_at }),
            );
            if r.active {
                active = Some(Arc::new(key));
            }
        }
        let Some(active) = active else { return Err(KeyError::Key("no active signing key".into())) };
        *self.verifying.write().expect("poisoned") = verifying;
        *self.active.write().expect("poisoned") = Some(active);
        Ok(())
    }

    /// Generates a new key and makes it the active one; the old one keeps verifying.
    pub async fn rotate(&self, store: &dyn Store, alg: Alg) -> Result<String, KeyError> {
        let rec = self.generate(alg, false)?;
        store.insert_signing_key(&rec).await?;
        store.activate_signing_key(&rec.kid, Timestamp::now()).await?;
        self.reload(store).await?;
        tracing::info!(kid = %rec.kid, %alg, "token-signing key rotated");
        Ok(rec.kid)
    }

    /// Adds an imported PKCS#8 key, optionally making it active.
    pub async fn import(
        &self,
        store: &dyn Store,
        pkcs8: &[u8],
        alg: Option<Alg>,
        activate: bool,
        certificate: Option<&drover_types::KeyCertificate>,
    ) -> Result<(String, Alg), KeyError> {
        let mut rec = self.record(pkcs8, alg, false)?;
        rec.cert_subject = certificate.map(|c| c.subject.clone());
        rec.cert_not_after = certificate.map(|c| c.not_after);
        if self.verifying.read().expect("poisoned").contains_key(&rec.kid)
            || store.list_signing_keys().await?.iter().any(|k| k.kid == rec.kid)
        {
            return Err(KeyError::Store(drover_core::Error::Conflict(format!("key {} is already present", rec.kid))));
        }
        store.insert_signing_key(&rec).await?;
        if activate {
            store.activate_signing_key(&rec.kid, Timestamp::now()).await?;
        }
        self.reload(store).await?;
        tracing::info!(kid = %rec.kid, alg = %rec.alg, activate, "token-signing key imported");
        Ok((rec.kid, Alg::parse(&rec.alg).unwrap_or(Alg::ES256)))
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    pub fn active_kid(&self) -> Option<String> {
        self.active.read().expect("poisoned").as_ref().map(|a| a.kid.clone())
    }

    pub fn active_alg(&self) -> Option<Alg> {
        self.active.read().expect("poisoned").as_ref().map(|a| a.alg)
    }

    /// Signs claims with the active key (`kid` in the header, `typ: at+jwt`).
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let a = self.active.read().expect("poisoned").clone().ok_or_else(|| KeyError::Key("no active key".into()))?;
        a.sign(claims).map_err(KeyError::Key)
    }

    pub fn verifying_key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let k = self.verifying.read().expect("poisoned").get(kid).cloned()?;
        still_verifies(k.retired_at, Timestamp::now()).then_some(k)
    }

    /// The JWKS document: every key that may still verify a token.
    /// Keys that verify tokens now (the active one and the retired ones still in the JWKS).
    pub fn verifying_count(&self) -> usize {
        self.verifying.read().expect("poisoned").len()
    }

    pub fn jwks(&self) -> serde_json::Value {
        let now = Timestamp::now();
        let keys: Vec<serde_json::Value> = self
            .verifying
            .read()
            .expect("poisoned")
            .values()
            .filter(|k| still_verifies(k.retired_at, now))
            .map(|k| k.jwk.clone())
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_detects_tampering_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let m = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let s = m.seal(b"private key bytes", "kid1").unwrap();
        assert!(!s.contains("private"));
        assert_eq!(m.open(&s, "kid1").unwrap(), b"private key bytes");
        assert!(m.open(&s, "kid2").is_err(), "bound to its context");
        let mut t = s.clone().into_bytes();
        let n = t.len();
        t[n - 3] = if t[n - 3] == b'A' { b'B' } else { b'A' };
        assert!(m.open(std::str::from_utf8(&t).unwrap(), "kid1").is_err(), "tampering is detected");
        let other = MasterKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(other.open(&s, "kid1").unwrap_err().to_string().contains("sealed with master key"));
        let again = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        assert_eq!(again.open(&s, "kid1").unwrap(), b"private key bytes", "the file is reused");
    }
}
