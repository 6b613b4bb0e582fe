//! The cluster DNS server's I/O: hickory-server's UDP/TCP listeners around a request handler
//! that answers from the table and forwards other names upstream (bounded in time and in
//! concurrency).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::records::Lookup;
use super::{DnsError, Shared};

/// A forwarded question gets this long in all (waiting for a slot included) before SERVFAIL.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Each upstream gets at least this long before the next one is tried.
const FORWARD_TRY_MIN: Duration = Duration::from_millis(500);
/// A TCP client connection idle this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The EDNS payload size offered upstream (the DNS flag day 2020 value).
const UPSTREAM_PAYLOAD_BYTES: u16 = 1232;
/// Largest DNS message.
const MESSAGE_BYTES_MAX: usize = 65535;

pub(super) async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DnsError> {
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            protocol: "udp",
            addr,
            source,
        })?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            protocol: "tcp",
            addr,
            source,
        })?;
    let upstreams: Vec<SocketAddr> = shared
        .upstreams
        .iter()
        .copied()
        .filter(|u| *u != addr)
        .collect();
    if upstreams.len() < shared.upstreams.len() {
        tracing::warn!(%addr, "cluster dns: dropped its own address from the upstreams (it would loop)");
    }
    tracing::info!(%addr, zone = %shared.zone, ?upstreams, "cluster dns: serving");
    let mut server = ServerFuture::new(Handler { shared, upstreams });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT);
    tokio::select! {
        result = server.block_until_done() => return result.map_err(DnsError::Serve),
        () = stopped(&mut stop) => {}
    }
    tracing::info!(%addr, "cluster dns: stopping");
    server.shutdown_gracefully().await.map_err(DnsError::Serve)
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

struct Handler {
    shared: Arc<Shared>,
    upstreams: Vec<SocketAddr>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let result = self.answer(request, &mut response).await;
        match result {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(src = %request.src(), %error, "cluster dns: sending a response failed");
                let mut header = Header::response_from_request(request.header());
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

impl Handler {
    async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        response: &mut R,
    ) -> std::io::Result<ResponseInfo> {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = request.edns() {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().max(512));
            builder.edns(ours);
        }
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            return response
                .send_response(builder.error_msg(request.header(), ResponseCode::NotImp))
                .await;
        }
        let Ok(info) = request.request_info() else {
            return response
                .send_response(builder.error_msg(request.header(), ResponseCode::FormErr))
                .await;
        };
        let query = info.query.original().clone();
        if query.query_class() != DNSClass::IN {
            return response
                .send_response(builder.error_msg(request.header(), ResponseCode::NotImp))
                .await;
        }
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let none: [&Record; 0] = [];
        match self.shared.table().lookup(query.name(), query.query_type()) {
            Lookup::Records(records) => {
                header.set_authoritative(true);
                let response_message = builder.build(header, records.iter(), none, none, none);
                response.send_response(response_message).await
            }
            Lookup::NoData(soa) => {
                header.set_authoritative(true);
                let response_message = builder.build(header, none, none, [&soa], none);
                response.send_response(response_message).await
            }
            Lookup::NxDomain(soa) => {
                header.set_authoritative(true);
                header.set_response_code(ResponseCode::NXDomain);
                let response_message = builder.build(header, none, none, [&soa], none);
                response.send_response(response_message).await
            }
            Lookup::Forward => match self.forward(&query).await {
                Some(upstream) => {
                    header.set_response_code(upstream.response_code());
                    let response_message = builder.build(
                        header,
                        upstream.answers(),
                        upstream.name_servers(),
                        none,
                        upstream.additionals(),
                    );
                    response.send_response(response_message).await
                }
                None => {
                    header.set_response_code(ResponseCode::ServFail);
                    let response_message = builder.build(header, none, none, none, none);
                    response.send_response(response_message).await
                }
            },
        }
    }

    /// Asks the upstreams in order, within [`FORWARD_TIMEOUT`] in all; `None` if none answered
    /// (or all refused).
    async fn forward(&self, query: &Query) -> Option<Message> {
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        if self.upstreams.is_empty() {
            tracing::debug!(name = %query.name(), "cluster dns: no upstreams to forward to");
            return None;
        }
        let Ok(Ok(_permit)) = timeout_at(deadline, self.shared.forward_permits.acquire()).await
        else {
            tracing::warn!(name = %query.name(), "cluster dns: too many forwarded questions in flight");
            return None;
        };
        let count = u32::try_from(self.upstreams.len()).unwrap_or(u32::MAX);
        let per_try = (FORWARD_TIMEOUT / count).max(FORWARD_TRY_MIN);
        for upstream in &self.upstreams {
            let try_deadline = deadline.min(Instant::now() + per_try);
            let answer = match timeout_at(try_deadline, exchange_udp(*upstream, query)).await {
                Ok(Ok(message)) if message.truncated() => {
                    timeout_at(deadline, exchange_tcp(*upstream, query)).await
                }
                other => other,
            };
            match answer {
                Ok(Ok(message)) if message.response_code() != ResponseCode::Refused => {
                    return Some(message)
                }
                Ok(Ok(_)) => {
                    tracing::debug!(%upstream, name = %query.name(), "cluster dns: upstream refused")
                }
                Ok(Err(error)) => {
                    tracing::debug!(%upstream, name = %query.name(), %error, "cluster dns: upstream failed")
                }
                Err(_) => {
                    tracing::debug!(%upstream, name = %query.name(), "cluster dns: upstream timed out")
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        None
    }
}

/// The question as a recursive query with a fresh random id.
fn upstream_request(query: &Query) -> Message {
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD_BYTES);
    message.set_edns(edns);
    message
}

/// Whether `reply` answers `request` (same id and question); anything else is ignored.
fn answers(request: &Message, reply: &Message) -> bool {
    reply.id() == request.id()
        && reply.message_type() == MessageType::Response
        && match (request.queries().first(), reply.queries().first()) {
            (Some(asked), Some(got)) => {
                asked.query_type() == got.query_type()
                    && asked.name().to_lowercase() == got.name().to_lowercase()
            }
            _ => false,
        }
}

async fn exchange_udp(upstream: SocketAddr, query: &Query) -> std::io::Result<Message> {
    let request = upstream_request(query);
    let bytes = request.to_vec().map_err(std::io::Error::other)?;
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; MESSAGE_BYTES_MAX];
    loop {
        let len = socket.recv(&mut buf).await?;
        match Message::from_vec(&buf[..len]) {
            Ok(reply) if answers(&request, &reply) => return Ok(reply),
            _ => tracing::debug!(%upstream, "cluster dns: ignoring a stray or garbled udp reply"),
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, query: &Query) -> std::io::Result<Message> {
    let request = upstream_request(query);
    let bytes = request.to_vec().map_err(std::io::Error::other)?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await?;
    let reply_len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if answers(&request, &reply) {
        Ok(reply)
    } else {
        Err(std::io::Error::other(
            "upstream tcp reply does not match the question",
        ))
    }
}
