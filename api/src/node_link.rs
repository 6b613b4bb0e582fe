//! The node ↔ master wire protocol over QUIC: message types, frames (a big-endian u32 length
//! and postcard bytes, at most [`FRAME_BYTES_MAX`]), the join token and the node credential
//! formats. Pure: encoding and decoding on byte slices; the I/O lives in `actors` and `node`.
//!
//! Streams: the node's first stream carries a [`Hello`] answered by a [`Welcome`]; then one
//! bidirectional stream per API request: [`Request`] → [`ResponseHead`], [`Chunk`]*, finish (a
//! watch is a request whose body streams until either side ends it). The master opens
//! streams on the node's connection for callbacks: [`Callback`] → [`ResponseHead`], [`Chunk`]*
//! (a pod's log as text, or the node's [`NodeStats`] as JSON).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The ALPN protocol of node links.
pub const ALPN: &[u8] = b"keelson-node/1";
/// The largest frame either side accepts.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The length prefix of a frame.
pub const FRAME_HEADER_BYTES: usize = 4;
/// The largest request body a master accepts (as over HTTPS).
pub const REQUEST_BODY_BYTES_MAX: usize = 3 * 1024 * 1024;
/// The largest response chunk either side writes (a bigger body goes in several chunks).
pub const CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// The prefix of a join token (k3s' "K10" secure token format).
pub const JOIN_TOKEN_PREFIX: &str = "K10";
/// The prefix of a node credential.
pub const CREDENTIAL_PREFIX: &str = "keelson-node:";
/// The HMAC message a join secret is derived from (with the cluster token as key).
pub const JOIN_SECRET_CONTEXT: &[u8] = b"keelson-node-join";
/// The annotation on a Node naming the master the node is connected to.
pub const CONNECTED_MASTER_ANNOTATION: &str = "keelson.io/connected-master";

/// Application error codes a master closes a node's connection with.
pub mod close_code {
    /// Normal end (the node asked for the CA only, or a shutdown).
    pub const DONE: u32 = 0;
    /// The join secret or credential is wrong.
    pub const UNAUTHENTICATED: u32 = 1;
    /// The node broke the protocol.
    pub const PROTOCOL: u32 = 2;
    /// The master is shutting down or full.
    pub const UNAVAILABLE: u32 = 3;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeLinkError {
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge(usize),
    #[error("cannot decode a {what} frame: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("cannot encode a frame: {0}")]
    Encode(String),
    #[error("the join token is malformed: {0}")]
    BadToken(String),
    #[error("the node credential is malformed")]
    BadCredential,
}

/// What a node says first on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// First contact: send the cluster CA (the node checks it against its join token's hash).
    GetCa,
    /// Join with the secret of the join token; answered with a node credential.
    Join { node_name: String, secret: String },
    /// A node that has its credential.
    Node { credential: String },
}

/// The master's answer to a [`Hello`]. A refusal closes the connection with
/// [`close_code::UNAUTHENTICATED`] and the reason instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    Ca { pem: String },
    Joined { credential: String, master: String },
    Accepted { master: String },
}

/// An API request, as over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    pub path_and_query: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The status and media type of a response; its body follows in [`Chunk`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    pub status: u16,
    pub content_type: String,
}

/// A piece of a response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk(pub Vec<u8>);

/// A stream the master opens on a node's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Callback {
    Logs(LogRequest),
    /// The node's and its pods' CPU and memory use (answered with [`NodeStats`] as JSON).
    Stats(StatsRequest),
}

/// The most bytes of a node's [`NodeStats`] answer a master reads.
pub const STATS_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The most containers a node reports in one [`NodeStats`].
pub const STATS_CONTAINERS_MAX: usize = 4096;

/// What a master asks a node's stats for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {
    /// Only pods of this namespace (empty: every pod).
    pub namespace: String,
}

/// CPU and memory use of a node and of the containers of its pods, as the kubelet's summary
/// API gives metrics-server: CPU as a rate over a window between two cumulative samples,
/// memory as the working set (usage minus inactive file pages) at the sample.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub node: String,
    pub usage: Usage,
    pub pods: Vec<PodStats>,
}

/// One measurement: when it was taken, the window its CPU rate covers, the values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// When the (last) sample was taken, milliseconds since the Unix epoch.
    pub timestamp_unix_ms: i64,
    /// The time between the two samples the CPU rate comes from.
    pub window_ms: u64,
    /// CPU in billionths of a core.
    pub cpu_nanocores: u64,
    pub memory_working_set_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStats {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub name: String,
    pub usage: Usage,
}

/// `pods/NAME/log`, as the API's query parameters say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// Empty: the pod's only container.
    pub container: String,
    pub follow: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<i64>,
}

/// Encodes one frame: the length, then the postcard bytes.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, NodeLinkError> {
    let mut frame = postcard::to_extend(value, vec![0u8; FRAME_HEADER_BYTES])
        .map_err(|e| NodeLinkError::Encode(e.to_string()))?;
    let body_len = frame.len() - FRAME_HEADER_BYTES;
    if body_len > FRAME_BYTES_MAX {
        return Err(NodeLinkError::TooLarge(body_len));
    }
    // Fits in a u32: checked against FRAME_BYTES_MAX above.
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(frame)
}

/// The body length a frame header announces, refused above `limit` (at most
/// [`FRAME_BYTES_MAX`]).
pub fn frame_len(header: [u8; FRAME_HEADER_BYTES], limit: usize) -> Result<usize, NodeLinkError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > limit.min(FRAME_BYTES_MAX) {
        return Err(NodeLinkError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame's body (without its length).
pub fn decode_body<T: DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, NodeLinkError> {
    postcard::from_bytes(body).map_err(|e| NodeLinkError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Decodes the first frame of `buf`: the value and the bytes it took, or `None` when `buf`
/// does not hold a whole frame yet.
pub fn decode_frame<T: DeserializeOwned>(
    what: &'static str,
    buf: &[u8],
) -> Result<Option<(T, usize)>, NodeLinkError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let mut len = [0u8; FRAME_HEADER_BYTES];
    len.copy_from_slice(header);
    let len = frame_len(len, FRAME_BYTES_MAX)?;
    let Some(body) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(what, body)?, FRAME_HEADER_BYTES + len)))
}

/// A join token: `K10<sha256 hex of the cluster CA's DER>::<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex of the SHA-256 of the CA certificate's DER.
    pub ca_hash: String,
    pub secret: String,
}

impl JoinToken {
    pub fn parse(text: &str) -> Result<JoinToken, NodeLinkError> {
        let text = text.trim();
        let rest = text.strip_prefix(JOIN_TOKEN_PREFIX).ok_or_else(|| {
            NodeLinkError::BadToken(format!("it does not start with {JOIN_TOKEN_PREFIX}"))
        })?;
        let (hash, secret) = rest
            .split_once("::")
            .ok_or_else(|| NodeLinkError::BadToken("it has no `::`".to_string()))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NodeLinkError::BadToken(
                "the CA hash is not 64 hex digits".to_string(),
            ));
        }
        if secret.is_empty() || secret.len() > 256 {
            return Err(NodeLinkError::BadToken(
                "the secret is empty or too long".to_string(),
            ));
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    pub fn format(ca_hash: &str, secret: &str) -> String {
        format!("{JOIN_TOKEN_PREFIX}{ca_hash}::{secret}")
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex (either case); `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// The HMAC message of a node's credential.
pub fn credential_message(node_name: &str) -> Vec<u8> {
    format!("node:{node_name}").into_bytes()
}

/// A credential: `keelson-node:<name>:<hex mac>`.
pub fn format_credential(node_name: &str, mac_hex: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{node_name}:{mac_hex}")
}

/// The node name and hex MAC of a credential.
pub fn parse_credential(text: &str) -> Result<(&str, &str), NodeLinkError> {
    let rest = text
        .strip_prefix(CREDENTIAL_PREFIX)
        .ok_or(NodeLinkError::BadCredential)?;
    let (name, mac) = rest.rsplit_once(':').ok_or(NodeLinkError::BadCredential)?;
    if name.is_empty() || name.len() > 253 || mac.len() != 64 {
        return Err(NodeLinkError::BadCredential);
    }
    if !mac.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NodeLinkError::BadCredential);
    }
    Ok((name, mac))
}

/// The API query of a log request, as `pods/NAME/log` takes it (`None` is invalid input).
pub fn log_request_from_query(
    namespace: &str,
    pod: &str,
    pod_uid: &str,
    param: impl Fn(&str) -> Option<String>,
) -> Result<LogRequest, String> {
    let flag = |name: &str| matches!(param(name).as_deref(), Some("true") | Some("1"));
    let number = |name: &str| -> Result<Option<i64>, String> {
        match param(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| format!("{name} must be a non-negative integer, not {v:?}")),
        }
    };
    Ok(LogRequest {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        pod_uid: pod_uid.to_string(),
        container: param("container").unwrap_or_default(),
        follow: flag("follow"),
        tail_lines: number("tailLines")?,
        since_seconds: number("sinceSeconds")?,
        since_time: param("sinceTime").filter(|s| !s.is_empty()),
        timestamps: flag("timestamps"),
        previous: flag("previous"),
        limit_bytes: number("limitBytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let frame = encode_frame(&value).unwrap();
        let (back, used): (T, usize) = decode_frame("test", &frame).unwrap().unwrap();
        assert_eq!(back, value);
        assert_eq!(used, frame.len());
        // A partial frame is not decoded yet.
        assert!(decode_frame::<T>("test", &frame[..frame.len() - 1])
            .unwrap()
            .is_none());
    }

    #[test]
    fn node_link_messages_round_trip() {
        round_trip(Hello::GetCa);
        round_trip(Hello::Join {
            node_name: "n1".into(),
            secret: "s".into(),
        });
        round_trip(Welcome::Accepted { master: "m".into() });
        round_trip(Request {
            method: "GET".into(),
            path_and_query: "/api/v1/pods?watch=1".into(),
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        });
        round_trip(ResponseHead {
            status: 200,
            content_type: "text/plain".into(),
        });
        round_trip(Chunk(vec![1, 2, 3]));
        round_trip(Callback::Logs(LogRequest {
            namespace: "default".into(),
            pod: "p".into(),
            tail_lines: Some(10),
            ..LogRequest::default()
        }));
        round_trip(Callback::Stats(StatsRequest {
            namespace: "ns".into(),
        }));
    }

    #[test]
    fn node_link_frames_over_the_limit_are_refused() {
        let header = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert_eq!(
            frame_len(header, FRAME_BYTES_MAX),
            Err(NodeLinkError::TooLarge(FRAME_BYTES_MAX + 1))
        );
        assert_eq!(
            frame_len(100u32.to_be_bytes(), 50),
            Err(NodeLinkError::TooLarge(100))
        );
        assert!(matches!(
            decode_frame::<Chunk>("chunk", &header),
            Err(NodeLinkError::TooLarge(_))
        ));
        assert!(matches!(
            encode_frame(&Chunk(vec![0; FRAME_BYTES_MAX + 1])),
            Err(NodeLinkError::TooLarge(_))
        ));
        let big = encode_frame(&Chunk(vec![7; FRAME_BYTES_MAX - 8])).unwrap();
        assert!(decode_frame::<Chunk>("chunk", &big).unwrap().is_some());
    }

    #[test]
    fn node_link_join_tokens_parse() {
        let hash = "ab".repeat(32);
        type Want<'a> = Option<(&'a str, &'a str)>;
        let cases: Vec<(String, Want<'_>)> = vec![
            (
                JoinToken::format(&hash, "secret"),
                Some((hash.as_str(), "secret")),
            ),
            (
                format!(" {} \n", JoinToken::format(&hash, "s")),
                Some((hash.as_str(), "s")),
            ),
            (format!("K11{hash}::s"), None),
            (format!("K10{hash}:s"), None),
            ("K10abc::s".to_string(), None),
            (format!("K10{hash}::"), None),
        ];
        for (text, want) in cases {
            let got = JoinToken::parse(&text);
            match want {
                Some((h, s)) => {
                    let token = got.unwrap();
                    assert_eq!((token.ca_hash.as_str(), token.secret.as_str()), (h, s));
                }
                None => assert!(got.is_err(), "{text:?} should be refused"),
            }
        }
    }

    #[test]
    fn node_link_hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("AB"), Some(vec![0xab]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None);
    }

    #[test]
    fn node_link_credentials_parse() {
        let mac = "0f".repeat(32);
        let credential = format_credential("node-1", &mac);
        assert_eq!(parse_credential(&credential), Ok(("node-1", mac.as_str())));
        for bad in [
            "keelson-node::".to_string(),
            format!("keelson-node:{}", mac),
            format!("other:n:{mac}"),
            format!("keelson-node:n:{}", "zz".repeat(32)),
            "keelson-node:n:abc".to_string(),
        ] {
            assert!(parse_credential(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_link_log_requests_come_from_the_query() {
        let query = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let request = log_request_from_query(
            "ns",
            "p",
            "u",
            query(&[
                ("container", "c"),
                ("follow", "true"),
                ("tailLines", "10"),
                ("sinceSeconds", "5"),
                ("timestamps", "1"),
                ("limitBytes", "100"),
                ("sinceTime", "2026-01-01T00:00:00Z"),
            ]),
        )
        .unwrap();
        assert_eq!(
            request,
            LogRequest {
                namespace: "ns".into(),
                pod: "p".into(),
                pod_uid: "u".into(),
                container: "c".into(),
                follow: true,
                tail_lines: Some(10),
                since_seconds: Some(5),
                since_time: Some("2026-01-01T00:00:00Z".into()),
                timestamps: true,
                previous: false,
                limit_bytes: Some(100),
            }
        );
        let empty = log_request_from_query("ns", "p", "u", query(&[])).unwrap();
        assert_eq!(empty.container, "");
        assert!(!empty.follow && empty.tail_lines.is_none());
        assert!(log_request_from_query("ns", "p", "u", query(&[("tailLines", "-1")])).is_err());
        assert!(log_request_from_query("ns", "p", "u", query(&[("limitBytes", "x")])).is_err());
    }
}
