use super::*;

fn entry(id: &str, revoked_at: i64) -> RevocationEntry {
    RevocationEntry {
        id: id.into(),
        revoked_at,
        reason: "r".into(),
    }
}

#[test]
fn revocation_lists_drop_entries_that_can_no_longer_match() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("t.db")).unwrap();
    let agent = AgentRecord {
        agent_id: "agent://a".into(),
        algorithms: vec!["ed25519".into()],
        meta: Default::default(),
        created_at: 0,
        current_serial: None,
    };
    let cert = |serial: &str, expires_at| CertificateRecord {
        serial: serial.into(),
        agent_id: "agent://a".into(),
        issued_at: 0,
        expires_at,
        encoded: String::new(),
    };
    store.insert_agent(&agent, &cert("old", 1_000)).unwrap();
    store.add_certificate(&cert("live", 10_000)).unwrap();
    store
        .revoke(
            RevokedKind::Certificate,
            &[entry("old", 500), entry("live", 600)],
        )
        .unwrap();
    store
        .revoke(
            RevokedKind::Token,
            &[entry("stale", 100), entry("recent", 4_900)],
        )
        .unwrap();
    let (first, certs, tokens) = store.crl_snapshot(5_000, 1_000).unwrap();
    let ids = |v: &[RevocationEntry]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&certs), ["live"]);
    assert_eq!(ids(&tokens), ["recent"]);
    let (second, _, _) = store.crl_snapshot(5_000, 1_000).unwrap();
    assert_eq!((first, second), (1, 2));
    // The database keeps every revocation; only the published list is pruned.
    assert!(
        store
            .revocation(RevokedKind::Token, "stale")
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_corrupt_list_counter_is_an_error_not_a_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("t.db")).unwrap();
    store.set_meta(&[("crl_number", "banana")]).unwrap();
    assert!(matches!(
        store.crl_snapshot(0, 0),
        Err(StoreError::Corrupt(..))
    ));
}
