//! Secret values: generation, the fast hash of 256-bit secrets, and Argon2id for passwords.
//! A leaf module: everything that authenticates uses it, it uses nothing of the server.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};

/// SHA-256 (hex) of a client or agent secret, refresh token or code: 256 random bits need no
/// slow hash.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new secret: 256 bits from the OS CSPRNG as 64 lowercase hex characters.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Password verifications run so far (all of them, real and dummy): the sign-in tests use it
/// to show that every refusal costs the same work.
static VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

pub fn verifications() -> u64 {
    VERIFICATIONS.load(Ordering::Relaxed)
}

/// Checks a password against an Argon2id PHC string (blocking: call it on a blocking thread).
pub fn verify_password(phc: &str, password: &str) -> bool {
    VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash with the same parameters as real ones, of a password nobody knows: unknown, disabled
/// and locked-out users are checked against it, so a refusal takes as long as a wrong password.
static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash_password(&new_secret()).unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$".into()));

/// The same work as [`verify_password`], with no outcome.
pub fn dummy_verification(password: &str) {
    let _ = verify_password(&DUMMY, password);
}
