use super::*;

fn meta_row(key: &'static str) -> impl FnOnce(&Connection) -> rusqlite::Result<()> + Send {
    move |c| {
        c.execute("INSERT INTO meta(key, value) VALUES (?1, 'x')", [key])
            .map(drop)
    }
}

#[test]
fn a_failing_or_panicking_write_is_rolled_back_alone_and_the_writer_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&tmp.path().join("t.db")).unwrap();
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
                            path: String::new(),
                            source,
                        })?;
                    if n == 7 {
                        panic!("a job that panics");
                    }
                    if n % 3 == 0 {
                        return Err(StoreError::Corrupt(String::new(), "refused".into()));
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
    let store = SqliteStore::open(&tmp.path().join("t.db")).unwrap();
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
    let store = SqliteStore::open(&tmp.path().join("t.db")).unwrap();
    store.set_sync_policy(SyncPolicy::EveryWrite);
    store.write(Durability::Committed, meta_row("a")).unwrap();
    std::thread::sleep(FLUSH_INTERVAL * 3);
    assert_eq!(store.meta("flushed_at").unwrap(), None);
    store.set_sync_policy(SyncPolicy::AsRequested);
    store.write(Durability::Committed, meta_row("b")).unwrap();
    // Closing flushes at once rather than at the interval.
    store.close();
    let reopened = SqliteStore::open(&tmp.path().join("t.db")).unwrap();
    assert!(reopened.meta("flushed_at").unwrap().is_some());
}

#[test]
fn reads_do_not_wait_behind_a_write_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&tmp.path().join("t.db")).unwrap();
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
