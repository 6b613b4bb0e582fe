//! Byte layouts of what the store writes to RocksDB and sends to peers.
//!
//! MVCC keys in the `kv` column family are `escaped(user key) 0x00 0x01 revision(u64 BE)`:
//! every `0x00` of the user key is written `0x00 0xff`, so the terminator sorts below any
//! continuation and the family is ordered by user key, then by revision.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why bytes could not be turned back into a value.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard's std serializer fails only on types serde cannot express (none of ours), so an
    // empty vector here would be a programming error caught by the round-trip tests.
    postcard::to_stdvec(value).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError {
        what,
        reason: e.to_string(),
    })
}

/// Serde for the byte strings of keys and values (`#[serde(with = "crate::codec::bytes")]`):
/// one block instead of a sequence of `u8`. postcard encodes both the same way (a varint length,
/// then the bytes), so logs, snapshots and peers are unaffected; but a sequence goes through
/// serde one byte at a time, which was the largest single cost of encoding and decoding log
/// entries and replication messages.
pub(crate) mod bytes {
    use super::{ByteBuf, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        ByteBuf::deserialize(deserializer).map(|b| b.0)
    }
}

/// [`bytes`] for a list of (key, value) byte strings (snapshot payloads).
pub(crate) mod byte_pairs {
    use super::{AsBytes, ByteBuf, Deserialize, Deserializer, Serializer};

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    pub(crate) fn serialize<S: Serializer>(
        pairs: &[(Vec<u8>, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(pairs.iter().map(|(k, v)| (AsBytes(k), AsBytes(v))))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Pairs, D::Error> {
        let pairs = Vec::<(ByteBuf, ByteBuf)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().map(|(k, v)| (k.0, v.0)).collect())
    }
}

/// [`bytes`] for an optional byte string.
pub(crate) mod opt_bytes {
    use super::{AsBytes, ByteBuf, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_some(&AsBytes(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(deserializer)?.map(|b| b.0))
    }
}

struct AsBytes<'a>(&'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ByteBuf;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }

            // Self-describing formats (JSON) write bytes as a sequence of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

pub(crate) fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub(crate) fn read_u64(what: &'static str, bytes: &[u8]) -> Result<u64, DecodeError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| DecodeError {
        what,
        reason: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

const TERMINATOR: [u8; 2] = [0x00, 0x01];

/// The prefix shared by every version of `user_key`.
pub(crate) fn mvcc_prefix(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + 10);
    for &b in user_key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&TERMINATOR);
    out
}

/// The shortest `kv` key: an empty user key's terminator and a revision.
pub(crate) const MVCC_KEY_BYTES_MIN: usize = TERMINATOR.len() + 8;

/// The part of a `kv` key shared by every version of its user key: `mvcc_prefix(user key)`.
/// RocksDB's prefix extractor for the family; only called on keys of at least
/// [`MVCC_KEY_BYTES_MIN`] bytes.
pub(crate) fn mvcc_key_prefix(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(8)]
}

/// The `kv` key of `user_key` at `revision`.
pub(crate) fn mvcc_key(user_key: &[u8], revision: u64) -> Vec<u8> {
    let mut out = mvcc_prefix(user_key);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

/// The first `kv` key at or after every version of keys `>= user_key`.
pub(crate) fn mvcc_seek(user_key: &[u8]) -> Vec<u8> {
    let mut out = mvcc_prefix(user_key);
    out.truncate(out.len() - TERMINATOR.len());
    out
}

/// Splits a `kv` key into the user key and the revision.
pub(crate) fn split_mvcc_key(bytes: &[u8]) -> Result<(Vec<u8>, u64), DecodeError> {
    let corrupt = |reason: &str| DecodeError {
        what: "mvcc key",
        reason: reason.to_string(),
    };
    if bytes.len() < 10 {
        return Err(corrupt("shorter than terminator and revision"));
    }
    let (escaped, revision) = bytes.split_at(bytes.len() - 8);
    let revision = read_u64("mvcc revision", revision)?;
    let mut user_key = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let b = escaped[i];
        if b != 0 {
            user_key.push(b);
            i += 1;
            continue;
        }
        match escaped.get(i + 1) {
            Some(0xff) => {
                user_key.push(0);
                i += 2;
            }
            Some(0x01) if i + 2 == escaped.len() => return Ok((user_key, revision)),
            _ => return Err(corrupt("bad escape")),
        }
    }
    Err(corrupt("missing terminator"))
}

/// The `revs` key of the `sub`-th change within `revision`.
pub(crate) fn rev_key(revision: u64, sub: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&revision.to_be_bytes());
    out[8..].copy_from_slice(&sub.to_be_bytes());
    out
}

pub(crate) fn split_rev_key(bytes: &[u8]) -> Result<(u64, u32), DecodeError> {
    if bytes.len() != 12 {
        return Err(DecodeError {
            what: "revision key",
            reason: format!("expected 12 bytes, found {}", bytes.len()),
        });
    }
    let revision = read_u64("revision key", &bytes[..8])?;
    let mut sub = [0u8; 4];
    sub.copy_from_slice(&bytes[8..]);
    Ok((revision, u32::from_be_bytes(sub)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn mvcc_keys_round_trip_and_keep_order(
            a in proptest::collection::vec(any::<u8>(), 0..12),
            b in proptest::collection::vec(any::<u8>(), 0..12),
            ra in any::<u64>(),
            rb in any::<u64>(),
        ) {
            let ka = mvcc_key(&a, ra);
            prop_assert_eq!(split_mvcc_key(&ka).unwrap(), (a.clone(), ra));
            let kb = mvcc_key(&b, rb);
            prop_assert_eq!(ka.cmp(&kb), (&a, ra).cmp(&(&b, rb)));
            // Seeking to a key lands at or before every version of it and of later keys.
            prop_assert!(mvcc_seek(&a).as_slice() <= ka.as_slice());
            if a < b {
                prop_assert!(ka.as_slice() < mvcc_seek(&b).as_slice());
            }
        }
    }

    /// The same fields with serde's default (a sequence of `u8`) and with [`bytes`].
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Block {
        #[serde(with = "bytes")]
        key: Vec<u8>,
        #[serde(with = "opt_bytes")]
        value: Option<Vec<u8>>,
        #[serde(with = "byte_pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    }

    proptest! {
        #[test]
        fn byte_strings_encode_as_before(
            key in proptest::collection::vec(any::<u8>(), 0..300),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..40)),
                0..20,
            ),
        ) {
            let plain = Plain { key: key.clone(), value: value.clone(), pairs: pairs.clone() };
            let block = Block { key, value, pairs };
            let plain_bytes = encode(&plain);
            prop_assert_eq!(&encode(&block), &plain_bytes);
            prop_assert_eq!(decode::<Block>("block", &plain_bytes).unwrap(), block);
        }
    }

    #[test]
    fn corrupt_mvcc_keys_are_errors() {
        assert!(split_mvcc_key(b"short").is_err());
        assert!(split_mvcc_key(&[b'a', 0, 7, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(split_mvcc_key(&[b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
