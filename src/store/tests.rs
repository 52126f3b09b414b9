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
        key_generation: 0,
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

fn meta_row(key: &'static str) -> impl FnOnce(&Connection) -> rusqlite::Result<()> + Send {
    move |c| {
        c.execute("INSERT INTO meta(key, value) VALUES (?1, 'x')", [key])
            .map(drop)
    }
}

#[test]
fn a_failing_or_panicking_write_is_rolled_back_alone_and_the_writer_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("t.db")).unwrap();
    // Concurrent writers, so that jobs share group commits: every third one fails after
    // writing, one panics after writing.
    std::thread::scope(|scope| {
        for n in 0..30 {
            let store = &store;
            scope.spawn(move || {
                let key = format!("k{n}");
                let result = store.writer.write(Durability::Committed, move |c| {
                    c.execute("INSERT INTO meta(key, value) VALUES (?1, 'x')", [&key])
                        .map_err(|source| StoreError::Sqlite {
                            path: PathBuf::new(),
                            source,
                        })?;
                    if n == 7 {
                        panic!("a job that panics");
                    }
                    if n % 3 == 0 {
                        return Err(StoreError::Corrupt(PathBuf::new(), "refused".into()));
                    }
                    Ok(())
                });
                assert_eq!(result.is_ok(), n % 3 != 0 && n != 7, "job {n}: {result:?}");
            });
        }
    });
    for n in 0..30 {
        let kept = store.meta(&format!("k{n}")).unwrap().is_some();
        assert_eq!(kept, n % 3 != 0 && n != 7, "k{n}");
    }
    store.write(Durability::Synced, meta_row("after")).unwrap();
    assert!(store.meta("after").unwrap().is_some());
}

#[test]
fn committed_writes_reach_the_disk_within_the_flush_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("t.db")).unwrap();
    store.write(Durability::Synced, meta_row("synced")).unwrap();
    // A synced commit leaves nothing to flush.
    std::thread::sleep(FLUSH_INTERVAL * 3);
    assert_eq!(store.meta("flushed_at").unwrap(), None);
    store
        .write(Durability::Committed, meta_row("committed"))
        .unwrap();
    // Readable at once by another connection (a reader, or another process).
    assert!(store.meta("committed").unwrap().is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.meta("flushed_at").unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "a committed write was never flushed"
        );
        std::thread::sleep(FLUSH_INTERVAL / 4);
    }
}

#[test]
fn every_write_policy_leaves_nothing_to_flush() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("t.db")).unwrap();
    store.set_sync_policy(SyncPolicy::EveryWrite);
    store.write(Durability::Committed, meta_row("a")).unwrap();
    std::thread::sleep(FLUSH_INTERVAL * 3);
    assert_eq!(store.meta("flushed_at").unwrap(), None);
    store.set_sync_policy(SyncPolicy::AsRequested);
    store.write(Durability::Committed, meta_row("b")).unwrap();
    // Closing flushes at once rather than at the interval.
    store.close();
    let reopened = Store::open(&tmp.path().join("t.db")).unwrap();
    assert!(reopened.meta("flushed_at").unwrap().is_some());
}

#[test]
fn a_closed_store_refuses_writes_and_still_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("t.db")).unwrap();
    store.set_meta(&[("k", "v")]).unwrap();
    store.close();
    assert!(matches!(
        store.set_meta(&[("k", "w")]),
        Err(StoreError::WriterStopped(_))
    ));
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));
}

#[test]
fn reads_do_not_wait_behind_a_write_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("t.db")).unwrap();
    store.set_meta(&[("k", "v")]).unwrap();
    let (started, wait) = std::sync::mpsc::channel();
    let (release, hold) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let store = &store;
        scope.spawn(move || {
            store
                .write(Durability::Synced, move |c| {
                    c.execute("UPDATE meta SET value = 'w' WHERE key = 'k'", [])?;
                    started.send(()).unwrap();
                    hold.recv().unwrap();
                    Ok(())
                })
                .unwrap();
        });
        wait.recv().unwrap();
        // The writer holds its transaction open; a read answers from the last commit.
        assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));
        release.send(()).unwrap();
    });
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("w"));
}
