//! Environment variables, plain and secret: records of kind `variable` keyed `ENV/NAME`, a
//! secret's value sealed under the master key (context `variable:ENV/NAME`). The rules of names,
//! references and masking are `drover_core::vars`; who may do what is `service::variables`.
//!
//! Readers (deployment starts, assignments, log ingest) use a snapshot of every variable, kept
//! for [`FRESH_FOR`] and dropped at once when this node changes one: another node sees a change
//! within that time. The snapshot holds the secrets in the clear (masking needs them); it never
//! leaves the process but inside an attempt that refers to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_core::vars::Masker;
use drover_core::{Error, Result, Store};
use drover_types::{Timestamp, Variable};
use serde::{Deserialize, Serialize};

use crate::oauth::keys::{KeyError, KeyRing, MasterKey};

pub const KIND: &str = "variable";
/// How long a snapshot is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

pub fn key(environment: &str, name: &str) -> String {
    format!("{environment}/{name}")
}

fn context(environment: &str, name: &str) -> String {
    format!("variable:{environment}/{name}")
}

/// The stored form.
#[derive(Serialize, Deserialize)]
struct Stored {
    environment: String,
    name: String,
    secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
    updated_at: Timestamp,
    updated_by: String,
}

impl Stored {
    fn view(&self) -> Variable {
        Variable {
            environment: self.environment.clone(),
            name: self.name.clone(),
            secret: self.secret,
            value: if self.secret { None } else { self.value.clone() },
            has_value: self.value.is_some() || self.sealed.is_some(),
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
        }
    }
}

/// A variable's value as the engine uses it.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Plain(String),
    /// `None`: it could not be opened (the log says why).
    Secret(Option<String>),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Plain(v) => write!(f, "Plain({v:?})"),
            Value::Secret(_) => write!(f, "Secret(***)"),
        }
    }
}

/// Every variable, by environment; and each environment's masker (of its secrets).
#[derive(Default)]
pub struct Snapshot {
    pub by_environment: HashMap<String, BTreeMap<String, Value>>,
    maskers: HashMap<String, Masker>,
    /// Of every secret of every environment: for the orchestrator's own log lines.
    all: Masker,
    /// The applications each environment lists (as of the snapshot).
    applications: HashMap<String, Vec<String>>,
}

static NO_SECRETS: std::sync::LazyLock<Masker> = std::sync::LazyLock::new(Masker::default);

impl Snapshot {
    pub fn of(&self, environment: &str) -> BTreeMap<String, Value> {
        self.by_environment.get(environment).cloned().unwrap_or_default()
    }
    /// Does `environment` hold a secret variable?
    pub fn holds_secrets(&self, environment: &str) -> bool {
        self.by_environment.get(environment).is_some_and(|v| v.values().any(|v| matches!(v, Value::Secret(_))))
    }
    /// What `application` sees of `environment`'s variables: the plain ones, and the secret
    /// ones only where the environment lists it — a secret it may not use does not exist for it.
    pub fn for_application(&self, environment: &str, application: &str) -> BTreeMap<String, Value> {
        let listed = self.lists(environment, application);
        self.by_environment
            .get(environment)
            .map(|vars| {
                vars.iter()
                    .filter(|(_, v)| listed || !matches!(v, Value::Secret(_)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// What a task of `environment` prints is masked with that environment's secrets (only
    /// those: masking another environment's would tell its value to whoever guesses it).
    pub fn masker(&self, environment: &str) -> &Masker {
        self.maskers.get(environment).unwrap_or(&NO_SECRETS)
    }
    /// Every secret: for what the orchestrator itself logs.
    pub fn all(&self) -> &Masker {
        &self.all
    }
    /// Does `environment` list `application` explicitly (the condition for its secrets)?
    pub fn lists(&self, environment: &str, application: &str) -> bool {
        self.applications.get(environment).is_some_and(|a| a.iter().any(|x| x == application))
    }
}

pub struct Variables {
    store: Arc<dyn Store>,
    keys: Arc<KeyRing>,
    cached: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl Variables {
    pub fn new(store: Arc<dyn Store>, keys: Arc<KeyRing>) -> Variables {
        Variables { store, keys, cached: Mutex::new(None) }
    }

    /// The variables as of at most [`FRESH_FOR`] ago.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        if let Some((at, s)) = &*self.cached.lock().expect("poisoned")
            && at.elapsed() < FRESH_FOR
        {
            return Ok(s.clone());
        }
        let mut snap = Snapshot::default();
        let mut secrets: HashMap<String, Vec<String>> = HashMap::new();
        for (k, body, _) in self.store.record_list(KIND).await? {
            let Ok(st) = serde_json::from_str::<Stored>(&body) else {
                tracing::error!(variable = %k, "a stored variable cannot be read; ignoring it");
                continue;
            };
            let value = match (&st.value, &st.sealed) {
                (Some(v), _) if !st.secret => Value::Plain(v.clone()),
                (_, Some(sealed)) => match self.open(&st.environment, &st.name, sealed) {
                    Ok(v) => {
                        secrets.entry(st.environment.clone()).or_default().push(v.clone());
                        Value::Secret(Some(v))
                    }
                    Err(e) => {
                        tracing::error!(variable = %k, error = %e, "a secret variable cannot be opened");
                        Value::Secret(None)
                    }
                },
                _ => continue,
            };
            snap.by_environment.entry(st.environment.clone()).or_default().insert(st.name.clone(), value);
        }
        snap.applications =
            self.store.list_environments().await?.into_iter().map(|e| (e.name, e.applications)).collect();
        snap.all = Masker::new(secrets.values().flatten().map(String::as_str));
        snap.maskers =
            secrets.iter().map(|(env, v)| (env.clone(), Masker::new(v.iter().map(String::as_str)))).collect();
        let snap = Arc::new(snap);
        *self.cached.lock().expect("poisoned") = Some((Instant::now(), snap.clone()));
        Ok(snap)
    }

    fn open(&self, environment: &str, name: &str, sealed: &str) -> std::result::Result<String, String> {
        let plain = self.keys.master().open(sealed, &context(environment, name)).map_err(|e| e.to_string())?;
        String::from_utf8(plain).map_err(|_| "the value is not text".to_string())
    }

    /// Forgets the snapshot (after a change made here).
    pub fn changed(&self) {
        *self.cached.lock().expect("poisoned") = None;
    }

    /// An environment's variables as the API shows them, by name.
    pub async fn list(&self, environment: &str) -> Result<Vec<Variable>> {
        let prefix = format!("{environment}/");
        let mut out: Vec<Variable> = self
            .store
            .record_list(KIND)
            .await?
            .into_iter()
            .filter(|(k, _, _)| k.starts_with(&prefix))
            .filter_map(|(_, body, _)| serde_json::from_str::<Stored>(&body).ok())
            .map(|st| st.view())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// How many variables an environment has besides `except`, and their bytes (names and
    /// values, secret ones included).
    pub async fn besides(&self, environment: &str, except: &str) -> Result<(usize, usize)> {
        let snap = self.snapshot().await?;
        let others: Vec<(&String, &Value)> =
            snap.by_environment.get(environment).into_iter().flatten().filter(|(k, _)| k.as_str() != except).collect();
        let bytes = others
            .iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        Value::Plain(v) | Value::Secret(Some(v)) => v.len(),
                        Value::Secret(None) => 0,
                    }
            })
            .sum();
        Ok((others.len(), bytes))
    }

    /// Creates or replaces a variable (checked by the caller); a secret value is sealed.
    pub async fn put(&self, environment: &str, name: &str, value: &str, secret: bool, by: &str) -> Result<Variable> {
        let (value, sealed) = if secret {
            let sealed = self
                .keys
                .master()
                .seal(value.as_bytes(), &context(environment, name))
                .map_err(|e| Error::Store(e.to_string()))?;
            (None, Some(sealed))
        } else {
            (Some(value.to_string()), None)
        };
        let st = Stored {
            environment: environment.to_string(),
            name: name.to_string(),
            secret,
            value,
            sealed,
            updated_at: Timestamp::now(),
            updated_by: by.to_string(),
        };
        let body = serde_json::to_string(&st).map_err(|e| Error::Store(e.to_string()))?;
        let k = key(environment, name);
        // Insert, or replace whatever version is there (the last writer wins, as with a PUT).
        let mut done = self.store.record_insert(KIND, &k, &body, None).await?;
        for _ in 0..5 {
            if done {
                break;
            }
            match self.store.record_get(KIND, &k).await? {
                Some((_, v)) => done = self.store.record_update(KIND, &k, v, &body, None).await?,
                None => done = self.store.record_insert(KIND, &k, &body, None).await?,
            }
        }
        if !done {
            return Err(Error::Conflict(format!("variable {name} is being changed by another request; try again")));
        }
        self.changed();
        Ok(st.view())
    }

    pub async fn delete(&self, environment: &str, name: &str) -> Result<bool> {
        let gone = self.store.record_delete(KIND, &key(environment, name)).await?;
        self.changed();
        Ok(gone)
    }

    /// Deletes every variable of an environment (the environment is being deleted).
    pub async fn delete_all(&self, environment: &str) -> Result<usize> {
        let prefix = format!("{environment}/");
        let mut n = 0;
        for (k, _, _) in self.store.record_list(KIND).await? {
            if k.starts_with(&prefix) && self.store.record_delete(KIND, &k).await? {
                n += 1;
            }
        }
        self.changed();
        Ok(n)
    }

    /// Re-seals every secret variable under `new` (master-key rotation). Returns how many.
    pub async fn reseal_all(
        store: &dyn Store,
        old: &MasterKey,
        new: &MasterKey,
    ) -> std::result::Result<usize, KeyError> {
        let mut n = 0;
        for (k, body, v) in store.record_list(KIND).await? {
            let Ok(mut st) = serde_json::from_str::<Stored>(&body) else { continue };
            let Some(sealed) = &st.sealed else { continue };
            let ctx = context(&st.environment, &st.name);
            let plain = old.open(sealed, &ctx)?;
            st.sealed = Some(new.seal(&plain, &ctx)?);
            let body = serde_json::to_string(&st).map_err(|e| KeyError::Key(e.to_string()))?;
            if !store.record_update(KIND, &k, v, &body, None).await? {
                return Err(KeyError::Key(format!("variable {k} changed during the rotation")));
            }
            n += 1;
        }
        Ok(n)
    }
}
