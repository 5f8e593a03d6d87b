//! Dependencies point one way (`../shared/ARCHITECTURE.md`, docs/architecture.md):
//!
//! ```text
//! error, api, clock, chaos, tls (shared plain types, instruments, TLS material)
//!   <- config <- keys <- storage <- raft, mvcc <- range <- placement <- node <- server
//! wire (Error <-> Status) <- client (the SDK: the API only) <- cli, etcd (the etcd gateway)
//! security (certificates, the edge's TLS and peer identity, users and roles) <- server, cli
//! ```
//! Each module of `src/` may name (as `crate::<module>`) only the modules
//! listed for it below; `cli` may call `server::serve` and nothing else of
//! the server; only `storage/rocks.rs` names RocksDB. This test reads the
//! sources and fails when a forbidden import appears.

use std::collections::BTreeMap;
use std::path::Path;

/// module -> modules it may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("trace_context", &[]),
    ("api", &["error"]),
    ("clock", &[]),
    // TLS material and endpoints: the SDK's, the node's, the transport's.
    ("tls", &["error"]),
    ("security", &["error", "config", "tls", "clock"]),
    ("metrics", &[]),
    ("chaos", &[]),
    // Test support (cfg(test)): golden-script runner.
    ("golden", &[]),
    ("config", &["error", "api", "clock", "tls"]),
    ("keys", &["error", "api"]),
    ("storage", &["error"]),
    ("raft", &["error", "keys", "storage", "chaos"]),
    (
        "mvcc",
        &["error", "api", "keys", "storage", "chaos", "golden"],
    ),
    (
        "range",
        &[
            "error", "api", "clock", "keys", "storage", "raft", "mvcc", "chaos", "metrics",
        ],
    ),
    (
        "placement",
        &["error", "api", "config", "keys", "range", "mvcc", "chaos"],
    ),
    (
        "node",
        &[
            "error",
            "api",
            "config",
            "clock",
            "chaos",
            "metrics",
            "keys",
            "storage",
            "raft",
            "mvcc",
            "range",
            "placement",
            "proto",
            "golden",
            "trace_context",
            "tls",
        ],
    ),
    ("wire", &["error", "proto"]),
    (
        "client",
        &[
            "error",
            "api",
            "chaos",
            "proto",
            "wire",
            "trace_context",
            "tls",
        ],
    ),
    // The etcd v3 gateway: an API adapter over the SDK, like the CLI.
    ("etcd", &["error", "api", "client", "proto", "etcdpb"]),
    // The cluster's state as JSON, for the CLI and the web console alike.
    ("status", &["error", "api", "config", "client", "proto"]),
    // OpenTelemetry export, at the production edge.
    ("telemetry", &["error", "trace_context"]),
    (
        "server",
        &[
            "error",
            "api",
            "config",
            "clock",
            "chaos",
            "metrics",
            "keys",
            "storage",
            "raft",
            "mvcc",
            "range",
            "placement",
            "node",
            "proto",
            "wire",
            "client",
            "status",
            "telemetry",
            "tls",
            "security",
            "etcd",
        ],
    ),
    (
        "cli",
        &[
            "error",
            "api",
            "config",
            "client",
            "proto",
            "wire",
            "server",
            "status",
            "telemetry",
            "tls",
            "security",
        ],
    ),
];

/// Items of a module another module may name (module, item, allowed to).
const ALLOWED_ITEMS: &[(&str, &str, &str)] = &[("cli", "server", "serve")];

/// The module a source file belongs to (its first path component).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Drops `//` comments (doc comments name modules in prose).
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<module>[::<item>]` a source names, including inside
/// `use crate::{a, b::c}` groups.
fn named(src: &str) -> Vec<(String, Option<String>)> {
    let src = strip_comments(src);
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |from: usize| -> (String, usize) {
        let mut j = from;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        (src[from..j].to_string(), j)
    };
    while let Some(pos) = src[i..].find("crate::") {
        let start = i + pos + "crate::".len();
        let preceded = i + pos > 0 && {
            let c = bytes[i + pos - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        };
        i = start;
        if preceded {
            continue;
        }
        if bytes.get(start) == Some(&b'{') {
            // A group: the heads of its top-level paths.
            let (mut depth, mut j, mut at_head) = (0usize, start + 1, true);
            while j < bytes.len() {
                match bytes[j] {
                    b'{' => depth += 1,
                    b'}' if depth == 0 => break,
                    b'}' => depth -= 1,
                    b',' if depth == 0 => at_head = true,
                    c if at_head && (c.is_ascii_alphanumeric() || c == b'_') => {
                        let (m, end) = ident(j);
                        let item = src[end..]
                            .strip_prefix("::")
                            .map(|_| ident(end + 2).0)
                            .filter(|s| !s.is_empty());
                        out.push((m, item));
                        at_head = false;
                        j = end;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
            continue;
        }
        let (m, end) = ident(start);
        let item = src[end..]
            .strip_prefix("::")
            .map(|_| ident(end + 2).0)
            .filter(|s| !s.is_empty());
        out.push((m, item));
    }
    out
}

/// The forbidden names in `src` of a file of `module`.
fn violations(module: &str, src: &str) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let Some(ok) = allowed.get(module) else {
        return Vec::new(); // lib.rs, main.rs and the generated proto may name anything
    };
    let mut out = Vec::new();
    for (m, item) in named(src) {
        if m == module || m == "Error" || m == "Result" {
            continue;
        }
        if ok.contains(&m.as_str()) {
            let restricted: Vec<&str> = ALLOWED_ITEMS
                .iter()
                .filter(|(from, to, _)| *from == module && *to == m)
                .map(|(_, _, item)| *item)
                .collect();
            match (&item, restricted.is_empty()) {
                (_, true) => continue,
                (Some(i), false) if restricted.contains(&i.as_str()) => continue,
                _ => out.push(format!(
                    "{module} names crate::{m}::{} (only {restricted:?} is allowed)",
                    item.as_deref().unwrap_or("*")
                )),
            }
            continue;
        }
        out.push(format!("{module} must not depend on {m}"));
    }
    if src.contains("rocksdb::") && module != "storage" {
        out.push(format!(
            "{module} names rocksdb (only storage/rocks.rs may)"
        ));
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn dependencies_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let src = std::fs::read_to_string(f).unwrap();
        let module = module_of(rel);
        for v in violations(&module, &src) {
            found.push(format!("{}: {v}", rel.display()));
        }
        if src.contains("rocksdb::") && rel != Path::new("storage/rocks.rs") {
            found.push(format!("{}: names rocksdb", rel.display()));
        }
    }
    assert!(found.is_empty(), "forbidden imports:\n{}", found.join("\n"));
    assert!(
        files.len() > 40,
        "the test must see the sources ({})",
        files.len()
    );
}

/// The checker has teeth: the imports issue 9 found are caught.
#[test]
fn a_forbidden_import_is_caught() {
    assert_eq!(
        violations("raft", "use crate::proto::KeyValue;"),
        ["raft must not depend on proto"]
    );
    assert_eq!(
        violations(
            "client",
            "use crate::{error::Result, range::ReplicaChange};\n"
        ),
        ["client must not depend on range"]
    );
    assert_eq!(
        violations("client", "let k = crate::keys::data_key(b\"x\");"),
        ["client must not depend on keys"]
    );
    assert_eq!(
        violations("wire", "impl From<crate::range::RangeDescriptor> for X {}"),
        ["wire must not depend on range"]
    );
    assert_eq!(
        violations("cli", "crate::server::registry::read(x)").len(),
        1,
        "cli may call server::serve only"
    );
    assert!(violations("cli", "crate::server::serve(cfg).await?;").is_empty());
    assert!(violations("range", "// see crate::node for who drives this\n").is_empty());
    assert!(violations("storage", "use crate::error::Result;").is_empty());
    assert_eq!(violations("node", "use rocksdb::DB;").len(), 1);
}
