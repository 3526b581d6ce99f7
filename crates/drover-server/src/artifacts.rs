//! Content-addressed artifact store on the data dir: `artifacts/sha256/<ab>/<hex>`. Uploads
//! stream to a temp file while hashing (constant memory), then move into place.

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// A number of bytes, written `1048576`, `"512MiB"`, `"1GiB"`, `"100MB"` or `"4KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 =
            num.parse().map_err(|_| format!("{s:?} is not a size (write 512MiB, 1GiB or a number of bytes)"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "TB" => 1000 * 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(format!("{s:?}: unknown unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
        };
        n.checked_mul(mul).map(ByteSize).ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// `[artifacts]` in `drover.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// Largest artifact accepted.
    pub max_size: ByteSize,
    /// All versions of one application together.
    pub quota: ByteSize,
    /// All versions of all applications together.
    pub total_quota: ByteSize,
    /// Keep the newest N versions of each application (and anything deployed); 0: keep all.
    pub keep_versions: u32,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            max_size: ByteSize(4 << 30),
            quota: ByteSize(50 << 30),
            total_quota: ByteSize(200 << 30),
            keep_versions: 0,
        }
    }
}

impl ArtifactsConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [("max_size", self.max_size), ("quota", self.quota), ("total_quota", self.total_quota)] {
            if v.0 == 0 {
                return Err(format!("[artifacts] {k} must be at least 1 byte"));
            }
        }
        Ok(())
    }
}

/// Why an upload was not stored.
#[derive(Debug)]
pub enum ReceiveError {
    /// More than the limit arrived; nothing was kept.
    TooLarge(u64),
    Failed(String),
}

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

    /// Streams a body to a temp file, hashing as it goes; more than `max` bytes and it stops
    /// and keeps nothing.
    pub async fn receive<S, E>(&self, mut body: S, max: u64) -> Result<Upload, ReceiveError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self.root.join("tmp").join(hex::encode(rand::random::<[u8; 12]>()));
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ReceiveError::Failed(format!("creating upload file: {e}")))?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        let r: Result<(), ReceiveError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ReceiveError::Failed(format!("reading upload: {e}")))?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(ReceiveError::TooLarge(max));
                }
                h.update(&chunk);
                f.write_all(&chunk).await.map_err(|e| ReceiveError::Failed(format!("writing upload: {e}")))?;
            }
            f.sync_all().await.map_err(|e| ReceiveError::Failed(format!("syncing upload: {e}")))?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            drop(f);
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

impl ArtifactFiles {
    /// Deletes stored content no version refers to any more (`referenced`), leaving files
    /// younger than `grace` alone (an upload moves its file into place just before recording
    /// it). Returns (files, bytes) removed.
    pub fn collect_garbage(
        &self,
        referenced: &std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> std::io::Result<(usize, u64)> {
        let (mut files, mut bytes) = (0, 0);
        let now = std::time::SystemTime::now();
        for shard in std::fs::read_dir(self.root.join("sha256"))?.flatten() {
            let Ok(rd) = std::fs::read_dir(shard.path()) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if referenced.contains(&name) || self.path_of(&name).is_none() {
                    continue;
                }
                let Ok(m) = e.metadata() else { continue };
                let age = m.modified().ok().and_then(|t| now.duration_since(t).ok()).unwrap_or_default();
                if age < grace {
                    continue;
                }
                if std::fs::remove_file(e.path()).is_ok() {
                    files += 1;
                    bytes += m.len();
                }
            }
        }
        Ok((files, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("512MiB").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("1GiB").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("100MB").unwrap().0, 100_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert_eq!(ByteSize::parse(" 2 KiB ").unwrap().0, 2048);
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
        assert!(ByteSize::parse("99999999999TiB").is_err());
    }
}
