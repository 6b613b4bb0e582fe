//! The Kubernetes API of the benchmark's Keelson cluster as a load target: a put is a
//! ConfigMap create, a get a ConfigMap get, a list a page of 100 ConfigMaps; and a watch
//! measurement (events delivered while creates run, and how long after its create each
//! arrives).
//!
//! Each client clone holds one HTTPS/1.1 connection (hyper over tokio-rustls, so the
//! benchmark brings no HTTP client that would change RocksDB's build features).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_rustls::TlsConnector;

use crate::load::{Measurement, Target};

const NAMESPACE_PATH: &str = "/api/v1/namespaces/default/configmaps";
/// Objects per list page.
pub(crate) const LIST_LIMIT: usize = 100;
/// The most bytes of one response read.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

struct Shared {
    addr: SocketAddr,
    tls: TlsConnector,
    token: String,
}

/// One client of the API; clones open their own connection.
pub(crate) struct ApiTarget {
    shared: Arc<Shared>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Clone for ApiTarget {
    fn clone(&self) -> Self {
        ApiTarget {
            shared: self.shared.clone(),
            conn: None,
        }
    }
}

/// The ConfigMap name for a store-bench key (`/bench/3/17` → `bench-3-17`).
fn name_of(key: &str) -> String {
    key.trim_start_matches('/').replace('/', "-")
}

impl ApiTarget {
    /// A target for the master whose `admin.kubeconfig` is given, at `addr`.
    pub(crate) fn from_kubeconfig(kubeconfig: &Path, addr: SocketAddr) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = std::fs::read_to_string(kubeconfig)
            .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
        let config: Value = serde_norway::from_str(&text).context("kubeconfig is not YAML")?;
        let ca = config["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .ok_or_else(|| anyhow!("kubeconfig has no certificate-authority-data"))?;
        let ca = base64::engine::general_purpose::STANDARD.decode(ca)?;
        let token = config["users"][0]["user"]["token"]
            .as_str()
            .ok_or_else(|| anyhow!("kubeconfig has no token"))?
            .to_string();
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ApiTarget {
            shared: Arc::new(Shared {
                addr,
                tls: TlsConnector::from(Arc::new(tls)),
                token,
            }),
            conn: None,
        })
    }

    pub(crate) async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.shared.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::IpAddress(self.shared.addr.ip().into());
        let tls = self
            .shared
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// One request; the answer's status and body.
    pub(crate) async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), String> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".to_string());
        };
        conn.ready().await.map_err(|e| format!("connection: {e}"))?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.shared.addr.to_string())
            .header("authorization", format!("Bearer {}", self.shared.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = match conn.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.conn = None;
                return Err(format!("request: {e}"));
            }
        };
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// The API's address (the `host` header).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The `authorization` header.
    pub(crate) fn authorization(&self) -> String {
        format!("Bearer {}", self.shared.token)
    }

    /// Waits until the API answers `/readyz`, up to `timeout`.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.request(hyper::Method::GET, "/readyz", None).await {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) if Instant::now() >= deadline => {
                    bail!(
                        "the API is not ready: {code} {}",
                        String::from_utf8_lossy(&body)
                    )
                }
                Err(e) if Instant::now() >= deadline => bail!("the API is not ready: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn configmap(name: &str, value: &[u8], sent_us: u64) -> Vec<u8> {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"sent": sent_us.to_string()},
            "binaryData": {"v": base64::engine::general_purpose::STANDARD.encode(value)},
        });
        serde_json::to_vec(&object).unwrap_or_default()
    }
}

/// Microseconds since a process-wide origin, to time watch delivery.
fn now_us(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Target for ApiTarget {
    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let body = Self::configmap(&name_of(&key), &value, now_us(origin()));
        match self
            .request(hyper::Method::POST, NAMESPACE_PATH, Some(body))
            .await?
        {
            (201, _) => Ok(()),
            (code, body) => Err(format!(
                "create answered {code}: {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let path = format!("{NAMESPACE_PATH}/{}", name_of(&key));
        match self.request(hyper::Method::GET, &path, None).await? {
            (200, body) => {
                let object: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                let value = object["binaryData"]["v"].as_str().unwrap_or_default();
                base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            (404, _) => Ok(None),
            (code, body) => Err(format!(
                "get answered {code}: {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    async fn list(&mut self) -> Result<(), String> {
        let path = format!("{NAMESPACE_PATH}?limit={LIST_LIMIT}");
        match self.request(hyper::Method::GET, &path, None).await? {
            (200, body) => {
                let list: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                let items = list["items"].as_array().map_or(0, Vec::len);
                if items == LIST_LIMIT {
                    Ok(())
                } else {
                    Err(format!("a list page held {items} items, not {LIST_LIMIT}"))
                }
            }
            (code, body) => Err(format!(
                "list answered {code}: {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

/// Watches ConfigMaps from now for `duration` while `load` runs, recording for each ADDED
/// event how long after its create was sent it arrived.
pub(crate) async fn watch_while<F>(
    target: &ApiTarget,
    duration: Duration,
    load: F,
) -> anyhow::Result<Measurement>
where
    F: std::future::Future<Output = anyhow::Result<Measurement>>,
{
    let mut client = target.clone();
    let (code, body) = client
        .request(
            hyper::Method::GET,
            &format!("{NAMESPACE_PATH}?limit=1"),
            None,
        )
        .await
        .map_err(|e| anyhow!(e))?;
    if code != 200 {
        bail!("list before the watch answered {code}");
    }
    let list: Value = serde_json::from_slice(&body)?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut conn = client.connect().await.map_err(|e| anyhow!(e))?;
    conn.ready().await?;
    let request = hyper::Request::builder()
        .uri(format!("{NAMESPACE_PATH}?watch=true&resourceVersion={rv}"))
        .header("host", target.shared.addr.to_string())
        .header("authorization", format!("Bearer {}", target.shared.token))
        .body(Full::new(Bytes::new()))?;
    let response = conn.send_request(request).await?;
    if response.status().as_u16() != 200 {
        bail!("watch answered {}", response.status());
    }
    let mut body = response.into_body();
    let mut measurement = Measurement::empty(duration)?;
    let reader = async {
        let mut buffer = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buffer.extend_from_slice(data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    measurement.errors += 1;
                    continue;
                };
                if event["type"] != "ADDED" {
                    continue;
                }
                let sent: u64 = event["object"]["data"]["sent"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let latency = now_us(origin()).saturating_sub(sent).max(1);
                measurement.ops += 1;
                measurement.latency_us.saturating_record(latency);
            }
        }
    };
    let load_result = tokio::select! {
        result = load => result,
        _ = reader => Err(anyhow!("the watch ended before the load did")),
    };
    load_result?;
    Ok(measurement)
}
