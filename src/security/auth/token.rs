//! Login tokens: `rdb1.<user>.<generation>.<expires_ms>.<mac>`, where the
//! MAC is HMAC-SHA256 under the cluster's token key over everything before
//! it. Any node can check a token without a round trip; a token stops
//! working when it expires (node clock), when the user is removed or
//! changes password (a new generation), or when authentication is enabled
//! again (a new token key). Verification is constant-time (ring).

use ring::hmac;

use crate::error::{Error, Result};

const VERSION: &str = "rdb1";

/// What a verified token says.
#[derive(Debug, PartialEq, Eq)]
pub struct Claims {
    pub user: String,
    pub generation: u64,
    pub expires_ms: u64,
}

fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// A token for `user` (whose record has `generation`), valid until `expires_ms`.
pub fn issue(secret: &[u8], user: &str, generation: u64, expires_ms: u64) -> String {
    let body = format!("{VERSION}.{user}.{generation}.{expires_ms}");
    let tag = hmac::sign(&key(secret), body.as_bytes());
    format!("{body}.{}", super::hex(tag.as_ref()))
}

/// Checks a token's MAC and expiry (`now_ms`); the caller checks the user
/// and generation against the current users.
pub fn verify(secret: &[u8], token: &str, now_ms: u64) -> Result<Claims> {
    let bad = || Error::Unauthenticated("the token is not valid: run `rangedb login`".into());
    let (body, mac) = token.rsplit_once('.').ok_or_else(bad)?;
    let mac = super::unhex(mac).ok_or_else(bad)?;
    if secret.is_empty() || hmac::verify(&key(secret), body.as_bytes(), &mac).is_err() {
        return Err(bad());
    }
    let rest = body.strip_prefix(VERSION).and_then(|r| r.strip_prefix('.'));
    let mut parts = rest.ok_or_else(bad)?.rsplitn(3, '.');
    let expires_ms: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let generation: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let user = parts.next().filter(|u| !u.is_empty()).ok_or_else(bad)?;
    if now_ms >= expires_ms {
        return Err(Error::Unauthenticated(format!(
            "the token of user {user} expired: run `rangedb login` again"
        )));
    }
    Ok(Claims {
        user: user.to_string(),
        generation,
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires() {
        let t = issue(b"secret-key", "alice.b", 7, 1_000);
        let c = verify(b"secret-key", &t, 999).unwrap();
        assert_eq!(
            c,
            Claims {
                user: "alice.b".into(),
                generation: 7,
                expires_ms: 1_000
            }
        );
        let e = verify(b"secret-key", &t, 1_000).unwrap_err().to_string();
        assert!(e.contains("expired"), "{e}");
    }

    #[test]
    fn forged_or_foreign_tokens_fail() {
        let t = issue(b"secret-key", "alice", 7, 1_000);
        assert!(verify(b"other-key", &t, 0).is_err());
        assert!(verify(b"", &t, 0).is_err());
        // Any change to the body breaks the MAC: a longer life, another user.
        for forged in [
            t.replace(".1000.", ".9000."),
            t.replace("alice", "root"),
            t.replace(".7.", ".8."),
        ] {
            assert_ne!(forged, t);
            assert!(verify(b"secret-key", &forged, 0).is_err(), "{forged}");
        }
        for junk in ["", "rdb1", "rdb1.a.b.c.d", "x.y", "rdb1..1.2.zz"] {
            assert!(verify(b"secret-key", junk, 0).is_err(), "{junk}");
        }
    }
}
