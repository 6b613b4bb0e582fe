//! The node's upstream nameservers, read from its resolv.conf (pods' resolv.conf is `kubelet/etc_files.rs`).

use std::net::{IpAddr, SocketAddr};

/// At most this many nameservers are taken, as glibc reads at most three (`MAXNS`).
pub const UPSTREAMS_MAX: usize = 3;

/// The `nameserver` lines of a resolv.conf as port-53 addresses, in order, at most
/// [`UPSTREAMS_MAX`]. Comments (`#`, `;`), other options and unparsable addresses (including
/// IPv6 ones with a `%zone`) are skipped.
///
/// Loopback nameservers (e.g. systemd-resolved's `127.0.0.53`) are kept: the cluster DNS server
/// runs in the node's own network namespace, where they are reachable and do not lead back to
/// it. The one address that would loop is the server's own listening address;
/// [`crate::dns::ClusterDns::serve`] drops that one from its upstreams.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .take(UPSTREAMS_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_upstreams_from_resolv_conf() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("nameserver 10.0.0.2\n", &["10.0.0.2:53"]),
            (
                "# comment\nsearch example.com\nnameserver 127.0.0.53 # stub\noptions edns0\n",
                &["127.0.0.53:53"],
            ),
            ("nameserver 2001:db8::1\n", &["[2001:db8::1]:53"]),
            (
                "nameserver fe80::1%eth0\nnameserver bogus\nnameserver\n",
                &[],
            ),
            (
                "  nameserver\t1.1.1.1  \n;nameserver 2.2.2.2\n",
                &["1.1.1.1:53"],
            ),
            (
                "nameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\nnameserver 4.4.4.4\n",
                &["1.1.1.1:53", "8.8.8.8:53", "9.9.9.9:53"],
            ),
        ];
        for (text, expected) in cases {
            let got: Vec<String> = upstreams_from_resolv_conf(text)
                .iter()
                .map(|a| a.to_string())
                .collect();
            assert_eq!(got, *expected, "{text:?}");
        }
    }
}
