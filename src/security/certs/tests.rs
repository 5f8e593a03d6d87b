use std::os::unix::fs::PermissionsExt;

use super::*;

fn target(dir: &Path) -> Target {
    Target {
        dir: dir.to_path_buf(),
        ca_key: None,
        lifetime_days: 30,
        overwrite: false,
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_cluster_s_certificates_check_out_and_keys_stay_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let t = target(&dir);
    create_ca(&t).unwrap();
    create_node(&t, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    create_client(&t, "root").unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("node.key")), 0o600);
    assert_eq!(mode(&dir.join("client.root.key")), 0o600);
    assert_eq!(mode(&dir.join("node.crt")), 0o644);

    let node = check(&TlsMaterial::node(&dir).unwrap(), "node").unwrap();
    assert_eq!(node.hosts, vec!["localhost", "127.0.0.1"]);
    assert_eq!(
        node.identity(),
        PeerIdentity::Node {
            hosts: vec!["localhost".into(), "127.0.0.1".into()]
        }
    );
    let client = check(&TlsMaterial::client(&dir, "root").unwrap(), "client").unwrap();
    assert_eq!(client.identity(), PeerIdentity::User("root".into()));
    // A client certificate is not a node's, and the reverse.
    let e = check(&TlsMaterial::client(&dir, "root").unwrap(), "node").unwrap_err();
    assert!(e.to_string().contains("is a client certificate"), "{e}");

    let listed: Vec<_> = list(&dir).unwrap().into_iter().map(|c| c.kind).collect();
    assert_eq!(listed, vec!["ca", "client", "node"]);
}

#[test]
fn nothing_is_overwritten_without_asking() {
    let tmp = tempfile::tempdir().unwrap();
    let t = target(tmp.path());
    create_ca(&t).unwrap();
    let before = std::fs::read(tmp.path().join("ca.key")).unwrap();
    let e = create_ca(&t).unwrap_err();
    assert!(e.to_string().contains("give --overwrite"), "{e}");
    assert_eq!(std::fs::read(tmp.path().join("ca.key")).unwrap(), before);
    create_node(&t, &["n1".into()]).unwrap();
    assert!(create_node(&t, &["n1".into()]).is_err());
}

#[test]
fn mismatched_foreign_and_missing_files_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = target(dir);
    // Missing CA: the hint says how to make it.
    let e = create_node(&t, &["n1".into()]).unwrap_err().to_string();
    assert!(
        e.contains("ca.crt does not exist") && e.contains("create-ca"),
        "{e}"
    );
    create_ca(&t).unwrap();
    create_node(&t, &["n1".into()]).unwrap();
    create_client(&t, "alice").unwrap();
    let e = TlsMaterial::client(dir, "bob").unwrap_err().to_string();
    assert!(
        e.contains("client.bob.crt does not exist") && e.contains("create-client bob"),
        "{e}"
    );

    // A key that is not the certificate's.
    let mut m = TlsMaterial::node(dir).unwrap();
    m.key_pem = std::fs::read(dir.join("client.alice.key")).unwrap();
    let e = check(&m, "node").unwrap_err().to_string();
    assert!(e.contains("is not this certificate's key"), "{e}");

    // Another cluster's CA: the node certificate no longer chains to it.
    let again = Target {
        overwrite: true,
        ..t.clone()
    };
    create_ca(&again).unwrap();
    let e = check(&TlsMaterial::node(dir).unwrap(), "node")
        .unwrap_err()
        .to_string();
    assert!(e.contains("was not signed by"), "{e}");

    // Hosts with ports, bad user names.
    assert!(create_node(&again, &["n1:8080".into()]).is_err());
    assert!(create_node(&again, &[]).is_err());
    assert!(check_user_name("node").is_err());
    assert!(check_user_name("a b").is_err());
    assert!(check_user_name("").is_err());
    assert!(check_user_name("app-1.prod").is_ok());
}

#[test]
fn an_expired_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_ca(&target(dir)).unwrap();
    // Sign a node certificate that ended yesterday, as a CA would have.
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["n1".to_string()]).unwrap();
    params.distinguished_name = org(NODE_COMMON_NAME);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(30);
    params.not_after = now - Duration::days(1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("node.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
    let e = check(&TlsMaterial::node(dir).unwrap(), "node")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not valid now"), "{e}");
}
