//! Password hashes: argon2id in PHC strings, salted from the node's RNG
//! (`madsim::rand`: seeded in simulation, the OS-seeded thread RNG in
//! production). Hashing happens on the node that receives a password,
//! before anything reaches Raft: the log and the data never hold one.
//! Simulation and unit tests use cheap parameters; a stored hash carries
//! its parameters, so verification needs none.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{Error, Result};

/// Shortest accepted password (etcd's CVE-2020-15115 accepted empty ones).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password (argon2 hashes anything; this bounds the work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn params() -> Params {
    #[cfg(any(madsim, test))]
    {
        Params::new(256, 1, 1, None).unwrap_or_default()
    }
    #[cfg(not(any(madsim, test)))]
    {
        // RustCrypto's default: m = 19 MiB, t = 2, p = 1 (OWASP's minimum).
        Params::default()
    }
}

/// Refuses passwords that are too short or too long (one clear line).
pub fn check_password(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(Error::InvalidArgument(format!(
            "the password has {chars} characters; at least {MIN_PASSWORD_CHARS} are needed"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the password is {} bytes; the limit is {MAX_PASSWORD_BYTES}",
            password.len()
        )));
    }
    Ok(())
}

/// The PHC string of `password` with a fresh salt.
pub fn hash(password: &str) -> Result<String> {
    check_password(password)?;
    let salt: [u8; 16] = madsim::rand::random();
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| Error::Internal(format!("password salt: {e}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hash: {e}")))
}

/// Whether `password` matches the stored PHC string (false for a stored
/// value that does not parse).
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "two hashes of one password share a salt");
        assert!(!a.contains("correct horse"));
        assert!(verify("correct horse", &a));
        assert!(!verify("correct horsE", &a));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        let e = hash("short").unwrap_err().to_string();
        assert!(e.contains("at least 8"), "{e}");
        assert!(hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
