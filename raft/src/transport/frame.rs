//! Length-prefixed postcard frames on QUIC streams: a big-endian u32 length, then the bytes.

use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{decode, encode};

/// The largest frame either side accepts: above the largest transaction (4 MiB) and snapshot
/// chunk (3 MiB) with room for their envelopes.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge(usize),
    #[error("stream: {0}")]
    Io(String),
    #[error("{0}")]
    Decode(String),
}

pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let body = encode(value);
    if body.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(body.len() + 4);
    // Fits: checked against FRAME_BYTES_MAX above.
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

pub(crate) async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    value: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(value)?;
    send.write_all(&frame)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))
}

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly before a frame.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FrameError::Io(e.to_string())),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))?;
    decode("frame", &body)
        .map(Some)
        .map_err(|e| FrameError::Decode(e.to_string()))
}
