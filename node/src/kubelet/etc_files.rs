//! The `/etc/resolv.conf` and `/etc/hosts` the kubelet writes for each pod and mounts into
//! its containers, as Kubernetes' kubelet does: `dnsPolicy` (ClusterFirst, ClusterFirstWithHostNet,
//! Default, None) with `dnsConfig` merged in, and a hosts file naming the pod (plus
//! `hostAliases`). The text is built by pure functions; `write` puts it in the pod's directory.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PodSpec;

use crate::runtime::Mount;

/// Kubernetes' limits on a resolv.conf.
const NAMESERVERS_MAX: usize = 3;
const SEARCHES_MAX: usize = 32;

/// The node's DNS settings.
#[derive(Clone, Debug, Default)]
pub struct DnsSettings {
    /// The cluster DNS servers pods use under ClusterFirst (empty: the node's resolv.conf).
    pub cluster_dns: Vec<String>,
    /// E.g. `cluster.local`.
    pub cluster_domain: String,
    /// The node's own resolv.conf text (for `Default` and host-network pods).
    pub host_resolv_conf: String,
}

/// A parsed resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    conf.searches = words.map(str::to_string).collect();
                }
                Some("options") => conf.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        conf
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for server in self.nameservers.iter().take(NAMESERVERS_MAX) {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.searches.is_empty() {
            let searches: Vec<&str> = self
                .searches
                .iter()
                .take(SEARCHES_MAX)
                .map(String::as_str)
                .collect();
            out.push_str(&format!("search {}\n", searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// Sets option `name[:value]`, replacing an earlier value of the same name.
fn set_option(options: &mut Vec<String>, option: String) {
    let name = option.split(':').next().unwrap_or("").to_string();
    options.retain(|o| o.split(':').next() != Some(name.as_str()));
    options.push(option);
}

/// Pure: the pod's resolv.conf per its `dnsPolicy` and `dnsConfig`.
pub fn resolv_conf(spec: &PodSpec, namespace: &str, dns: &DnsSettings) -> ResolvConf {
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host = ResolvConf::parse(&dns.host_resolv_conf);
    let cluster = |host: &ResolvConf| {
        let domain = &dns.cluster_domain;
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        push_unique(&mut searches, host.searches.clone());
        ResolvConf {
            nameservers: dns.cluster_dns.clone(),
            searches,
            options: vec!["ndots:5".to_string()],
        }
    };
    let mut conf = match policy {
        "None" => ResolvConf::default(),
        "Default" => host.clone(),
        "ClusterFirstWithHostNet" if !dns.cluster_dns.is_empty() => cluster(&host),
        "ClusterFirst" if !host_network && !dns.cluster_dns.is_empty() => cluster(&host),
        _ => host.clone(),
    };
    if let Some(config) = &spec.dns_config {
        push_unique(
            &mut conf.nameservers,
            config.nameservers.clone().unwrap_or_default(),
        );
        push_unique(
            &mut conf.searches,
            config.searches.clone().unwrap_or_default(),
        );
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let text = match option.value.as_deref() {
                Some(value) => format!("{name}:{value}"),
                None => name.to_string(),
            };
            set_option(&mut conf.options, text);
        }
    }
    conf
}

/// Pure: the pod's /etc/hosts.
pub fn hosts_file(spec: &PodSpec, pod_ip: &str, hostname: &str, cluster_domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file (keelson).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if !pod_ip.is_empty() {
        let fqdn = match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => format!("\t{hostname}.{sub}.{cluster_domain}"),
            None => String::new(),
        };
        out.push_str(&format!("{pod_ip}{fqdn}\t{hostname}\n"));
    }
    for alias in spec.host_aliases.iter().flatten() {
        let names: Vec<&str> = alias
            .hostnames
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !alias.ip.is_empty() && !names.is_empty() {
            out.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                alias.ip,
                names.join("\t")
            ));
        }
    }
    out
}

/// Writes the pod's resolv.conf and hosts files under `pod_dir` (once per content) and returns
/// their mounts. Host-network pods keep the node's /etc/hosts.
pub fn write(
    pod_dir: &Path,
    spec: &PodSpec,
    namespace: &str,
    pod_ip: &str,
    hostname: &str,
    dns: &DnsSettings,
) -> std::io::Result<Vec<Mount>> {
    std::fs::create_dir_all(pod_dir)?;
    let mut mounts = Vec::new();
    let resolv = pod_dir.join("resolv.conf");
    write_if_changed(&resolv, &resolv_conf(spec, namespace, dns).render())?;
    mounts.push(mount(resolv, "/etc/resolv.conf"));
    if spec.host_network != Some(true) {
        let hosts = pod_dir.join("etc-hosts");
        write_if_changed(
            &hosts,
            &hosts_file(spec, pod_ip, hostname, &dns.cluster_domain),
        )?;
        mounts.push(mount(hosts, "/etc/hosts"));
    }
    Ok(mounts)
}

fn mount(host_path: PathBuf, container_path: &str) -> Mount {
    Mount {
        host_path,
        container_path: container_path.to_string(),
        read_only: false,
    }
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn settings() -> DnsSettings {
        DnsSettings {
            cluster_dns: vec!["169.254.20.10".to_string()],
            cluster_domain: "cluster.local".to_string(),
            host_resolv_conf: "nameserver 192.168.1.1\nsearch corp.example\noptions edns0\n"
                .to_string(),
        }
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        let cases = [
            (
                "ClusterFirst",
                json!({"containers": []}),
                "nameserver 169.254.20.10\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n",
            ),
            (
                "ClusterFirst on the host network is Default",
                json!({"containers": [], "hostNetwork": true}),
                "nameserver 192.168.1.1\nsearch corp.example\noptions edns0\n",
            ),
            (
                "ClusterFirstWithHostNet",
                json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
                "nameserver 169.254.20.10\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n",
            ),
            (
                "Default",
                json!({"containers": [], "dnsPolicy": "Default"}),
                "nameserver 192.168.1.1\nsearch corp.example\noptions edns0\n",
            ),
            (
                "None with dnsConfig",
                json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                    "nameservers": ["1.1.1.1"], "searches": ["a.example"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}}),
                "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2 rotate\n",
            ),
            (
                "ClusterFirst with dnsConfig overriding ndots",
                json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}),
                "nameserver 169.254.20.10\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:1\n",
            ),
        ];
        for (what, pod, want) in cases {
            assert_eq!(
                resolv_conf(&spec(pod), "ns1", &settings()).render(),
                want,
                "{what}"
            );
        }
        let no_cluster_dns = DnsSettings {
            cluster_dns: Vec::new(),
            ..settings()
        };
        assert_eq!(
            resolv_conf(&spec(json!({"containers": []})), "ns1", &no_cluster_dns).nameservers,
            vec!["192.168.1.1"],
            "without a cluster DNS, pods use the node's"
        );
    }

    #[test]
    fn hosts_names_the_pod_and_its_aliases() {
        let pod = spec(json!({
            "containers": [], "subdomain": "db",
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}],
        }));
        let text = hosts_file(&pod, "10.244.1.5", "db-0", "cluster.local");
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(
            text.contains("10.244.1.5\tdb-0.db.cluster.local\tdb-0\n"),
            "{text}"
        );
        assert!(text.contains("10.1.2.3\tfoo.local\tbar.local\n"), "{text}");
        let bare = hosts_file(&spec(json!({"containers": []})), "", "p", "cluster.local");
        assert!(!bare.contains("\tp\n"), "no address, no entry: {bare}");
    }
}
