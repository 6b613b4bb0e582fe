//! A lazy filesystem for the "lost unsynced writes" nemesis, like Jepsen's LazyFS: a FUSE
//! passthrough over a backing directory, run in-process, that keeps file data in memory until
//! the file is fsynced and can drop every unsynced write at once, as a power loss would.
//!
//! Semantics (what the nemesis relies on):
//! - **Only file data is lazy.** `write` lands in a per-file list of pending extents; `fsync`
//!   and `fdatasync` on the file write its extents to the backing file. Metadata operations
//!   (create, mkdir, unlink, rename, rmdir, link, symlink, setattr, truncate, fallocate) are
//!   applied to the backing directory at once, so they survive a loss: a new file that was
//!   never fsynced keeps its name but loses its data (it is empty after the loss), and a rename
//!   is never undone. This is simpler than a real filesystem (where an unsynced directory entry
//!   may vanish) and errs on the side of keeping names, never data.
//! - **Truncate is consistent with pending data:** it is applied to the backing file, and
//!   pending extents beyond the new size are cut off, so the file reads the same before and
//!   after a later sync; a loss afterwards keeps the truncate and drops the earlier writes.
//! - **Reads overlay pending writes** on the backing file, and `getattr` reports the size
//!   including pending writes. Every open uses direct I/O and attributes are never cached, so
//!   the kernel never serves data or a size that the layer has since dropped.
//! - **Loss:** [`LazyFs::lose_unsynced`] discards every pending extent of every file. The
//!   backing directory is the "disk": data written to it counts as durable (the layer does not
//!   fsync the backing files; the host losing power is not what this simulates).
//! - **Bounded memory (like kernel writeback):** when pending data exceeds
//!   [`PENDING_BYTES_MAX`], the file with the oldest pending write has its data written
//!   through to the backing file until the total is under the limit again; such data then
//!   survives a loss, as dirty pages the kernel wrote back would.
//! - **Clean unmount flushes:** [`LazyFs::unmount`] and `Drop` write all pending data through
//!   before unmounting.
//! - fcntl/flock locks are handled by the kernel locally (the layer does not ask for
//!   `FUSE_POSIX_LOCKS`); `fallocate` supports mode 0 (passed through) and `KEEP_SIZE` (a no-op)
//!   and returns `EOPNOTSUPP` for other modes; extended attributes are not supported.
//!
//! Mounting needs root (the pure-Rust mount calls mount(2) on `/dev/fuse` directly; a non-root
//! user would need `fusermount3` from Debian's `fuse3` package).

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use nix::fcntl::FallocateFlags;
use nix::libc;

/// Pending (unsynced) data the layer holds in memory before it writes the oldest file's data
/// through, like the kernel writing back dirty pages.
pub const PENDING_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Attributes and entries are never cached by the kernel: a loss changes sizes behind its back.
const TTL: Duration = Duration::ZERO;

/// Errors from mounting the lazy filesystem.
#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    #[error("/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or run the container with --device /dev/fuse")]
    NoFuseDevice,
    #[error("mounting FUSE needs root here (a non-root user needs fusermount3 from the Debian package fuse3)")]
    NotRoot,
    #[error("backing directory {path}: {source}")]
    Backing { path: PathBuf, source: io::Error },
    #[error("mount of the lazy filesystem on {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
}

/// What [`LazyFs::lose_unsynced`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LazyFsStats {
    /// Write calls whose data was dropped.
    pub writes: u64,
    /// Bytes of pending data dropped.
    pub bytes: u64,
    /// Files that had pending data.
    pub files: u64,
}

impl fmt::Display for LazyFsStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped {} writes, {} bytes in {} files",
            self.writes, self.bytes, self.files
        )
    }
}

/// One unsynced write (possibly several coalesced appends).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extent {
    offset: u64,
    data: Vec<u8>,
}

impl Extent {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// The pure core: a file's unsynced writes, in the order they were made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Pending {
    extents: Vec<Extent>,
    writes: u64,
    bytes: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Records a write; an append right after the previous write extends it.
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes += 1;
        self.bytes += data.len() as u64;
        if let Some(last) = self.extents.last_mut() {
            if last.end() == offset {
                last.data.extend_from_slice(data);
                return;
            }
        }
        self.extents.push(Extent {
            offset,
            data: data.to_vec(),
        });
    }

    /// The end of the furthest pending write (0 when none).
    fn end(&self) -> u64 {
        self.extents.iter().map(Extent::end).max().unwrap_or(0)
    }

    /// Cuts pending writes at `size`, as a truncate of the file does.
    fn truncate(&mut self, size: u64) {
        self.extents.retain(|e| e.offset < size);
        for e in &mut self.extents {
            if e.end() > size {
                e.data.truncate((size - e.offset) as usize);
            }
        }
        self.bytes = self.extents.iter().map(|e| e.data.len() as u64).sum();
    }

    /// Lays pending writes over `buf`, which holds the file from `offset`.
    fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let buf_end = offset + buf.len() as u64;
        for e in &self.extents {
            let start = e.offset.max(offset);
            let end = e.end().min(buf_end);
            if start >= end {
                continue;
            }
            let src = &e.data[(start - e.offset) as usize..(end - e.offset) as usize];
            buf[(start - offset) as usize..(end - offset) as usize].copy_from_slice(src);
        }
    }

    /// Takes the extents out (to write them through or drop them).
    fn take(&mut self) -> Pending {
        std::mem::take(self)
    }
}

/// One inode the kernel knows about.
#[derive(Debug)]
struct Node {
    /// Paths relative to the backing directory ("" is the root); empty once unlinked.
    paths: BTreeSet<PathBuf>,
    backing_ino: u64,
    lookups: u64,
    open_handles: u64,
    pending: Pending,
    /// Order of the first pending write, to write back the oldest file first.
    pending_since: u64,
    /// A backing file kept while data is pending, to write it through after its handles close.
    file: Option<Arc<File>>,
}

#[derive(Debug)]
enum Handle {
    File {
        ino: u64,
        file: Arc<File>,
    },
    Dir {
        entries: Vec<(u64, FileType, OsString)>,
    },
}

#[derive(Debug)]
struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    by_backing: HashMap<u64, u64>,
    handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
    write_seq: u64,
    pending_total: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in one FUSE callback must not wedge the filesystem: the state stays usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn errno(err: io::Error) -> Errno {
    Errno::from(err)
}

fn file_type(meta: &fs::Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

fn attr(ino: u64, meta: &fs::Metadata, pending_end: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size().max(pending_end),
        blocks: meta.blocks(),
        atime: system_time(meta.atime(), meta.atime_nsec()),
        mtime: system_time(meta.mtime(), meta.mtime_nsec()),
        ctime: system_time(meta.ctime(), meta.ctime_nsec()),
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(meta),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

/// Writes a file's pending extents to its backing file, in write order.
fn write_through(file: &File, pending: &Pending) -> io::Result<()> {
    for e in &pending.extents {
        file.write_all_at(&e.data, e.offset)?;
    }
    Ok(())
}

impl State {
    fn new(backing: PathBuf, root_ino: u64) -> State {
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                paths: BTreeSet::from([PathBuf::new()]),
                backing_ino: root_ino,
                lookups: 1,
                open_handles: 0,
                pending: Pending::default(),
                pending_since: 0,
                file: None,
            },
        );
        State {
            backing,
            nodes,
            by_backing: HashMap::from([(root_ino, 1)]),
            handles: HashMap::new(),
            next_ino: 2,
            next_fh: 1,
            write_seq: 0,
            pending_total: 0,
        }
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.backing.clone()
        } else {
            self.backing.join(rel)
        }
    }

    fn rel_path(&self, ino: u64) -> Result<PathBuf, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        node.paths.iter().next().cloned().ok_or(Errno::ENOENT)
    }

    fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        Ok(self.abs(&self.rel_path(ino)?))
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel_path(parent)?.join(name))
    }

    /// The node for a path that exists in the backing directory, created on first sight.
    /// Hard links share a node (keyed by the backing inode); a node whose names are all gone
    /// is not reused for a new file that happens to get the same backing inode number.
    fn register(&mut self, rel: PathBuf, meta: &fs::Metadata) -> u64 {
        let backing_ino = meta.ino();
        if let Some(&ino) = self.by_backing.get(&backing_ino) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                if !node.paths.is_empty() || node.paths.contains(&rel) {
                    node.paths.insert(rel);
                    node.lookups += 1;
                    return ino;
                }
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                paths: BTreeSet::from([rel]),
                backing_ino,
                lookups: 1,
                open_handles: 0,
                pending: Pending::default(),
                pending_since: 0,
                file: None,
            },
        );
        self.by_backing.insert(backing_ino, ino);
        ino
    }

    /// Registers `rel` and returns its attributes (with pending data counted).
    fn entry(&mut self, rel: PathBuf) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.abs(&rel)).map_err(errno)?;
        let ino = self.register(rel, &meta);
        let end = self.nodes.get(&ino).map_or(0, |n| n.pending.end());
        Ok(attr(ino, &meta, end))
    }

    fn forget_path(&mut self, rel: &Path) {
        for node in self.nodes.values_mut() {
            node.paths.remove(rel);
        }
    }

    /// Removes a node the kernel has forgotten, once nothing refers to it.
    fn maybe_drop(&mut self, ino: u64) {
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        if ino == 1 || node.lookups > 0 || node.open_handles > 0 {
            return;
        }
        if !node.pending.is_empty() && !node.paths.is_empty() {
            return;
        }
        let backing_ino = node.backing_ino;
        if let Some(node) = self.nodes.remove(&ino) {
            self.pending_total -= node.pending.bytes;
        }
        if self.by_backing.get(&backing_ino) == Some(&ino) {
            self.by_backing.remove(&backing_ino);
        }
    }

    fn metadata(&self, ino: u64, fh: Option<u64>) -> Result<fs::Metadata, Errno> {
        if let Some(Handle::File { file, .. }) = fh.and_then(|fh| self.handles.get(&fh)) {
            return file.metadata().map_err(errno);
        }
        match self.path(ino) {
            Ok(path) => fs::symlink_metadata(path).map_err(errno),
            Err(err) => match self.nodes.get(&ino).and_then(|n| n.file.as_ref()) {
                Some(file) => file.metadata().map_err(errno),
                None => Err(err),
            },
        }
    }

    fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let meta = self.metadata(ino, fh)?;
        let end = self.nodes.get(&ino).map_or(0, |n| n.pending.end());
        Ok(attr(ino, &meta, end))
    }

    /// A writable backing file for `ino`: an open handle's, the node's, or a fresh one.
    fn file_for(&self, ino: u64, fh: Option<u64>) -> Result<Arc<File>, Errno> {
        if let Some(Handle::File { file, .. }) = fh.and_then(|fh| self.handles.get(&fh)) {
            return Ok(file.clone());
        }
        if let Some(file) = self.nodes.get(&ino).and_then(|n| n.file.clone()) {
            return Ok(file);
        }
        let path = self.path(ino)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .or_else(|_| File::open(&path))
            .map_err(errno)?;
        Ok(Arc::new(file))
    }

    /// Writes `ino`'s pending data to the backing file (fsync, writeback, unmount).
    fn sync_node(&mut self, ino: u64, fh: Option<u64>) -> Result<(), Errno> {
        let has_pending = self.nodes.get(&ino).is_some_and(|n| !n.pending.is_empty());
        if !has_pending {
            return Ok(());
        }
        let file = self.file_for(ino, fh)?;
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Ok(());
        };
        write_through(&file, &node.pending).map_err(errno)?;
        let done = node.pending.take();
        self.pending_total -= done.bytes;
        if node.open_handles == 0 {
            node.file = None;
        }
        Ok(())
    }

    fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        let file = file.clone();
        let seq = self.write_seq;
        self.write_seq += 1;
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if node.pending.is_empty() {
            node.pending_since = seq;
        }
        if node.file.is_none() {
            node.file = Some(file);
        }
        let before = node.pending.bytes;
        node.pending.write(offset, data);
        self.pending_total = self.pending_total - before + node.pending.bytes;
        self.write_back_over_limit(PENDING_BYTES_MAX)
    }

    /// Writes the oldest files' pending data through until the total is within `limit`.
    fn write_back_over_limit(&mut self, limit: u64) -> Result<(), Errno> {
        while self.pending_total > limit {
            let oldest = self
                .nodes
                .iter()
                .filter(|(_, n)| !n.pending.is_empty())
                .min_by_key(|(_, n)| n.pending_since)
                .map(|(&ino, _)| ino);
            let Some(ino) = oldest else { break };
            self.sync_node(ino, None)?;
        }
        Ok(())
    }

    fn truncate(&mut self, ino: u64, fh: Option<u64>, size: u64) -> Result<(), Errno> {
        let file = self.file_for(ino, fh)?;
        file.set_len(size).map_err(errno)?;
        if let Some(node) = self.nodes.get_mut(&ino) {
            let before = node.pending.bytes;
            node.pending.truncate(size);
            self.pending_total = self.pending_total - before + node.pending.bytes;
        }
        Ok(())
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        let pending = self.nodes.get(&ino).map(|n| &n.pending);
        let backing_len = file.metadata().map_err(errno)?.len();
        let len = backing_len.max(pending.map_or(0, Pending::end));
        if offset >= len {
            return Ok(Vec::new());
        }
        let n = (len - offset).min(u64::from(size)) as usize;
        let mut buf = vec![0; n];
        let mut filled = 0;
        while filled < n {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(errno(err)),
            }
        }
        if let Some(p) = pending {
            p.overlay(offset, &mut buf);
        }
        Ok(buf)
    }

    fn open_handle(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle::File {
                ino,
                file: Arc::new(file),
            },
        );
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open_handles += 1;
        }
        fh
    }

    fn release(&mut self, fh: u64) {
        let Some(Handle::File { ino, .. }) = self.handles.remove(&fh) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open_handles = node.open_handles.saturating_sub(1);
            if node.open_handles == 0 && node.paths.is_empty() {
                // The file is gone and nobody can read it: its pending data has no home.
                let gone = node.pending.take();
                self.pending_total -= gone.bytes;
                node.file = None;
            } else if node.open_handles == 0 && node.pending.is_empty() {
                node.file = None;
            }
        }
        self.maybe_drop(ino);
    }

    fn rename(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        for node in self.nodes.values_mut() {
            let moved: Vec<PathBuf> = node
                .paths
                .iter()
                .filter(|p| p.starts_with(from))
                .cloned()
                .collect();
            for old in moved {
                node.paths.remove(&old);
                let rest = old.strip_prefix(from).unwrap_or(Path::new(""));
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                node.paths.insert(new);
            }
        }
    }

    fn flush_all(&mut self) -> Result<(), Errno> {
        let inos: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.pending.is_empty())
            .map(|(&ino, _)| ino)
            .collect();
        let mut result = Ok(());
        for ino in inos {
            if let Err(err) = self.sync_node(ino, None) {
                result = Err(err);
            }
        }
        result
    }

    fn lose_unsynced(&mut self) -> LazyFsStats {
        let mut stats = LazyFsStats::default();
        for node in self.nodes.values_mut() {
            if node.pending.is_empty() {
                continue;
            }
            let lost = node.pending.take();
            stats.files += 1;
            stats.writes += lost.writes;
            stats.bytes += lost.bytes;
            if node.open_handles == 0 {
                node.file = None;
            }
        }
        self.pending_total = 0;
        stats
    }
}

/// The FUSE side: every callback locks the shared state, does the backing I/O and replies.
struct LazyFsImpl {
    state: Arc<Mutex<State>>,
}

impl LazyFsImpl {
    fn reply_entry(&self, rel: PathBuf, reply: ReplyEntry) {
        match lock(&self.state).entry(rel) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(err) => reply.error(err),
        }
    }
}

impl Filesystem for LazyFsImpl {
    fn destroy(&mut self) {
        if let Err(err) = lock(&self.state).flush_all() {
            tracing::warn!(?err, "lazyfs: flushing pending data at unmount failed");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let rel = match lock(&self.state).child(parent.0, name) {
            Ok(rel) => rel,
            Err(err) => return reply.error(err),
        };
        self.reply_entry(rel, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut state = lock(&self.state);
        if let Some(node) = state.nodes.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
        }
        state.maybe_drop(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match lock(&self.state).getattr(ino.0, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(err) => reply.error(err),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = lock(&self.state);
        let fh = fh.map(|f| f.0);
        let result = (|| -> Result<FileAttr, Errno> {
            let path = state.path(ino.0);
            if let Some(mode) = mode {
                let perms = fs::Permissions::from_mode(mode & 0o7777);
                match &path {
                    Ok(p) => fs::set_permissions(p, perms).map_err(errno)?,
                    Err(_) => state
                        .file_for(ino.0, fh)?
                        .set_permissions(perms)
                        .map_err(errno)?,
                }
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(path.clone()?, uid, gid).map_err(errno)?;
            }
            if let Some(size) = size {
                state.truncate(ino.0, fh, size)?;
            }
            if atime.is_some() || mtime.is_some() {
                let to_time = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let mut times = FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(to_time(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(to_time(t));
                }
                let file = match &path {
                    Ok(p) => Arc::new(File::open(p).map_err(errno)?),
                    Err(_) => state.file_for(ino.0, fh)?,
                };
                file.set_times(times).map_err(errno)?;
            }
            state.getattr(ino.0, fh)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(err) => reply.error(err),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let path = match lock(&self.state).path(ino.0) {
            Ok(p) => p,
            Err(err) => return reply.error(err),
        };
        match fs::read_link(path) {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(err) => reply.error(errno(err)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let (rel, abs) = {
            let state = lock(&self.state);
            match state.child(parent.0, name) {
                Ok(rel) => {
                    let abs = state.abs(&rel);
                    (rel, abs)
                }
                Err(err) => return reply.error(err),
            }
        };
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & !umask & 0o7777)
            .open(abs);
        match created {
            Ok(_) => self.reply_entry(rel, reply),
            Err(err) => reply.error(errno(err)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = lock(&self.state);
        let result = state.child(parent.0, name).and_then(|rel| {
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(state.abs(&rel))
                .map_err(errno)?;
            state.entry(rel)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(err) => reply.error(err),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = lock(&self.state);
        let result = state.child(parent.0, name).and_then(|rel| {
            fs::remove_file(state.abs(&rel)).map_err(errno)?;
            state.forget_path(&rel);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(err),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = lock(&self.state);
        let result = state.child(parent.0, name).and_then(|rel| {
            fs::remove_dir(state.abs(&rel)).map_err(errno)?;
            state.forget_path(&rel);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(err),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut state = lock(&self.state);
        let result = state.child(parent.0, link_name).and_then(|rel| {
            std::os::unix::fs::symlink(target, state.abs(&rel)).map_err(errno)?;
            state.entry(rel)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(err) => reply.error(err),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = lock(&self.state);
        let result = (|| -> Result<(), Errno> {
            let from = state.child(parent.0, name)?;
            let to = state.child(newparent.0, newname)?;
            let (from_abs, to_abs) = (state.abs(&from), state.abs(&to));
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE)
                && fs::symlink_metadata(&to_abs).is_ok()
            {
                return Err(Errno::EEXIST);
            }
            fs::rename(&from_abs, &to_abs).map_err(errno)?;
            state.rename(&from, &to);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(err),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = lock(&self.state);
        let result = (|| -> Result<FileAttr, Errno> {
            let from = state.path(ino.0)?;
            let to = state.child(newparent.0, newname)?;
            fs::hard_link(from, state.abs(&to)).map_err(errno)?;
            state.entry(to)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(err) => reply.error(err),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = lock(&self.state);
        let path = match state.path(ino.0) {
            Ok(p) => p,
            Err(err) => return reply.error(err),
        };
        // Always read-write (we are root), so any handle can write pending data through.
        // O_TRUNC comes as a setattr and O_APPEND offsets come from the kernel.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .or_else(|_| File::open(&path));
        match file {
            Ok(file) => {
                let fh = state.open_handle(ino.0, file);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(err) => reply.error(errno(err)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match lock(&self.state).read(ino.0, fh.0, offset, size) {
            Ok(buf) => reply.data(&buf),
            Err(err) => reply.error(err),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Ok(len) = u32::try_from(data.len()) else {
            return reply.error(Errno::EINVAL);
        };
        match lock(&self.state).write(ino.0, fh.0, offset, data) {
            Ok(()) => reply.written(len),
            Err(err) => reply.error(err),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) does not make data durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match lock(&self.state).sync_node(ino.0, Some(fh.0)) {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(err),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = lock(&self.state);
        let result = (|| -> Result<Vec<(u64, FileType, OsString)>, Errno> {
            let path = state.path(ino.0)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (ino.0, FileType::Directory, OsString::from("..")),
            ];
            for entry in fs::read_dir(path).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let kind = entry
                    .file_type()
                    .ok()
                    .and_then(FileType::from_std)
                    .unwrap_or(FileType::RegularFile);
                entries.push((
                    std::os::unix::fs::DirEntryExt::ino(&entry),
                    kind,
                    entry.file_name(),
                ));
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                let fh = state.next_fh;
                state.next_fh += 1;
                state.handles.insert(fh, Handle::Dir { entries });
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(err) => reply.error(err),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = lock(&self.state);
        let Some(Handle::Dir { entries }) = state.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(skip) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory entries are applied to the backing directory at once: nothing is pending.
        match lock(&self.state).path(ino.0) {
            Ok(_) => reply.ok(),
            Err(err) => reply.error(err),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let backing = lock(&self.state).backing.clone();
        match nix::sys::statvfs::statvfs(&backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                u32::try_from(s.block_size()).unwrap_or(4096),
                u32::try_from(s.name_max()).unwrap_or(255),
                u32::try_from(s.fragment_size()).unwrap_or(4096),
            ),
            Err(err) => reply.error(Errno::from_i32(err as i32)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = lock(&self.state);
        let result = (|| -> Result<(FileAttr, u64), Errno> {
            let rel = state.child(parent.0, name)?;
            let abs = state.abs(&rel);
            let mut options = OpenOptions::new();
            options.read(true).write(true).mode(mode & !umask & 0o7777);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            let file = options.open(&abs).map_err(errno)?;
            if flags & libc::O_TRUNC != 0 {
                file.set_len(0).map_err(errno)?;
            }
            let meta = file.metadata().map_err(errno)?;
            let ino = state.register(rel, &meta);
            if flags & libc::O_TRUNC != 0 {
                state.truncate(ino, None, 0)?;
            }
            let fh = state.open_handle(ino, file);
            Ok((state.getattr(ino, Some(fh))?, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(err) => reply.error(err),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode == libc::FALLOC_FL_KEEP_SIZE {
            // Preallocation without a size change is invisible to readers.
            return reply.ok();
        }
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
            return reply.error(Errno::EINVAL);
        };
        let file = match lock(&self.state).file_for(ino.0, Some(fh.0)) {
            Ok(file) => file,
            Err(err) => return reply.error(err),
        };
        match nix::fcntl::fallocate(&*file, FallocateFlags::empty(), offset, length) {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(Errno::from_i32(err as i32)),
        }
    }
}

/// A mounted lazy filesystem; dropping it flushes pending data and unmounts.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl fmt::Debug for LazyFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyFs")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Mounts a lazy view of `backing` on `mountpoint` (both existing directories), served by a
/// background thread of this process.
pub fn mount(backing: &Path, mountpoint: &Path) -> Result<LazyFs, LazyFsError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(LazyFsError::NoFuseDevice);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(LazyFsError::NotRoot);
    }
    let backing_err = |source| LazyFsError::Backing {
        path: backing.to_path_buf(),
        source,
    };
    let backing = backing.canonicalize().map_err(backing_err)?;
    let root = fs::metadata(&backing).map_err(backing_err)?;
    let state = Arc::new(Mutex::new(State::new(backing.clone(), root.ino())));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("lazyfs:{}", backing.display())),
        MountOption::Subtype("lazyfs".to_string()),
        MountOption::RW,
    ];
    let fs = LazyFsImpl {
        state: state.clone(),
    };
    let session =
        fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| LazyFsError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    Ok(LazyFs {
        state,
        mountpoint: mountpoint.to_path_buf(),
        session: Some(session),
    })
}

impl LazyFs {
    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops every write not yet fsynced, as a power loss would; returns what was dropped.
    pub fn lose_unsynced(&self) -> LazyFsStats {
        lock(&self.state).lose_unsynced()
    }

    /// Bytes of file data held in memory, not yet synced.
    pub fn pending_bytes(&self) -> u64 {
        lock(&self.state).pending_total
    }

    /// Flushes all pending data to the backing directory and unmounts.
    pub fn unmount(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Err(err) = lock(&self.state).flush_all() {
            tracing::warn!(?err, mountpoint = %self.mountpoint.display(), "lazyfs: flushing pending data before unmount failed");
        }
        match nix::mount::umount(&self.mountpoint) {
            Ok(()) => {
                if let Err(err) = session.umount_and_join() {
                    tracing::warn!(%err, "lazyfs: session ended with an error");
                }
            }
            Err(err) => {
                // Busy (a process still has a file open): detach lazily; the session thread
                // ends when the last file closes and flushes what was written meanwhile.
                tracing::warn!(%err, mountpoint = %self.mountpoint.display(), "lazyfs: unmount failed, detaching lazily");
                if let Err(err) =
                    nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH)
                {
                    tracing::warn!(%err, "lazyfs: lazy unmount failed");
                }
                drop(session);
            }
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extents(p: &Pending) -> Vec<(u64, Vec<u8>)> {
        p.extents
            .iter()
            .map(|e| (e.offset, e.data.clone()))
            .collect()
    }

    #[test]
    fn pending_core_table() {
        // (writes, truncate, read offset, read len over a backing of b'.', expected)
        struct Case {
            writes: &'static [(u64, &'static [u8])],
            truncate: Option<u64>,
            read: (u64, usize),
            want: &'static [u8],
            end: u64,
        }
        let cases = [
            Case {
                writes: &[(0, b"abc"), (3, b"de")],
                truncate: None,
                read: (0, 6),
                want: b"abcde.",
                end: 5,
            },
            Case {
                writes: &[(2, b"xy"), (3, b"Z")],
                truncate: None,
                read: (1, 4),
                want: b".xZ.",
                end: 4,
            },
            Case {
                writes: &[(0, b"abcdef")],
                truncate: Some(2),
                read: (0, 4),
                want: b"ab..",
                end: 2,
            },
            Case {
                writes: &[(4, b"qq"), (0, b"a")],
                truncate: Some(3),
                read: (0, 6),
                want: b"a.....",
                end: 1,
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let mut p = Pending::default();
            for (off, data) in c.writes {
                p.write(*off, data);
            }
            if let Some(n) = c.truncate {
                p.truncate(n);
            }
            let mut buf = vec![b'.'; c.read.1];
            p.overlay(c.read.0, &mut buf);
            assert_eq!(buf, c.want, "case {i}");
            assert_eq!(p.end(), c.end, "case {i}");
            assert_eq!(
                p.bytes,
                p.extents.iter().map(|e| e.data.len() as u64).sum::<u64>(),
                "case {i}"
            );
            assert_eq!(p.writes, c.writes.len() as u64, "case {i}");
        }
    }

    #[test]
    fn appends_coalesce() {
        let mut p = Pending::default();
        p.write(0, b"a");
        p.write(1, b"b");
        p.write(5, b"c");
        assert_eq!(extents(&p), vec![(0, b"ab".to_vec()), (5, b"c".to_vec())]);
    }

    #[test]
    fn stats_display() {
        let s = LazyFsStats {
            writes: 12,
            bytes: 40960,
            files: 3,
        };
        assert_eq!(s.to_string(), "dropped 12 writes, 40960 bytes in 3 files");
    }
}
