//! Content digests: parsing `sha256:<hex>`, hashing, and checking blobs against their digest.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ImageError;

/// The hex part of a `sha256:<64 lowercase hex>` digest; other algorithms are refused.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ImageError::Corrupt(format!("unsupported digest {digest:?}")))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ImageError::Corrupt(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

/// Lower-case hex of a finished hash.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn of_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", to_hex(&Sha256::digest(bytes)))
}

/// Checks `bytes` against `expected`.
pub(crate) fn verify(bytes: &[u8], expected: &str) -> Result<(), ImageError> {
    sha256_hex(expected)?;
    let actual = of_bytes(bytes);
    if actual != expected {
        return Err(ImageError::Corrupt(format!(
            "digest mismatch: expected {expected}, got {actual}"
        )));
    }
    Ok(())
}

/// Incremental hashing with a size limit, for blobs written in chunks.
pub(crate) struct Hasher {
    hasher: Sha256,
    bytes: u64,
    bytes_max: u64,
}

impl Hasher {
    pub(crate) fn new(bytes_max: u64) -> Hasher {
        Hasher {
            hasher: Sha256::new(),
            bytes: 0,
            bytes_max,
        }
    }

    pub(crate) fn update(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.bytes += chunk.len() as u64;
        if self.bytes > self.bytes_max {
            return Err(ImageError::Corrupt(format!(
                "blob larger than {} bytes",
                self.bytes_max
            )));
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Checks the hashed content against `expected`.
    pub(crate) fn finish(self, expected: &str) -> Result<u64, ImageError> {
        let actual = format!("sha256:{}", to_hex(&self.hasher.finalize()));
        if actual != expected {
            return Err(ImageError::Corrupt(format!(
                "digest mismatch: expected {expected}, got {actual}"
            )));
        }
        Ok(self.bytes)
    }
}

/// Copies `reader` into `blobs_dir/<hex>` through a temporary file, checking size and digest
/// before the rename; nothing is left behind on failure. Returns the blob's path.
pub(crate) fn copy_verified(
    mut reader: impl Read,
    blobs_dir: &Path,
    expected: &str,
    bytes_max: u64,
) -> Result<PathBuf, ImageError> {
    let hex = sha256_hex(expected)?;
    let dest = blobs_dir.join(hex);
    let mut tmp = tempfile::NamedTempFile::with_prefix_in(".tmp-", blobs_dir)
        .map_err(|e| ImageError::io(blobs_dir.display(), e))?;
    let mut hasher = Hasher::new(bytes_max);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| ImageError::io(format!("reading blob {expected}"), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n])?;
        tmp.write_all(&buf[..n])
            .map_err(|e| ImageError::io(tmp.path().display(), e))?;
    }
    hasher.finish(expected)?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| ImageError::io(tmp.path().display(), e))?;
    tmp.persist(&dest)
        .map_err(|e| ImageError::io(dest.display(), e.error))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_are_parsed_and_checked() {
        assert!(sha256_hex(EMPTY).is_ok());
        for bad in [
            "sha512:abc",
            "sha256:xyz",
            "e3b0",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
        assert_eq!(of_bytes(b""), EMPTY);
        assert!(verify(b"", EMPTY).is_ok());
        assert!(matches!(verify(b"x", EMPTY), Err(ImageError::Corrupt(_))));
    }

    #[test]
    fn copy_verified_leaves_nothing_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let err = copy_verified(&b"not empty"[..], dir.path(), EMPTY, 1024).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt(_)), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let path = copy_verified(&b""[..], dir.path(), EMPTY, 1024).unwrap();
        assert!(path.ends_with(sha256_hex(EMPTY).unwrap()));
        let err = copy_verified(&[0u8; 100][..], dir.path(), EMPTY, 10).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
