//! Unpacking one layer (a tar, gzip-compressed or not) into a directory for overlayfs:
//! paths escaping the root are refused, whiteouts become overlay whiteouts (`.wh.<name>` → a
//! 0:0 character device, `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory), and
//! symlinks, hard links, permissions, ownership and extended attributes are kept.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The path of an entry below the root, or an error when it is absolute or has `..`.
/// `./` components are dropped; the root itself is the empty path.
pub(crate) fn safe_relative(path: &Path) -> Result<PathBuf, ImageError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ImageError::Corrupt(format!(
                    "layer entry {} escapes the layer root",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Creates the directories of `relative` below `root` one by one, refusing to go through a
/// symlink (which could point outside the root). Returns the full path.
fn make_dirs_inside(root: &Path, relative: &Path) -> Result<PathBuf, ImageError> {
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::Corrupt(format!(
                    "layer entry below {} which is not a directory",
                    current.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&current).map_err(|e| ImageError::io(current.display(), e))?;
            }
            Err(e) => return Err(ImageError::io(current.display(), e)),
        }
    }
    Ok(current)
}

/// Removes whatever is at `path` (nothing there is fine).
fn remove_existing(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| ImageError::io(path.display(), e))
}

/// Unpacks a layer from `reader` (plain or gzip tar; zstd is refused) into `dest`, which
/// must exist.
pub(crate) fn unpack_layer(reader: impl Read, dest: &Path) -> Result<(), ImageError> {
    let mut reader = BufReader::new(reader);
    let magic = reader
        .fill_buf()
        .map_err(|e| ImageError::io("reading layer", e))?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        unpack_tar(flate2::read::MultiGzDecoder::new(reader), dest)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(ImageError::Corrupt(
            "zstd-compressed layers are not supported".to_string(),
        ))
    } else {
        unpack_tar(reader, dest)
    }
}

fn unpack_tar(reader: impl Read, dest: &Path) -> Result<(), ImageError> {
    let corrupt = |e: std::io::Error| ImageError::Corrupt(format!("layer tar: {e}"));
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = entry.path().map_err(corrupt)?.into_owned();
        let relative = safe_relative(&raw_path)?;
        let (Some(name), Some(parent)) = (relative.file_name(), relative.parent()) else {
            continue; // the root directory itself
        };
        let name = name.to_string_lossy().into_owned();
        if name == OPAQUE_WHITEOUT {
            let dir = make_dirs_inside(dest, parent)?;
            xattr::set(&dir, OPAQUE_XATTR, b"y")
                .map_err(|e| ImageError::io(format!("{}: set {OPAQUE_XATTR}", dir.display()), e))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(ImageError::Corrupt(format!(
                    "malformed whiteout {}",
                    raw_path.display()
                )));
            }
            let target = make_dirs_inside(dest, parent)?.join(hidden);
            remove_existing(&target)?;
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| {
                ImageError::io(format!("{}: mknod whiteout", target.display()), e.into())
            })?;
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            let link = entry.link_name().map_err(corrupt)?.ok_or_else(|| {
                ImageError::Corrupt(format!("hard link {} without target", raw_path.display()))
            })?;
            safe_relative(&link)?;
        }
        make_dirs_inside(dest, parent)?;
        let full = dest.join(&relative);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() && kind.is_dir() => {}
            Ok(_) => remove_existing(&full)?,
            Err(_) => {}
        }
        if !entry.unpack_in(dest).map_err(corrupt)? {
            return Err(ImageError::Corrupt(format!(
                "layer entry {} escapes the layer root",
                raw_path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

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

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, content: &[u8], mode: u32) {
        let mut h = header(tar::EntryType::Regular, mode, content.len() as u64);
        b.append_data(&mut h, path, content).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, path, &[][..]).unwrap();
    }

    /// An entry whose name is written raw, bypassing the builder's own path checks.
    fn raw(b: &mut tar::Builder<Vec<u8>>, path: &str, content: &[u8]) {
        let mut h = header(tar::EntryType::Regular, 0o644, content.len() as u64);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, content).unwrap();
    }

    fn unpack(
        build: impl FnOnce(&mut tar::Builder<Vec<u8>>),
        dest: &Path,
    ) -> Result<(), ImageError> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let bytes = b.into_inner().unwrap();
        unpack_layer(&bytes[..], dest)
    }

    #[test]
    fn entries_whiteouts_and_links() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path();
        unpack(
            |b| {
                dir(b, "./");
                dir(b, "./bin");
                file(b, "./bin/tool", b"#!/bin/sh\n", 0o755);
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, "bin/sh", "/bin/tool").unwrap();
                let mut h = header(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, "bin/hard", "bin/tool").unwrap();
                file(b, "etc/.wh.removed", b"", 0o644);
                file(b, "var/lib/.wh..wh..opq", b"", 0o644);
                file(b, "bin/tool2", b"old", 0o644);
                file(b, "bin/tool2", b"new", 0o600);
            },
            dest,
        )
        .unwrap();
        let tool = fs::metadata(dest.join("bin/tool")).unwrap();
        assert_eq!(tool.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dest.join("bin/sh")).unwrap(),
            Path::new("/bin/tool")
        );
        assert_eq!(
            fs::metadata(dest.join("bin/hard")).unwrap().ino(),
            tool.ino()
        );
        let whiteout = fs::symlink_metadata(dest.join("etc/removed")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!dest.join("etc/.wh.removed").exists());
        assert_eq!(
            xattr::get(dest.join("var/lib"), OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert!(!dest.join("var/lib/.wh..wh..opq").exists());
        assert_eq!(fs::read(dest.join("bin/tool2")).unwrap(), b"new");
        assert_eq!(
            fs::metadata(dest.join("bin/tool2"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn escapes_are_refused() {
        type Build = fn(&mut tar::Builder<Vec<u8>>);
        let cases: &[(&str, Build)] = &[
            ("dot-dot", |b| raw(b, "../evil", b"x")),
            ("nested dot-dot", |b| raw(b, "a/../../evil", b"x")),
            ("absolute", |b| raw(b, "/tmp/evil", b"x")),
            ("through a symlink", |b| {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, "out", "/tmp").unwrap();
                file(b, "out/evil", b"x", 0o644);
            }),
            ("whiteout through a symlink", |b| {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, "out", "/tmp").unwrap();
                file(b, "out/.wh.evil", b"", 0o644);
            }),
        ];
        for (name, build) in cases {
            let root = tempfile::tempdir().unwrap();
            let dest = root.path().join("layer");
            fs::create_dir(&dest).unwrap();
            let result = unpack(build, &dest);
            assert!(
                matches!(result, Err(ImageError::Corrupt(_))),
                "{name}: {result:?}"
            );
            assert!(!root.path().join("evil").exists(), "{name}");
        }
    }

    #[test]
    fn gzip_layers_unpack_and_zstd_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "hello", b"world", 0o644);
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let root = tempfile::tempdir().unwrap();
        unpack_layer(&gz[..], root.path()).unwrap();
        assert_eq!(fs::read(root.path().join("hello")).unwrap(), b"world");
        let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0, 0];
        assert!(matches!(
            unpack_layer(&zstd[..], root.path()),
            Err(ImageError::Corrupt(_))
        ));
    }
}
