//! What a first start creates (the operator `admin`, the CLI's client), what a later start
//! repairs (agents registered before they were OAuth clients), and the initial admin password's
//! life: written once, deleted as soon as admin has a password of their own.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use drover_core::Store;
use drover_core::rbac::{AGENT_ROLE, RELEASE_ADMIN};
use drover_core::store::{ClientMetadata, ClientRecord, OperatorRecord};
use drover_types::Timestamp;

use crate::StartError;
use crate::secrets;

/// The operator created on first start.
pub const ADMIN: &str = "admin";

/// The file holding admin's first password (mode 0600) until admin sets their own.
pub fn initial_password_file(data_dir: &Path) -> PathBuf {
    data_dir.join("initial-admin-password")
}

/// Deletes the initial admin password: admin has a password of their own now.
pub fn forget_initial_password(data_dir: &Path) {
    let path = initial_password_file(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "admin set a password of their own: the initial password file is deleted")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not delete the initial admin password file")
        }
    }
}

/// Creates the operator `admin` (role release-admin) on first start, with a random password
/// written to `DATA_DIR/initial-admin-password` (mode 0600). On a later start, deletes that
/// file when it no longer holds admin's password (changed through this or another node).
pub(crate) async fn admin(store: &dyn Store, data_dir: &Path) -> Result<Option<String>, StartError> {
    let path = initial_password_file(data_dir);
    if let Some(op) = store.get_operator(ADMIN).await? {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let (hash, pw) = (op.password_hash.clone(), text.trim().to_string());
            let still = tokio::task::spawn_blocking(move || secrets::verify_password(&hash, &pw)).await.unwrap_or(true);
            if !still {
                forget_initial_password(data_dir);
            }
        }
        return Ok(None);
    }
    let password: String = {
        use rand::Rng;
        const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let mut rng = rand::rng();
        (0..24).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
    };
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || secrets::hash_password(&pw))
        .await
        .map_err(|e| StartError::Bootstrap(e.to_string()))?
        .map_err(StartError::Bootstrap)?;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StartError::DataDir(path.clone(), e))?;
        writeln!(f, "{password}").map_err(|e| StartError::DataDir(path.clone(), e))?;
        f.sync_all().map_err(|e| StartError::DataDir(path.clone(), e))?;
    }
    let created = store
        .insert_operator(&OperatorRecord {
            name: ADMIN.into(),
            password_hash: hash,
            roles: vec![RELEASE_ADMIN.into()],
            disabled: false,
            created_at: Timestamp::now(),
            ..Default::default()
        })
        .await?;
    Ok(created.then_some(password))
}

/// Registers the CLI's public client (`drover login`): loopback redirects only (RFC 8252).
pub(crate) async fn cli_client(store: &dyn Store) -> Result<(), StartError> {
    if store.get_client(crate::oauth::CLI_CLIENT).await?.is_some() {
        return Ok(());
    }
    let c = ClientRecord {
        client_id: crate::oauth::CLI_CLIENT.into(),
        secret_hash: String::new(),
        roles: Vec::new(),
        created_at: Timestamp::now(),
        metadata: ClientMetadata {
            redirect_uris: vec!["http://127.0.0.1/callback".into(), "http://[::1]/callback".into()],
            public: true,
            ..Default::default()
        },
        ..Default::default()
    };
    match store.insert_client(&c).await {
        Ok(()) | Err(drover_core::Error::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Registers the portal's client (`drover-portal`), public, with `ISSUER/portal/callback` as a
/// redirect URI (kept beside those of other nodes' issuers, the newest eight).
pub(crate) async fn portal_client(store: &dyn Store, issuer: &str) -> Result<(), StartError> {
    let callback = format!("{issuer}/portal/callback");
    match store.get_client(crate::oauth::PORTAL_CLIENT).await? {
        Some(c) if c.metadata.redirect_uris.contains(&callback) => Ok(()),
        Some(mut c) => {
            c.metadata.redirect_uris.push(callback);
            let n = c.metadata.redirect_uris.len();
            c.metadata.redirect_uris.drain(..n.saturating_sub(8));
            c.metadata.public = true;
            store.update_client(&c).await?;
            Ok(())
        }
        None => {
            let c = ClientRecord {
                client_id: crate::oauth::PORTAL_CLIENT.into(),
                secret_hash: String::new(),
                roles: Vec::new(),
                created_at: Timestamp::now(),
                metadata: ClientMetadata { redirect_uris: vec![callback], public: true, ..Default::default() },
                ..Default::default()
            };
            match store.insert_client(&c).await {
                Ok(()) | Err(drover_core::Error::Conflict(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Agents registered before agents became OAuth 2.0 clients get their client registration,
/// with the secret they already hold.
pub(crate) async fn agent_clients(store: &dyn Store) -> Result<(), StartError> {
    for a in store.list_agents().await? {
        if store.get_client(&a.name).await?.is_some() {
            continue;
        }
        let c = ClientRecord {
            client_id: a.name.clone(),
            secret_hash: a.secret_hash.clone(),
            roles: vec![AGENT_ROLE.into()],
            created_at: Timestamp::now(),
            metadata: ClientMetadata { agent: Some(a.name.clone()), ..Default::default() },
            ..Default::default()
        };
        match store.insert_client(&c).await {
            Ok(()) => tracing::info!(agent = %a.name, "agent registered as an OAuth 2.0 client"),
            Err(drover_core::Error::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A confidential client for a tool running beside the orchestrator with access to its data
/// dir (the quickstart): created when missing, given a fresh secret, audited. Returns the
/// secret; the caller keeps it (mode 0600) for its next run.
pub async fn local_client(state: &crate::AppState, name: &str, roles: &[&str]) -> drover_core::Result<String> {
    let secret = secrets::new_secret();
    let now = Timestamp::now();
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let e = crate::oauth::event(
        "system".into(),
        "client.local_secret",
        name,
        "success",
        "",
        serde_json::json!({"roles": roles, "reason": "a local tool with the data dir asked for credentials"}),
    );
    // On record before the secret changes.
    state
        .audit_sink
        .record(e)
        .await
        .map_err(|_| drover_core::Error::Unavailable("the audit log cannot be written".into()))?;
    match state.store.get_client(name).await? {
        Some(mut c) => {
            c.secret_hash = secrets::secret_hash(&secret);
            c.previous_secret_hash = None;
            c.previous_valid_until = None;
            c.secret_rotated_at = Some(now);
            c.roles = roles.clone();
            c.disabled = false;
            // Whatever it was made into meanwhile (keys, redirect URIs, public), it is again
            // just this tool's confidential client.
            c.metadata = ClientMetadata::default();
            c.tokens_not_before = now;
            state.store.update_client(&c).await?;
        }
        None => {
            let c = ClientRecord {
                client_id: name.into(),
                secret_hash: secrets::secret_hash(&secret),
                roles: roles.clone(),
                created_at: now,
                ..Default::default()
            };
            state.store.insert_client(&c).await?;
        }
    }
    Ok(secret)
}
