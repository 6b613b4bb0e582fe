//! Reads the parts of a kubeconfig a node needs: the server URL, the CA and a bearer token.

use base64::Engine;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the kubeconfig is not valid YAML: {0}")]
    Yaml(String),
    #[error("the kubeconfig has no {0}")]
    Missing(&'static str),
    #[error("certificate-authority-data is not base64: {0}")]
    Base64(String),
}

/// Server, CA and token of the current context (or the first cluster and user).
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub token: String,
}

impl Kubeconfig {
    pub fn load(path: &std::path::Path) -> Result<Kubeconfig, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Kubeconfig::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Kubeconfig, KubeconfigError> {
        let config: Value =
            serde_norway::from_str(text).map_err(|e| KubeconfigError::Yaml(e.to_string()))?;
        let context = config["current-context"].as_str().and_then(|current| {
            config["contexts"]
                .as_array()?
                .iter()
                .find(|c| c["name"].as_str() == Some(current))
                .map(|c| &c["context"])
        });
        let pick = |list: &str, wanted: Option<&str>, field: &str| -> Option<Value> {
            let items = config[list].as_array()?;
            let item = match wanted {
                Some(name) => items.iter().find(|i| i["name"].as_str() == Some(name)),
                None => items.first(),
            }?;
            Some(item[field].clone())
        };
        let cluster = pick(
            "clusters",
            context.and_then(|c| c["cluster"].as_str()),
            "cluster",
        )
        .ok_or(KubeconfigError::Missing("cluster"))?;
        let user = pick("users", context.and_then(|c| c["user"].as_str()), "user")
            .ok_or(KubeconfigError::Missing("user"))?;
        let server = cluster["server"]
            .as_str()
            .ok_or(KubeconfigError::Missing("server"))?
            .trim_end_matches('/')
            .to_string();
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(
                cluster["certificate-authority-data"]
                    .as_str()
                    .ok_or(KubeconfigError::Missing("certificate-authority-data"))?,
            )
            .map_err(|e| KubeconfigError::Base64(e.to_string()))?;
        let token = user["token"]
            .as_str()
            .ok_or(KubeconfigError::Missing("user token"))?
            .to_string();
        Ok(Kubeconfig {
            server,
            ca_pem,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_admin_kubeconfig() {
        let text = r#"
apiVersion: v1
kind: Config
clusters:
- name: other
  cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: "eA=="}
- name: keelson
  cluster: {server: "https://127.0.0.1:6443/", certificate-authority-data: "UEVN"}
users:
- name: admin
  user: {token: tok}
contexts:
- name: keelson
  context: {cluster: keelson, user: admin}
current-context: keelson
"#;
        let config = Kubeconfig::parse(text).unwrap();
        assert_eq!(config.server, "https://127.0.0.1:6443");
        assert_eq!(config.ca_pem, b"PEM");
        assert_eq!(config.token, "tok");
    }

    #[test]
    fn reports_what_is_missing() {
        let cases = [
            ("clusters: []", "the kubeconfig has no cluster"),
            (
                "clusters: [{name: a, cluster: {server: x, certificate-authority-data: eA==}}]",
                "the kubeconfig has no user",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Kubeconfig::parse(text).unwrap_err().to_string(), want);
        }
    }
}
