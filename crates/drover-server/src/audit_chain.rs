//! What makes the audit log provable to someone who does not trust the database, kept outside
//! it in `DATA_DIR/audit/`:
//! - `chain.key`: the HMAC key of the chain (sealed with the master key) and the first entry it
//!   covers: whoever can write the database cannot re-chain rows they changed;
//! - `checkpoint.key` (sealed) and `checkpoint.pub`: an Ed25519 key that signs checkpoints;
//! - `checkpoints`: signed heads of the log (sequence number, hash, time), one JSON line each,
//!   appended and fsynced every few seconds while entries arrive and at shutdown — a log that
//!   ends before its last checkpoint was truncated; one whose entry differs from a checkpoint was
//!   rewritten.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use drover_core::Store;
use drover_core::audit::ChainKey;
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::oauth::keys::MasterKey;

/// How often the head is checkpointed while entries arrive.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const CHAIN_CONTEXT: &str = "audit-chain";
const SIGNER_CONTEXT: &str = "audit-checkpoints";

/// A signed head of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub ts: Timestamp,
    /// Ed25519 over [`Checkpoint::message`], base64url.
    pub sig: String,
}

impl Checkpoint {
    /// What the signature covers.
    pub fn message(seq: i64, hash: &str, ts: Timestamp) -> String {
        format!("drover-audit-checkpoint\n{seq}\n{hash}\n{}", ts.0)
    }
}

#[derive(Serialize, Deserialize)]
struct ChainFile {
    from_seq: i64,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
struct SignerFile {
    sealed: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Corrupt(PathBuf, String),
    #[error("{0}")]
    Key(#[from] crate::oauth::keys::KeyError),
    #[error("{0}")]
    Store(#[from] drover_core::Error),
}

pub struct AuditKeys {
    pub chain: ChainKey,
    signer: Ed25519KeyPair,
    dir: PathBuf,
    last: Mutex<Option<(i64, String)>>,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

fn write_private(path: &Path, text: &str) -> Result<(), ChainError> {
    let err = |e| ChainError::File(path.to_path_buf(), e);
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(d) = path.parent() {
        let _ = std::fs::File::open(d).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ChainError> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| ChainError::Corrupt(path.to_path_buf(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ChainError::File(path.to_path_buf(), e)),
    }
}

/// The newest entry of the log: (seq, hash).
async fn head(store: &dyn Store) -> Result<Option<(i64, String)>, drover_core::Error> {
    store.audit_head().await
}

impl AuditKeys {
    /// Loads the keys, or creates them on first start (the chain is keyed from the entry after
    /// the current head: a log written before stays verifiable as it was).
    pub async fn load_or_create(data_dir: &Path, master: &MasterKey, store: &dyn Store) -> Result<Self, ChainError> {
        let dir = dir(data_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ChainError::File(dir.clone(), e))?;
        let chain_path = dir.join("chain.key");
        let chain = match read_json::<ChainFile>(&chain_path)? {
            Some(f) => {
                let raw = master.open(&f.sealed, CHAIN_CONTEXT)?;
                let key: [u8; 32] =
                    raw.try_into().map_err(|_| ChainError::Corrupt(chain_path.clone(), "not a 32-byte key".into()))?;
                ChainKey { key, from_seq: f.from_seq }
            }
            None => {
                let key: [u8; 32] = rand::random();
                let from_seq = head(store).await?.map(|h| h.0 + 1).unwrap_or(1);
                let f = ChainFile { from_seq, sealed: master.seal(&key, CHAIN_CONTEXT)? };
                write_private(&chain_path, &serde_json::to_string(&f).unwrap_or_default())?;
                tracing::info!(from_seq, file = %chain_path.display(), "audit chain key created");
                ChainKey { key, from_seq }
            }
        };
        let signer_path = dir.join("checkpoint.key");
        let pkcs8 = match read_json::<SignerFile>(&signer_path)? {
            Some(f) => master.open(&f.sealed, SIGNER_CONTEXT)?,
            None => {
                let pkcs8 = crate::oauth::jwt::generate(crate::oauth::jwt::Alg::EdDSA)
                    .map_err(|e| ChainError::Corrupt(signer_path.clone(), e))?;
                let f = SignerFile { sealed: master.seal(&pkcs8, SIGNER_CONTEXT)? };
                write_private(&signer_path, &serde_json::to_string(&f).unwrap_or_default())?;
                pkcs8
            }
        };
        let signer = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|_| ChainError::Corrupt(signer_path.clone(), "not an Ed25519 key".into()))?;
        let public = B64.encode(signer.public_key().as_ref());
        let pub_path = dir.join("checkpoint.pub");
        if std::fs::read_to_string(&pub_path).ok().as_deref().map(str::trim) != Some(public.as_str()) {
            std::fs::write(&pub_path, format!("{public}\n")).map_err(|e| ChainError::File(pub_path.clone(), e))?;
        }
        let keys = AuditKeys { chain, signer, dir, last: Mutex::new(None) };
        *keys.last.lock().expect("poisoned") =
            keys.read_checkpoints().ok().and_then(|c| c.last().map(|c| (c.seq, c.hash.clone())));
        Ok(keys)
    }

    /// The checkpoint signer's public key (raw Ed25519, base64url).
    pub fn public_key(&self) -> String {
        B64.encode(self.signer.public_key().as_ref())
    }

    pub fn checkpoints_path(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// Appends a signed checkpoint of the head when it moved since the last one; fsynced.
    /// Returns the checkpoint written, if any.
    pub async fn checkpoint(&self, store: &dyn Store) -> Result<Option<Checkpoint>, ChainError> {
        let Some((seq, hash)) = head(store).await? else { return Ok(None) };
        if self.last.lock().expect("poisoned").as_ref().is_some_and(|(s, _)| *s >= seq) {
            return Ok(None);
        }
        let ts = Timestamp::now();
        let sig = B64.encode(self.signer.sign(Checkpoint::message(seq, &hash, ts).as_bytes()).as_ref());
        let c = Checkpoint { seq, hash: hash.clone(), ts, sig };
        let path = self.checkpoints_path();
        let line = serde_json::to_string(&c).unwrap_or_default();
        // The append and its fsync block: off the async workers.
        tokio::task::spawn_blocking(move || {
            let err = |e| ChainError::File(path.clone(), e);
            let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(err)?;
            writeln!(f, "{line}").map_err(err)?;
            f.sync_all().map_err(err)
        })
        .await
        .map_err(|e| ChainError::Corrupt(self.checkpoints_path(), e.to_string()))??;
        *self.last.lock().expect("poisoned") = Some((seq, hash));
        Ok(Some(c))
    }

    /// Every checkpoint written, each with its signature checked (a line that does not verify
    /// is an error naming it).
    pub fn read_checkpoints(&self) -> Result<Vec<Checkpoint>, ChainError> {
        let path = self.checkpoints_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ChainError::File(path, e)),
        };
        let public = UnparsedPublicKey::new(&ED25519, self.signer.public_key().as_ref().to_vec());
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |why: &str| ChainError::Corrupt(path.clone(), format!("line {}: {why}", i + 1));
            let c: Checkpoint = serde_json::from_str(line).map_err(|_| bad("not a checkpoint"))?;
            let sig = B64.decode(&c.sig).map_err(|_| bad("signature not base64url"))?;
            public
                .verify(Checkpoint::message(c.seq, &c.hash, c.ts).as_bytes(), &sig)
                .map_err(|_| bad("the signature does not verify"))?;
            out.push(c);
        }
        Ok(out)
    }
}

/// Re-seals the audit keys under `key` (master-key rotation). Returns how many files.
pub fn reseal(data_dir: &Path, key: &MasterKey) -> Result<usize, ChainError> {
    let dir = dir(data_dir);
    let mut n = 0;
    let chain_path = dir.join("chain.key");
    if let Some(mut f) = read_json::<ChainFile>(&chain_path)? {
        f.sealed = key.seal(&key.open(&f.sealed, CHAIN_CONTEXT)?, CHAIN_CONTEXT)?;
        write_private(&chain_path, &serde_json::to_string(&f).unwrap_or_default())?;
        n += 1;
    }
    let signer_path = dir.join("checkpoint.key");
    if let Some(mut f) = read_json::<SignerFile>(&signer_path)? {
        f.sealed = key.seal(&key.open(&f.sealed, SIGNER_CONTEXT)?, SIGNER_CONTEXT)?;
        write_private(&signer_path, &serde_json::to_string(&f).unwrap_or_default())?;
        n += 1;
    }
    Ok(n)
}

/// `[audit]` in `drover.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Each checkpoint is also POSTed (JSON) to this URL, so that a copy lives on another system.
    pub checkpoint_webhook: Option<String>,
    /// For an https webhook: the PEM CA that signed its certificate.
    pub checkpoint_webhook_ca_file: Option<PathBuf>,
}

/// Where checkpoints are sent, if anywhere.
pub struct Webhook {
    url: String,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(cfg: &AuditConfig) -> Result<Option<Webhook>, crate::StartError> {
        let Some(url) = cfg.checkpoint_webhook.clone() else { return Ok(None) };
        let bad = |m: String| crate::StartError::Bootstrap(format!("[audit] checkpoint_webhook: {m}"));
        let tls = if url.starts_with("https://") {
            let ca = cfg
                .checkpoint_webhook_ca_file
                .as_ref()
                .ok_or_else(|| bad("https needs checkpoint_webhook_ca_file".into()))?;
            drover_tls::client_config(ca).map_err(|e| bad(e.to_string()))?
        } else if url.starts_with("http://") {
            drover_tls::empty_client_config().map_err(|e| bad(e.to_string()))?
        } else {
            return Err(bad(format!("{url:?} is not an http(s) URL")));
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Some(Webhook { url, http }))
    }

    async fn send(&self, c: &Checkpoint, public_key: &str) -> bool {
        let body = serde_json::json!({
            "seq": c.seq, "hash": c.hash, "ts": c.ts, "ts_ms": c.ts.0, "sig": c.sig,
            "message": Checkpoint::message(c.seq, &c.hash, c.ts), "public_key": public_key,
        });
        match self.http.post(&self.url).json(&body).send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "the checkpoint webhook refused a checkpoint; it is sent again"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the checkpoint webhook is unreachable; the checkpoint is sent again");
                false
            }
        }
    }
}

/// Checkpoints the head every few seconds until `shutdown`, and sends each checkpoint to the
/// webhook when one is configured (the newest one not yet accepted, at every tick).
pub async fn run(s: crate::AppState, hook: Option<Webhook>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    let mut unsent: Option<Checkpoint> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match s.audit_keys.checkpoint(s.store.as_ref()).await {
                    Ok(Some(c)) => unsent = Some(c),
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "writing an audit checkpoint failed"),
                }
                if let (Some(h), Some(c)) = (&hook, &unsent)
                    && h.send(c, &s.audit_keys.public_key()).await
                {
                    unsent = None;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
