//! Real-process tests of users, roles and logins (docs/security.md, "Users
//! and roles"): a TLS node, `rangedb user|role|login|admin auth`, every
//! RPC without credentials and with a role that does not allow it, and
//! etcd's advisory cases — batches and transactions mixing permitted and
//! forbidden prefixes, scans running past a permitted prefix, admin calls,
//! tokens used after expiry or after the user's removal.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use rangedb::client::conn::Creds;
use rangedb::proto::admin_client::AdminClient;
use rangedb::proto::auth_client::AuthClient;
use rangedb::proto::kv_client::KvClient;
use rangedb::proto::txn_client::TxnClient;
use rangedb::proto::*;
use rangedb::tls::TlsMaterial;
use tonic::Code;

struct Env {
    certs: String,
    ep: String,
    tokens: PathBuf,
}

impl Env {
    /// `rangedb` as `user`, with `password` in RANGEDB_PASSWORD (if any) and
    /// `stdin` piped in.
    fn run(&self, user: &str, password: Option<&str>, stdin: &str, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.args([
            "--certs-dir",
            &self.certs,
            "--endpoints",
            &self.ep,
            "--user",
            user,
        ])
        .args(args)
        .env("RANGEDB_TOKEN_DIR", &self.tokens)
        .env("RANGEDB_TXN_DIR", self.tokens.join("txns"))
        .env_remove("RANGEDB_PASSWORD")
        .env_remove("RANGEDB_USER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(p) = password {
            c.env("RANGEDB_PASSWORD", p);
        }
        let mut child = c.spawn().expect("run rangedb");
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, user: &str, stdin: &str, args: &[&str]) -> String {
        let o = self.run(user, None, stdin, args);
        assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
        stdout(&o)
    }

    /// Fails with exit 1 and a message containing `want`.
    fn refused(&self, user: &str, password: Option<&str>, args: &[&str], want: &str) {
        let o = self.run(user, password, "", args);
        let e = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{args:?} as {user}: {}{e}",
            stdout(&o)
        );
        assert!(
            e.contains(want),
            "{args:?} as {user}: want {want:?} in: {e}"
        );
        assert_eq!(e.lines().count(), 1, "one line: {e}");
    }
}

fn make_certs(dir: &Path) -> String {
    let d = dir.display().to_string();
    for args in [
        vec!["cert", "create-ca"],
        vec!["cert", "create-node", "localhost", "127.0.0.1"],
        vec!["cert", "create-client", "root"],
    ] {
        let o = Command::new(BIN)
            .args(&args)
            .args(["--certs-dir", &d])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    d
}

/// A TLS node with users root (password "rootpass1", certificate too) and
/// alice ("alicepass1": read-write on app/, read on logs/), authentication on.
fn secured(tmp: &Path) -> (Server, Env) {
    let certs = make_certs(&tmp.join("certs"));
    let server = single_node_with(tmp, &tmp.join("data"), &[&format!("--certs-dir={certs}")]);
    let env = Env {
        certs,
        ep: server.client_address.clone(),
        tokens: tmp.join("tokens"),
    };
    wait_until(Duration::from_secs(60), "the TLS node to serve", || {
        env.run("root", None, "", &["put", "/ready", "x"])
            .status
            .success()
    });
    env.refused(
        "root",
        None,
        &["admin", "auth", "enable"],
        "needs a root user first",
    );
    env.ok("root", "rootpass1\n", &["user", "add", "root"]);
    env.refused("root", None, &["user", "add", "bob"], "at least 8");
    env.ok("root", "alicepass1\n", &["user", "add", "alice"]);
    let o = env.run("root", None, "another1\n", &["user", "add", "alice"]);
    assert!(stderr(&o).contains("user alice exists"), "{}", stderr(&o));
    for args in [
        vec!["role", "add", "app"],
        vec!["role", "grant", "app", "readwrite", "app/"],
        vec!["role", "add", "logs-ro"],
        vec!["role", "grant", "logs-ro", "read", "logs/"],
        vec!["user", "grant", "alice", "app"],
        vec!["user", "grant", "alice", "logs-ro"],
        vec!["put", "logs/1", "entry"],
    ] {
        env.ok("root", "", &args);
    }
    env.refused(
        "root",
        None,
        &["user", "grant", "alice", "nope"],
        "role nope does not exist",
    );
    let on = env.ok("root", "", &["admin", "auth", "enable"]);
    assert!(on.contains("authentication: on"), "{on}");
    (server, env)
}

#[test]
fn users_and_roles_guard_every_path_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, env) = secured(tmp.path());
    let users = env.ok("root", "", &["user", "list"]);
    // The peer address serves other nodes only, whatever the user.
    let o = Command::new(BIN)
        .args([
            "--certs-dir",
            &env.certs,
            "--endpoints",
            &server.peer_address,
        ])
        .args(["get", "logs/1"])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("this is a peer address"),
        "{}",
        stderr(&o)
    );
    assert!(
        users.contains("alice: app, logs-ro") && users.contains("root:"),
        "{users}"
    );

    // No credentials: a user without certificate, password or token.
    env.refused(
        "alice",
        None,
        &["get", "app/1"],
        "client.alice.crt does not exist",
    );
    env.refused(
        "alice",
        Some("wrong-pass"),
        &["get", "app/1"],
        "wrong user name or password",
    );
    env.refused(
        "ghost",
        Some("whatever1"),
        &["get", "app/1"],
        "wrong user name or password",
    );

    // alice logs in; her token goes with every later command.
    let o = env.run("alice", Some("alicepass1"), "", &["login"]);
    assert!(
        stdout(&o).contains("Logged in as alice"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    env.ok("alice", "", &["put", "app/1", "v1"]);
    assert_eq!(env.ok("alice", "", &["get", "app/1"]).trim(), "v1");
    assert_eq!(env.ok("alice", "", &["get", "logs/1"]).trim(), "entry");
    let status = env.ok("alice", "", &["admin", "auth", "status"]);
    assert!(status.contains("you are alice (app, logs-ro)"), "{status}");

    // A wrong role: refused, and nothing written.
    env.refused(
        "alice",
        None,
        &["put", "other/1", "x"],
        "may not write key \"other/1\"",
    );
    env.refused("alice", None, &["put", "logs/2", "x"], "may not write");
    env.refused("alice", None, &["delete", "logs/1"], "may not write");
    env.refused("alice", None, &["get", "other/1"], "may not read");
    // A batch mixing a permitted and a forbidden prefix writes nothing.
    env.refused(
        "alice",
        None,
        &["batch", "put", "app/2", "a", "other/2", "b"],
        "may not write key \"other/2\"",
    );
    // A transaction mixing them commits nothing.
    env.ok("alice", "", &["txn", "begin"]);
    env.ok("alice", "", &["txn", "put", "app/3", "a"]);
    env.ok("alice", "", &["txn", "put", "other/3", "b"]);
    let o = env.run("alice", None, "", &["txn", "commit"]);
    assert!(
        !o.status.success() && stderr(&o).contains("permission denied"),
        "{}",
        stderr(&o)
    );
    // Scans: inside the prefix yes; running past it, or everything, no.
    let r = env.ok("alice", "", &["range", "app/", "app0"]);
    assert!(r.contains("app/1: v1"), "{r}");
    env.refused("alice", None, &["range", "app/", "b"], "may not read keys");
    env.refused("alice", None, &["range", "", ""], "may not read");
    // Admin calls need root; _/auth/ is root's to read.
    env.refused(
        "alice",
        None,
        &["admin", "split", "app/5"],
        "needs the root role",
    );
    env.refused(
        "alice",
        None,
        &["admin", "config", "set", "replication_factor", "1"],
        "needs the root role",
    );
    env.refused("alice", None, &["user", "list"], "needs the root role");
    env.refused(
        "alice",
        None,
        &["admin", "meta", "get", "_/auth/enabled"],
        "readable by root only",
    );
    let o = env.run(
        "alice",
        Some("alicepass1"),
        "mallory-pw\n",
        &["user", "add", "mallory"],
    );
    assert!(stderr(&o).contains("needs the root role"), "{}", stderr(&o));
    assert_eq!(
        env.ok("root", "", &["admin", "meta", "get", "_/auth/enabled"])
            .trim(),
        "true"
    );
    for key in ["other/1", "app/2", "other/2", "app/3", "other/3"] {
        let o = env.run("root", None, "", &["get", key]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{key} was written: {}",
            stdout(&o)
        );
        assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    }
    assert_eq!(env.ok("root", "", &["get", "logs/1"]).trim(), "entry");

    // A password given for root works like the certificate.
    env.ok("root", "", &["logout"]);
    let o = env.run("root", Some("rootpass1"), "", &["user", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // alice changes her own password: her old token and password stop
    // working, the new password works.
    let o = env.run(
        "alice",
        Some("alicepass1"),
        "alicepass2\n",
        &["user", "passwd", "alice"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    env.refused("alice", None, &["get", "app/1"], "no longer valid");
    env.refused(
        "alice",
        Some("alicepass1"),
        &["get", "app/1"],
        "wrong user name or password",
    );
    let o = env.run("alice", Some("alicepass2"), "", &["login"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // ...but not anyone else's.
    let o = env.run("alice", None, "rootroot1\n", &["user", "passwd", "root"]);
    assert!(stderr(&o).contains("needs the root role"), "{}", stderr(&o));

    // Tokens end with the user: removal stops them.
    env.ok("root", "", &["user", "remove", "alice"]);
    env.refused("alice", None, &["get", "app/1"], "no longer valid");
    // ...and with time.
    env.ok("root", "alicepass1\n", &["user", "add", "alice"]);
    env.ok("root", "", &["user", "grant", "alice", "app"]);
    let o = env.run("alice", Some("alicepass1"), "", &["login", "--ttl", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    env.ok("alice", "", &["get", "app/1"]);
    std::thread::sleep(Duration::from_millis(2500));
    // The CLI no longer sends an expired token: without one, alice has no
    // certificate to fall back on.
    env.refused(
        "alice",
        None,
        &["get", "app/1"],
        "client.alice.crt does not exist",
    );
    let token = std::fs::read_to_string(env.tokens.join("token.alice")).unwrap();
    let token = token.lines().next().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = TlsMaterial::ca_only(Path::new(&env.certs)).unwrap();
    let code = rt.block_on(async {
        let ch = channel(&env.ep, &ca).await;
        let creds = Creds::bearer(Some(&token)).unwrap();
        let e = KvClient::with_interceptor(ch, creds)
            .get(GetRequest {
                key: b"app/1".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("expired"), "{e:?}");
        e.code()
    });
    assert_eq!(code, Code::Unauthenticated);

    // Turning authentication off needs root, and lets certificates in again.
    env.ok("root", "", &["admin", "auth", "disable"]);
    env.ok("root", "", &["put", "other/9", "x"]);
}

async fn channel(ep: &str, tls: &TlsMaterial) -> tonic::transport::Channel {
    rangedb::tls::endpoint(ep, Some(tls))
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

/// Calls every RPC of Kv, Txn, Admin and Auth with `creds`; the codes, in
/// order, with each call's name.
async fn every_rpc(ch: tonic::transport::Channel, creds: Creds) -> Vec<(&'static str, Code)> {
    let mut kv = KvClient::with_interceptor(ch.clone(), creds.clone());
    let mut txn = TxnClient::with_interceptor(ch.clone(), creds.clone());
    let mut admin = AdminClient::with_interceptor(ch.clone(), creds.clone());
    let mut auth = AuthClient::with_interceptor(ch, creds);
    let key = b"other/k".to_vec();
    let code = |r: std::result::Result<(), tonic::Status>| match r {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    };
    macro_rules! call {
        ($out:ident, $name:literal, $e:expr) => {
            $out.push(($name, code($e.await.map(|_| ()))));
        };
    }
    let mut out = Vec::new();
    call!(
        out,
        "Kv.Get",
        kv.get(GetRequest {
            key: key.clone(),
            ..Default::default()
        })
    );
    call!(
        out,
        "Kv.Put",
        kv.put(PutRequest {
            key: key.clone(),
            value: b"v".to_vec(),
            lease: 0,
        })
    );
    call!(
        out,
        "Kv.Delete",
        kv.delete(DeleteRequest { key: key.clone() })
    );
    call!(
        out,
        "Kv.Scan",
        kv.scan(ScanRequest {
            start: b"o".to_vec(),
            end: b"p".to_vec(),
            ..Default::default()
        })
    );
    call!(
        out,
        "Kv.BatchPut",
        kv.batch_put(BatchPutRequest {
            pairs: vec![KeyValue {
                key: key.clone(),
                value: b"v".to_vec(),
                meta: None,
            }]
        })
    );
    let m = || {
        vec![Mutation {
            key: key.clone(),
            value: b"v".to_vec(),
            delete: false,
            lease: 0,
        }]
    };
    call!(
        out,
        "Txn.Get",
        txn.get(TxnGetRequest {
            key: key.clone(),
            start_ts: 1,
            ..Default::default()
        })
    );
    call!(
        out,
        "Txn.Scan",
        txn.scan(TxnScanRequest {
            start: b"o".to_vec(),
            end: b"p".to_vec(),
            start_ts: 1,
            ..Default::default()
        })
    );
    call!(
        out,
        "Txn.CommitOnePc",
        txn.commit_one_pc(OnePcRequest {
            start_ts: 1,
            mutations: m(),
            ..Default::default()
        })
    );
    call!(
        out,
        "Txn.Prewrite",
        txn.prewrite(PrewriteRequest {
            primary: key.clone(),
            start_ts: 1,
            ttl_ms: 1000,
            mutations: m()
        })
    );
    call!(
        out,
        "Txn.Validate",
        txn.validate(ValidateRequest {
            start_ts: 1,
            commit_ts: 2,
            reads: vec![key.clone()],
            span: None
        })
    );
    call!(
        out,
        "Txn.Finish",
        txn.finish(FinishRequest {
            keys: vec![key.clone()],
            start_ts: 1,
            ..Default::default()
        })
    );
    call!(
        out,
        "Txn.CheckTxn",
        txn.check_txn(CheckTxnRequest {
            primary: key.clone(),
            start_ts: 1,
            lost_reply: false
        })
    );
    call!(
        out,
        "Txn.Status",
        txn.status(CheckTxnRequest {
            primary: key.clone(),
            start_ts: 1,
            lost_reply: false
        })
    );
    call!(
        out,
        "Txn.Heartbeat",
        txn.heartbeat(HeartbeatRequest {
            primary: key.clone(),
            start_ts: 1,
            ttl_ms: 1000
        })
    );
    call!(
        out,
        "Admin.SplitRange",
        admin.split_range(SplitRangeRequest {
            key: b"app/5".to_vec(),
            ..Default::default()
        })
    );
    call!(
        out,
        "Admin.PublishRange",
        admin.publish_range(RangeDescriptorMsg::default())
    );
    call!(
        out,
        "Admin.SetConfig",
        admin.set_config(SetConfigRequest {
            key: "replication_factor".into(),
            value: "1".into()
        })
    );
    call!(
        out,
        "Admin.ChangeReplicas",
        admin.change_replicas(ChangeReplicasRequest::default())
    );
    call!(
        out,
        "Admin.RegisterNode",
        admin.register_node(RegisterNodeRequest::default())
    );
    call!(
        out,
        "Admin.JoinCluster",
        admin.join_cluster(JoinClusterRequest::default())
    );
    call!(
        out,
        "Admin.DecommissionNode",
        admin.decommission_node(DecommissionNodeRequest { node_id: 9 })
    );
    call!(
        out,
        "Admin.DrainNode",
        admin.drain_node(DrainNodeRequest::default())
    );
    call!(
        out,
        "Admin.GcReplica",
        admin.gc_replica(GcReplicaRequest::default())
    );
    call!(
        out,
        "Admin.FreezeRange",
        admin.freeze_range(FreezeRangeRequest::default())
    );
    call!(
        out,
        "Admin.MergeRanges",
        admin.merge_ranges(MergeRangesRequest::default())
    );
    call!(
        out,
        "Admin.RecordBackup",
        admin.record_backup(RecordBackupRequest {
            id: "b1".into(),
            record: b"{}".to_vec()
        })
    );
    call!(
        out,
        "Auth.SetAuthEnabled",
        auth.set_auth_enabled(SetAuthEnabledRequest { enabled: false })
    );
    call!(
        out,
        "Auth.UserAdd",
        auth.user_add(UserPasswordRequest {
            user: "mallory".into(),
            password: "mallory-pw".into()
        })
    );
    call!(
        out,
        "Auth.UserPasswd",
        auth.user_passwd(UserPasswordRequest {
            user: "root".into(),
            password: "taken-over".into()
        })
    );
    call!(
        out,
        "Auth.UserRemove",
        auth.user_remove(UserRequest {
            user: "root".into()
        })
    );
    call!(
        out,
        "Auth.UserRole",
        auth.user_role(UserRoleRequest {
            user: "alice".into(),
            role: "root".into(),
            revoke: false
        })
    );
    call!(out, "Auth.UserList", auth.user_list(UserListRequest {}));
    call!(
        out,
        "Auth.RoleAdd",
        auth.role_add(RoleRequest { role: "r2".into() })
    );
    call!(
        out,
        "Auth.RoleRemove",
        auth.role_remove(RoleRequest { role: "app".into() })
    );
    call!(
        out,
        "Auth.RolePermission",
        auth.role_permission(RolePermissionRequest {
            role: "app".into(),
            permission: Some(Permission {
                prefix: vec![],
                access: Access::ReadWrite as i32
            }),
            revoke: false
        })
    );
    call!(out, "Auth.RoleList", auth.role_list(RoleListRequest {}));
    out
}

/// RPCs any authenticated caller may make (no keys, no administration).
const OPEN_TO_USERS: [&str; 4] = [
    "Admin.NodeStatus",
    "Admin.GetTimestamps",
    "Admin.PinTimestamp",
    "Kv.Locate",
];

#[test]
fn every_rpc_refuses_missing_credentials_and_wrong_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, env) = secured(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = TlsMaterial::ca_only(Path::new(&env.certs)).unwrap();
    rt.block_on(async {
        let ch = channel(&env.ep, &ca).await;
        // No credentials: every call is Unauthenticated.
        for (name, code) in every_rpc(ch.clone(), Creds::default()).await {
            assert_eq!(code, Code::Unauthenticated, "{name} without credentials");
        }
        let mut kv = KvClient::with_interceptor(ch.clone(), Creds::default());
        let e = kv.locate(LocateRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "Kv.Locate");
        let mut admin = AdminClient::with_interceptor(ch.clone(), Creds::default());
        let e = admin.node_status(NodeStatusRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "Admin.NodeStatus");
        // Login and AuthStatus need none; a wrong password is refused.
        let mut auth = AuthClient::with_interceptor(ch.clone(), Creds::default());
        let st = auth
            .auth_status(AuthStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(st.enabled && st.principal.is_empty(), "{st:?}");
        let e = auth
            .login(LoginRequest {
                user: "alice".into(),
                password: "nope-nope".into(),
                ttl_secs: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        // A forged token is refused like none.
        let forged = Creds::bearer(Some("rdb1.root.1.99999999999999.00ff")).unwrap();
        let e = KvClient::with_interceptor(ch.clone(), forged)
            .get(GetRequest {
                key: b"app/1".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        // alice's token: every call touching other/ or administration is
        // PermissionDenied.
        let t = auth
            .login(LoginRequest {
                user: "alice".into(),
                password: "alicepass1".into(),
                ttl_secs: 60,
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        let alice = Creds::bearer(Some(&t)).unwrap();
        for (name, code) in every_rpc(ch.clone(), alice.clone()).await {
            assert_eq!(code, Code::PermissionDenied, "{name} as alice");
        }
        for name in OPEN_TO_USERS {
            let ok = match name {
                "Admin.NodeStatus" => AdminClient::with_interceptor(ch.clone(), alice.clone())
                    .node_status(NodeStatusRequest {})
                    .await
                    .map(|_| ()),
                "Admin.GetTimestamps" => AdminClient::with_interceptor(ch.clone(), alice.clone())
                    .get_timestamps(GetTimestampsRequest { count: 1 })
                    .await
                    .map(|_| ()),
                "Admin.PinTimestamp" => AdminClient::with_interceptor(ch.clone(), alice.clone())
                    .pin_timestamp(PinTimestampRequest {
                        id: "t1".into(),
                        start_ts: 1,
                        release: true,
                        lease_ms: 0,
                    })
                    .await
                    .map(|_| ()),
                _ => KvClient::with_interceptor(ch.clone(), alice.clone())
                    .locate(LocateRequest::default())
                    .await
                    .map(|_| ()),
            };
            assert!(ok.is_ok(), "{name} as alice: {ok:?}");
        }
    });
    // Nothing any refused call tried was done.
    let o = env.run("root", None, "", &["get", "other/k"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let users = env.ok("root", "", &["user", "list"]);
    assert!(
        !users.contains("mallory") && users.contains("root"),
        "{users}"
    );
    assert!(users.contains("alice: app, logs-ro"), "{users}");
    let roles = env.ok("root", "", &["role", "list"]);
    assert!(
        roles.contains("app: readwrite \"app/\"") && !roles.contains("r2"),
        "{roles}"
    );
    let rf = env.run(
        "root",
        None,
        "",
        &["admin", "config", "get", "replication_factor"],
    );
    assert_ne!(stdout(&rf).trim(), "1", "a refused SetConfig was applied");
    let st = env.ok("root", "", &["admin", "auth", "status"]);
    assert!(st.contains("authentication: on"), "{st}");
}
