//! Watch replays committed history exactly, continues live across a leader change, and fails
//! with a distinct error from a compacted revision; a slow watcher is cut off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{init_tracing, TestCluster};
use keelson_raft::{
    EventKind, KeyRange, Op, RangeRequest, StoreError, Txn, WatchError, WatchRequest,
};

const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_from_an_old_revision_replays_the_committed_history() {
    init_tracing();
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.leader(LEADER_TIMEOUT).await;
    let client = cluster.client();

    // Phase 1: a known history, with a multi-op transaction and a key outside the range.
    let r1 = client.txn(Txn::put("/x/a", "1")).await.unwrap().revision;
    let r2 = client.txn(Txn::put("/x/b", "1")).await.unwrap().revision;
    client.txn(Txn::put("/y/other", "1")).await.unwrap();
    let r3 = client
        .txn(Txn {
            success: vec![
                Op::put("/x/a", "2"),
                Op::delete("/x/b"),
                Op::put("/x/c", "1"),
            ],
            ..Txn::default()
        })
        .await
        .unwrap()
        .revision;
    let r4 = client
        .txn(Txn {
            success: vec![Op::delete("/x/a")],
            ..Txn::default()
        })
        .await
        .unwrap()
        .revision;
    let expected = vec![
        (r1, "/x/a", EventKind::Put, "1"),
        (r2, "/x/b", EventKind::Put, "1"),
        (r3, "/x/a", EventKind::Put, "2"),
        (r3, "/x/b", EventKind::Delete, ""),
        (r3, "/x/c", EventKind::Put, "1"),
        (r4, "/x/a", EventKind::Delete, ""),
    ];

    // Phase 2: every member replays exactly that, deletes carrying the previous value.
    cluster.wait_revision(r4, Duration::from_secs(20)).await;
    for i in 0..3 {
        let mut watch = cluster
            .store(i)
            .watch(WatchRequest {
                range: KeyRange::prefix("/x/"),
                start_revision: r1,
            })
            .unwrap();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.extend(watch.next().await.unwrap().unwrap());
        }
        let got_view: Vec<(u64, &str, EventKind, &str)> = got
            .iter()
            .map(|e| {
                (
                    e.kv.mod_revision,
                    std::str::from_utf8(&e.kv.key).unwrap(),
                    e.kind,
                    std::str::from_utf8(&e.kv.value).unwrap(),
                )
            })
            .collect();
        assert_eq!(got_view, expected, "m{i}");
        assert_eq!(
            got[3].prev.as_ref().map(|p| p.value.as_slice()),
            Some(b"1".as_slice())
        );
    }

    // Phase 3: a client watch from r4+1 keeps going while the leader is stopped, with no gap
    // and no duplicate: every acknowledged write shows up once, in revision order.
    let mut watch = client.watch(WatchRequest {
        range: KeyRange::prefix("/x/seq/"),
        start_revision: r4 + 1,
    });
    let mut acked = Vec::new();
    for n in 0..40 {
        if n == 15 {
            cluster.stop(leader).await;
        }
        let key = format!("/x/seq/{n:03}");
        match client.txn(Txn::put(key.as_str(), "v")).await {
            Ok(response) => acked.push((response.revision, key)),
            Err(StoreError::Unknown(_)) => {}
            Err(e) => panic!("write failed: {e}"),
        }
    }
    let last = acked.last().unwrap().0;
    let mut seen: Vec<(u64, String)> = Vec::new();
    while seen.last().is_none_or(|(r, _)| *r < last) {
        let batch = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("watch delivers")
            .expect("watch keeps going");
        seen.extend(
            batch
                .into_iter()
                .map(|e| (e.kv.mod_revision, String::from_utf8(e.kv.key).unwrap())),
        );
    }
    for pair in seen.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "revisions strictly increase: {pair:?}"
        );
    }
    for write in &acked {
        assert!(
            seen.contains(write),
            "acknowledged {write:?} missing from the watch"
        );
    }
    cluster.start_member(leader).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_makes_old_revisions_fail_with_compacted() {
    init_tracing();
    let cluster = TestCluster::start(1, |_| {}).await;
    cluster.leader(LEADER_TIMEOUT).await;
    let client = cluster.client();
    let mut revisions = Vec::new();
    for n in 0..10 {
        let r = client
            .txn(Txn::put("/k", format!("{n}")))
            .await
            .unwrap()
            .revision;
        revisions.push(r);
    }
    let compact_to = revisions[5];
    assert_eq!(client.compact(compact_to).await.unwrap(), compact_to);

    let mut old = RangeRequest::new(KeyRange::key("/k"));
    old.revision = revisions[2];
    assert!(matches!(
        client.range(old).await,
        Err(StoreError::Compacted { requested, compacted }) if requested == revisions[2] && compacted == compact_to
    ));
    let mut at = RangeRequest::new(KeyRange::key("/k"));
    at.revision = compact_to;
    assert_eq!(client.range(at).await.unwrap().kvs[0].value, b"5");

    let from_old = cluster.store(0).watch(WatchRequest {
        range: KeyRange::prefix("/"),
        start_revision: revisions[2],
    });
    assert!(matches!(from_old, Err(StoreError::Compacted { .. })));
    let mut client_watch = client.watch(WatchRequest {
        range: KeyRange::prefix("/"),
        start_revision: revisions[2],
    });
    assert!(matches!(
        client_watch.next().await,
        Err(StoreError::Compacted { .. })
    ));

    let mut from_compacted = cluster
        .store(0)
        .watch(WatchRequest {
            range: KeyRange::prefix("/"),
            start_revision: compact_to,
        })
        .unwrap();
    let events = from_compacted.next().await.unwrap().unwrap();
    assert_eq!(events[0].kv.mod_revision, compact_to);
    assert_eq!(events.len(), 5);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_cannot_keep_up_is_cut_off() {
    init_tracing();
    let cluster = TestCluster::start(1, |config| config.watch_buffer_events_max = 8).await;
    cluster.leader(LEADER_TIMEOUT).await;
    let client = cluster.client();
    let mut slow = cluster
        .store(0)
        .watch(WatchRequest {
            range: KeyRange::prefix("/"),
            start_revision: 0,
        })
        .unwrap();
    for n in 0..30 {
        client.txn(Txn::put(format!("/k{n}"), "v")).await.unwrap();
    }
    let mut received = 0;
    let error = loop {
        match slow.next().await {
            Some(Ok(events)) => received += events.len(),
            Some(Err(e)) => break e,
            None => panic!("watch ended without an error"),
        }
    };
    assert_eq!(error, WatchError::Overflowed(8));
    assert!(
        received <= 8,
        "at most the buffer was delivered ({received})"
    );
    assert_eq!(cluster.store(0).status().await.watchers, 0);
    cluster.shutdown().await;
}
