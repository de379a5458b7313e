//! The admin password: stored only as a slow salted hash (PBKDF2-HMAC-SHA256).
//!
//! Hashing happens where the password is typed (the CLI process or the server handling a
//! setup/login request), so the plaintext never travels further and is never stored.

use crate::event::{hex, unhex};
use ring::pbkdf2;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// PBKDF2 rounds for new hashes (OWASP 2023 guidance for PBKDF2-HMAC-SHA256).
pub const ITERATIONS: u32 = 600_000;
/// Shortest accepted password.
pub const MIN_LEN: usize = 8;
/// Longest accepted password, in bytes.
pub const MAX_LEN: usize = 1024;
const ALG: &str = "pbkdf2-hmac-sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// A stored password hash (a JSON config record under `meta` `"admin_password"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    pub alg: String,
    pub iterations: u32,
    /// Lowercase hex.
    pub salt: String,
    /// Lowercase hex.
    pub hash: String,
}

/// Why a new password is refused.
pub fn check_new(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!(
            "the password must have at least {MIN_LEN} characters"
        ));
    }
    if password.len() > MAX_LEN {
        return Err(format!("the password must have at most {MAX_LEN} bytes"));
    }
    Ok(())
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt. Slow on purpose (~0.3 s).
    pub fn new(password: &str) -> PasswordHash {
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt[..]);
        let mut out = [0u8; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(ITERATIONS).expect("non-zero"),
            &salt,
            password.as_bytes(),
            &mut out,
        );
        PasswordHash {
            alg: ALG.to_owned(),
            iterations: ITERATIONS,
            salt: hex(&salt),
            hash: hex(&out),
        }
    }

    /// Whether `password` matches (constant-time comparison inside ring). A record that does
    /// not parse matches nothing.
    pub fn verify(&self, password: &str) -> bool {
        let (Some(salt), Some(hash), Some(iterations)) = (
            unhex(&self.salt),
            unhex(&self.hash),
            NonZeroU32::new(self.iterations),
        ) else {
            return false;
        };
        self.alg == ALG
            && password.len() <= MAX_LEN
            && pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA256,
                iterations,
                &salt,
                password.as_bytes(),
                &hash,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = PasswordHash::new("correct horse");
        assert!(a.verify("correct horse"));
        assert!(!a.verify("correct horsE"));
        assert!(!a.verify(""));
        assert_eq!(a.iterations, 600_000);
        let b = PasswordHash::new("correct horse");
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
        assert!(!a.hash.contains("correct"));
    }

    #[test]
    fn damaged_records_match_nothing() {
        let mut a = PasswordHash::new("correct horse");
        a.salt = "zz".into();
        assert!(!a.verify("correct horse"));
        let mut b = PasswordHash::new("correct horse");
        b.alg = "md5".into();
        assert!(!b.verify("correct horse"));
    }

    #[test]
    fn new_passwords_are_checked() {
        assert!(check_new("short").is_err());
        assert!(check_new("long enough").is_ok());
        assert!(check_new(&"x".repeat(MAX_LEN + 1)).is_err());
    }
}
