//! What a kubelet serves the masters over its node link: containers' logs and the resource
//! use of the node and its pods.

use futures::future::BoxFuture;
use keelson_api::node_link::{LogRequest, NodeStats, StatsRequest};

use super::serve_logs::LogCallbacks;
use super::stats::StatsSource;
use crate::link::{CallbackError, Callbacks, LogStream};

pub struct KubeletCallbacks {
    pub logs: LogCallbacks,
    pub stats: StatsSource,
}

impl Callbacks for KubeletCallbacks {
    fn logs(&self, request: LogRequest) -> BoxFuture<'static, Result<LogStream, CallbackError>> {
        self.logs.logs(request)
    }

    fn stats(&self, request: StatsRequest) -> BoxFuture<'static, Result<NodeStats, CallbackError>> {
        let stats = self.stats.clone();
        Box::pin(async move { Ok(stats.stats(&request).await) })
    }
}
