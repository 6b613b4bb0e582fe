//! The node's metrics endpoint: plain HTTP/1.1 serving `GET /metrics` (Prometheus text
//! format) and `GET /healthz`, one request per connection. Meant for loopback (the default
//! address) or a trusted network: there is no TLS and no authentication, as with the
//! kubelet's old read-only port. Request heads are bounded in size and time, connections in
//! number; request bodies are never read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// The longest request head (request line and headers) read.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a client has to send its request head and take the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS_MAX: usize = 16;
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every series of the process in the Prometheus text format.
pub type Renderer = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("metrics address {0:?} is not IP:PORT (give '' or 'off' to serve no metrics)")]
    BadAddress(String),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// `--metrics-addr`: `IP:PORT` (port 0 picks a free port), or `''`/`off` for no endpoint.
pub fn parse_addr(text: &str) -> Result<Option<SocketAddr>, ServerError> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ServerError::BadAddress(text.to_string()))
}

/// A bound metrics endpoint, serving once [`MetricsServer::serve`] runs.
pub struct MetricsServer {
    listener: TcpListener,
    render: Renderer,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr, render: Renderer) -> Result<MetricsServer, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(MetricsServer { listener, render })
    }

    /// The address bound (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `stop` turns true.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        loop {
            let permit = tokio::select! {
                _ = stop.changed() => return,
                permit = slots.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else {
                return;
            };
            let accepted = tokio::select! {
                _ = stop.changed() => return,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let render = self.render.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve_one(stream, &render)).await;
                drop(permit);
            });
        }
    }
}

async fn serve_one(mut stream: TcpStream, render: &Renderer) {
    let mut buf = vec![0u8; REQUEST_HEAD_BYTES_MAX];
    let mut filled = 0;
    let answer = loop {
        if let Some(end) = head_end(&buf[..filled]) {
            break answer(&buf[..end]);
        }
        if filled == buf.len() {
            break Answer::Error(
                431,
                "Request Header Fields Too Large",
                format!("the request head is longer than {REQUEST_HEAD_BYTES_MAX} bytes"),
            );
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
    };
    let response = match answer {
        Answer::Serve { target, head_only } => {
            let (content_type, body) = match target {
                Target::Metrics => (METRICS_CONTENT_TYPE, render()),
                Target::Healthz => ("text/plain; charset=utf-8", "ok".to_string()),
            };
            response(200, "OK", content_type, &body, head_only)
        }
        Answer::Error(code, reason, message) => response(
            code,
            reason,
            "text/plain; charset=utf-8",
            &format!("{message}\n"),
            false,
        ),
    };
    if stream.write_all(&response).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// What the endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Metrics,
    Healthz,
}

/// The answer to a request head.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Serve {
        target: Target,
        head_only: bool,
    },
    /// Status code, reason phrase, message.
    Error(u16, &'static str, String),
}

/// The length of the request head (through the blank line), once it is all in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Decides the answer from the request line; headers are not needed.
fn answer(head: &[u8]) -> Answer {
    let bad = |message: &str| Answer::Error(400, "Bad Request", message.to_string());
    let Some(line) = head.split(|b| *b == b'\n').next() else {
        return bad("empty request");
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return bad("the request line is not UTF-8");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("the request line is not METHOD PATH HTTP/1.x");
    };
    if !version.starts_with("HTTP/1.") {
        return bad("only HTTP/1.x is served");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Answer::Error(
                405,
                "Method Not Allowed",
                format!("{method} is not served here: use GET"),
            )
        }
    };
    let path = target.split('?').next().unwrap_or_default();
    let target = match path {
        "/metrics" => Target::Metrics,
        "/healthz" => Target::Healthz,
        _ => {
            return Answer::Error(
                404,
                "Not Found",
                format!("{path:?} is not served here: the node serves /metrics and /healthz"),
            )
        }
    };
    Answer::Serve { target, head_only }
}

/// A whole HTTP/1.1 response that closes the connection.
fn response(code: u16, reason: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_answered() {
        let serve = |target, head_only| Answer::Serve { target, head_only };
        let cases: &[(&str, Result<Answer, u16>)] = &[
            ("GET /metrics HTTP/1.1", Ok(serve(Target::Metrics, false))),
            (
                "GET /metrics?x=1 HTTP/1.0",
                Ok(serve(Target::Metrics, false)),
            ),
            ("HEAD /metrics HTTP/1.1", Ok(serve(Target::Metrics, true))),
            ("GET /healthz HTTP/1.1", Ok(serve(Target::Healthz, false))),
            ("GET / HTTP/1.1", Err(404)),
            ("GET /metrics/extra HTTP/1.1", Err(404)),
            ("POST /metrics HTTP/1.1", Err(405)),
            ("GET /metrics HTTP/2", Err(400)),
            ("GET /metrics", Err(400)),
            ("GET  /metrics HTTP/1.1", Err(400)),
            ("", Err(400)),
        ];
        for (line, want) in cases {
            let head = format!("{line}\r\nhost: x\r\n\r\n");
            let got = answer(head.as_bytes());
            match (want, &got) {
                (Ok(want), got) => assert_eq!(got, want, "{line:?}"),
                (Err(code), Answer::Error(got, _, _)) => assert_eq!(got, code, "{line:?}"),
                (Err(code), got) => panic!("{line:?}: want {code}, got {got:?}"),
            }
        }
    }

    #[test]
    fn head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nhost: x\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_addr("").unwrap(), None);
        assert_eq!(parse_addr("off").unwrap(), None);
        assert_eq!(
            parse_addr("127.0.0.1:10255").unwrap(),
            Some("127.0.0.1:10255".parse().unwrap())
        );
        assert_eq!(
            parse_addr("[::1]:0").unwrap(),
            Some("[::1]:0".parse().unwrap())
        );
        assert!(parse_addr("localhost:10255").is_err());
        assert!(parse_addr("10255").is_err());
    }

    #[test]
    fn responses_carry_length_and_close() {
        let full = String::from_utf8(response(200, "OK", "text/plain", "abc", false)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(full.contains("content-length: 3\r\n"));
        assert!(full.contains("connection: close\r\n"));
        assert!(full.ends_with("\r\n\r\nabc"));
        let head = String::from_utf8(response(200, "OK", "text/plain", "abc", true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn serves_metrics_and_404s_over_loopback() {
        let render: Renderer = Arc::new(|| "series_total 1\n".to_string());
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), render)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server.serve(stop_rx));
        let get = |path: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            stream.read_to_string(&mut out).await.unwrap();
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
        assert!(metrics.ends_with("series_total 1\n"), "{metrics}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        // A head that does not end within the limit is refused (exactly the limit is sent, so
        // nothing is left unread to reset the connection).
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let long = vec![b'a'; REQUEST_HEAD_BYTES_MAX];
        let _ = stream.write_all(&long).await;
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out).await;
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
