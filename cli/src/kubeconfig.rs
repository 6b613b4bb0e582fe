//! Kubeconfig files: which file to read, parsing it, and the connection settings of one context.
//!
//! The format is kubectl's (`clusters`, `contexts`, `users`, `current-context`); relative file
//! paths inside it are relative to the kubeconfig's directory, as kubectl resolves them.

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

/// A parsed kubeconfig file. Unknown fields (preferences, extensions) are ignored.
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
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    #[serde(default)]
    cluster: Cluster,
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

/// Picks the kubeconfig file: `--kubeconfig`, then the first entry of `$KUBECONFIG` (a colon
/// list), then `~/.kube/config`. `None` only when none is given and HOME is unset.
pub(crate) fn kubeconfig_path(
    flag: Option<&Path>,
    env_kubeconfig: Option<&OsStr>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    if let Some(list) = env_kubeconfig {
        if let Some(first) = std::env::split_paths(list).find(|p| !p.as_os_str().is_empty()) {
            return Some(first);
        }
    }
    home.map(|h| h.join(".kube").join("config"))
}

/// Reads a whole small file, refusing anything larger than `CONFIG_FILE_BYTES_MAX`.
fn read_small_file(path: &Path) -> Result<Vec<u8>, KubeconfigError> {
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
    /// Reads and parses the kubeconfig at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let bytes = read_small_file(path).map_err(|err| match err {
            KubeconfigError::Read { path, source }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                KubeconfigError::NotFound { path }
            }
            other => other,
        })?;
        Self::parse(&bytes).map_err(|source| KubeconfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses kubeconfig YAML (or JSON).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, serde_norway::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_norway::from_slice(bytes)
    }

    /// The connection settings of `context` (or the current context). Relative paths are
    /// resolved against `base_dir`, the kubeconfig's directory.
    pub(crate) fn connection(
        &self,
        context: Option<&str>,
        base_dir: &Path,
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
        let cluster = self
            .clusters
            .iter()
            .flatten()
            .find(|c| c.name == context.cluster)
            .map(|c| &c.cluster)
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
        let user = self
            .users
            .iter()
            .flatten()
            .find(|u| u.name == user_name)
            .map(|u| &u.user)
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
        // Phase 1: the flag wins over everything.
        assert_eq!(
            kubeconfig_path(Some(flag), Some(env), Some(home)),
            Some(PathBuf::from("/etc/kc"))
        );
        // Phase 2: then the first file of $KUBECONFIG.
        assert_eq!(
            kubeconfig_path(None, Some(env), Some(home)),
            Some(PathBuf::from("/a/one"))
        );
        // Empty entries are skipped; an empty variable falls through to HOME.
        assert_eq!(
            kubeconfig_path(None, Some(OsStr::new(":/a/two")), Some(home)),
            Some(PathBuf::from("/a/two"))
        );
        assert_eq!(
            kubeconfig_path(None, Some(OsStr::new("")), Some(home)),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
        // Phase 3: ~/.kube/config, and nothing without HOME.
        assert_eq!(
            kubeconfig_path(None, None, Some(home)),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
        assert_eq!(kubeconfig_path(None, None, None), None);
    }

    #[test]
    fn current_context_with_ca_data_and_token() {
        let config = Kubeconfig::parse(admin_kubeconfig().as_bytes()).unwrap();
        let conn = config.connection(None, Path::new("/nowhere")).unwrap();
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
        let conn = config.connection(Some("other"), dir.path()).unwrap();
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
            .connection(None, Path::new("/"))
            .unwrap();
        assert_eq!(
            conn.client_identity_pem.as_deref(),
            Some(&b"CERT\nKEY\n"[..])
        );
    }

    #[test]
    fn errors() {
        let config = Kubeconfig::parse(admin_kubeconfig().as_bytes()).unwrap();
        let err = config.connection(Some("nope"), Path::new("/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "context was not found for specified context: nope"
        );
        let empty = Kubeconfig::parse(b"").unwrap();
        assert!(matches!(
            empty.connection(None, Path::new("/")),
            Err(KubeconfigError::NoCurrentContext)
        ));
        let missing = Kubeconfig::load(Path::new("/definitely/not/here")).unwrap_err();
        assert!(matches!(missing, KubeconfigError::NotFound { .. }));
        let bad_ca = "clusters:\n- name: c\n  cluster:\n    server: https://h\n    certificate-authority-data: '%%%'\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n";
        let err = Kubeconfig::parse(bad_ca.as_bytes())
            .unwrap()
            .connection(None, Path::new("/"))
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid base64 in certificate-authority-data of \"c\""));
    }
}
