//! Kubeconfig files: which files to read, merging them, and the connection settings of one
//! context.
//!
//! The format is kubectl's (`clusters`, `contexts`, `users`, `current-context`); relative file
//! paths inside it are relative to the directory of the file that defines the entry, as kubectl
//! resolves them. `$KUBECONFIG` may list several files, merged kubectl's way: for each named
//! entry the first file that defines the name wins, and `current-context` comes from the first
//! file that sets it; files of the list that do not exist are skipped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// The largest kubeconfig, CA or token file read.
const CONFIG_FILE_BYTES_MAX: u64 = 4 << 20;

/// Where a pod's service account credentials are mounted (the in-cluster fallback).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeconfigError {
    #[error(
        "no configuration has been provided: kubeconfig file {} not found \
         (pass --kubeconfig, set KUBECONFIG, or write ~/.kube/config)",
        .path.display()
    )]
    NotFound { path: PathBuf },
    #[error(
        "no configuration has been provided: HOME is not set (pass --kubeconfig or set KUBECONFIG)"
    )]
    NoHome,
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is larger than {CONFIG_FILE_BYTES_MAX} bytes", .path.display())]
    TooLarge { path: PathBuf },
    #[error("cannot parse kubeconfig {}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("context was not found for specified context: {0}")]
    ContextNotFound(String),
    #[error("current-context is not set in the kubeconfig; pass --context")]
    NoCurrentContext,
    #[error("cluster \"{0}\" of the context is not in the kubeconfig")]
    ClusterNotFound(String),
    #[error("user \"{0}\" of the context is not in the kubeconfig")]
    UserNotFound(String),
    #[error("cluster \"{0}\" has no server")]
    NoServer(String),
    #[error("invalid base64 in {field} of \"{name}\": {source}")]
    Base64 {
        field: &'static str,
        name: String,
        source: base64::DecodeError,
    },
    #[error("user \"{0}\" uses an exec credential plugin, which kctl does not support")]
    ExecUnsupported(String),
    #[error(
        "user \"{0}\" has a client certificate without a key (or a key without a certificate)"
    )]
    HalfIdentity(String),
}

/// The most files a `$KUBECONFIG` list may name.
pub(crate) const KUBECONFIG_FILES_MAX: usize = 64;

/// A parsed kubeconfig file, or several merged. Unknown fields (preferences, extensions) are
/// ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Kubeconfig {
    #[serde(default)]
    clusters: Option<Vec<NamedCluster>>,
    #[serde(default)]
    contexts: Option<Vec<NamedContext>>,
    #[serde(default)]
    users: Option<Vec<NamedUser>>,
    #[serde(default)]
    current_context: Option<String>,
    /// The file that set `current-context` (empty when parsed from bytes).
    #[serde(skip)]
    current_context_source: PathBuf,
    /// The files read, in order.
    #[serde(skip)]
    files: Vec<PathBuf>,
}

/// One context as `kctl config get-contexts` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContextSummary {
    pub(crate) name: String,
    pub(crate) cluster: String,
    pub(crate) user: String,
    pub(crate) namespace: String,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    #[serde(default)]
    cluster: Cluster,
    /// The file that defined it: relative paths are resolved against its directory.
    #[serde(skip)]
    source: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    #[serde(default)]
    context: Context,
    /// The file that defined it (where `set-context` writes).
    #[serde(skip)]
    source: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
struct Context {
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
    /// The file that defined it: relative paths are resolved against its directory.
    #[serde(skip)]
    source: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<String>,
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    exec: Option<serde_json::Value>,
}

/// Everything needed to reach the API server as the context's user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConnectionConfig {
    /// Base URL, e.g. `https://127.0.0.1:6443`.
    pub(crate) server: String,
    /// PEM bundle of the CAs to trust; `None` means the platform's roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) insecure_skip_tls_verify: bool,
    pub(crate) token: Option<String>,
    pub(crate) basic_auth: Option<(String, String)>,
    /// Client certificate chain followed by its private key, PEM.
    pub(crate) client_identity_pem: Option<Vec<u8>>,
    /// The context's default namespace.
    pub(crate) namespace: Option<String>,
}

/// The kubeconfig files to read, first one first: `--kubeconfig` alone, else every entry of
/// `$KUBECONFIG` (a colon list; empty entries and repeats dropped, at most
/// `KUBECONFIG_FILES_MAX`), else `~/.kube/config`. Empty only when none is given and HOME is
/// unset.
pub(crate) fn kubeconfig_paths(
    flag: Option<&Path>,
    env_kubeconfig: Option<&OsStr>,
    home: Option<&Path>,
) -> Vec<PathBuf> {
    if let Some(path) = flag {
        return vec![path.to_path_buf()];
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Some(list) = env_kubeconfig {
        for path in std::env::split_paths(list) {
            if !path.as_os_str().is_empty()
                && !paths.contains(&path)
                && paths.len() < KUBECONFIG_FILES_MAX
            {
                paths.push(path);
            }
        }
    }
    if paths.is_empty() {
        paths.extend(home.map(|h| h.join(".kube").join("config")));
    }
    paths
}

/// Reads a whole small file, refusing anything larger than `CONFIG_FILE_BYTES_MAX`.
pub(crate) fn read_small_file(path: &Path) -> Result<Vec<u8>, KubeconfigError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|source| KubeconfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(KubeconfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

impl Kubeconfig {
    /// Reads and parses the kubeconfig at `path`, each entry remembering it as its source.
    pub(crate) fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let bytes = read_small_file(path).map_err(|err| match err {
            KubeconfigError::Read { path, source }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                KubeconfigError::NotFound { path }
            }
            other => other,
        })?;
        let mut config = Self::parse(&bytes).map_err(|source| KubeconfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.set_source(path);
        Ok(config)
    }

    /// Reads and merges `paths` in order, skipping the files that do not exist; `NotFound`
    /// (naming the first path) when none does.
    pub(crate) fn load_merged(paths: &[PathBuf]) -> Result<Self, KubeconfigError> {
        let mut merged: Option<Kubeconfig> = None;
        for path in paths.iter().take(KUBECONFIG_FILES_MAX) {
            let next = match Self::load(path) {
                Ok(next) => next,
                Err(KubeconfigError::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            match &mut merged {
                None => merged = Some(next),
                Some(merged) => merged.merge(next),
            }
        }
        merged.ok_or_else(|| KubeconfigError::NotFound {
            path: paths.first().cloned().unwrap_or_default(),
        })
    }

    fn set_source(&mut self, path: &Path) {
        for cluster in self.clusters.iter_mut().flatten() {
            cluster.source = path.to_path_buf();
        }
        for context in self.contexts.iter_mut().flatten() {
            context.source = path.to_path_buf();
        }
        for user in self.users.iter_mut().flatten() {
            user.source = path.to_path_buf();
        }
        if self
            .current_context
            .as_deref()
            .is_some_and(|c| !c.is_empty())
        {
            self.current_context_source = path.to_path_buf();
        }
        self.files = vec![path.to_path_buf()];
    }

    /// Merges a later file in, kubectl's way: a name already defined keeps its first
    /// definition; `current-context` is taken only if still unset.
    pub(crate) fn merge(&mut self, later: Kubeconfig) {
        fn merge_named<T>(into: &mut Option<Vec<T>>, from: Option<Vec<T>>, name: fn(&T) -> &str) {
            for entry in from.into_iter().flatten() {
                let list = into.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| name(e) == name(&entry)) {
                    list.push(entry);
                }
            }
        }
        merge_named(&mut self.clusters, later.clusters, |c| &c.name);
        merge_named(&mut self.contexts, later.contexts, |c| &c.name);
        merge_named(&mut self.users, later.users, |u| &u.name);
        if self.current_context.as_deref().unwrap_or("").is_empty()
            && later
                .current_context
                .as_deref()
                .is_some_and(|c| !c.is_empty())
        {
            self.current_context = later.current_context;
            self.current_context_source = later.current_context_source;
        }
        self.files.extend(later.files);
    }

    /// The current context's name, if set.
    pub(crate) fn current_context(&self) -> Option<&str> {
        self.current_context.as_deref().filter(|c| !c.is_empty())
    }

    /// The file that set `current-context`, if a file did.
    pub(crate) fn current_context_source(&self) -> Option<&Path> {
        Some(self.current_context_source.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The files that were read, in order.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every context, in file order.
    pub(crate) fn contexts(&self) -> Vec<ContextSummary> {
        self.contexts
            .iter()
            .flatten()
            .map(|c| ContextSummary {
                name: c.name.clone(),
                cluster: c.context.cluster.clone(),
                user: c.context.user.clone().unwrap_or_default(),
                namespace: c.context.namespace.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// The file that defined context `name`.
    pub(crate) fn context_source(&self, name: &str) -> Option<&Path> {
        self.contexts
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .map(|c| c.source.as_path())
            .filter(|p| !p.as_os_str().is_empty())
    }

    /// Parses kubeconfig YAML (or JSON).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, serde_norway::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_norway::from_slice(bytes)
    }

    /// The connection settings of `context` (or the current context). Relative paths are
    /// resolved against the directory of the file that defined the cluster or user.
    pub(crate) fn connection(
        &self,
        context: Option<&str>,
    ) -> Result<ConnectionConfig, KubeconfigError> {
        let context_name = match context {
            Some(name) => name.to_string(),
            None => match self.current_context.as_deref() {
                Some(name) if !name.is_empty() => name.to_string(),
                _ => return Err(KubeconfigError::NoCurrentContext),
            },
        };
        let context = self
            .contexts
            .iter()
            .flatten()
            .find(|c| c.name == context_name)
            .map(|c| &c.context)
            .ok_or_else(|| KubeconfigError::ContextNotFound(context_name.clone()))?;
        let (cluster, base_dir) = self
            .clusters
            .iter()
            .flatten()
            .find(|c| c.name == context.cluster)
            .map(|c| (&c.cluster, base_dir_of(&c.source)))
            .ok_or_else(|| KubeconfigError::ClusterNotFound(context.cluster.clone()))?;
        let server = match cluster.server.as_deref() {
            Some(s) if !s.is_empty() => s.trim_end_matches('/').to_string(),
            _ => return Err(KubeconfigError::NoServer(context.cluster.clone())),
        };
        let ca_pem = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) if !data.trim().is_empty() => Some(decode_base64(
                data,
                "certificate-authority-data",
                &context.cluster,
            )?),
            (_, Some(file)) if !file.is_empty() => Some(read_small_file(&base_dir.join(file))?),
            _ => None,
        };
        let mut config = ConnectionConfig {
            server,
            ca_pem,
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            namespace: context.namespace.clone().filter(|ns| !ns.is_empty()),
            ..ConnectionConfig::default()
        };
        let user_name = context.user.as_deref().unwrap_or("");
        if user_name.is_empty() {
            return Ok(config);
        }
        let (user, base_dir) = self
            .users
            .iter()
            .flatten()
            .find(|u| u.name == user_name)
            .map(|u| (&u.user, base_dir_of(&u.source)))
            .ok_or_else(|| KubeconfigError::UserNotFound(user_name.to_string()))?;
        config.token = match (&user.token, &user.token_file) {
            (Some(token), _) if !token.is_empty() => Some(token.trim().to_string()),
            (_, Some(file)) if !file.is_empty() => {
                let bytes = read_small_file(&base_dir.join(file))?;
                Some(String::from_utf8_lossy(&bytes).trim().to_string())
            }
            _ => None,
        };
        if let (Some(username), Some(password)) = (&user.username, &user.password) {
            config.basic_auth = Some((username.clone(), password.clone()));
        }
        let cert = pem_field(
            &user.client_certificate_data,
            &user.client_certificate,
            "client-certificate-data",
            user_name,
            base_dir,
        )?;
        let key = pem_field(
            &user.client_key_data,
            &user.client_key,
            "client-key-data",
            user_name,
            base_dir,
        )?;
        config.client_identity_pem = match (cert, key) {
            (Some(mut cert), Some(key)) => {
                if !cert.ends_with(b"\n") {
                    cert.push(b'\n');
                }
                cert.extend_from_slice(&key);
                Some(cert)
            }
            (None, None) => None,
            _ => return Err(KubeconfigError::HalfIdentity(user_name.to_string())),
        };
        if user.exec.is_some() && config.token.is_none() && config.client_identity_pem.is_none() {
            return Err(KubeconfigError::ExecUnsupported(user_name.to_string()));
        }
        Ok(config)
    }
}

/// The directory relative paths of an entry from `source` are resolved against.
fn base_dir_of(source: &Path) -> &Path {
    source.parent().unwrap_or(Path::new(""))
}

fn pem_field(
    data: &Option<String>,
    file: &Option<String>,
    field: &'static str,
    name: &str,
    base_dir: &Path,
) -> Result<Option<Vec<u8>>, KubeconfigError> {
    match (data, file) {
        (Some(data), _) if !data.trim().is_empty() => Ok(Some(decode_base64(data, field, name)?)),
        (_, Some(file)) if !file.is_empty() => Ok(Some(read_small_file(&base_dir.join(file))?)),
        _ => Ok(None),
    }
}

fn decode_base64(data: &str, field: &'static str, name: &str) -> Result<Vec<u8>, KubeconfigError> {
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|source| KubeconfigError::Base64 {
            field,
            name: name.to_string(),
            source,
        })
}

/// The connection of a process running in a pod: the service account token and CA mounted by
/// the kubelet, and `KUBERNETES_SERVICE_HOST`/`PORT`. `None` outside a pod.
pub(crate) fn in_cluster() -> Option<ConnectionConfig> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_string());
    let dir = Path::new(SERVICE_ACCOUNT_DIR);
    let token = read_small_file(&dir.join("token")).ok()?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(ConnectionConfig {
        server: format!("https://{host}:{port}"),
        ca_pem: read_small_file(&dir.join("ca.crt")).ok(),
        token: Some(String::from_utf8_lossy(&token).trim().to_string()),
        namespace: read_small_file(&dir.join("namespace"))
            .ok()
            .map(|ns| String::from_utf8_lossy(&ns).trim().to_string()),
        ..ConnectionConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_PEM: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUfake\n-----END CERTIFICATE-----\n";

    fn admin_kubeconfig() -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(CA_PEM);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://127.0.0.1:6443
  name: keelson
- cluster:
    server: https://10.0.0.9:6443/
    insecure-skip-tls-verify: true
  name: other
contexts:
- context:
    cluster: keelson
    user: admin
  name: keelson-admin
- context:
    cluster: other
    user: file-user
    namespace: kube-system
  name: other
current-context: keelson-admin
preferences: {{}}
users:
- name: admin
  user:
    token: s3cret-token
- name: file-user
  user:
    tokenFile: token.txt
"
        )
    }

    #[test]
    fn path_resolution_order() {
        let home = Path::new("/home/u");
        let flag = Path::new("/etc/kc");
        let env = OsStr::new("/a/one:/a/two");
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        // Phase 1: the flag wins over everything, alone.
        assert_eq!(
            kubeconfig_paths(Some(flag), Some(env), Some(home)),
            paths(&["/etc/kc"])
        );
        // Phase 2: then every file of $KUBECONFIG, in order.
        assert_eq!(
            kubeconfig_paths(None, Some(env), Some(home)),
            paths(&["/a/one", "/a/two"])
        );
        // Empty entries and repeats are dropped; an empty variable falls through to HOME.
        assert_eq!(
            kubeconfig_paths(None, Some(OsStr::new(":/a/two::/a/two")), Some(home)),
            paths(&["/a/two"])
        );
        assert_eq!(
            kubeconfig_paths(None, Some(OsStr::new("")), Some(home)),
            paths(&["/home/u/.kube/config"])
        );
        // Phase 3: ~/.kube/config, and nothing without HOME.
        assert_eq!(
            kubeconfig_paths(None, None, Some(home)),
            paths(&["/home/u/.kube/config"])
        );
        assert!(kubeconfig_paths(None, None, None).is_empty());
    }

    #[test]
    fn merge_first_definition_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let second_dir = dir.path().join("second");
        std::fs::create_dir(&second_dir).unwrap();
        let second = second_dir.join("config");
        // The first file sets no current-context and shares the name "shared" with the second.
        std::fs::write(
            &first,
            "clusters:\n- name: shared\n  cluster: {server: 'https://first:1'}\n\
             contexts:\n- name: shared\n  context: {cluster: shared, namespace: one}\n",
        )
        .unwrap();
        std::fs::write(
            &second,
            "clusters:\n- name: shared\n  cluster: {server: 'https://second:1'}\n\
             - name: other\n  cluster: {server: 'https://other:1'}\n\
             contexts:\n- name: shared\n  context: {cluster: other}\n\
             - name: two\n  context: {cluster: other, user: u}\n\
             users:\n- name: u\n  user: {tokenFile: token}\n\
             current-context: two\n",
        )
        .unwrap();
        std::fs::write(second_dir.join("token"), "second-token\n").unwrap();
        let missing = dir.path().join("missing");
        let config = Kubeconfig::load_merged(&[first.clone(), missing, second.clone()]).unwrap();
        // Phase 1: the missing file is skipped; both others were read.
        assert_eq!(config.files(), &[first.clone(), second.clone()]);
        // Phase 2: "shared" is the first file's; "two" and the current context the second's.
        let names: Vec<String> = config.contexts().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["shared", "two"]);
        assert_eq!(config.current_context(), Some("two"));
        assert_eq!(config.current_context_source(), Some(second.as_path()));
        assert_eq!(config.context_source("shared"), Some(first.as_path()));
        let shared = config.connection(Some("shared")).unwrap();
        assert_eq!(shared.server, "https://first:1");
        assert_eq!(shared.namespace.as_deref(), Some("one"));
        // Phase 3: the second file's relative token path resolves against its own folder.
        let two = config.connection(None).unwrap();
        assert_eq!(two.server, "https://other:1");
        assert_eq!(two.token.as_deref(), Some("second-token"));
        assert_eq!(two.namespace, None);
        // Phase 4: nothing to read is NotFound, naming the first path.
        let none = Kubeconfig::load_merged(&[dir.path().join("a"), dir.path().join("b")]);
        assert!(
            matches!(none, Err(KubeconfigError::NotFound { path }) if path == dir.path().join("a"))
        );
    }

    #[test]
    fn merge_keeps_the_first_current_context() {
        let mut first = Kubeconfig::parse(b"current-context: a\n").unwrap();
        first.merge(Kubeconfig::parse(b"current-context: b\n").unwrap());
        assert_eq!(first.current_context(), Some("a"));
        let mut unset = Kubeconfig::parse(b"current-context: ''\n").unwrap();
        unset.merge(Kubeconfig::parse(b"current-context: b\n").unwrap());
        assert_eq!(unset.current_context(), Some("b"));
    }

    #[test]
    fn current_context_with_ca_data_and_token() {
        let config = Kubeconfig::parse(admin_kubeconfig().as_bytes()).unwrap();
        let conn = config.connection(None).unwrap();
        assert_eq!(
            conn,
            ConnectionConfig {
                server: "https://127.0.0.1:6443".to_string(),
                ca_pem: Some(CA_PEM.as_bytes().to_vec()),
                insecure_skip_tls_verify: false,
                token: Some("s3cret-token".to_string()),
                basic_auth: None,
                client_identity_pem: None,
                namespace: None,
            }
        );
    }

    #[test]
    fn named_context_with_token_file_relative_to_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "file-token\n").unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, admin_kubeconfig()).unwrap();
        let config = Kubeconfig::load(&path).unwrap();
        let conn = config.connection(Some("other")).unwrap();
        assert_eq!(conn.server, "https://10.0.0.9:6443");
        assert!(conn.insecure_skip_tls_verify);
        assert_eq!(conn.ca_pem, None);
        assert_eq!(conn.token.as_deref(), Some("file-token"));
        assert_eq!(conn.namespace.as_deref(), Some("kube-system"));
    }

    #[test]
    fn client_certificate_and_key_are_joined() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let yaml = format!(
            "clusters:\n- name: c\n  cluster:\n    server: https://h:1\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64("CERT"),
            b64("KEY\n")
        );
        let conn = Kubeconfig::parse(yaml.as_bytes())
            .unwrap()
            .connection(None)
            .unwrap();
        assert_eq!(
            conn.client_identity_pem.as_deref(),
            Some(&b"CERT\nKEY\n"[..])
        );
    }

    #[test]
    fn errors() {
        let config = Kubeconfig::parse(admin_kubeconfig().as_bytes()).unwrap();
        let err = config.connection(Some("nope")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "context was not found for specified context: nope"
        );
        let empty = Kubeconfig::parse(b"").unwrap();
        assert!(matches!(
            empty.connection(None),
            Err(KubeconfigError::NoCurrentContext)
        ));
        let missing = Kubeconfig::load(Path::new("/definitely/not/here")).unwrap_err();
        assert!(matches!(missing, KubeconfigError::NotFound { .. }));
        let bad_ca = "clusters:\n- name: c\n  cluster:\n    server: https://h\n    certificate-authority-data: '%%%'\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n";
        let err = Kubeconfig::parse(bad_ca.as_bytes())
            .unwrap()
            .connection(None)
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid base64 in certificate-authority-data of \"c\""));
    }
}
