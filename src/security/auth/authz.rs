//! Who may do what: a request's `Principal` (set by the listener's
//! interceptor, `AuthGate`) against the keys and spans it touches. Every
//! check covers the whole request before anything is done, so a batch or
//! a transaction step that mixes permitted and forbidden keys writes
//! nothing, and a scan must be covered, end to end, by the union of the
//! caller's prefixes (etcd's GHSA-… class: a range that runs past the
//! permitted prefix).
//!
//! `_/auth/` (users, hashes, the token key) is written only by the Auth
//! service and read only by root and nodes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The key prefix of the auth system's own records.
pub const AUTH_PREFIX: &[u8] = b"_/auth/";
/// System keys (`api::meta::PREFIX`): their own namespace in scans.
const SYSTEM_PREFIX: &[u8] = b"_/";

/// One permission of a role: read, or read and write, on every key
/// starting with `prefix` (empty: every key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub prefix: Vec<u8>,
    pub write: bool,
}

/// Who a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A node (its certificate).
    Node,
    /// Authentication is off: every right, as before users existed (with
    /// TLS, the client certificate was the credential).
    Unrestricted,
    /// A user; `root` holds every right.
    User {
        name: String,
        root: bool,
        grants: Vec<Grant>,
    },
}

/// The end of the key span a prefix covers (`None`: to the end).
fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return Some(e);
        }
    }
    None
}

/// Whether `[start, end)` (`end` empty: to the end) overlaps `[ps, pe)`.
fn overlaps(start: &[u8], end: &[u8], ps: &[u8], pe: Option<&[u8]>) -> bool {
    let before_end = pe.is_none_or(|pe| start < pe);
    let after_start = end.is_empty() || end > ps;
    before_end && after_start
}

/// Where `AUTH_PREFIX`'s keys end (`prefix_end(AUTH_PREFIX)`).
const AUTH_END: &[u8] = b"_/auth0";

fn touches_auth(start: &[u8], end: &[u8]) -> bool {
    overlaps(start, end, AUTH_PREFIX, Some(AUTH_END))
}

/// Whether the union of `prefixes` covers all of `[start, end)` (`end`
/// empty: to the end of the keyspace).
pub fn covers(prefixes: &[&[u8]], start: &[u8], end: &[u8]) -> bool {
    let mut spans: Vec<(&[u8], Option<Vec<u8>>)> =
        prefixes.iter().map(|p| (*p, prefix_end(p))).collect();
    spans.sort();
    let mut cur = start.to_vec();
    loop {
        if !end.is_empty() && cur.as_slice() >= end {
            return true;
        }
        // The furthest end among spans containing `cur`.
        let mut reach: Option<Option<&[u8]>> = None;
        for (s, e) in &spans {
            let contains = *s <= cur.as_slice() && e.as_deref().is_none_or(|e| cur.as_slice() < e);
            if contains {
                reach = Some(match (reach, e.as_deref()) {
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(r)), Some(e)) => Some(r.max(e)),
                    (None, Some(e)) => Some(e),
                });
            }
        }
        match reach {
            None => return false,
            Some(None) => return true,
            Some(Some(r)) => cur = r.to_vec(),
        }
    }
}

fn denied(who: &str, what: String) -> Error {
    Error::PermissionDenied(format!("user {who} may not {what}"))
}

fn show(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

impl Principal {
    fn is_root(&self) -> bool {
        matches!(
            self,
            Principal::Node | Principal::Unrestricted | Principal::User { root: true, .. }
        )
    }

    /// The name shown to the caller (`AuthStatus`).
    pub fn describe(&self) -> String {
        match self {
            Principal::Node => "node".into(),
            Principal::Unrestricted => String::new(),
            Principal::User { name, .. } => name.clone(),
        }
    }

    /// A scan of `[start, end)` as the Kv and Txn services run it: from a
    /// `_/` key it stays in the system keys (to their end when `end` is
    /// empty or past them); from any other key it reads user keys only
    /// (`end` empty: to their end), so the system keys between are no
    /// part of it.
    pub fn check_scan(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let sys = SYSTEM_PREFIX;
        let sys_end = prefix_end(sys).unwrap_or_default();
        if start.starts_with(sys) {
            let end = if end.is_empty() || end > sys_end.as_slice() {
                &sys_end[..]
            } else {
                end
            };
            self.read_span(start, end, false)
        } else {
            self.read_span(start, end, true)
        }
    }

    /// Reading `[start, end)` (`end` empty: to the end), every key in it.
    pub fn check_read(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.read_span(start, end, false)
    }

    fn read_span(&self, start: &[u8], end: &[u8], user_keys_only: bool) -> Result<()> {
        // Root (and nodes, and everyone while authentication is off) reads
        // anything: no work on the hot path of the default setup.
        if self.is_root() {
            return Ok(());
        }
        if !user_keys_only && touches_auth(start, end) {
            return Err(Error::PermissionDenied(
                "_/auth/ (users and passwords) is readable by root only".into(),
            ));
        }
        let Principal::User {
            name,
            root: false,
            grants,
        } = self
        else {
            return Ok(());
        };
        let mut prefixes: Vec<&[u8]> = grants.iter().map(|g| g.prefix.as_slice()).collect();
        if user_keys_only {
            // Not read: a hole the grants need not cover.
            prefixes.push(SYSTEM_PREFIX);
        }
        if covers(&prefixes, start, end) {
            return Ok(());
        }
        let one_key = end.len() == start.len() + 1 && end.starts_with(start) && end.ends_with(&[0]);
        let span = if one_key {
            format!("key {:?}", show(start))
        } else if end.is_empty() {
            format!("keys from {:?} to the end", show(start))
        } else {
            format!("keys [{:?}, {:?})", show(start), show(end))
        };
        Err(denied(name, format!("read {span}")))
    }

    /// Reading one key.
    pub fn check_read_key(&self, key: &[u8]) -> Result<()> {
        if self.is_root() {
            return Ok(());
        }
        let mut end = key.to_vec();
        end.push(0);
        self.check_read(key, &end)
    }

    /// Writing every one of `keys` (all or nothing).
    pub fn check_write<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        for key in keys {
            if key.starts_with(AUTH_PREFIX) && *self != Principal::Node {
                return Err(Error::PermissionDenied(
                    "_/auth/ is written only through `rangedb user` and `rangedb role`".into(),
                ));
            }
            if let Principal::User {
                name,
                root: false,
                grants,
            } = self
            {
                if !grants.iter().any(|g| g.write && key.starts_with(&g.prefix)) {
                    return Err(denied(name, format!("write key {:?}", show(key))));
                }
            }
        }
        Ok(())
    }

    /// Administration: root (or a node).
    pub fn check_root(&self, what: &str) -> Result<()> {
        match self {
            Principal::User {
                name, root: false, ..
            } => Err(denied(name, format!("{what} (that needs the root role)"))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(grants: &[(&str, bool)]) -> Principal {
        Principal::User {
            name: "alice".into(),
            root: false,
            grants: grants
                .iter()
                .map(|(p, w)| Grant {
                    prefix: p.as_bytes().to_vec(),
                    write: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn coverage_is_the_union_of_prefixes() {
        let p: &[&[u8]] = &[b"a/", b"b"];
        assert!(covers(p, b"a/", b"a0"));
        assert!(covers(p, b"a/x", b"a/y"));
        // Runs past the prefix: refused (etcd's range-past-prefix class).
        assert!(!covers(p, b"a/", b"a1"));
        assert!(!covers(p, b"a/", b""));
        // "a/" ends at "a0", then a gap until "b".
        assert!(!covers(p, b"a/", b"b5"));
        assert!(covers(p, b"b", b"c"));
        assert!(covers(&[b"a/", b"a0", b"a1"], b"a/", b"a2"));
        assert!(covers(&[b""], b"", b""));
        assert!(!covers(&[], b"x", b"y"));
        // A prefix ending in 0xff has no finite end.
        assert!(covers(&[&[0xff][..]], &[0xff, 3], b""));
        assert_eq!(prefix_end(AUTH_PREFIX).as_deref(), Some(AUTH_END));
    }

    #[test]
    fn reads_writes_and_admin_by_role() {
        let u = user(&[("app/", true), ("logs/", false)]);
        assert!(u.check_read_key(b"app/1").is_ok());
        assert!(u.check_read(b"logs/", b"logs0").is_ok());
        assert!(u.check_read(b"app/", b"logs0").is_err());
        assert!(u.check_write([&b"app/1"[..]]).is_ok());
        let e = u
            .check_write([&b"app/1"[..], &b"logs/1"[..]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("may not write key \"logs/1\""), "{e}");
        assert!(u.check_root("split a range").is_err());
        let e = u.check_read_key(b"other").unwrap_err().to_string();
        assert!(e.ends_with("user alice may not read key \"other\""), "{e}");
        // A user-key scan skips the system keys: "" .. "" with every user
        // prefix granted reads no `_/` key (so needs no grant there).
        let all_user = user(&[("", false)]);
        assert!(all_user.check_scan(b"", b"").is_ok());
        assert!(all_user.check_read(b"", b"").is_err());
        assert!(user(&[("a", false)])
            .check_scan(b"_/cluster/", b"")
            .is_err());
        assert!(user(&[("_/cluster/", false)])
            .check_scan(b"_/cluster/", b"_/cluster0")
            .is_ok());
        // From a system key an open end stops at the system keys' end.
        assert!(
            user(&[("_/", false)]).check_scan(b"_/", b"").is_err(),
            "_/auth/ is inside"
        );
        assert!(user(&[("_/", false)]).check_scan(b"_/b", b"").is_ok());
        assert!(
            user(&[("_/b", false)]).check_scan(b"_/b", b"").is_err(),
            "runs to _0"
        );
    }

    #[test]
    fn auth_records_are_root_only_to_read_and_node_only_to_write() {
        let all = user(&[("", true)]);
        assert!(all.check_read_key(b"_/auth/users/root").is_err());
        assert!(all.check_read(b"", b"").is_err());
        assert!(all.check_read(b"_/b", b"_/c").is_ok());
        assert!(all.check_read(b"_/a", b"_/b").is_err(), "holds _/auth/");
        let root = Principal::User {
            name: "root".into(),
            root: true,
            grants: vec![],
        };
        assert!(root.check_read(b"", b"").is_ok());
        assert!(root.check_write([&b"_/auth/enabled"[..]]).is_err());
        assert!(Principal::Unrestricted
            .check_write([&b"_/auth/x"[..]])
            .is_err());
        assert!(Principal::Node.check_write([&b"_/auth/x"[..]]).is_ok());
    }
}
