//! The storage interface's shared suite: every test runs against SQLite (a file in a temporary
//! directory) and against PostgreSQL (a database of its own in the throwaway cluster of
//! `common::postgres`). Where processes share a database, the test opens two stores on it.
//!
//! Engine-specific behaviour is tested beside its engine: SQLite's group commit in
//! `src/store/sqlite/tests.rs`; PostgreSQL's shared challenges and rate windows, restarts and
//! several hubs in `tests/it/replicas.rs`.

use std::collections::BTreeSet;

use agentseal::audit::SealedRecord;
use agentseal::signals::{Claim, OutboxCounts};
use agentseal::store::{
    AgentRecord, CertificateRecord, GrantRecord, Location, Store, StoreError, StoredCheckpoint,
};
use agentseal::token::trust::{RevocationEntry, RevokedKind};

use crate::common::postgres;

/// Opens a second store on the same database, as another process would.
type Reopen = Box<dyn Fn() -> Result<Store, StoreError>>;

fn sqlite() -> (Store, Reopen, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentseal.db");
    let reopen: Reopen = Box::new(move || Store::open(&path));
    (reopen().unwrap(), reopen, dir)
}

fn pg() -> (Store, Reopen, ()) {
    let url = postgres::database();
    let reopen: Reopen = Box::new(move || Store::connect(&Location::parse(&url).unwrap()));
    (reopen().unwrap(), reopen, ())
}

/// One test, run once per engine: `mod name { fn sqlite(); fn postgres(); }`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let (store, reopen, _dir) = super::sqlite();
                super::$name(&store, &reopen);
            }
            #[test]
            fn postgres() {
                let (store, reopen, _db) = super::pg();
                super::$name(&store, &reopen);
            }
        }
    )*};
}

on_both_engines!(
    metadata_is_set_replaced_and_removed,
    agents_and_certificates_are_recorded_once_and_renewals_compare_and_set,
    a_rotation_revokes_every_earlier_certificate_and_loses_to_a_concurrent_change,
    revocations_keep_the_earliest_time_and_the_state_moves_when_one_is_brought_forward,
    revocation_lists_are_numbered_in_turn_and_drop_entries_that_can_no_longer_match,
    a_corrupt_list_counter_is_an_error_not_a_reset,
    a_token_is_consumed_once_across_processes,
    rejections_count_each_subject_once_and_trip_exactly_once_across_processes,
    audit_appends_from_two_processes_make_one_chain,
    checkpoints_are_kept_one_per_size,
    grants_are_found_by_delegate_and_principal_until_they_expire,
    a_challenge_is_accepted_once_and_only_if_issued_to_its_verifier_and_fresh,
    rate_limits_slide,
    a_database_of_a_newer_schema_is_refused,
    a_closed_store_refuses_writes_and_still_reads,
    outbox_entries_given_up_are_counted_requeued_on_demand_and_pruned_late,
    an_outbox_entry_is_claimed_by_one_dispatcher_at_a_time_until_its_lease_ends,
);

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        algorithms: vec!["ed25519".into()],
        meta: [("team".to_owned(), "ops".to_owned())].into(),
        created_at: 10,
        current_serial: None,
        key_generation: 0,
    }
}

fn cert(agent: &str, serial: &str, issued_at: i64, expires_at: i64) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        agent_id: agent.into(),
        issued_at,
        expires_at,
        encoded: format!("encoded-{serial}"),
    }
}

fn entry(id: &str, revoked_at: i64) -> RevocationEntry {
    RevocationEntry {
        id: id.into(),
        revoked_at,
        reason: format!("r{revoked_at}"),
    }
}

fn metadata_is_set_replaced_and_removed(store: &Store, reopen: &Reopen) {
    assert_eq!(store.meta("k").unwrap(), None);
    store.set_meta(&[("k", "v"), ("l", "w")]).unwrap();
    store.set_meta(&[("k", "v2")]).unwrap();
    let other = reopen().unwrap();
    assert_eq!(other.meta("k").unwrap().as_deref(), Some("v2"));
    assert_eq!(other.meta("l").unwrap().as_deref(), Some("w"));
    store.remove_meta(&["k", "l", "absent"]).unwrap();
    assert_eq!(other.meta("k").unwrap(), None);
    // By prefix, in key order; `_` and `%` are literal (no LIKE pattern).
    store
        .set_meta(&[
            ("rule.b", "2"),
            ("rule.a", "1"),
            ("rulex", "no"),
            ("rule_%", "no"),
        ])
        .unwrap();
    assert_eq!(
        other.meta_prefixed("rule.").unwrap(),
        vec![("rule.a".into(), "1".into()), ("rule.b".into(), "2".into())]
    );
    assert_eq!(other.meta_prefixed("rule_%").unwrap().len(), 1);
    assert!(other.meta_prefixed("none.").unwrap().is_empty());
}

fn agents_and_certificates_are_recorded_once_and_renewals_compare_and_set(
    store: &Store,
    _: &Reopen,
) {
    assert!(
        store
            .insert_agent(&agent("agent://b"), &cert("agent://b", "b1", 1, 100))
            .unwrap()
    );
    assert!(
        store
            .insert_agent(&agent("agent://a"), &cert("agent://a", "a1", 1, 100))
            .unwrap()
    );
    // A second creation of the same agent changes nothing.
    assert!(
        !store
            .insert_agent(&agent("agent://a"), &cert("agent://a", "a-other", 2, 100))
            .unwrap()
    );
    assert_eq!(store.certificate("a-other").unwrap(), None);
    let a = store.agent("agent://a").unwrap().unwrap();
    assert_eq!(a.current_serial.as_deref(), Some("a1"));
    assert_eq!(a.meta["team"], "ops");
    assert_eq!(a.algorithms, ["ed25519"]);
    let ids: Vec<_> = store
        .agents()
        .unwrap()
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    assert_eq!(ids, ["agent://a", "agent://b"]);
    assert_eq!(store.agent("agent://nobody").unwrap(), None);

    // Renewal: only against the current certificate.
    assert!(
        !store
            .add_certificate_if_current(&cert("agent://a", "a2", 2, 200), "not-current")
            .unwrap()
    );
    assert!(
        store
            .add_certificate_if_current(&cert("agent://a", "a2", 2, 200), "a1")
            .unwrap()
    );
    store
        .add_certificate(&cert("agent://a", "a3", 3, 300))
        .unwrap();
    assert_eq!(
        store.agent("agent://a").unwrap().unwrap().current_serial,
        Some("a3".into())
    );
    assert_eq!(store.serials_of("agent://a").unwrap(), ["a1", "a2", "a3"]);
    assert_eq!(
        store.certificate("a2").unwrap(),
        Some(cert("agent://a", "a2", 2, 200))
    );
}

fn a_rotation_revokes_every_earlier_certificate_and_loses_to_a_concurrent_change(
    store: &Store,
    reopen: &Reopen,
) {
    store
        .insert_agent(&agent("agent://a"), &cert("agent://a", "a1", 1, 100))
        .unwrap();
    store
        .add_certificate(&cert("agent://a", "a2", 2, 100))
        .unwrap();
    let algorithms = vec!["ed25519".to_owned(), "ml-dsa-65".to_owned()];
    let other = reopen().unwrap();
    let revoked = other
        .rotate_agent(
            &cert("agent://a", "k1", 3, 100),
            &algorithms,
            1,
            "a2",
            50,
            "rotated",
        )
        .unwrap()
        .unwrap();
    let revoked: BTreeSet<String> = revoked.into_iter().collect();
    assert_eq!(revoked, ["a1".to_owned(), "a2".to_owned()].into());
    let a = store.agent("agent://a").unwrap().unwrap();
    assert_eq!((a.key_generation, a.algorithms), (1, algorithms.clone()));
    assert_eq!(a.current_serial.as_deref(), Some("k1"));
    for serial in ["a1", "a2"] {
        let r = store
            .revocation(RevokedKind::Certificate, serial)
            .unwrap()
            .unwrap();
        assert_eq!((r.revoked_at, r.reason.as_str()), (50, "rotated"));
    }
    // A rotation based on what was current before loses: nothing changes.
    assert_eq!(
        store
            .rotate_agent(
                &cert("agent://a", "k1b", 4, 100),
                &algorithms,
                1,
                "a2",
                60,
                "rotated"
            )
            .unwrap(),
        None
    );
    assert_eq!(store.certificate("k1b").unwrap(), None);
    assert_eq!(
        store.revocation(RevokedKind::Certificate, "k1").unwrap(),
        None
    );
}

fn revocations_keep_the_earliest_time_and_the_state_moves_when_one_is_brought_forward(
    store: &Store,
    reopen: &Reopen,
) {
    let before = store.revocation_state().unwrap();
    assert_eq!(before, (0, 0, 0));
    let added = store
        .revoke(RevokedKind::Token, &[entry("t1", 500), entry("t2", 600)])
        .unwrap();
    assert_eq!(added, ["t1", "t2"]);
    let other = reopen().unwrap();
    let state = other.revocation_state().unwrap();
    assert_eq!(state, (2, 600, 1100));
    // Later or equal: kept as it was. Earlier: brought forward, with its reason.
    let added = other
        .revoke(RevokedKind::Token, &[entry("t1", 700), entry("t2", 550)])
        .unwrap();
    assert_eq!(added, ["t2"]);
    let t2 = store.revocation(RevokedKind::Token, "t2").unwrap().unwrap();
    assert_eq!((t2.revoked_at, t2.reason.as_str()), (550, "r550"));
    assert_eq!(
        store
            .revocation(RevokedKind::Token, "t1")
            .unwrap()
            .unwrap()
            .revoked_at,
        500
    );
    assert_ne!(store.revocation_state().unwrap(), state);
    // Kinds are separate name spaces.
    assert_eq!(
        store.revocation(RevokedKind::Certificate, "t1").unwrap(),
        None
    );
    let ids: Vec<_> = store
        .revocations(RevokedKind::Token)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["t1", "t2"]);
}

fn revocation_lists_are_numbered_in_turn_and_drop_entries_that_can_no_longer_match(
    store: &Store,
    reopen: &Reopen,
) {
    store
        .insert_agent(&agent("agent://a"), &cert("agent://a", "old", 0, 1_000))
        .unwrap();
    store
        .add_certificate(&cert("agent://a", "live", 0, 10_000))
        .unwrap();
    store
        .revoke(
            RevokedKind::Certificate,
            &[entry("old", 500), entry("live", 600), entry("unknown", 650)],
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
    // A serial this database never issued stays listed: nothing says when it expires.
    assert_eq!(ids(&certs), ["live", "unknown"]);
    assert_eq!(ids(&tokens), ["recent"]);
    // Numbers are taken in turn by every process: none is handed out twice.
    let other = reopen().unwrap();
    let numbers: BTreeSet<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let store = if n % 2 == 0 { store } else { &other };
                scope.spawn(move || store.crl_snapshot(5_000, 1_000).unwrap().0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(first, 1);
    assert_eq!(numbers, (2..=9).collect());
    // The database keeps every revocation; only the published list is pruned.
    assert!(
        store
            .revocation(RevokedKind::Token, "stale")
            .unwrap()
            .is_some()
    );
}

fn a_corrupt_list_counter_is_an_error_not_a_reset(store: &Store, _: &Reopen) {
    store.set_meta(&[("crl_number", "banana")]).unwrap();
    assert!(matches!(
        store.crl_snapshot(0, 0),
        Err(StoreError::Corrupt(..))
    ));
    assert_eq!(store.meta("crl_number").unwrap().as_deref(), Some("banana"));
}

fn a_token_is_consumed_once_across_processes(store: &Store, reopen: &Reopen) {
    let other = reopen().unwrap();
    let now = agentseal::clock::now();
    let wins: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|n| {
                let store = if n % 2 == 0 { store } else { &other };
                scope.spawn(move || {
                    store.consume("iss", "jti-1", now + 1_000, now).unwrap() as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 1);
    assert!(store.consumed("iss", "jti-1").unwrap());
    assert!(!store.consumed("other-issuer", "jti-1").unwrap());
    // Records of tokens long expired are dropped on the way (the token itself is refused as
    // expired); live ones stay.
    assert!(store.consume("iss", "old", 1_000, now).unwrap());
    assert!(store.consume("iss", "jti-2", now + 2_000, now).unwrap());
    assert!(!other.consumed("iss", "old").unwrap());
    assert!(other.consumed("iss", "jti-1").unwrap());
}

fn rejections_count_each_subject_once_and_trip_exactly_once_across_processes(
    store: &Store,
    reopen: &Reopen,
) {
    // The same token presented again does not count twice.
    for _ in 0..3 {
        assert_eq!(
            store
                .trip_on_rejection("agent://a", "tok-1", 100, 0, 3)
                .unwrap(),
            None
        );
    }
    // Old rejections fall out of the window.
    assert_eq!(
        store
            .trip_on_rejection("agent://a", "tok-2", 200, 150, 2)
            .unwrap(),
        None
    );
    let other = reopen().unwrap();
    let trips: Vec<i64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|n| {
                let store = if n % 2 == 0 { store } else { &other };
                scope.spawn(move || {
                    store
                        .trip_on_rejection("agent://b", &format!("tok-{n}"), 300, 0, 3)
                        .unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    // Six rejections, threshold three: two trips, each at exactly three (the count restarts).
    assert_eq!(trips, [3, 3]);
}

fn seal_next(previous: Option<&SealedRecord>, actor: &str) -> SealedRecord {
    let seq = previous.map_or(1, |p| p.seq + 1);
    let prev = previous.map_or("genesis".to_owned(), |p| p.hash.clone());
    SealedRecord {
        seq,
        actor: actor.into(),
        body: format!("{{\"seq\":{seq},\"prev\":\"{prev}\"}}"),
        hash: format!("h{seq}-{prev}"),
        kid: "kid".into(),
        sig: "sig".into(),
    }
}

fn audit_appends_from_two_processes_make_one_chain(store: &Store, reopen: &Reopen) {
    assert_eq!(store.audit_head().unwrap(), None);
    let other = reopen().unwrap();
    std::thread::scope(|scope| {
        for n in 0..6 {
            let store = if n % 2 == 0 { store } else { &other };
            scope.spawn(move || {
                for _ in 0..20 {
                    let actor = format!("agent://{n}");
                    store
                        .append_audit(move |previous| {
                            Ok::<_, StoreError>(seal_next(previous, &actor))
                        })
                        .unwrap();
                }
            });
        }
    });
    // A sealing refusal appends nothing and reaches the caller as its own error.
    let refused =
        store.append_audit(|_| Err::<SealedRecord, _>(StoreError::InvalidUrl("no".into())));
    assert!(
        matches!(refused, Err(StoreError::InvalidUrl(_))),
        "{refused:?}"
    );
    let mut records = Vec::new();
    store
        .audit_records(1, &mut |record| {
            records.push(record);
            true
        })
        .unwrap();
    assert_eq!(records.len(), 120);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.seq, i as i64 + 1);
        if i > 0 {
            assert!(
                record.body.contains(&records[i - 1].hash),
                "chain broken at {}",
                i + 1
            );
        }
    }
    let head = other.audit_head().unwrap().unwrap();
    assert_eq!(
        (head.seq, head.hash.as_str()),
        (120, records[119].hash.as_str())
    );
    assert_eq!(store.audit_record(7).unwrap().as_ref(), Some(&records[6]));
    assert_eq!(store.audit_record(121).unwrap(), None);
    let recent = store.audit_recent("agent://3", 5).unwrap();
    assert_eq!(recent.len(), 5);
    assert!(recent.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(recent.iter().all(|r| r.actor == "agent://3"));
    // A walk stops when asked, and starts where asked.
    let mut seen = Vec::new();
    store
        .audit_records(100, &mut |record| {
            seen.push(record.seq);
            seen.len() < 3
        })
        .unwrap();
    assert_eq!(seen, [100, 101, 102]);
}

fn checkpoints_are_kept_one_per_size(store: &Store, _: &Reopen) {
    assert_eq!(store.latest_checkpoint().unwrap(), None);
    let checkpoint = |size, note: &str| StoredCheckpoint {
        size,
        note: note.into(),
        tree: "[]".into(),
        signed_at: size * 10,
    };
    store.save_checkpoint(checkpoint(5, "five")).unwrap();
    store.save_checkpoint(checkpoint(9, "nine")).unwrap();
    store.save_checkpoint(checkpoint(7, "seven")).unwrap();
    store.save_checkpoint(checkpoint(9, "nine again")).unwrap();
    assert_eq!(
        store.latest_checkpoint().unwrap(),
        Some(checkpoint(9, "nine again"))
    );
}

fn grants_are_found_by_delegate_and_principal_until_they_expire(store: &Store, _: &Reopen) {
    let grant = |jti: &str, delegate: &str, expires_at| GrantRecord {
        jti: jti.into(),
        delegator: "agent://boss".into(),
        delegate: delegate.into(),
        principal: "user:alice".into(),
        expires_at,
        encoded: format!("grant-{jti}"),
    };
    store.insert_grant(&grant("g1", "agent://a", 100)).unwrap();
    store.insert_grant(&grant("g2", "agent://a", 300)).unwrap();
    store.insert_grant(&grant("g3", "agent://b", 300)).unwrap();
    assert!(
        store.insert_grant(&grant("g1", "agent://a", 100)).is_err(),
        "ids are unique"
    );
    let found: Vec<_> = store
        .grants_for("agent://a", "user:alice", 200)
        .unwrap()
        .into_iter()
        .map(|g| g.jti)
        .collect();
    assert_eq!(found, ["g2"]);
    assert_eq!(store.grants_for("agent://a", "user:bob", 0).unwrap(), []);
    assert_eq!(
        store.grant("g3").unwrap(),
        Some(grant("g3", "agent://b", 300))
    );
    assert_eq!(store.grant("g4").unwrap(), None);
}

fn a_challenge_is_accepted_once_and_only_if_issued_to_its_verifier_and_fresh(
    store: &Store,
    _: &Reopen,
) {
    store.issue_challenge("ch-1", "bob", 1_300, 1_000).unwrap();
    assert!(
        !store
            .take_challenge("made-up-by-someone", "bob", 1_000)
            .unwrap()
    );
    // Another verifier can neither use nor burn Bob's challenge.
    assert!(!store.take_challenge("ch-1", "carol", 1_001).unwrap());
    assert!(store.take_challenge("ch-1", "bob", 1_001).unwrap());
    assert!(
        !store.take_challenge("ch-1", "bob", 1_002).unwrap(),
        "second use"
    );
    store.issue_challenge("ch-2", "bob", 1_300, 1_000).unwrap();
    assert!(
        !store.take_challenge("ch-2", "bob", 1_301).unwrap(),
        "expired"
    );
    assert!(
        !store.take_challenge("ch-2", "bob", 1_000).unwrap(),
        "an expired try burns it"
    );
}

fn rate_limits_slide(store: &Store, _: &Reopen) {
    assert_eq!(store.admit_rate("a", 2, 10, 100).unwrap(), Ok(()));
    assert_eq!(store.admit_rate("a", 2, 10, 101).unwrap(), Ok(()));
    assert_eq!(store.admit_rate("a", 2, 10, 102).unwrap(), Err(8));
    assert_eq!(store.admit_rate("b", 2, 10, 102).unwrap(), Ok(()));
    assert_eq!(store.admit_rate("a", 2, 10, 110).unwrap(), Ok(()));
    assert_eq!(store.admit_rate("a", 2, 10, 110).unwrap(), Err(1));
}

fn a_database_of_a_newer_schema_is_refused(store: &Store, reopen: &Reopen) {
    assert_eq!(
        store.meta("schema_version").unwrap().as_deref(),
        Some(agentseal::store::SCHEMA_VERSION.to_string().as_str())
    );
    store.set_meta(&[("schema_version", "999")]).unwrap();
    store.close();
    let refused = reopen().err().expect("a newer schema opened");
    assert!(
        matches!(refused, StoreError::TooNew { found: 999, .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("upgrade agentseal"),
        "{refused}"
    );
}

fn a_closed_store_refuses_writes_and_still_reads(store: &Store, _: &Reopen) {
    store.set_meta(&[("k", "v")]).unwrap();
    store.close();
    assert!(matches!(
        store.set_meta(&[("k", "w")]),
        Err(StoreError::WriterStopped(_))
    ));
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));
}

fn outbox_entries_given_up_are_counted_requeued_on_demand_and_pruned_late(
    store: &Store,
    _: &Reopen,
) {
    let outbox = store.outbox_queue().unwrap();
    let now = 1_000_000;
    for id in ["gone", "kept", "delivered"] {
        outbox.insert(id, "{}", now).unwrap();
    }
    outbox.mark_failed("gone", "HTTP 500", None).unwrap();
    outbox.mark_delivered("delivered", now).unwrap();
    assert_eq!(
        outbox.counts().unwrap(),
        OutboxCounts {
            pending: 1,
            given_up: 1
        }
    );
    assert_eq!(
        outbox
            .undelivered(10)
            .unwrap()
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["gone", "kept"]
    );
    // Requeued: due at once, attempts reset, same id.
    assert_eq!(outbox.requeue_given_up(now + 5).unwrap(), 1);
    let entry = outbox.entry("gone").unwrap().unwrap();
    assert_eq!((entry.attempts, entry.next_attempt_at), (0, Some(now + 5)));
    assert_eq!(entry.last_error.as_deref(), Some("HTTP 500"));
    // Pruning takes delivered entries older than its first limit and given-up ones older than
    // its second; pending ones never.
    outbox.mark_failed("gone", "HTTP 500", None).unwrap();
    assert_eq!(outbox.prune(now, 0).unwrap(), 0);
    assert_eq!(outbox.prune(now + 1, i64::MAX).unwrap(), 2);
    assert!(outbox.entry("delivered").unwrap().is_none());
    assert!(outbox.entry("gone").unwrap().is_none());
    assert!(outbox.entry("kept").unwrap().is_some());
}

fn an_outbox_entry_is_claimed_by_one_dispatcher_at_a_time_until_its_lease_ends(
    store: &Store,
    reopen: &Reopen,
) {
    let outbox = store.outbox_queue().unwrap();
    let now = 2_000_000;
    for n in 0..20 {
        outbox.insert(&format!("e{n:02}"), "{}", now + n).unwrap();
    }
    // Dispatchers of two processes claim at once: each entry goes to exactly one of them,
    // oldest first.
    let other = reopen().unwrap();
    let other_outbox = other.outbox_queue().unwrap();
    let claimed: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let outbox = if n % 2 == 0 { &outbox } else { &other_outbox };
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    while let Claim::Due(entry) = outbox.claim(now + 100, now + 10_000).unwrap() {
                        assert_eq!(entry.attempts, 1);
                        mine.push(entry.id);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique: BTreeSet<_> = claimed.iter().cloned().collect();
    assert_eq!((claimed.len(), unique.len()), (20, 20), "{claimed:?}");
    // Nothing due now, only the leases' end.
    assert!(matches!(
        outbox.claim(now + 100, now + 10_000).unwrap(),
        Claim::Idle { next_at: Some(at) } if at == now + 10_000
    ));
    // A released entry is due at once; once a lease has passed (its holder died), so is
    // every other.
    outbox.release("e07", now + 200).unwrap();
    let Claim::Due(again) = outbox.claim(now + 200, now + 20_000).unwrap() else {
        panic!("the released entry is due");
    };
    assert_eq!((again.id.as_str(), again.attempts), ("e07", 2));
    let Claim::Due(late) = outbox.claim(now + 10_000, now + 20_000).unwrap() else {
        panic!("the lease has ended");
    };
    assert_eq!((late.id.as_str(), late.attempts), ("e00", 2));
    outbox.mark_delivered("e00", now).unwrap();
    // A late failure report from the first holder does not resurrect it.
    outbox.mark_failed("e00", "late", Some(now)).unwrap();
    let entry = outbox.entry("e00").unwrap().unwrap();
    assert_eq!(
        (entry.delivered_at, entry.next_attempt_at),
        (Some(now), None)
    );
}
