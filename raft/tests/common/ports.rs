//! Ports for test servers, handed out in turn across every test process of a run.
//!
//! The ports lie below Linux's ephemeral range (32768–60999), so no socket bound to port 0
//! (clients' connections, the test proxies' upstream sockets) is ever given one and a stopped
//! server's port stays free for its restart. A counter in a locked file hands them out in
//! turn, so two tests running at once never pick the same port between checking it and
//! binding it (random picks did, about once a suite).

#![allow(dead_code, unreachable_pub, clippy::expect_used)]

use std::io::{Read, Seek, Write};
use std::ops::Range;

pub const SERVER_PORTS: Range<u16> = 20_000..32_768;

/// The next port in turn that `bind` accepts on loopback (bound and released).
pub fn free_port<T>(bind: impl Fn(u16) -> std::io::Result<T>) -> u16 {
    let path = std::env::temp_dir().join("keelson-test-ports");
    let mut counter = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("open the test port counter");
    // `File::lock` is from Rust 1.89, newer than the crates' minimum (1.85): only the tests
    // use it, built with the machines' toolchain (1.95).
    #[allow(clippy::incompatible_msrv)]
    counter.lock().expect("lock the test port counter");
    let mut text = String::new();
    counter
        .read_to_string(&mut text)
        .expect("read the test port counter");
    let span = u32::from(SERVER_PORTS.end - SERVER_PORTS.start);
    let mut next: u32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| rand::random_range(0..span));
    for _ in 0..span {
        let port = SERVER_PORTS.start + (next % span) as u16;
        next = (next + 1) % span;
        if bind(port).is_ok() {
            counter.set_len(0).expect("write the test port counter");
            counter.rewind().expect("write the test port counter");
            write!(counter, "{next}").expect("write the test port counter");
            return port;
        }
    }
    panic!("no free port on loopback in {SERVER_PORTS:?}");
}
