//! The namespace controller: deleting a namespace deletes everything in it, then the namespace.

use crate::control_plane::ControllerContext;
use crate::supervisor::StopSignal;

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run(_ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}
