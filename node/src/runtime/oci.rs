//! The OCI runtime spec (`config.json`) of one container: a pure function of its
//! [`ContainerConfig`], with Docker's defaults for capabilities and runc's for masked and
//! read-only paths.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths, Capability,
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::ContainerConfig;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CFS period the CPU limit is expressed in.
pub const CPU_PERIOD_US: u64 = 100_000;
pub const PIDS_LIMIT: i64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Docker's default capability set.
pub fn default_capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// CPU shares for a request in millicores (as the kubelet computes them).
pub fn cpu_shares(request_millis: u64) -> u64 {
    (request_millis.saturating_mul(1024) / 1000).max(2)
}

/// The CFS quota (µs per [`CPU_PERIOD_US`]) for a limit in millicores (at least 1 ms).
pub fn cpu_quota(limit_millis: u64) -> i64 {
    let quota = limit_millis.saturating_mul(CPU_PERIOD_US) / 1000;
    i64::try_from(quota.max(1000)).unwrap_or(i64::MAX)
}

/// The environment as `K=V` strings, with a default `PATH` when none is given.
pub fn environment(env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    out
}

/// The bundle spec. `rootfs` is the container's root (an absolute path), `netns` the network
/// namespace to join (`None`: the host's), `cgroup_path` its cgroup relative to the mounts.
pub fn build_spec(
    config: &ContainerConfig,
    rootfs: &Path,
    netns: Option<&Path>,
    cgroup_path: &str,
) -> Result<Spec, SpecError> {
    let caps = default_capabilities();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(config.args.clone())
        .env(environment(&config.env))
        .cwd(PathBuf::from(if config.working_dir.is_empty() {
            "/"
        } else {
            config.working_dir.as_str()
        }))
        .user(
            UserBuilder::default()
                .uid(config.user.0)
                .gid(config.user.1)
                .build()?,
        )
        .capabilities(capabilities)
        .no_new_privileges(true)
        // No rlimits: the container inherits the node's (raising them may not be allowed).
        .rlimits(Vec::new())
        .build()?;

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    if let Some(path) = netns {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.to_path_buf())
                .build()?,
        );
    }

    let mut memory = LinuxMemoryBuilder::default();
    if let Some(limit) = config.memory_limit_bytes {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // No swap beyond the limit: the limit is what the OOM killer enforces.
        memory = memory.limit(limit).swap(limit);
    }
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(limit) = config.cpu_limit_millis {
        cpu = cpu.quota(cpu_quota(limit)).period(CPU_PERIOD_US);
    }
    if let Some(request) = config.cpu_request_millis {
        cpu = cpu.shares(cpu_shares(request));
    }
    let resources = LinuxResourcesBuilder::default()
        .memory(memory.build()?)
        .cpu(cpu.build()?)
        .pids(LinuxPidsBuilder::default().limit(PIDS_LIMIT).build()?)
        .build()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(cgroup_path))
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()?;

    let mut mounts = get_default_mounts();
    for m in &config.mounts {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        options.push(if m.read_only { "ro" } else { "rw" }.to_string());
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(&m.container_path))
                .typ("bind")
                .source(m.host_path.clone())
                .options(options)
                .build()?,
        );
    }

    let spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs.to_path_buf())
                .readonly(false)
                .build()?,
        )
        .hostname(config.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerLabels, Mount};

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "k-abc-web-0".into(),
            labels: ContainerLabels {
                pod_uid: "abc".into(),
                pod_namespace: "default".into(),
                pod_name: "p".into(),
                container_name: "web".into(),
                attempt: 0,
            },
            layers: vec![],
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "1".into())],
            working_dir: "/tmp".into(),
            mounts: vec![Mount {
                host_path: "/data".into(),
                container_path: "/mnt/data".into(),
                read_only: true,
            }],
            hostname: "p".into(),
            user: (1000, 2000),
            memory_limit_bytes: Some(16 << 20),
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            log_path: "/logs/web.log".into(),
        }
    }

    #[test]
    fn spec_has_every_field_the_container_needs() {
        let spec = build_spec(
            &config(),
            Path::new("/s/rootfs"),
            Some(Path::new("/run/netns/keelson-k-abc")),
            "/keelson/k-abc-web-0",
        )
        .expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["ociVersion"], "1.0.2");
        assert_eq!(json["hostname"], "p");
        assert_eq!(json["root"]["path"], "/s/rootfs");
        assert_eq!(json["root"]["readonly"], false);
        let process = &json["process"];
        assert_eq!(process["args"][2], "echo hi");
        assert_eq!(process["cwd"], "/tmp");
        assert_eq!(process["user"]["uid"], 1000);
        assert_eq!(process["user"]["gid"], 2000);
        assert_eq!(process["noNewPrivileges"], true);
        let env: Vec<String> = serde_json::from_value(process["env"].clone()).expect("env");
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        let caps = process["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert!(caps.iter().any(|c| c == "CAP_CHOWN"));
        assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"));

        let linux = &json["linux"];
        assert_eq!(linux["cgroupsPath"], "/keelson/k-abc-web-0");
        assert_eq!(linux["resources"]["memory"]["limit"], 16 << 20);
        assert_eq!(linux["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(linux["resources"]["cpu"]["period"], 100_000);
        assert_eq!(linux["resources"]["cpu"]["shares"], 256);
        assert_eq!(linux["resources"]["pids"]["limit"], PIDS_LIMIT);
        let ns = linux["namespaces"].as_array().expect("namespaces");
        let types: Vec<&str> = ns.iter().filter_map(|n| n["type"].as_str()).collect();
        assert_eq!(types, ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(ns[4]["path"], "/run/netns/keelson-k-abc");
        assert!(linux["maskedPaths"]
            .as_array()
            .expect("masked")
            .iter()
            .any(|p| p == "/proc/kcore"));
        assert!(linux["readonlyPaths"].as_array().is_some());

        let mounts = json["mounts"].as_array().expect("mounts");
        for dest in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(mounts.iter().any(|m| m["destination"] == dest), "{dest}");
        }
        let bind = mounts
            .iter()
            .find(|m| m["destination"] == "/mnt/data")
            .expect("bind");
        assert_eq!(bind["source"], "/data");
        let opts: Vec<String> = serde_json::from_value(bind["options"].clone()).expect("opts");
        assert!(opts.contains(&"rbind".to_string()) && opts.contains(&"ro".to_string()));
    }

    #[test]
    fn host_network_has_no_network_namespace_and_no_limits_when_none() {
        let mut c = config();
        c.memory_limit_bytes = None;
        c.cpu_limit_millis = None;
        c.cpu_request_millis = None;
        c.env = vec![("PATH".into(), "/x".into())];
        let spec = build_spec(&c, Path::new("/r"), None, "/keelson/x").expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        let ns = json["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        assert!(json["linux"]["resources"]["memory"].get("limit").is_none());
        assert_eq!(json["process"]["env"], serde_json::json!(["PATH=/x"]));
    }

    #[test]
    fn cpu_conversions() {
        for (millis, shares) in [(0, 2), (1, 2), (250, 256), (1000, 1024), (2500, 2560)] {
            assert_eq!(cpu_shares(millis), shares);
        }
        for (millis, quota) in [(1, 1000), (100, 10_000), (1500, 150_000)] {
            assert_eq!(cpu_quota(millis), quota);
        }
    }
}
