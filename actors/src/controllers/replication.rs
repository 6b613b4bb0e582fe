//! The replication controllers: ReplicationControllers and ReplicaSets keep `replicas` pods.

use crate::control_plane::ControllerContext;
use crate::supervisor::StopSignal;

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run_replication_controllers(
    _ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run_replica_sets(
    _ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}
