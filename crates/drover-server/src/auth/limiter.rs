//! How many password evaluations a sign-in may cost, whatever the concurrency.
//!
//! Every evaluation is *reserved* before it waits for a hashing permit, by a compare-and-swap
//! on a record in the store, so a burst of requests cannot all slip past a count read before
//! the wait (the hole this replaces), and replicas sharing the database share the counts:
//! - per (account, source address): at most [`SOURCE_LIMIT`] evaluations without a success;
//!   then that address is refused for that account until [`WINDOW`] after the last one. A
//!   stranger can lock themselves out of `admin`, not `admin` out of `admin`.
//! - per account, over every address: after [`ACCOUNT_SLOW_AFTER`] evaluations within the
//!   window (reserved like the others, so a burst from many addresses is counted too), at most
//!   one evaluation per [`ACCOUNT_SPACING`] — a slow throttle, so guessing from many addresses
//!   stays slow. Addresses the account signed in from successfully within [`KNOWN_FOR`] are
//!   not throttled by it (only by their own count), so the owner still gets in while a stranger
//!   keeps the throttle busy; an address already locked out never takes an account slot.
//!
//! A success resets both and remembers the address. Keys are the SHA-256 of the name given
//! (any text a caller sends).

use std::net::IpAddr;
use std::time::Duration;

use drover_core::Store;
use drover_types::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub const SOURCE_LIMIT: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const ACCOUNT_SLOW_AFTER: u32 = 20;
pub const ACCOUNT_SPACING: Duration = Duration::from_secs(5);
/// How long an address the account signed in from stays exempt from the account throttle.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

const SOURCE_KIND: &str = "signin_source";
const ACCOUNT_KIND: &str = "signin_account";
const KNOWN_KIND: &str = "signin_known";
const MAX_TRIES: usize = 64;

#[derive(Serialize, Deserialize, Default)]
struct SourceState {
    evaluations: u32,
    until_ms: i64,
}

#[derive(Serialize, Deserialize, Default)]
struct AccountState {
    failures: u32,
    next_ms: i64,
}

/// Why no evaluation is allowed.
#[derive(Debug)]
pub enum Refusal {
    /// This address used up its evaluations for this account.
    Locked,
    /// The account is being guessed at from many places: one evaluation per few seconds.
    Throttled,
    Store(drover_core::Error),
}

/// A reserved evaluation.
pub struct Reservation {
    source: String,
    account: String,
    /// This evaluation's number within the window (1-based).
    slot: u32,
}

fn account_key(user: &str) -> String {
    crate::secrets::secret_hash(user)[..32].to_string()
}

fn source_key(user: &str, ip: IpAddr) -> String {
    format!("{}@{ip}", account_key(user))
}

enum Step<R> {
    Write(R),
}

/// Read-modify-write of one record by compare-and-swap (bounded; contention fails closed).
async fn cas<T, R>(
    store: &dyn Store,
    kind: &str,
    key: &str,
    expires: Timestamp,
    mut f: impl FnMut(&mut T) -> Result<Step<R>, Refusal>,
) -> Result<R, Refusal>
where
    T: Serialize + DeserializeOwned + Default,
{
    for _ in 0..MAX_TRIES {
        let current = store.record_get(kind, key).await.map_err(Refusal::Store)?;
        let mut v: T = current.as_ref().and_then(|(b, _)| serde_json::from_str(b).ok()).unwrap_or_default();
        let Step::Write(r) = f(&mut v)?;
        let body = serde_json::to_string(&v).map_err(|e| Refusal::Store(drover_core::Error::Store(e.to_string())))?;
        let done = match current {
            Some((_, version)) => store.record_update(kind, key, version, &body, Some(expires)).await,
            None => store.record_insert(kind, key, &body, Some(expires)).await,
        }
        .map_err(Refusal::Store)?;
        if done {
            return Ok(r);
        }
        tokio::task::yield_now().await;
    }
    Err(Refusal::Throttled)
}

/// Whether `ip` is locked out of `user` (a remembered login from there is refused too: the lock
/// is about guessing, and a right guess must not get in through the cache).
pub async fn is_locked(store: &dyn Store, user: &str, ip: IpAddr) -> drover_core::Result<bool> {
    Ok(match store.record_get(SOURCE_KIND, &source_key(user, ip)).await? {
        Some((body, _)) => serde_json::from_str::<SourceState>(&body).is_ok_and(|s| s.evaluations >= SOURCE_LIMIT),
        None => false,
    })
}

/// Reserves one password evaluation for `user` from `ip`, or says why not.
pub async fn reserve(store: &dyn Store, user: &str, ip: IpAddr) -> Result<Reservation, Refusal> {
    let now = Timestamp::now();
    let expires = now.plus(WINDOW);
    let account = account_key(user);
    let source = source_key(user, ip);
    // The address's own budget first: a locked-out address takes nothing from the account.
    let slot = cas(store, SOURCE_KIND, &source, expires, |s: &mut SourceState| {
        if s.evaluations >= SOURCE_LIMIT {
            return Err(Refusal::Locked);
        }
        s.evaluations += 1;
        s.until_ms = expires.0;
        Ok(Step::Write(s.evaluations))
    })
    .await?;
    let known = store.record_get(KNOWN_KIND, &source).await.map_err(Refusal::Store)?.is_some();
    if !known {
        cas(store, ACCOUNT_KIND, &account, expires, |a: &mut AccountState| {
            if a.failures >= ACCOUNT_SLOW_AFTER {
                if now.0 < a.next_ms {
                    return Err(Refusal::Throttled);
                }
                a.next_ms = now.plus(ACCOUNT_SPACING).0;
            }
            a.failures = a.failures.saturating_add(1);
            Ok(Step::Write(()))
        })
        .await?;
    }
    Ok(Reservation { source, account, slot })
}

/// The reserved evaluation failed. Returns whether it was the last one this address had (the
/// address is now locked out for this account).
pub async fn failed(_store: &dyn Store, r: &Reservation) -> Result<bool, Refusal> {
    // Both counts were taken when the evaluation was reserved.
    Ok(r.slot == SOURCE_LIMIT)
}

/// The reserved evaluation succeeded: the counts start over.
pub async fn succeeded(store: &dyn Store, r: &Reservation) -> drover_core::Result<()> {
    store.record_delete(SOURCE_KIND, &r.source).await?;
    store.record_delete(ACCOUNT_KIND, &r.account).await?;
    let until = Some(Timestamp::now().plus(KNOWN_FOR));
    if !store.record_insert(KNOWN_KIND, &r.source, "{}", until).await? {
        store.record_delete(KNOWN_KIND, &r.source).await?;
        store.record_insert(KNOWN_KIND, &r.source, "{}", until).await?;
    }
    Ok(())
}

/// Lifts every lock and throttle of an account (`drover operators unlock`).
pub async fn unlock(store: &dyn Store, user: &str) -> drover_core::Result<usize> {
    let prefix = format!("{}@", account_key(user));
    let mut n = 0;
    for (key, _, _) in store.record_list(SOURCE_KIND).await? {
        if key.starts_with(&prefix) && store.record_delete(SOURCE_KIND, &key).await? {
            n += 1;
        }
    }
    store.record_delete(ACCOUNT_KIND, &account_key(user)).await?;
    Ok(n)
}

/// The latest end of a lock of some address on this account, if any is in force.
pub async fn locked_until(store: &dyn Store, user: &str) -> drover_core::Result<Option<Timestamp>> {
    let prefix = format!("{}@", account_key(user));
    let now = Timestamp::now();
    let mut until: Option<Timestamp> = None;
    for (key, body, _) in store.record_list(SOURCE_KIND).await? {
        if !key.starts_with(&prefix) {
            continue;
        }
        if let Ok(s) = serde_json::from_str::<SourceState>(&body)
            && s.evaluations >= SOURCE_LIMIT
            && s.until_ms > now.0
        {
            until = Some(until.map_or(Timestamp(s.until_ms), |u| Timestamp(u.0.max(s.until_ms))));
        }
    }
    Ok(until)
}
