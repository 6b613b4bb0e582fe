//! The cluster's certificate authority, the API serving certificates it signs, and the admin
//! kubeconfig.
//!
//! Every master of one cluster must present certificates from the same CA, so the CA lives in
//! the replicated store (created once, by whichever master gets there first); each master
//! signs its own serving certificate with it at start-up.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

/// The CA's subject common name; the issuer of every serving certificate.
const CA_COMMON_NAME: &str = "keelson-ca";
/// How long the CA and serving certificates are valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("time: {0}")]
    Time(String),
}

/// The cluster CA as kept in the store.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// A serving certificate chain and its key, PEM encoded.
#[derive(Clone)]
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn validity(params: &mut CertificateParams, valid_for: Duration) -> Result<(), PkiError> {
    let now = time_now()?;
    // A little slack for clocks that differ between hosts.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::seconds(valid_for.as_secs() as i64);
    Ok(())
}

fn time_now() -> Result<time::OffsetDateTime, PkiError> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| PkiError::Time(e.to_string()))?;
    time::OffsetDateTime::from_unix_timestamp(since_epoch.as_secs() as i64)
        .map_err(|e| PkiError::Time(e.to_string()))
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params()?;
        validity(&mut params, CA_VALIDITY)?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A serving certificate for the API on `hosts` (DNS names or IP addresses), signed by
    /// this CA. The chain holds the leaf and the CA.
    pub fn sign_serving(&self, hosts: &[String]) -> Result<ServingCert, PkiError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        // The issuer is rebuilt from the same parameters the CA was made with: same subject,
        // and the key identifier derives from the same key.
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "keelson-apiserver");
        params.distinguished_name = name;
        let mut sans = Vec::new();
        for host in hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into()?),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, SERVING_VALIDITY)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ServingCert {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A kubeconfig (the standard YAML kubectl reads) for `server` with the admin `token`.
pub fn admin_kubeconfig(cluster: &str, server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "admin", "namespace": "default"}}],
        "current-context": cluster,
        "preferences": {},
    });
    serde_norway::to_string(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_certificate_verifies_against_the_ca() {
        use rustls_pki_types::pem::PemObject;
        let ca = ClusterCa::generate().unwrap();
        let serving = ca
            .sign_serving(&["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let ca_der =
            rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        roots.add(ca_der).unwrap();
        let chain: Vec<_> =
            rustls_pki_types::CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(chain.len(), 2);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let now = rustls_pki_types::UnixTime::now();
        for name in ["127.0.0.1", "localhost"] {
            let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], now)
                .unwrap();
        }
        let other = rustls_pki_types::ServerName::try_from("example.com").unwrap();
        assert!(verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], now)
            .is_err());
    }

    #[test]
    fn kubeconfig_is_standard_yaml() {
        let text = admin_kubeconfig("keelson", "https://127.0.0.1:6443", "PEM", "tok");
        let parsed: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(parsed["current-context"], "keelson");
        assert_eq!(parsed["users"][0]["user"]["token"], "tok");
        assert_eq!(
            parsed["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
    }
}
