//! Cloud controllers behind the [`CloudProvider`] trait, with the `local` provider for nodes on
//! one Linux host.

use crate::control_plane::ControllerContext;
use crate::supervisor::StopSignal;

/// What the cloud controllers ask of the machines' provider.
pub trait CloudProvider: Send + Sync {
    /// The provider's name (`local`).
    fn name(&self) -> &'static str;
}

/// Nodes on this Linux host.
#[derive(Debug, Default)]
pub struct LocalCloud;

impl CloudProvider for LocalCloud {
    fn name(&self) -> &'static str {
        "local"
    }
}

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run_node_controller(
    _ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run_route_controller(
    _ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run_service_controller(
    _ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}

/// Placeholder until this loop lands: waits for the stop signal.
pub(crate) async fn run_volume_controller(
    _ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}
