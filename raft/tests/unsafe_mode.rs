//! The deliberately unsafe modes the Jepsen suite uses to prove its checkers bite: with
//! `stale_reads` a follower cut off from any leader still answers linearizable reads from its
//! local state; without it the same read fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{init_tracing, TestCluster};
use keelson_raft::{KeyRange, RangeRequest, StoreClient, StoreError, Txn, UnsafeMode};

const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

async fn put(client: &StoreClient, key: &str, value: &str) -> Result<u64, StoreError> {
    client.txn(Txn::put(key, value)).await.map(|r| r.revision)
}

/// Starts 3 members, writes `/k`, stops the leader and one follower, and reads `/k`
/// linearizably on the remaining follower. Returns the outcome and how long it took.
async fn read_on_lone_follower(
    unsafe_mode: UnsafeMode,
) -> (Result<Option<Vec<u8>>, StoreError>, Duration) {
    let mut cluster = TestCluster::start(3, |c| {
        c.unsafe_mode = unsafe_mode;
        c.write_timeout = Duration::from_secs(3);
    })
    .await;
    let leader = cluster.leader(LEADER_TIMEOUT).await;
    let revision = put(&cluster.client(), "/k", "v").await.expect("write");
    cluster
        .wait_revision(revision, Duration::from_secs(10))
        .await;
    let survivor = (leader + 1) % 3;
    cluster.stop(leader).await;
    cluster.stop((leader + 2) % 3).await;
    let started = Instant::now();
    let result = cluster
        .store(survivor)
        .range(RangeRequest::new(KeyRange::key("/k")))
        .await
        .map(|r| r.kvs.into_iter().next().map(|kv| kv.value));
    let took = started.elapsed();
    cluster.shutdown().await;
    (result, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_stale_reads_answer_linearizable_reads_on_a_follower_without_a_leader() {
    init_tracing();
    let stale = UnsafeMode {
        stale_reads: true,
        no_sync: false,
    };
    let (result, took) = read_on_lone_follower(stale).await;
    assert_eq!(result.expect("stale read"), Some(b"v".to_vec()));
    assert!(
        took < Duration::from_secs(1),
        "answered at once, took {took:?}"
    );

    let (result, _) = read_on_lone_follower(UnsafeMode::default()).await;
    assert!(
        result.is_err(),
        "a safe linearizable read without a leader must fail, got {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_no_sync_still_replicates_and_survives_a_clean_restart() {
    init_tracing();
    let no_sync = UnsafeMode {
        stale_reads: false,
        no_sync: true,
    };
    let mut cluster = TestCluster::start(3, |c| c.unsafe_mode = no_sync).await;
    let leader = cluster.leader(LEADER_TIMEOUT).await;
    let revision = put(&cluster.client(), "/n", "1").await.expect("write");
    cluster
        .wait_revision(revision, Duration::from_secs(10))
        .await;
    cluster.stop(leader).await;
    cluster.start_member(leader).await;
    cluster.leader(LEADER_TIMEOUT).await;
    let read = cluster
        .client()
        .range(RangeRequest::new(KeyRange::key("/n")))
        .await
        .expect("read");
    assert_eq!(
        read.kvs.first().map(|kv| kv.value.clone()),
        Some(b"1".to_vec())
    );
    cluster.shutdown().await;
}
