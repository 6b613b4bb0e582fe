//! `/metrics` in Prometheus text format: request counts and latencies (recorded by the
//! handler through the `metrics` facade), watch count, and the store's revision and Raft
//! state, read at scrape time.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use warp::reply::Response;

use super::request::text_reply;
use super::ApiState;

/// Latency buckets (seconds) for request durations.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use (one per process, shared by
/// every API server in it, and by the node in `keelson up`). Processes call it first thing,
/// so that nothing recorded before the API server starts (the store's first election) is
/// lost; `None` when another recorder was installed already. Must be called in a Tokio
/// runtime (it spawns the recorder's upkeep).
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UPKEEP_INTERVAL).await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .clone()
}

pub(crate) async fn render(state: &ApiState) -> Response {
    let Some(handle) = &state.metrics else {
        return text_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not available in this process",
        );
    };
    let status = state.storage.store().status().await;
    metrics::gauge!("apiserver_registered_watchers")
        .set(state.watches.load(Ordering::Relaxed) as f64);
    metrics::gauge!("keelson_store_revision").set(status.revision as f64);
    metrics::gauge!("keelson_store_compacted_revision").set(status.compacted_revision as f64);
    metrics::gauge!("keelson_store_db_size_bytes").set(status.db_size_bytes as f64);
    metrics::gauge!("keelson_store_applied_index").set(status.applied_index as f64);
    metrics::gauge!("keelson_raft_term").set(status.term as f64);
    metrics::gauge!("keelson_raft_is_leader").set(
        if status.leader.as_deref() == Some(status.name.as_str()) {
            1.0
        } else {
            0.0
        },
    );
    metrics::gauge!("keelson_raft_has_leader").set(if status.leader.is_some() { 1.0 } else { 0.0 });
    let mut response = text_reply(StatusCode::OK, &handle.render());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
