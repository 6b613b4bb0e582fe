//! The API actor: Kubernetes' REST API over HTTPS on every master, backed by the replicated
//! store.
//!
//! Architecture invariant: only this module names warp, hyper or HTTP status codes; every
//! error leaves it as a Kubernetes `Status`.

mod cluster;
pub(crate) mod decoded;
mod forward;
mod handler;
mod list;
mod metrics;
mod namespaces;
mod objects;
mod ranges;
mod request;
mod resource_metrics;
mod route;
mod services;
mod storage;
mod subresources;
mod tokens;
mod ui;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use keelson_api::status::StatusError;
use keelson_raft::Store;
use tokio::net::TcpListener;
use tokio::sync::{watch as signal, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use warp::Filter;

use crate::pki::{admin_kubeconfig, ClusterCa, PkiError, ServingCert};
use request::{status_reply, ApiRequest, REQUEST_BODY_BYTES_MAX};
use storage::Storage;

pub(crate) use list::LIST_ITEMS_MAX as LIST_PAGE_ITEMS_MAX;
pub use metrics::recorder as metrics_recorder;
pub use ranges::{NodePortRange, RangeError, ServiceIpRange, ServiceRanges};
pub(crate) use storage::collection_prefix;
pub(crate) use tokens::{SA_NAME_ANNOTATION, SA_TOKEN_TYPE, SA_UID_ANNOTATION};

/// Decodes a stored object and sets its resourceVersion.
pub(crate) fn decode_stored(kv: &keelson_raft::KeyValue) -> Result<serde_json::Value, StatusError> {
    storage::decode(kv).map(|stored| stored.object)
}

/// The most connections served at once; more wait in the kernel's backlog.
const CONNECTIONS_MAX: usize = 4096;
/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may finish its requests once the server stops.
const CONNECTION_DRAIN_MAX: Duration = Duration::from_secs(2);
/// How often a master waiting for a store leader at start says so.
const LEADER_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Store keys of cluster-wide API secrets, outside the object registry.
const CA_KEY: &str = "/keelson/pki/ca";
const ADMIN_TOKEN_KEY: &str = "/keelson/auth/admin-token";

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot bind the API address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("tls: {0}")]
    Tls(String),
    #[error("the store: {0}")]
    Store(String),
    #[error("the node link: {0}")]
    NodeLink(#[from] crate::nodelink::NodeLinkServerError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<StatusError> for ApiServerError {
    fn from(e: StatusError) -> Self {
        ApiServerError::Store(e.to_string())
    }
}

/// How one master serves the API.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// The master's name.
    pub name: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Host names and addresses clients use to reach this master (the serving certificate's
    /// SANs, besides the listen address, `localhost` and `127.0.0.1`).
    pub hosts: Vec<String>,
    /// Where `admin.kubeconfig` and the cached certificates go.
    pub data_dir: PathBuf,
    /// The cluster token: node credentials and the join secret derive from it. `None`: no
    /// node link (nodes reach the API over HTTPS with a kubeconfig only).
    pub cluster_token: Option<String>,
    /// Where Services' ClusterIPs and NodePorts come from (alike on every master).
    pub service_ranges: ServiceRanges,
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) storage: Storage,
    pub(crate) admin_token: Arc<String>,
    pub(crate) watches: Arc<AtomicI64>,
    /// Stored changes parsed once for all watches.
    pub(crate) decoded: Arc<decoded::Decoded>,
    /// The cluster CA's certificate (PEM), for service-account token Secrets.
    pub(crate) ca_cert_pem: Arc<String>,
    /// Service-account tokens this master accepts, from its own watch of Secrets.
    pub(crate) sa_tokens: tokens::TokenIndex,
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub(crate) name: Arc<String>,
    pub(crate) api_url: Arc<String>,
    /// Sends writes to the leader's API (`None` if the client could not be built: writes are
    /// then handled where they arrive).
    pub(crate) forward_client: Option<reqwest::Client>,
    /// The nodes connected to this master over QUIC.
    pub(crate) node_links: crate::nodelink::Registry,
    /// Checks node credentials (`None` without a cluster token).
    pub(crate) node_keys: Option<Arc<crate::nodelink::NodeKeys>>,
    /// Where Services' ClusterIPs and NodePorts come from.
    pub(crate) service_ranges: ServiceRanges,
}

/// A request made inside this master (by the scheduler and the controllers).
pub(crate) struct ApiRequestParts {
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

/// Serves a request made inside this master through the same handler as HTTPS requests.
pub(crate) async fn handler_serve(
    state: &ApiState,
    parts: ApiRequestParts,
) -> Result<warp::reply::Response, StatusError> {
    let req = ApiRequest::new(
        parts.method,
        parts.path,
        parts.query.as_deref(),
        parts.headers,
        parts.body,
    )?;
    Ok(handler::serve(state.clone(), req).await)
}

/// A running API server.
pub struct ApiServer {
    state: ApiState,
    local_addr: SocketAddr,
    kubeconfig: PathBuf,
    stop: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The QUIC endpoint nodes connect to (on the API's address, UDP).
    node_endpoint: Option<quinn::Endpoint>,
}

/// Reads the cluster-wide CA and admin token from the store, creating them if this is the
/// first master to ask.
async fn cluster_secrets(storage: &Storage) -> Result<(ClusterCa, String), ApiServerError> {
    // Both are written once and never change, so a master that has been a member holds the
    // real ones and starts without a leader (restarted while the others are down, or after
    // being removed from the membership): it serves what it can until it is back.
    let local = (
        storage.get_local_raw(CA_KEY).await?,
        storage.get_local_raw(ADMIN_TOKEN_KEY).await?,
    );
    if let (Some(ca), Some(token)) = local {
        return Ok((decode_ca(&ca)?, decode_token(token)?));
    }
    loop {
        match storage
            .store()
            .wait_for_leader(LEADER_WAIT_LOG_INTERVAL)
            .await
        {
            Ok(_) => break,
            Err(keelson_raft::StoreError::NoLeader(_)) => tracing::warn!(
                "still waiting for a store leader to create or read the cluster CA: is this \
                 master in --peers, or added with `keelson store member add NAME=ADDR`?"
            ),
            Err(e) => return Err(ApiServerError::Store(e.to_string())),
        }
    }
    let fresh = ClusterCa::generate()?;
    let encoded = serde_json::to_vec(&fresh).map_err(|e| ApiServerError::Store(e.to_string()))?;
    let ca = decode_ca(&storage.put_if_absent_raw(CA_KEY, encoded).await?)?;
    let token = {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let stored = storage
        .put_if_absent_raw(ADMIN_TOKEN_KEY, token.into_bytes())
        .await?;
    Ok((ca, decode_token(stored)?))
}

fn decode_ca(stored: &[u8]) -> Result<ClusterCa, ApiServerError> {
    serde_json::from_slice(stored)
        .map_err(|e| ApiServerError::Store(format!("the stored cluster CA is corrupt: {e}")))
}

fn decode_token(stored: Vec<u8>) -> Result<String, ApiServerError> {
    String::from_utf8(stored)
        .map_err(|_| ApiServerError::Store("the stored admin token is not UTF-8".to_string()))
}

fn tls_acceptor(serving: &ServingCert) -> Result<TlsAcceptor, ApiServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ApiServerError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
        .map_err(|e| ApiServerError::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ApiServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn write_private(path: &std::path::Path, contents: &str) -> Result<(), ApiServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| ApiServerError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Collects a request body, refusing more than the limit.
async fn collect_body<S, B>(mut body: S) -> Result<Bytes, StatusError>
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| StatusError::bad_request(format!("cannot read the body: {e}")))?;
        if collected.len() + chunk.remaining() > REQUEST_BODY_BYTES_MAX {
            return Err(StatusError::request_entity_too_large(&format!(
                "the request body is larger than the limit of {REQUEST_BODY_BYTES_MAX} bytes"
            )));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

impl ApiServer {
    /// Starts serving: fetches (or creates) the cluster CA and admin token from the store,
    /// signs this master's serving certificate, writes `admin.kubeconfig`, and listens.
    pub async fn start(store: Store, config: ApiServerConfig) -> Result<ApiServer, ApiServerError> {
        let decoded = Arc::<decoded::Decoded>::default();
        let storage = Storage::new(store, decoded.clone());
        let (ca, admin_token) = cluster_secrets(&storage).await?;
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !config.listen.ip().is_unspecified() {
            hosts.push(config.listen.ip().to_string());
        }
        hosts.extend(config.hosts.iter().cloned());
        let serving = ca.sign_serving(&hosts)?;
        let acceptor = tls_acceptor(&serving)?;

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ApiServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ApiServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let host = if local_addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", local_addr.port())
        } else {
            local_addr.to_string()
        };
        let api_url = format!("https://{host}");
        let kubeconfig = config.data_dir.join("admin.kubeconfig");
        write_private(
            &kubeconfig,
            &admin_kubeconfig("keelson", &api_url, &ca.cert_pem, &admin_token),
        )?;
        write_private(&config.data_dir.join("ca.crt"), &ca.cert_pem)?;
        let node_keys = config
            .cluster_token
            .as_deref()
            .map(|token| Arc::new(crate::nodelink::NodeKeys::new(token)));
        if let Some(keys) = &node_keys {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
                .map_err(|e| ApiServerError::Tls(format!("the cluster CA is not PEM: {e}")))?;
            write_private(
                &config.data_dir.join("node-token"),
                &format!("{}\n", keys.join_token(&der)),
            )?;
        }

        let (stop, stopped) = signal::channel(false);
        let sa_tokens =
            tokens::TokenIndex::start(storage.store().clone(), decoded.clone(), stopped.clone());
        let state = ApiState {
            storage,
            admin_token: Arc::new(admin_token),
            watches: Arc::new(AtomicI64::new(0)),
            decoded,
            ca_cert_pem: Arc::new(ca.cert_pem.clone()),
            sa_tokens: sa_tokens.clone(),
            metrics: metrics::recorder(),
            name: Arc::new(config.name.clone()),
            api_url: Arc::new(api_url),
            forward_client: forward::client(&ca.cert_pem),
            node_links: crate::nodelink::Registry::default(),
            node_keys: node_keys.clone(),
            service_ranges: config.service_ranges,
        };
        let mut node_endpoint = None;
        let mut node_task = None;
        if let Some(keys) = node_keys {
            let (endpoint, task) =
                crate::nodelink::start(state.clone(), keys, local_addr, &serving, stopped.clone())?;
            node_endpoint = Some(endpoint);
            node_task = Some(task);
        }
        let mut tasks = vec![
            tokio::spawn(accept_loop(
                listener,
                acceptor,
                state.clone(),
                stopped.clone(),
            )),
            tokio::spawn(namespaces::run(state.clone(), stopped.clone())),
            tokio::spawn(services::repair(state.clone(), stopped.clone())),
            tokio::spawn(cluster::register(state.clone(), stopped)),
        ];
        tasks.extend(node_task);
        Ok(ApiServer {
            state,
            local_addr,
            kubeconfig,
            stop,
            tasks,
            node_endpoint,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A client that calls this API in-process as `component`.
    pub fn client(&self, component: &'static str) -> crate::client::ApiClient {
        crate::client::ApiClient::new(self.state.clone(), component)
    }

    /// The store this API serves.
    pub fn store(&self) -> &Store {
        self.state.storage.store()
    }

    /// The admin kubeconfig this master wrote.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Stops accepting connections and ends the background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(endpoint) = &self.node_endpoint {
            endpoint.close(
                keelson_api::node_link::close_code::UNAVAILABLE.into(),
                b"the master is shutting down",
            );
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

fn routes(
    state: ApiState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query: String, headers, body| {
                let state = state.clone();
                async move {
                    let body = match collect_body(Box::pin(body)).await {
                        Ok(body) => body,
                        Err(e) => return status_reply(&e),
                    };
                    let raw_query = (!query.is_empty()).then_some(query.as_str());
                    match ApiRequest::new(
                        method,
                        path.as_str().to_string(),
                        raw_query,
                        headers,
                        body,
                    ) {
                        Ok(req) => handler::serve(state, req).await,
                        Err(e) => status_reply(&e),
                    }
                }
            },
        )
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: ApiState,
    mut stopped: signal::Receiver<bool>,
) {
    let service = warp::service(routes(state));
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            _ = stopped.changed() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let tls = match tokio::select! {
                shaken = handshake => shaken,
                () = stop_signalled(&mut stopped) => return,
            } {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let hyper_service = hyper_util::service::TowerToHyperService::new(service);
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(tls), hyper_service);
            tokio::pin!(connection);
            // A connection holds the store through the service: it must end when the server
            // stops (an idle keep-alive connection never would), or the store cannot close.
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop_signalled(&mut stopped) => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(CONNECTION_DRAIN_MAX, connection.as_mut()).await {
                        Ok(ended) => ended,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Returns once the server is told to stop (or its stop sender is gone).
async fn stop_signalled(stopped: &mut signal::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A 404 for a path that names nothing this server serves.
pub(crate) fn not_found_path(message: String) -> StatusError {
    StatusError::new(404, "NotFound", message)
}
