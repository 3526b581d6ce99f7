//! Operators' passwords: the one place that checks them (HTTP Basic on the API, the sign-in and
//! device pages). It knows nothing of HTTP or OAuth; the guard (`api::guard`) and the pages
//! (`oauth::pages`) call it.
//!
//! Every evaluation is reserved with the [`limiter`] before it waits for a hashing permit, and
//! every refusal does the same work (one Argon2 verification: against a dummy hash for unknown,
//! disabled and locked-out names), so neither a burst nor a stopwatch tells more than "no". A
//! successful check is remembered for a few minutes under a keyed hash of the credentials, so
//! scripts that send Basic on every call do not pay for Argon2 each time.

pub mod limiter;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_core::Store;
use drover_core::store::OperatorRecord;
use drover_types::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::secrets;

const CACHE_TTL: Duration = Duration::from_secs(300);
/// Failed evaluations from one address that lock that address out of an account...
pub const LOCKOUT_THRESHOLD: u32 = limiter::SOURCE_LIMIT;
/// ...for this long (or until an admin unlocks the account).
pub const LOCKOUT_FOR: Duration = limiter::WINDOW;
const TOUCH_EVERY: Duration = Duration::from_secs(5);
const VERSION_EVERY: Duration = Duration::from_secs(60);

/// Why a sign-in failed: for the log and the audit trail, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailure {
    /// `unknown`, `disabled`, `wrong_password`, `locked`, `throttled`, `store_error`.
    pub reason: &'static str,
    /// This failure locked the address out of the account.
    pub locked_now: bool,
}

impl AuthFailure {
    fn because(reason: &'static str) -> Self {
        AuthFailure { reason, locked_now: false }
    }
    /// The store failed: the caller should hear "try again", not "wrong password".
    pub fn unavailable(&self) -> bool {
        self.reason == "store_error"
    }
}

/// A successful password check.
pub struct SignedIn {
    pub operator: OperatorRecord,
    /// A password evaluation (audited), not a remembered one.
    pub fresh: bool,
}

/// A remembered successful password check.
struct CachedLogin {
    /// Keyed hash of the credentials.
    key: [u8; 32],
    at: Instant,
    /// The password hash they were checked against: a changed password invalidates it.
    password_hash: String,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    pepper: [u8; 32],
    cache: Mutex<HashMap<String, CachedLogin>>,
    touched: Mutex<HashMap<String, Instant>>,
    /// When each agent's reported version was last written.
    versions: Mutex<HashMap<String, Instant>>,
    /// Argon2 is memory- and CPU-hard: bound how many run at once.
    hashing: Semaphore,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// Runs one password verification on a blocking thread; `None` as the hash does the same work
/// against the dummy hash.
async fn verify(hash: Option<String>, password: &str) -> bool {
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || match hash {
        Some(h) => secrets::verify_password(&h, &pw),
        None => {
            secrets::dummy_verification(&pw);
            false
        }
    })
    .await
    .unwrap_or(false)
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Authenticator {
            store,
            pepper: rand::random(),
            cache: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(2),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// (remembered sign-ins, hits, misses), for `/system/caches`.
    pub fn cache_stats(&self) -> (usize, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.cache.lock().expect("poisoned").len(), self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Forgets every remembered sign-in (the next call of each checks its password again).
    pub fn clear_cache(&self) -> usize {
        let mut c = self.cache.lock().expect("poisoned");
        let n = c.len();
        c.clear();
        n
    }

    /// Password checks waiting for a hashing permit or running.
    pub fn hashing_in_use(&self) -> usize {
        2 - self.hashing.available_permits().min(2)
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.pepper);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Checks an operator's password given from `source`. Unknown, disabled, locked-out and
    /// wrong all fail alike for the caller; the reason is for the log and the audit trail.
    pub async fn authenticate(&self, user: &str, password: &str, source: IpAddr) -> Result<SignedIn, AuthFailure> {
        let op = self.store.get_operator(user).await.map_err(|e| {
            tracing::error!(error = %e, "authentication: store error");
            AuthFailure::because("store_error")
        })?;
        if let Some(op) = &op
            && !op.disabled
        {
            let key = self.cache_key(user, password);
            let remembered = self.cache.lock().expect("poisoned").get(user).is_some_and(|l| {
                l.at.elapsed() < CACHE_TTL && l.password_hash == op.password_hash && bool::from(l.key.ct_eq(&key))
            });
            use std::sync::atomic::Ordering::Relaxed;
            if remembered { &self.hits } else { &self.misses }.fetch_add(1, Relaxed);
            if remembered {
                let locked = limiter::is_locked(self.store.as_ref(), user, source).await.map_err(|e| {
                    tracing::error!(error = %e, "sign-in limiter: store error");
                    AuthFailure::because("store_error")
                })?;
                if !locked {
                    return Ok(SignedIn { operator: op.clone(), fresh: false });
                }
            }
        }
        // The evaluation is reserved before waiting for a permit: a burst cannot out-count it.
        let reservation = limiter::reserve(self.store.as_ref(), user, source).await;
        let _permit = self.hashing.acquire().await.map_err(|_| AuthFailure::because("shutting_down"))?;
        let reservation = match reservation {
            Ok(r) => r,
            Err(refusal) => {
                verify(None, password).await;
                let reason = match refusal {
                    limiter::Refusal::Locked => "locked",
                    limiter::Refusal::Throttled => "throttled",
                    limiter::Refusal::Store(e) => {
                        tracing::error!(error = %e, "sign-in limiter: store error");
                        "store_error"
                    }
                };
                tracing::warn!(user, %source, reason, "authentication refused without checking the password");
                return Err(AuthFailure::because(reason));
            }
        };
        let ok = match &op {
            Some(op) if !op.disabled => verify(Some(op.password_hash.clone()), password).await,
            _ => {
                verify(None, password).await;
                false
            }
        };
        let reason = match &op {
            None => "unknown",
            Some(op) if op.disabled => "disabled",
            Some(_) => "wrong_password",
        };
        let Some(op) = op.filter(|_| ok) else {
            let locked_now = match limiter::failed(self.store.as_ref(), &reservation).await {
                Ok(locked) => locked,
                Err(e) => {
                    tracing::error!(error = ?e, "recording a failed sign-in");
                    false
                }
            };
            // The account-wide count of failures, shown by `drover operators list` (the same
            // write for every name, known or not: no timing difference).
            let never = Timestamp(i64::MAX);
            if let Err(e) = self.store.login_failed(user, u32::MAX, never).await {
                tracing::error!(error = %e, "recording a failed login");
            }
            if locked_now {
                tracing::warn!(user, %source, "sign-ins from {source} locked out after {LOCKOUT_THRESHOLD} failures");
            } else {
                tracing::warn!(user, %source, reason, "authentication failed");
            }
            return Err(AuthFailure { reason, locked_now });
        };
        // The wait for a permit may have been long: the operator as it is now decides (disabled
        // or given a new password meanwhile: refused; its current roles count).
        let op = match self.store.get_operator(user).await {
            Ok(Some(now)) if !now.disabled && now.password_hash == op.password_hash => now,
            Ok(_) => {
                tracing::warn!(user, "authentication refused: the operator changed during the check");
                return Err(AuthFailure::because("changed"));
            }
            Err(e) => {
                tracing::error!(error = %e, "authentication: store error");
                return Err(AuthFailure::because("store_error"));
            }
        };
        if let Err(e) = limiter::succeeded(self.store.as_ref(), &reservation).await {
            tracing::error!(error = %e, "resetting sign-in counts");
        }
        if (op.failed_logins > 0 || op.locked_until.is_some())
            && let Err(e) = self.store.login_succeeded(user).await
        {
            tracing::error!(error = %e, "resetting failed logins");
        }
        let login = CachedLogin {
            key: self.cache_key(user, password),
            at: Instant::now(),
            password_hash: op.password_hash.clone(),
        };
        self.cache.lock().expect("poisoned").insert(user.to_string(), login);
        Ok(SignedIn { operator: op, fresh: true })
    }

    /// Whether a changed version an agent reports may be written now: at most once a minute
    /// per agent, so an agent flipping its version cannot turn its polls into writes (an
    /// upgrade is written at the first poll after that).
    pub(crate) fn version_write_due(&self, agent: &str) -> bool {
        let mut v = self.versions.lock().expect("poisoned");
        let due = v.get(agent).is_none_or(|at| at.elapsed() >= VERSION_EVERY);
        if due {
            v.insert(agent.to_string(), Instant::now());
        }
        due
    }

    /// Records that an agent was seen (at most every few seconds per agent).
    pub(crate) async fn touch(&self, agent: &str) {
        let due = {
            let mut t = self.touched.lock().expect("poisoned");
            let due = t.get(agent).is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
            if due {
                t.insert(agent.to_string(), Instant::now());
            }
            due
        };
        if due && let Err(e) = self.store.touch_agent(agent, Timestamp::now()).await {
            tracing::warn!(error = %e, "recording agent last-seen failed");
        }
    }
}
