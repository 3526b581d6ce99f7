//! Content-addressed artifact store on the data dir: `artifacts/sha256/<ab>/<hex>`. Uploads
//! stream to a temp file while hashing (constant memory), then move into place.

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
pub struct ArtifactFiles {
    root: PathBuf,
}

/// A stored upload, not yet recorded in the database.
pub struct Upload {
    pub sha256: String,
    pub size: u64,
    tmp: PathBuf,
}

impl ArtifactFiles {
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("artifacts");
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join("sha256"))?;
        // Leftovers of uploads cut off by a crash.
        if let Ok(rd) = std::fs::read_dir(root.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(ArtifactFiles { root })
    }

    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return None;
        }
        Some(self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }

    /// Streams a body to a temp file, hashing as it goes.
    pub async fn receive<S, E>(&self, mut body: S) -> Result<Upload, String>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self.root.join("tmp").join(hex::encode(rand::random::<[u8; 12]>()));
        let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| format!("creating upload file: {e}"))?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        let r: Result<(), String> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| format!("reading upload: {e}"))?;
                h.update(&chunk);
                size += chunk.len() as u64;
                f.write_all(&chunk).await.map_err(|e| format!("writing upload: {e}"))?;
            }
            f.sync_all().await.map_err(|e| format!("syncing upload: {e}"))?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(Upload { sha256: hex::encode(h.finalize()), size, tmp })
    }

    /// Moves an upload into the store (no-op if the same content is there already).
    pub async fn keep(&self, up: Upload) -> std::io::Result<()> {
        let dest = self.path_of(&up.sha256).expect("hex digest");
        if dest.exists() {
            return tokio::fs::remove_file(&up.tmp).await;
        }
        tokio::fs::create_dir_all(dest.parent().expect("has parent")).await?;
        tokio::fs::rename(&up.tmp, &dest).await
    }

    pub async fn discard(&self, up: Upload) {
        let _ = tokio::fs::remove_file(&up.tmp).await;
    }
}
