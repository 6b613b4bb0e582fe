//! The watch stream: newline-delimited JSON events (`{"type": ..., "object": ...}`), with a
//! bound on the length of one line.

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::Value;

use crate::client::{ApiError, Status};

/// The longest watch event line accepted.
pub(crate) const WATCH_LINE_BYTES_MAX: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error("a watch event is longer than {WATCH_LINE_BYTES_MAX} bytes")]
    LineTooLong,
    #[error("cannot decode a watch event: {0}")]
    Decode(serde_json::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct WatchEvent {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) object: Value,
}

impl WatchEvent {
    /// The `Status` carried by an `ERROR` event.
    pub(crate) fn error_status(&self) -> Status {
        serde_json::from_value::<Status>(self.object.clone()).unwrap_or_else(|_| Status {
            message: self.object.to_string(),
            ..Status::default()
        })
    }
}

/// Splits a byte stream into lines (sans I/O).
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes, returning the complete non-empty lines they finish.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, WatchError> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..at]);
            let line = std::mem::take(&mut self.partial);
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line);
            }
            rest = &rest[at + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > WATCH_LINE_BYTES_MAX {
            return Err(WatchError::LineTooLong);
        }
        Ok(lines)
    }

    /// The unterminated last line, if any, when the stream ends.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.partial);
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

pub(crate) fn decode_event(line: &[u8]) -> Result<WatchEvent, WatchError> {
    serde_json::from_slice(line).map_err(WatchError::Decode)
}

/// An open watch response, read event by event.
pub(crate) struct WatchStream {
    response: reqwest::Response,
    splitter: LineSplitter,
    pending: VecDeque<Vec<u8>>,
    ended: bool,
}

impl WatchStream {
    pub(crate) fn new(response: reqwest::Response) -> WatchStream {
        WatchStream {
            response,
            splitter: LineSplitter::default(),
            pending: VecDeque::new(),
            ended: false,
        }
    }

    /// The next event; `None` when the server ends the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<WatchEvent>, WatchError> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return decode_event(&line).map(Some);
            }
            if self.ended {
                return Ok(None);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.pending.extend(self.splitter.push(&chunk)?),
                Ok(None) => {
                    self.ended = true;
                    self.pending.extend(self.splitter.finish());
                }
                Err(err) => {
                    return Err(WatchError::Api(ApiError::Connect(format!(
                        "watch stream broken: {err}"
                    ))))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_split_across_chunks() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(b"{\"type\":\"ADD").unwrap().is_empty());
        let lines = splitter
            .push(b"ED\",\"object\":{}}\n\n{\"type\":\"BOOKMARK\",\"object\":{}}\n{\"ty")
            .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(decode_event(&lines[0]).unwrap().kind, "ADDED");
        assert_eq!(decode_event(&lines[1]).unwrap().kind, "BOOKMARK");
        splitter.push(b"pe\":\"DELETED\",\"object\":{}}").unwrap();
        let last = splitter.finish().unwrap();
        assert_eq!(decode_event(&last).unwrap().kind, "DELETED");
        assert!(splitter.finish().is_none());
    }

    #[test]
    fn long_lines_are_refused() {
        let mut splitter = LineSplitter::default();
        let big = vec![b'x'; WATCH_LINE_BYTES_MAX + 1];
        assert!(matches!(splitter.push(&big), Err(WatchError::LineTooLong)));
    }

    #[test]
    fn error_events_carry_a_status() {
        let line = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "too old resource version: 5 (90)", "reason": "Expired", "code": 410}})
        .to_string();
        let event = decode_event(line.as_bytes()).unwrap();
        let status = event.error_status();
        assert_eq!(status.code, 410);
        assert_eq!(status.reason, "Expired");
    }
}
