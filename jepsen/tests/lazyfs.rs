//! The lazy filesystem loses exactly the unsynced writes: plain files and RocksDB in a real FUSE
//! mount. Root-only (FUSE mount); fails with a message saying what is missing otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use keelson_jepsen::lazyfs::{self, LazyFs};

/// A mount over fresh temp dirs; unmounts (also when the test fails) before the dirs go.
struct Mounted {
    fs: Option<LazyFs>,
    backing: PathBuf,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Mounted {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the lazyfs tests mount FUSE and must run as root"
        );
        assert!(
            Path::new("/dev/fuse").exists(),
            "the lazyfs tests need /dev/fuse (modprobe fuse, or run the container with --device /dev/fuse)"
        );
        let dir = tempfile::Builder::new()
            .prefix("keelson-lazyfs-")
            .tempdir()
            .expect("temp dir");
        let backing = dir.path().join("backing");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&backing).expect("backing dir");
        fs::create_dir(&mountpoint).expect("mountpoint");
        let fs = lazyfs::mount(&backing, &mountpoint).expect("mount lazyfs");
        Mounted {
            fs: Some(fs),
            backing,
            mountpoint,
            _dir: dir,
        }
    }

    fn fs(&self) -> &LazyFs {
        self.fs.as_ref().expect("mounted")
    }

    fn unmount(&mut self) {
        if let Some(fs) = self.fs.take() {
            fs.unmount();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

#[test]
fn lazyfs_keeps_only_synced_data() {
    let mut m = Mounted::new();
    let path = m.mountpoint.join("data");

    // Phase 1: 4 KiB synced, then 4 KiB more appended without a sync.
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("create");
    file.write_all(&[b'A'; 4096]).expect("write synced part");
    file.sync_all().expect("fsync");
    file.write_all(&[b'B'; 4096]).expect("write unsynced part");
    drop(file);

    // Phase 2: before the loss, readers see everything (size and contents).
    assert_eq!(fs::metadata(&path).expect("stat").len(), 8192);
    let before = fs::read(&path).expect("read before loss");
    assert_eq!(&before[..4096], &[b'A'; 4096][..]);
    assert_eq!(&before[4096..], &[b'B'; 4096][..]);
    assert_eq!(
        fs::metadata(m.backing.join("data")).expect("backing").len(),
        4096
    );

    // Phase 3: the loss drops the unsynced append only.
    let stats = m.fs().lose_unsynced();
    assert_eq!(stats.files, 1, "{stats}");
    assert_eq!(stats.bytes, 4096, "{stats}");
    assert_eq!(stats.writes, 1, "{stats}");
    let after = fs::read(&path).expect("read after loss");
    assert_eq!(after, vec![b'A'; 4096]);

    // Phase 4: a second loss drops nothing; unmount leaves the synced data in the backing dir.
    assert_eq!(m.fs().lose_unsynced().bytes, 0);
    m.unmount();
    assert_eq!(
        fs::read(m.backing.join("data")).expect("backing"),
        vec![b'A'; 4096]
    );
}

#[test]
fn lazyfs_unsynced_new_file_keeps_name_not_data() {
    let m = Mounted::new();
    let path = m.mountpoint.join("fresh");
    fs::write(&path, b"never synced").expect("write");
    fs::create_dir(m.mountpoint.join("dir")).expect("mkdir");
    fs::rename(&path, m.mountpoint.join("dir/renamed")).expect("rename");

    let stats = m.fs().lose_unsynced();
    assert_eq!(stats.files, 1, "{stats}");
    assert_eq!(stats.bytes, 12, "{stats}");

    // Metadata is applied at once (documented): the name and the rename survive, the data not.
    assert!(!path.exists());
    let renamed = m.mountpoint.join("dir/renamed");
    assert_eq!(
        fs::metadata(&renamed).expect("renamed file exists").len(),
        0
    );
    assert_eq!(fs::read(&renamed).expect("read"), Vec::<u8>::new());
}

#[test]
fn lazyfs_truncate_and_clean_unmount_flush() {
    let mut m = Mounted::new();
    let path = m.mountpoint.join("t");
    fs::write(&path, b"0123456789").expect("write");
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(4).expect("truncate");
    drop(file);
    assert_eq!(fs::read(&path).expect("read"), b"0123");
    // A clean unmount writes pending data through.
    m.unmount();
    assert_eq!(fs::read(m.backing.join("t")).expect("backing"), b"0123");
}

#[test]
fn lazyfs_rocksdb_loses_unsynced_writes() {
    let mut m = Mounted::new();
    let db_dir = m.mountpoint.join("db");
    let key = |i: u32| format!("key-{i:04}");
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);

    // Phase 1: ten puts synced to the WAL, then ten more unsynced (no flush; the memtable
    // stays in memory, so the only copy of the unsynced keys is the unsynced WAL tail).
    {
        let db = rocksdb::DB::open(&options, &db_dir).expect("open db on lazyfs");
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        for i in 0..10 {
            db.put_opt(key(i), b"synced", &synced).expect("synced put");
        }
        let mut unsynced = rocksdb::WriteOptions::default();
        unsynced.set_sync(false);
        for i in 10..20 {
            db.put_opt(key(i), b"unsynced", &unsynced)
                .expect("unsynced put");
        }
        assert!(db.get(key(15)).expect("get").is_some());

        // Phase 2: power loss while the database is open, then the process "dies".
        let stats = m.fs().lose_unsynced();
        eprintln!("lazyfs: {stats}");
        assert!(
            stats.bytes > 0,
            "the unsynced WAL tail was pending: {stats}"
        );
    }

    // Phase 3: reopen: every synced key is there, every unsynced one is gone.
    let db = rocksdb::DB::open(&options, &db_dir).expect("reopen db after loss");
    for i in 0..10 {
        assert_eq!(
            db.get(key(i)).expect("get").as_deref(),
            Some(&b"synced"[..]),
            "synced {}",
            key(i)
        );
    }
    for i in 10..20 {
        assert_eq!(
            db.get(key(i)).expect("get"),
            None,
            "unsynced {} survived",
            key(i)
        );
    }
    drop(db);
    m.unmount();
}
