//! The nodes connected to this master, and the callbacks the master opens on their
//! connections (a pod's logs, the node's resource use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keelson_api::node_link::{
    Callback, Chunk, LogRequest, NodeStats, ResponseHead, StatsRequest, FRAME_BYTES_MAX,
    STATS_BYTES_MAX,
};
use keelson_api::status::StatusError;
use quinn::{Connection, RecvStream, SendStream};

use super::{read_frame, write_frame};

/// How long a node has to answer a callback's head.
const CALLBACK_HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// The most bytes of an error body read from a node.
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;

/// The connection of each node connected here; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    nodes: Arc<Mutex<HashMap<String, Connection>>>,
}

/// A log body streaming from a node.
pub(crate) type LogChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `node`'s connection; a newer one replaces an older.
    pub(crate) fn insert(&self, node: &str, conn: Connection) {
        if let Some(old) = self.lock().insert(node.to_string(), conn) {
            old.close(
                keelson_api::node_link::close_code::DONE.into(),
                b"the node connected again",
            );
        }
    }

    /// Forgets `node`'s connection if it is still the one with `stable_id`.
    pub(crate) fn remove(&self, node: &str, stable_id: usize) {
        let mut nodes = self.lock();
        if nodes.get(node).is_some_and(|c| c.stable_id() == stable_id) {
            nodes.remove(node);
        }
    }

    pub(crate) fn get(&self, node: &str) -> Option<Connection> {
        self.lock()
            .get(node)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Opens a callback stream on `conn` and reads the node's answer head; an error answer
    /// becomes the node's `Status` (or one naming what went wrong).
    async fn open_callback(
        conn: &Connection,
        node: &str,
        callback: &Callback,
        what: &str,
    ) -> Result<(SendStream, RecvStream), StatusError> {
        let unavailable = |e: String| {
            StatusError::service_unavailable(
                format!("cannot ask node {node} for {what}: {e}"),
                Some(1),
            )
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        write_frame(&mut send, callback)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let _ = send.finish();
        let head = tokio::time::timeout(
            CALLBACK_HEAD_TIMEOUT,
            read_frame::<ResponseHead>(&mut recv, 64 * 1024),
        )
        .await
        .map_err(|_| unavailable("it did not answer in time".to_string()))?
        .map_err(|e| unavailable(e.to_string()))?
        .ok_or_else(|| unavailable("it ended the stream".to_string()))?;
        if head.status >= 400 {
            let mut body = Vec::new();
            while let Ok(Some(Chunk(chunk))) = read_frame::<Chunk>(&mut recv, FRAME_BYTES_MAX).await
            {
                body.extend_from_slice(&chunk);
                if body.len() > ERROR_BODY_BYTES_MAX {
                    break;
                }
            }
            let value: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            return Err(StatusError::from_value(&value).unwrap_or_else(|| {
                StatusError::new(
                    head.status,
                    "InternalError",
                    format!(
                        "node {node} answered {}: {}",
                        head.status,
                        String::from_utf8_lossy(&body)
                    ),
                )
            }));
        }
        Ok((send, recv))
    }

    /// Asks `node` for its and its pods' resource use: `Ok(None)` when the node is not
    /// connected here. The caller bounds the time it waits.
    pub(crate) async fn stats(
        &self,
        node: &str,
        request: StatsRequest,
    ) -> Result<Option<NodeStats>, StatusError> {
        let Some(conn) = self.get(node) else {
            return Ok(None);
        };
        let what = "its resource use";
        let (_send, mut recv) =
            Self::open_callback(&conn, node, &Callback::Stats(request), what).await?;
        let mut body = Vec::new();
        loop {
            match read_frame::<Chunk>(&mut recv, FRAME_BYTES_MAX).await {
                Ok(Some(Chunk(chunk))) => {
                    if body.len() + chunk.len() > STATS_BYTES_MAX {
                        return Err(StatusError::service_unavailable(
                            format!("node {node} sent more than {STATS_BYTES_MAX} bytes of stats"),
                            Some(1),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(StatusError::service_unavailable(
                        format!("cannot read the stats of node {node}: {e}"),
                        Some(1),
                    ))
                }
            }
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            StatusError::service_unavailable(
                format!("node {node} sent stats that cannot be decoded: {e}"),
                Some(1),
            )
        })
    }

    /// Asks `node` for a pod's logs: `Ok(None)` when the node is not connected here.
    pub(crate) async fn logs(
        &self,
        node: &str,
        request: LogRequest,
    ) -> Result<Option<LogChunks>, StatusError> {
        let Some(conn) = self.get(node) else {
            return Ok(None);
        };
        let (send, recv) =
            Self::open_callback(&conn, node, &Callback::Logs(request), "the logs").await?;
        let chunks = futures::stream::unfold((recv, send), |(mut recv, send)| async move {
            match read_frame::<Chunk>(&mut recv, FRAME_BYTES_MAX).await {
                Ok(Some(Chunk(chunk))) => Some((Ok(Bytes::from(chunk)), (recv, send))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (recv, send))),
            }
        });
        // After an error the stream ends: the unfold above would repeat it.
        let mut failed = false;
        let chunks = futures::StreamExt::take_while(chunks, move |item| {
            let go = !failed;
            failed = item.is_err();
            std::future::ready(go)
        });
        Ok(Some(Box::pin(chunks)))
    }
}
