//! The node's answer to the masters' log callbacks: a container's log file rendered per the
//! request (tail, since, timestamps, limit), and followed while the container runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use keelson_api::node_link::LogRequest;

use super::logs::{self, LogOptions};
use super::{LogError, LogSource};
use crate::link::{CallbackError, Callbacks, LogStream};

pub struct LogCallbacks {
    pub source: LogSource,
}

fn options(request: &LogRequest) -> Result<LogOptions, CallbackError> {
    let since = match (&request.since_time, request.since_seconds) {
        (Some(text), _) if !text.is_empty() => {
            let ts: jiff::Timestamp = text
                .parse()
                .map_err(|e| CallbackError::bad_request(format!("sinceTime {text:?}: {e}")))?;
            Some(SystemTime::from(ts))
        }
        (_, Some(seconds)) if seconds > 0 => {
            SystemTime::now().checked_sub(Duration::from_secs(seconds as u64))
        }
        _ => None,
    };
    Ok(LogOptions {
        tail_lines: request.tail_lines.filter(|n| *n >= 0).map(|n| n as usize),
        since,
        timestamps: request.timestamps,
        limit_bytes: request.limit_bytes.filter(|n| *n > 0).map(|n| n as usize),
        follow: request.follow,
    })
}

impl Callbacks for LogCallbacks {
    fn logs(&self, request: LogRequest) -> BoxFuture<'static, Result<LogStream, CallbackError>> {
        let source = self.source.clone();
        Box::pin(async move {
            let container = Some(request.container.as_str()).filter(|c| !c.is_empty());
            let path = source
                .path(
                    &request.namespace,
                    &request.pod,
                    container,
                    request.previous,
                )
                .map_err(|e| match e {
                    LogError::NotFound(m) => CallbackError::not_found(m),
                    LogError::BadRequest(m) => CallbackError::bad_request(m),
                })?;
            let options = options(&request)?;
            let first = logs::read(&path, &options)
                .map_err(|e| CallbackError::not_found(format!("cannot read the log: {e}")))?;
            if !options.follow || request.previous {
                let stream = futures::stream::iter([Ok(first.into_bytes())]);
                return Ok(Box::pin(stream) as LogStream);
            }
            let offset = logs::end_of(&path);
            let source = Arc::new(source);
            let stream = futures::stream::unfold(
                (Some(first), offset, path, source, options),
                |(first, offset, path, source, options)| async move {
                    if let Some(first) = first {
                        return Some((
                            Ok(first.into_bytes()),
                            (None, offset, path, source, options),
                        ));
                    }
                    let mut offset = offset;
                    loop {
                        match logs::read_from(&path, offset, &options) {
                            Ok((text, next)) => {
                                offset = next;
                                if !text.is_empty() {
                                    let bytes = text.into_bytes();
                                    return Some((
                                        Ok(bytes),
                                        (None, offset, path, source, options),
                                    ));
                                }
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "a followed log cannot be read; ending");
                                return None;
                            }
                        }
                        if !source.running(&path) {
                            return None;
                        }
                        tokio::time::sleep(logs::FOLLOW_POLL).await;
                    }
                },
            );
            Ok(Box::pin(stream) as LogStream)
        })
    }
}
