//! QUIC between members (Raft RPCs, forwarded requests) and from clients: one connection per
//! peer, one stream per request or watch (small writes share one, see [`mux`]), mutual proof
//! of the cluster token before anything else is accepted on a connection.

mod frame;
mod mux;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};

pub(crate) use frame::FrameError;
pub use frame::{encode_frame, FRAME_BYTES_MAX};

use crate::protocol::{PeerRequest, PeerResponse};

/// How long a new connection may take to connect and authenticate.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections a member serves at once.
const CONNECTIONS_MAX: usize = 1024;
/// The largest handshake frame.
const HANDSHAKE_BYTES_MAX: usize = 1024;
const EXPORTER_LABEL: &[u8] = b"EXPORTER-keelson-peer-auth";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nothing was delivered: connecting or opening the stream failed.
    #[error("cannot reach {addr}: {reason}")]
    NotSent { addr: String, reason: String },
    /// The request was (or may have been) delivered but no answer came.
    #[error("no answer from {addr}: {reason}")]
    NoAnswer { addr: String, reason: String },
    #[error("{addr} refused the cluster token: {reason}")]
    Unauthenticated { addr: String, reason: String },
    #[error("{0}")]
    TooLarge(String),
}

#[derive(Debug, Serialize, Deserialize)]
enum Handshake {
    Hello { proof: Vec<u8> },
    Ack { proof: Vec<u8> },
    Refused(String),
}

/// The proof that `side` knows the token, bound to this connection's TLS session.
fn proof(key: &hmac::Key, conn: &Connection, side: &[u8]) -> Result<hmac::Tag, String> {
    let mut exported = [0u8; 32];
    conn.export_keying_material(&mut exported, EXPORTER_LABEL, side)
        .map_err(|_| "cannot export keying material".to_string())?;
    Ok(hmac::sign(key, &exported))
}

fn verify(key: &hmac::Key, conn: &Connection, side: &[u8], claimed: &[u8]) -> bool {
    let mut exported = [0u8; 32];
    if conn
        .export_keying_material(&mut exported, EXPORTER_LABEL, side)
        .is_err()
    {
        return false;
    }
    hmac::verify(key, &exported, claimed).is_ok()
}

/// Serves one request stream; a watch writes several frames.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: PeerRequest,
        reply: Reply,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// Where a handler writes its answer: the request's own stream, or a multiplexed one.
pub struct Reply {
    to: ReplyTo,
}

enum ReplyTo {
    Stream(SendStream),
    Multiplexed(mux::MuxReplyTo),
}

impl Reply {
    fn multiplexed(id: u64, frames: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Reply {
            to: ReplyTo::Multiplexed(mux::MuxReplyTo::new(id, frames)),
        }
    }

    pub async fn send(&mut self, response: &PeerResponse) -> Result<(), FrameError> {
        match &mut self.to {
            ReplyTo::Stream(send) => frame::write_frame(send, response).await,
            ReplyTo::Multiplexed(to) => to.send(response).await,
        }
    }

    /// Resolves when the client stops reading (closes the stream or the connection).
    pub async fn stopped(&mut self) {
        match &mut self.to {
            ReplyTo::Stream(send) => {
                let _ = send.stopped().await;
            }
            ReplyTo::Multiplexed(to) => to.stopped().await,
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let ReplyTo::Stream(send) = &mut self.to {
            let _ = send.finish();
        }
    }
}

/// How long a failed connect makes further calls to that address fail at once.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// The connection to one address: at most one connect in flight, and a short memory of the
/// last failure so a dead peer does not hold every call for a full handshake timeout.
#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    /// The stream small writes share on `conn` (see [`mux`]).
    mux: Option<Arc<mux::MuxClient>>,
    failed_at: Option<std::time::Instant>,
}

/// A QUIC endpoint that serves peers and calls them.
pub struct Transport {
    endpoint: Endpoint,
    key: hmac::Key,
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
}

impl Transport {
    /// A member's endpoint: serves on `addr` and calls peers from it.
    pub fn bind_server(addr: SocketAddr, token: &str) -> Result<Self, String> {
        let mut endpoint = Endpoint::server(tls::server_config()?, addr)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        endpoint.set_default_client_config(tls::client_config()?);
        Ok(Self::with_endpoint(endpoint, token))
    }

    /// A client-only endpoint.
    pub fn bind_client(token: &str) -> Result<Self, String> {
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut endpoint =
            Endpoint::client(any).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        endpoint.set_default_client_config(tls::client_config()?);
        Ok(Self::with_endpoint(endpoint, token))
    }

    fn with_endpoint(endpoint: Endpoint, token: &str) -> Self {
        Transport {
            endpoint,
            key: hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes()),
            slots: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Stops serving and drops every connection.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutting down");
    }

    /// Accepts connections until the endpoint closes, each served by `handler`.
    pub async fn serve<H: Handler>(self: Arc<Self>, handler: Arc<H>) {
        let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        while let Some(incoming) = self.endpoint.accept().await {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!("refusing a connection: {CONNECTIONS_MAX} connections are open");
                incoming.refuse();
                continue;
            };
            let this = self.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let remote = incoming.remote_address();
                let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, "connection failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, this.accept_handshake(&conn)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => {
                        tracing::warn!(%remote, "rejected a peer: {reason}");
                        conn.close(1u32.into(), reason.as_bytes());
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "rejected a peer: no handshake in time");
                        conn.close(1u32.into(), b"no handshake in time");
                        return;
                    }
                }
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let handler = handler.clone();
                    tokio::spawn(serve_stream(handler, send, recv));
                }
            });
        }
    }

    async fn accept_handshake(&self, conn: &Connection) -> Result<(), String> {
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| format!("no handshake stream: {e}"))?;
        let hello: Option<Handshake> = frame::read_frame(&mut recv, HANDSHAKE_BYTES_MAX)
            .await
            .map_err(|e| format!("bad handshake: {e}"))?;
        let Some(Handshake::Hello { proof: claimed }) = hello else {
            return Err("bad handshake: expected hello".to_string());
        };
        if !verify(&self.key, conn, b"client", &claimed) {
            let _ = frame::write_frame(
                &mut send,
                &Handshake::Refused("invalid cluster token".to_string()),
            )
            .await;
            let _ = send.finish();
            // Give the refusal a moment to arrive before the connection closes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err("invalid cluster token".to_string());
        }
        let ours = proof(&self.key, conn, b"server")?;
        frame::write_frame(
            &mut send,
            &Handshake::Ack {
                proof: ours.as_ref().to_vec(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = send.finish();
        Ok(())
    }

    async fn connect(&self, addr: &str) -> Result<Connection, TransportError> {
        let not_sent = |reason: String| TransportError::NotSent {
            addr: addr.to_string(),
            reason,
        };
        let socket_addr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| not_sent(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| not_sent("no address".to_string()))?;
        let connecting = self
            .endpoint
            .connect(socket_addr, tls::SERVER_NAME)
            .map_err(|e| not_sent(e.to_string()))?;
        let handshake = async {
            let conn = connecting.await.map_err(|e| not_sent(e.to_string()))?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| not_sent(e.to_string()))?;
            let ours = proof(&self.key, &conn, b"client").map_err(not_sent)?;
            frame::write_frame(
                &mut send,
                &Handshake::Hello {
                    proof: ours.as_ref().to_vec(),
                },
            )
            .await
            .map_err(|e| not_sent(e.to_string()))?;
            let _ = send.finish();
            let unauthenticated = |reason: String| TransportError::Unauthenticated {
                addr: addr.to_string(),
                reason,
            };
            match frame::read_frame::<Handshake>(&mut recv, HANDSHAKE_BYTES_MAX).await {
                Ok(Some(Handshake::Ack { proof: theirs }))
                    if verify(&self.key, &conn, b"server", &theirs) =>
                {
                    Ok(conn)
                }
                Ok(Some(Handshake::Ack { .. })) => Err(unauthenticated(
                    "the peer does not know the cluster token".to_string(),
                )),
                Ok(Some(Handshake::Refused(reason))) => Err(unauthenticated(reason)),
                Ok(_) => Err(unauthenticated("bad handshake answer".to_string())),
                Err(e) => match conn.close_reason() {
                    Some(quinn::ConnectionError::ApplicationClosed(close)) => Err(unauthenticated(
                        String::from_utf8_lossy(&close.reason).into_owned(),
                    )),
                    _ => Err(not_sent(e.to_string())),
                },
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| not_sent("timed out connecting".to_string()))?
    }

    fn slot(&self, addr: &str) -> Arc<Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(addr.to_string()).or_default().clone()
    }

    /// The open connection to `addr`, connecting if there is none.
    async fn connection(&self, addr: &str) -> Result<Connection, TransportError> {
        let slot = self.slot(addr);
        let mut slot = slot.lock().await;
        self.connection_in(&mut slot, addr).await
    }

    async fn connection_in(
        &self,
        slot: &mut Slot,
        addr: &str,
    ) -> Result<Connection, TransportError> {
        if let Some(conn) = &slot.conn {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        slot.mux = None;
        if let Some(failed_at) = slot.failed_at {
            if failed_at.elapsed() < RECONNECT_BACKOFF {
                return Err(TransportError::NotSent {
                    addr: addr.to_string(),
                    reason: "unreachable moments ago".to_string(),
                });
            }
        }
        match self.connect(addr).await {
            Ok(conn) => {
                slot.conn = Some(conn.clone());
                slot.failed_at = None;
                Ok(conn)
            }
            Err(e) => {
                slot.conn = None;
                slot.failed_at = Some(std::time::Instant::now());
                Err(e)
            }
        }
    }

    /// The multiplexed stream to `addr`, opening it (and the connection) if needed.
    async fn mux(&self, addr: &str) -> Result<Arc<mux::MuxClient>, TransportError> {
        let slot = self.slot(addr);
        let mut slot = slot.lock().await;
        let conn = self.connection_in(&mut slot, addr).await?;
        if let Some(mux) = slot.mux.as_ref().filter(|mux| mux.is_open()) {
            return Ok(mux.clone());
        }
        let mux = mux::MuxClient::open(&conn)
            .await
            .map_err(|reason| TransportError::NotSent {
                addr: addr.to_string(),
                reason,
            })?;
        slot.mux = Some(mux.clone());
        Ok(mux)
    }

    async fn open(
        &self,
        addr: &str,
        request: &PeerRequest,
    ) -> Result<(SendStream, RecvStream), TransportError> {
        let frame = encode_frame(request).map_err(|e| TransportError::TooLarge(e.to_string()))?;
        let conn = self.connection(addr).await?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| TransportError::NotSent {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        send.write_all(&frame)
            .await
            .map_err(|e| TransportError::NoAnswer {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let _ = send.finish();
        Ok((send, recv))
    }

    /// Sends `request` to `addr` and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let no_answer = |reason: String| TransportError::NoAnswer {
            addr: addr.to_string(),
            reason,
        };
        if let PeerRequest::Write { .. } = request {
            let body = crate::codec::encode(request);
            if body.len() <= mux::MUX_REQUEST_BYTES_MAX {
                return self.call_multiplexed(addr, &body, timeout).await;
            }
        }
        let exchange = async {
            let (_send, mut recv) = self.open(addr, request).await?;
            match frame::read_frame::<PeerResponse>(&mut recv, FRAME_BYTES_MAX).await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(no_answer("stream closed without an answer".to_string())),
                Err(e) => Err(no_answer(e.to_string())),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| no_answer(format!("timed out after {timeout:?}")))?
    }

    /// [`Transport::call`] on the stream small writes to `addr` share; `request` is the
    /// encoded [`PeerRequest`].
    async fn call_multiplexed(
        &self,
        addr: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let exchange = async {
            let mux = self.mux(addr).await?;
            mux.call(request).await.map_err(|e| match e {
                mux::MuxError::NotSent(reason) => TransportError::NotSent {
                    addr: addr.to_string(),
                    reason,
                },
                mux::MuxError::NoAnswer(reason) => TransportError::NoAnswer {
                    addr: addr.to_string(),
                    reason,
                },
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::NoAnswer {
                addr: addr.to_string(),
                reason: format!("timed out after {timeout:?}"),
            })?
    }

    /// Sends raw bytes as a request (tests use it to send malformed frames) and reads the
    /// answer, if any.
    pub async fn call_raw(
        &self,
        addr: &str,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<Option<PeerResponse>, TransportError> {
        let no_answer = |reason: String| TransportError::NoAnswer {
            addr: addr.to_string(),
            reason,
        };
        let exchange = async {
            let conn = self.connection(addr).await?;
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|e| no_answer(e.to_string()))?;
            send.write_all(bytes)
                .await
                .map_err(|e| no_answer(e.to_string()))?;
            let _ = send.finish();
            frame::read_frame::<PeerResponse>(&mut recv, FRAME_BYTES_MAX)
                .await
                .map_err(|e| no_answer(e.to_string()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| no_answer(format!("timed out after {timeout:?}")))?
    }

    /// Sends a watch request; the answer is a stream of frames.
    pub async fn open_stream(
        &self,
        addr: &str,
        request: &PeerRequest,
    ) -> Result<ResponseStream, TransportError> {
        let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open(addr, request))
            .await
            .map_err(|_| TransportError::NotSent {
                addr: addr.to_string(),
                reason: "timed out opening a stream".to_string(),
            })??;
        Ok(ResponseStream {
            _send: send,
            recv,
            addr: addr.to_string(),
        })
    }
}

/// The frames answering one streamed request (a watch).
pub struct ResponseStream {
    _send: SendStream,
    recv: RecvStream,
    addr: String,
}

impl ResponseStream {
    /// The next frame, `Ok(None)` when the member ended the stream.
    pub async fn next(&mut self) -> Result<Option<PeerResponse>, TransportError> {
        frame::read_frame(&mut self.recv, FRAME_BYTES_MAX)
            .await
            .map_err(|e| TransportError::NoAnswer {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })
    }
}

async fn serve_stream<H: Handler>(handler: Arc<H>, send: SendStream, mut recv: RecvStream) {
    let request = frame::read_frame::<PeerRequest>(&mut recv, FRAME_BYTES_MAX).await;
    let mut reply = match request {
        Ok(Some(PeerRequest::Multiplexed)) => return mux::serve(handler, send, recv).await,
        _ => Reply {
            to: ReplyTo::Stream(send),
        },
    };
    match request {
        Ok(Some(request)) => handler.handle(request, reply).await,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("refused a malformed request: {e}");
            let _ = reply
                .send(&PeerResponse::Refused(crate::error::WireError::Invalid(
                    format!("malformed request: {e}"),
                )))
                .await;
        }
    }
}
