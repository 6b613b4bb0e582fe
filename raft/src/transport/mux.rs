//! Many small requests on one stream: writes sent one stream each cost a QUIC packet (and a
//! wake-up of both sides) per request and per answer, most of a member's time under load. On
//! a multiplexed stream each frame carries a request id; requests and answers that are ready
//! together leave in one write, so a batch of answers (a Raft entry commits many writes at
//! once) goes out in a packet or two.
//!
//! The client opens the stream with [`PeerRequest::Multiplexed`]; after it, the client sends
//! [`MuxRequest`] frames and the member answers each with a [`MuxReply`] carrying the same id,
//! in any order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quinn::{Connection, RecvStream, SendStream};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::frame::{self, encode_frame, FrameError};
use super::{Handler, Reply, FRAME_BYTES_MAX};
use crate::codec::encode;
use crate::protocol::{PeerRequest, PeerResponse};

/// Requests larger than this get a stream of their own: on the shared stream they would hold
/// up every request behind them.
pub(crate) const MUX_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// How many requests of one multiplexed stream may be unanswered at once (each side).
const IN_FLIGHT_MAX: usize = 4096;
/// Frames waiting to be written, per stream.
const WRITE_QUEUE_MAX: usize = 1024;
/// The most bytes gathered into one write.
const WRITE_BYTES_MAX: usize = 256 * 1024;

#[derive(Deserialize)]
struct MuxRequest {
    id: u64,
    request: PeerRequest,
}

#[derive(Serialize)]
struct MuxReplyRef<'a> {
    id: u64,
    response: &'a PeerResponse,
}

#[derive(Deserialize)]
struct MuxReply {
    id: u64,
    response: PeerResponse,
}

/// Writes the frames queued on `frames` until the queue closes. Before each write it lets the
/// tasks that are ready run first, so that the frames they queue (the other answers of a
/// batch, the next requests of clients just answered) leave in the same write.
async fn write_queued(mut send: SendStream, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut buffer = Vec::new();
    while let Some(first) = frames.recv().await {
        tokio::task::yield_now().await;
        buffer.clear();
        buffer.extend_from_slice(&first);
        while buffer.len() < WRITE_BYTES_MAX {
            match frames.try_recv() {
                Ok(frame) => buffer.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all(&buffer).await {
            tracing::debug!("multiplexed stream closed: {e}");
            return;
        }
    }
    let _ = send.finish();
}

/// The member's side of a multiplexed stream: each request is handled in its own task and
/// answered through the stream's writer.
pub(super) async fn serve<H: Handler>(handler: Arc<H>, send: SendStream, mut recv: RecvStream) {
    let (frames, queued) = mpsc::channel(WRITE_QUEUE_MAX);
    let writer = tokio::spawn(write_queued(send, queued));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    loop {
        // Read no further while the most requests are unanswered: QUIC's flow control then
        // holds the client back.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        match frame::read_frame::<MuxRequest>(&mut recv, FRAME_BYTES_MAX).await {
            Ok(Some(MuxRequest { id, request })) => {
                let reply = Reply::multiplexed(id, frames.clone());
                let handler = handler.clone();
                tokio::spawn(async move {
                    handler.handle(request, reply).await;
                    drop(permit);
                });
            }
            Ok(None) => break,
            Err(e) => {
                // Without an id there is no one to answer: the client's requests on this
                // stream all fail, and it opens another.
                tracing::warn!("closing a multiplexed stream after a malformed request: {e}");
                break;
            }
        }
    }
    drop(frames);
    let _ = writer.await;
}

/// Where a handler answers a request that came on a multiplexed stream.
pub(super) struct MuxReplyTo {
    id: u64,
    frames: mpsc::Sender<Vec<u8>>,
}

impl MuxReplyTo {
    pub(super) fn new(id: u64, frames: mpsc::Sender<Vec<u8>>) -> Self {
        MuxReplyTo { id, frames }
    }

    pub(super) async fn send(&self, response: &PeerResponse) -> Result<(), FrameError> {
        let frame = encode_frame(&MuxReplyRef {
            id: self.id,
            response,
        })?;
        self.frames
            .send(frame)
            .await
            .map_err(|_| FrameError::Io("the multiplexed stream is closed".to_string()))
    }

    /// Resolves when the stream's writer stops (the client went away).
    pub(super) async fn stopped(&self) {
        self.frames.closed().await;
    }
}

/// Why a multiplexed call failed.
pub(super) enum MuxError {
    /// Nothing was written.
    NotSent(String),
    /// The request may have reached the member.
    NoAnswer(String),
}

type Waiting = HashMap<u64, (oneshot::Sender<PeerResponse>, OwnedSemaphorePermit)>;

/// The client's side of one multiplexed stream.
pub(super) struct MuxClient {
    frames: mpsc::Sender<Vec<u8>>,
    waiting: Arc<Mutex<Option<Waiting>>>,
    in_flight: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl MuxClient {
    /// Opens a multiplexed stream on `conn`.
    pub(super) async fn open(conn: &Connection) -> Result<Arc<MuxClient>, String> {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        frame::write_frame(&mut send, &PeerRequest::Multiplexed)
            .await
            .map_err(|e| e.to_string())?;
        let (frames, queued) = mpsc::channel(WRITE_QUEUE_MAX);
        let waiting = Arc::new(Mutex::new(Some(Waiting::new())));
        tokio::spawn(write_queued(send, queued));
        tokio::spawn(read_replies(recv, waiting.clone()));
        Ok(Arc::new(MuxClient {
            frames,
            waiting,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT_MAX)),
            next_id: AtomicU64::new(0),
        }))
    }

    /// Whether the stream still carries requests.
    pub(super) fn is_open(&self) -> bool {
        !self.frames.is_closed() && lock(&self.waiting).is_some()
    }

    /// Sends `request` (an encoded [`PeerRequest`] of at most [`MUX_REQUEST_BYTES_MAX`]) and
    /// waits for its answer (the caller bounds the wait).
    pub(super) async fn call(&self, request: &[u8]) -> Result<PeerResponse, MuxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = request_frame(id, request)?;
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MuxError::NotSent("the multiplexed stream is closed".to_string()))?;
        let (answer, answered) = oneshot::channel();
        let mut forget = Forget {
            waiting: &self.waiting,
            id: Some(id),
        };
        match lock(&self.waiting).as_mut() {
            Some(waiting) => waiting.insert(id, (answer, permit)),
            None => {
                return Err(MuxError::NotSent(
                    "the multiplexed stream is closed".to_string(),
                ))
            }
        };
        if self.frames.send(frame).await.is_err() {
            return Err(MuxError::NotSent(
                "the multiplexed stream is closed".to_string(),
            ));
        }
        let response = answered
            .await
            .map_err(|_| MuxError::NoAnswer("the multiplexed stream closed".to_string()));
        forget.id = None;
        response
    }
}

/// The frame of a [`MuxRequest`], from the request already encoded: postcard writes a struct
/// as its fields one after the other.
fn request_frame(id: u64, request: &[u8]) -> Result<Vec<u8>, MuxError> {
    let id = encode(&id);
    let len = id.len() + request.len();
    if request.len() > MUX_REQUEST_BYTES_MAX {
        return Err(MuxError::NotSent(format!(
            "a request of {} bytes is too large for a multiplexed stream",
            request.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + len);
    // Fits: at most MUX_REQUEST_BYTES_MAX plus a varint.
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.extend_from_slice(&id);
    frame.extend_from_slice(request);
    Ok(frame)
}

/// Removes a call that stopped waiting (timed out, cancelled, failed) from the waiting calls.
struct Forget<'a> {
    waiting: &'a Mutex<Option<Waiting>>,
    id: Option<u64>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            if let Some(waiting) = lock(self.waiting).as_mut() {
                waiting.remove(&id);
            }
        }
    }
}

fn lock(waiting: &Mutex<Option<Waiting>>) -> std::sync::MutexGuard<'_, Option<Waiting>> {
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands each answer to its caller until the stream ends; then every waiting call fails.
async fn read_replies(mut recv: RecvStream, waiting: Arc<Mutex<Option<Waiting>>>) {
    loop {
        match frame::read_frame::<MuxReply>(&mut recv, FRAME_BYTES_MAX).await {
            Ok(Some(MuxReply { id, response })) => {
                let caller = lock(&waiting).as_mut().and_then(|w| w.remove(&id));
                if let Some((answer, _permit)) = caller {
                    // A caller that stopped waiting does not want it.
                    let _ = answer.send(response);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("multiplexed stream ended: {e}");
                break;
            }
        }
    }
    // Dropping the senders fails every call still waiting.
    lock(&waiting).take();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;
    use crate::command::{Command, Txn};

    #[test]
    fn a_request_frame_decodes_as_its_id_and_request() {
        let request = PeerRequest::Write {
            command: Command::Txn(Txn::put("/a", "b")),
            hops: 1,
        };
        for id in [0, 300, u64::MAX] {
            let frame = request_frame(id, &encode(&request)).unwrap_or_default();
            let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            assert_eq!(len, frame.len() - 4);
            let decoded: MuxRequest = decode("request", &frame[4..]).expect("decodes");
            assert_eq!(decoded.id, id);
            match decoded.request {
                PeerRequest::Write {
                    command: Command::Txn(txn),
                    hops: 1,
                } => assert_eq!(encode(&txn), encode(&Txn::put("/a", "b"))),
                other => panic!("decoded {other:?}"),
            }
        }
    }

    #[test]
    fn a_request_over_the_limit_is_not_sent() {
        let too_large = vec![0u8; MUX_REQUEST_BYTES_MAX + 1];
        assert!(matches!(
            request_frame(1, &too_large),
            Err(MuxError::NotSent(reason)) if reason.contains("too large")
        ));
    }
}
