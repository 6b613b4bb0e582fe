//! A one-layer busybox image built from the host's static busybox, so a node without registry
//! access still has an image to run (`keelson.local/busybox:stable`).

use std::fs;
use std::path::Path;

use serde_json::json;

use super::digest;
use super::layout::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_INDEX_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, REF_NAME_ANNOTATION,
};
use super::ImageError;

/// The reference of the image built from `/bin/busybox`.
pub const BUILTIN_BUSYBOX: &str = "keelson.local/busybox:stable";

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const APPLETS: &[&str] = &[
    "[",
    "ash",
    "awk",
    "basename",
    "cat",
    "chmod",
    "chown",
    "cp",
    "cut",
    "date",
    "dd",
    "df",
    "dirname",
    "du",
    "echo",
    "env",
    "expr",
    "false",
    "find",
    "free",
    "grep",
    "gunzip",
    "gzip",
    "head",
    "hostname",
    "httpd",
    "id",
    "ifconfig",
    "ip",
    "kill",
    "less",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mkfifo",
    "more",
    "mount",
    "mv",
    "nc",
    "netstat",
    "nohup",
    "nslookup",
    "pidof",
    "ping",
    "pkill",
    "printf",
    "ps",
    "pwd",
    "readlink",
    "realpath",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sh",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "sync",
    "tail",
    "tar",
    "tee",
    "test",
    "timeout",
    "top",
    "touch",
    "tr",
    "true",
    "umount",
    "uname",
    "uniq",
    "uptime",
    "usleep",
    "vi",
    "watch",
    "wc",
    "wget",
    "which",
    "whoami",
    "xargs",
    "yes",
];

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The layer's uncompressed tar.
fn layer_tar(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("var", 0o755),
    ] {
        b.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            dir,
            &[][..],
        )?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", busybox)?;
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    for (path, content) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let mut h = header(tar::EntryType::Regular, 0o644, content.len() as u64);
        b.append_data(&mut h, path, content.as_bytes())?;
    }
    b.into_inner()
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, u64), ImageError> {
    let digest = digest::of_bytes(bytes);
    let path = blobs.join(digest::sha256_hex(&digest)?);
    fs::write(&path, bytes).map_err(|e| ImageError::io(path.display(), e))?;
    Ok((digest, bytes.len() as u64))
}

fn to_json(value: &serde_json::Value) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|e| ImageError::Io(format!("encoding json: {e}")))
}

/// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) to `out_dir`:
/// one gzip layer with `bin/busybox`, symlinks for the common applets, `etc/passwd`,
/// `etc/group` (root and nobody) and `tmp/`; config `Cmd ["sh"]` and a `PATH`. The index
/// names the manifest `reference` (annotation `org.opencontainers.image.ref.name`).
/// The output is reproducible: all times are zero.
pub fn build_busybox_oci_layout(
    busybox: &Path,
    out_dir: &Path,
    reference: &str,
) -> Result<(), ImageError> {
    let binary = fs::read(busybox).map_err(|e| ImageError::io(busybox.display(), e))?;
    let tar = layer_tar(&binary).map_err(|e| ImageError::io("building busybox layer", e))?;
    let diff_id = digest::of_bytes(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).map_err(|e| ImageError::io("compressing layer", e))?;
    let layer = gz
        .finish()
        .map_err(|e| ImageError::io("compressing layer", e))?;

    let blobs = out_dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| ImageError::io(blobs.display(), e))?;
    let (layer_digest, layer_size) = write_blob(&blobs, &layer)?;
    let config = to_json(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Cmd": ["sh"], "Env": [PATH_ENV] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))?;
    let (config_digest, config_size) = write_blob(&blobs, &config)?;
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": IMAGE_CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": IMAGE_LAYER_GZIP_MEDIA_TYPE, "digest": layer_digest, "size": layer_size }],
    }))?;
    let (manifest_digest, manifest_size) = write_blob(&blobs, &manifest)?;
    let index = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": IMAGE_MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": { REF_NAME_ANNOTATION: reference },
        }],
    }))?;
    for (name, bytes) in [
        ("index.json", index),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ] {
        let path = out_dir.join(name);
        fs::write(&path, bytes).map_err(|e| ImageError::io(path.display(), e))?;
    }
    Ok(())
}
