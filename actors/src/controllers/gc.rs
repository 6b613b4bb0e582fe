//! The garbage collector: deletes dependents whose owners are gone, honouring propagation.

use crate::control_plane::ControllerContext;
use crate::supervisor::StopSignal;

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run(_ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}
