//! Token-signing keys and the master key that seals them at rest.
//!
//! The master key (32 random bytes, hex) lives in `DATA_DIR/master.key` (mode 0600) or in the
//! file named by `DROVER_MASTER_KEY_FILE`; sealed values carry its id, so it can be rotated.
//! Signing keys are stored sealed (AES-256-GCM); the active one signs, all of them verify, so a
//! rotated-out key keeps verifying the tokens it signed until they expire.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use drover_core::Store;
use drover_core::store::SigningKeyRecord;
use drover_types::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

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

/// Seals and opens secrets at rest.
pub struct MasterKey {
    id: String,
    key: LessSafeKey,
}

impl MasterKey {
    /// Loads `path`, creating it (0600) with a fresh random key when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        if !path.exists() {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| KeyError::MasterKey(shown.clone(), e.to_string()))?;
            writeln!(f, "{}", hex::encode(rand::random::<[u8; 32]>()))
                .map_err(|e| KeyError::MasterKey(shown.clone(), e.to_string()))?;
            f.sync_all().map_err(|e| KeyError::MasterKey(shown.clone(), e.to_string()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::MasterKey(shown.clone(), e.to_string()))?;
        let bytes =
            hex::decode(text.trim()).map_err(|_| KeyError::MasterKey(shown.clone(), "not 64 hex characters".into()))?;
        if bytes.len() != 32 {
            return Err(KeyError::MasterKey(shown, "not 64 hex characters".into()));
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..8]);
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyError::MasterKey(shown, "unusable".into()))?,
        );
        Ok(MasterKey { id, key })
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
        if id != self.id {
            return Err(KeyError::Sealed(format!("sealed with master key {id}, this one is {}", self.id)));
        }
        let raw = B64.decode(body).map_err(|_| KeyError::Sealed("not base64".into()))?;
        if raw.len() < 12 + 16 {
            return Err(KeyError::Sealed("too short".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        let mut buf = ct.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Sealed("bad nonce".into()))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Sealed("does not open with this master key (tampered, or another key)".into()))?;
        Ok(plain.to_vec())
    }
}

/// A key that can verify tokens (and sign them, when active).
pub struct VerifyingKey {
    pub alg: Algorithm,
    pub decoding: DecodingKey,
    pub jwk: serde_json::Value,
    pub retired_at: Option<Timestamp>,
}

struct Active {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
}

/// The keys that sign and verify access tokens, kept in step with the store.
pub struct KeyRing {
    master: MasterKey,
    active: RwLock<Option<Arc<Active>>>,
    verifying: RwLock<HashMap<String, Arc<VerifyingKey>>>,
}

fn es256_jwk(kid: &str, public: &[u8]) -> Result<serde_json::Value, KeyError> {
    // Uncompressed point: 0x04 || x (32) || y (32).
    if public.len() != 65 || public[0] != 4 {
        return Err(KeyError::Key("unexpected P-256 public key encoding".into()));
    }
    Ok(serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..65]),
    }))
}

/// A retired key stays in the JWKS until every token it signed has expired.
fn still_verifies(retired_at: Option<Timestamp>, now: Timestamp) -> bool {
    let keep = super::ACCESS_TOKEN_TTL + std::time::Duration::from_secs(super::CLOCK_SKEW_SECS + 60);
    retired_at.is_none_or(|r| r.plus(keep) > now)
}

impl KeyRing {
    /// Loads every key from the store; creates an ES256 key when there is none.
    pub async fn load(store: &dyn Store, master: MasterKey) -> Result<Self, KeyError> {
        let ring = KeyRing { master, active: RwLock::new(None), verifying: RwLock::new(HashMap::new()) };
        if store.list_signing_keys().await?.is_empty() {
            let rec = ring.generate(true)?;
            store.insert_signing_key(&rec).await?;
            tracing::info!(kid = %rec.kid, "created a token-signing key (ES256)");
        }
        ring.reload(store).await?;
        Ok(ring)
    }

    /// A new ES256 key, sealed.
    fn generate(&self, active: bool) -> Result<SigningKeyRecord, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Key("generating a P-256 key".into()))?;
        self.record(doc.as_ref(), active)
    }

    /// Seals a PKCS#8 P-256 key into a record (its kid derives from the public key).
    pub fn record(&self, pkcs8: &[u8], active: bool) -> Result<SigningKeyRecord, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(|_| {
            KeyError::Key("not a P-256 (ES256) private key; RSA and Ed25519 signing keys are not supported yet".into())
        })?;
        let kid = hex::encode(&Sha256::digest(pair.public_key().as_ref())[..8]);
        let jwk = es256_jwk(&kid, pair.public_key().as_ref())?;
        Ok(SigningKeyRecord {
            private_key: self.master.seal(pkcs8, &kid)?,
            kid,
            alg: "ES256".into(),
            public_jwk: jwk.to_string(),
            active,
            created_at: Timestamp::now(),
            retired_at: None,
        })
    }

    /// Re-reads the keys from the store (after a rotation or an import).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), KeyError> {
        let mut verifying = HashMap::new();
        let mut active = None;
        for r in store.list_signing_keys().await? {
            let pkcs8 = self.master.open(&r.private_key, &r.kid)?;
            let alg = match r.alg.as_str() {
                "ES256" => Algorithm::ES256,
                other => return Err(KeyError::Key(format!("key {} has unsupported algorithm {other}", r.kid))),
            };
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                .map_err(|_| KeyError::Key(format!("key {} does not load", r.kid)))?;
            let jwk = es256_jwk(&r.kid, pair.public_key().as_ref())?;
            let decoding = DecodingKey::from_ec_components(
                jwk["x"].as_str().unwrap_or_default(),
                jwk["y"].as_str().unwrap_or_default(),
            )
            .map_err(|e| KeyError::Key(e.to_string()))?;
            verifying.insert(r.kid.clone(), Arc::new(VerifyingKey { alg, decoding, jwk, retired_at: r.retired_at }));
            if r.active {
                active = Some(Arc::new(Active { kid: r.kid.clone(), alg, encoding: EncodingKey::from_ec_der(&pkcs8) }));
            }
        }
        let Some(active) = active else { return Err(KeyError::Key("no active signing key".into())) };
        *self.verifying.write().expect("poisoned") = verifying;
        *self.active.write().expect("poisoned") = Some(active);
        Ok(())
    }

    /// Generates a new key and makes it the active one; the old one keeps verifying.
    pub async fn rotate(&self, store: &dyn Store) -> Result<String, KeyError> {
        let rec = self.generate(false)?;
        store.insert_signing_key(&rec).await?;
        store.activate_signing_key(&rec.kid, Timestamp::now()).await?;
        self.reload(store).await?;
        tracing::info!(kid = %rec.kid, "token-signing key rotated");
        Ok(rec.kid)
    }

    /// Adds an imported PKCS#8 key, optionally making it active.
    pub async fn import(&self, store: &dyn Store, pkcs8: &[u8], activate: bool) -> Result<String, KeyError> {
        let rec = self.record(pkcs8, false)?;
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
        tracing::info!(kid = %rec.kid, activate, "token-signing key imported");
        Ok(rec.kid)
    }

    pub fn active_kid(&self) -> Option<String> {
        self.active.read().expect("poisoned").as_ref().map(|a| a.kid.clone())
    }

    /// Signs claims with the active key (`kid` in the header, `typ: at+jwt`).
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let a = self.active.read().expect("poisoned").clone().ok_or_else(|| KeyError::Key("no active key".into()))?;
        let mut h = jsonwebtoken::Header::new(a.alg);
        h.kid = Some(a.kid.clone());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&h, claims, &a.encoding).map_err(|e| KeyError::Key(e.to_string()))
    }

    pub fn verifying_key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let k = self.verifying.read().expect("poisoned").get(kid).cloned()?;
        still_verifies(k.retired_at, Timestamp::now()).then_some(k)
    }

    /// The JWKS document: every key that may still verify a token.
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
