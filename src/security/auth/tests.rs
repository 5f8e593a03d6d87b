use super::*;
use tonic::metadata::MetadataValue;

fn state(enabled: bool) -> AuthState {
    let mut s = AuthState {
        enabled,
        token_key: b"0123456789abcdef0123456789abcdef".to_vec(),
        ..Default::default()
    };
    for (name, roles) in [("root", vec![]), ("alice", vec!["app".to_string()])] {
        s.users.insert(
            name.into(),
            UserRecord {
                hash: "x".into(),
                roles,
                generation: 7,
            },
        );
    }
    s.roles.insert(
        "app".into(),
        RoleRecord {
            grants: vec![Grant {
                prefix: b"app/".to_vec(),
                write: true,
            }],
        },
    );
    s
}

fn with_token(t: &str) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert(
        AUTHORIZATION,
        MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
    );
    m
}

fn err(r: Result<Principal>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn before_the_first_load_tls_nodes_refuse_users() {
    let none = MetadataMap::new();
    let plain = AuthGate::new(false, NodeClock::default());
    assert_eq!(
        plain.authenticate(&none, None).unwrap(),
        Principal::Unrestricted
    );
    let tls = AuthGate::new(true, NodeClock::default());
    assert!(err(tls.authenticate(&none, None)).contains("still loading"));
    let node = PeerIdentity::Node { hosts: vec![] };
    assert_eq!(
        tls.authenticate(&none, Some(&node)).unwrap(),
        Principal::Node
    );
}

#[test]
fn while_off_a_certificate_is_the_credential() {
    let none = MetadataMap::new();
    let g = AuthGate::new(true, NodeClock::default());
    g.set(state(false));
    assert!(err(g.authenticate(&none, None)).contains("no client certificate"));
    let cert = PeerIdentity::User("anyone".into());
    assert_eq!(
        g.authenticate(&none, Some(&cert)).unwrap(),
        Principal::Unrestricted
    );
    // Enabled data on a node without TLS: every client refused.
    let plain = AuthGate::new(false, NodeClock::default());
    plain.set(state(true));
    assert!(err(plain.authenticate(&none, None)).contains("without TLS"));
}

#[test]
fn tokens_and_certificates_name_users_once_on() {
    let g = AuthGate::new(true, NodeClock::default());
    let s = state(true);
    g.set(s.clone());
    let none = MetadataMap::new();
    assert!(err(g.authenticate(&none, None)).contains("authentication is required"));
    let later = g.now_ms() + 60_000;
    let t = token::issue(&s.token_key, "alice", 7, later);
    match g.authenticate(&with_token(&t), None).unwrap() {
        Principal::User { name, root, grants } => {
            assert_eq!((name.as_str(), root), ("alice", false));
            assert_eq!(grants.len(), 1);
        }
        p => panic!("{p:?}"),
    }
    let root = token::issue(&s.token_key, "root", 7, later);
    assert!(matches!(
        g.authenticate(&with_token(&root), None).unwrap(),
        Principal::User { root: true, .. }
    ));
    // Expired, another generation (new password), removed user, bad header.
    let old = token::issue(&s.token_key, "alice", 7, g.now_ms() - 1);
    assert!(err(g.authenticate(&with_token(&old), None)).contains("expired"));
    let gen = token::issue(&s.token_key, "alice", 8, later);
    assert!(err(g.authenticate(&with_token(&gen), None)).contains("no longer valid"));
    let mut removed = s.clone();
    removed.users.remove("alice");
    g.set(removed);
    assert!(err(g.authenticate(&with_token(&t), None)).contains("no longer valid"));
    let mut m = MetadataMap::new();
    m.insert(AUTHORIZATION, MetadataValue::from_static("Basic abc"));
    assert!(err(g.authenticate(&m, None)).contains("Bearer"));
    // A certificate names a user, who must exist.
    g.set(s);
    let cert = PeerIdentity::User("alice".into());
    assert!(matches!(
        g.authenticate(&none, Some(&cert)).unwrap(),
        Principal::User { .. }
    ));
    let ghost = PeerIdentity::User("ghost".into());
    assert!(err(g.authenticate(&none, Some(&ghost))).contains("does not exist"));
}

#[test]
fn records_round_trip_and_corruption_fails_the_load() {
    let rec = serde_json::to_vec(&state(true).users["alice"]).unwrap();
    let pairs: Vec<(&[u8], &[u8])> = vec![
        (b"_/auth/enabled", b"true"),
        (b"_/auth/token-key", b"00ff"),
        (b"_/auth/users/alice", &rec),
    ];
    let s = AuthState::from_pairs(pairs).unwrap();
    assert!(s.enabled);
    assert_eq!(s.token_key, vec![0, 255]);
    assert_eq!(s.users["alice"].generation, 7);
    let bad: Vec<(&[u8], &[u8])> = vec![(b"_/auth/users/bob", b"{not json")];
    assert!(AuthState::from_pairs(bad).is_err());
}

#[test]
fn names_are_checked() {
    assert!(check_name("alice_1.b-c", "user").is_ok());
    for bad in ["", "a b", "a/b", &"x".repeat(65)] {
        assert!(check_name(bad, "user").is_err(), "{bad}");
    }
}
