//! Bad input from peers and clients gets a clear error, and the store keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{init_tracing, TestCluster, TOKEN};
use keelson_raft::wire::{encode_frame, PeerRequest, PeerResponse, Transport, TransportError};
use keelson_raft::{KeyRange, RangeRequest, StoreClient, StoreError, Txn};

const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

async fn still_serving(client: &StoreClient, n: usize) {
    let key = format!("/ok/{n}");
    client
        .txn(Txn::put(key.as_str(), "yes"))
        .await
        .expect("store still takes writes");
    let response = client
        .range(RangeRequest::new(KeyRange::key(key)))
        .await
        .unwrap();
    assert_eq!(response.kvs[0].value, b"yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_the_store_keeps_serving() {
    init_tracing();
    let cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.leader(LEADER_TIMEOUT).await;
    let client = cluster.client();
    let addr = cluster.configs[leader].listen.to_string();

    // An oversized value is refused before it reaches the log.
    let big = client
        .txn(Txn::put("/big", vec![b'x'; 1536 * 1024 + 1]))
        .await;
    match big {
        Err(StoreError::Invalid(message)) => {
            assert!(message.contains("exceeds the limit"), "{message}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    still_serving(&client, 1).await;

    // A peer without the token is refused, with the reason.
    let intruder = StoreClient::new(vec![addr.clone()], "not-the-cluster-token").unwrap();
    match intruder.txn(Txn::put("/intruder", "x")).await {
        Err(StoreError::Unauthenticated(message)) => {
            assert!(message.contains("invalid cluster token"), "{message}")
        }
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    still_serving(&client, 2).await;

    // Garbage and truncated frames from an authenticated peer are refused per stream.
    let raw = Transport::bind_client(TOKEN).unwrap();
    let mut garbage = 12u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 12]);
    let answer = raw
        .call_raw(&addr, &garbage, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(&answer, Some(PeerResponse::Refused(e)) if format!("{e:?}").contains("malformed request")),
        "{answer:?}"
    );
    let mut truncated = encode_frame(&PeerRequest::Status).unwrap();
    truncated.truncate(truncated.len() - 1);
    let answer = raw
        .call_raw(&addr, &truncated, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(answer, Some(PeerResponse::Refused(_))),
        "{answer:?}"
    );
    let oversized = (64u32 * 1024 * 1024).to_be_bytes();
    let answer = raw
        .call_raw(&addr, &oversized, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(&answer, Some(PeerResponse::Refused(e)) if format!("{e:?}").contains("exceeds the limit")),
        "{answer:?}"
    );
    still_serving(&client, 3).await;

    // Garbage on a multiplexed stream cannot be answered (it has no request id): the member
    // closes that stream, and the connection and the store go on serving.
    let mut multiplexed_garbage = encode_frame(&PeerRequest::Multiplexed).unwrap();
    multiplexed_garbage.extend_from_slice(&garbage);
    let answer = raw
        .call_raw(&addr, &multiplexed_garbage, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.is_none(), "{answer:?}");
    let status = raw
        .call(&addr, &PeerRequest::Status, Duration::from_secs(5))
        .await;
    assert!(
        matches!(status, Ok(PeerResponse::Status(Ok(_)))),
        "{status:?}"
    );
    still_serving(&client, 4).await;

    // A client with the wrong token cannot even read.
    let wrong = Transport::bind_client("wrong-token-wrong-token").unwrap();
    let refused = wrong
        .call(&addr, &PeerRequest::Status, Duration::from_secs(5))
        .await;
    assert!(
        matches!(refused, Err(TransportError::Unauthenticated { .. })),
        "{refused:?}"
    );
    still_serving(&client, 5).await;
    cluster.shutdown().await;
}
