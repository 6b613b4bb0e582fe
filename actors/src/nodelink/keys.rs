//! Node credentials and the join secret, both derived from the cluster token with
//! HMAC-SHA256, so that every master verifies them without shared state and nodes never learn
//! the cluster token.

use keelson_api::node_link::{
    credential_message, format_credential, hex, parse_credential, unhex, JoinToken,
    JOIN_SECRET_CONTEXT,
};
use ring::hmac;

/// The keys a master checks nodes with.
pub(crate) struct NodeKeys {
    key: hmac::Key,
}

impl NodeKeys {
    pub(crate) fn new(cluster_token: &str) -> NodeKeys {
        NodeKeys {
            key: hmac::Key::new(hmac::HMAC_SHA256, cluster_token.as_bytes()),
        }
    }

    /// The secret half of the join token.
    pub(crate) fn join_secret(&self) -> String {
        hex(hmac::sign(&self.key, JOIN_SECRET_CONTEXT).as_ref())
    }

    /// The join token nodes are given: the CA's hash and the join secret.
    pub(crate) fn join_token(&self, ca_der: &[u8]) -> String {
        let hash = ring::digest::digest(&ring::digest::SHA256, ca_der);
        JoinToken::format(&hex(hash.as_ref()), &self.join_secret())
    }

    /// Whether `secret` is the join secret (in constant time).
    pub(crate) fn join_secret_matches(&self, secret: &str) -> bool {
        unhex(secret).is_some_and(|mac| hmac::verify(&self.key, JOIN_SECRET_CONTEXT, &mac).is_ok())
    }

    /// The credential of node `name`.
    pub(crate) fn credential(&self, name: &str) -> String {
        let mac = hmac::sign(&self.key, &credential_message(name));
        format_credential(name, &hex(mac.as_ref()))
    }

    /// The node a credential belongs to, if this cluster issued it.
    pub(crate) fn verify(&self, credential: &str) -> Option<String> {
        let (name, mac) = parse_credential(credential).ok()?;
        let mac = unhex(mac)?;
        hmac::verify(&self.key, &credential_message(name), &mac).ok()?;
        Some(name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_link_credentials_verify_only_for_their_node_and_key() {
        let keys = NodeKeys::new("cluster-token-0123456789");
        let other = NodeKeys::new("another-token-0123456789");
        let credential = keys.credential("node-1");
        assert_eq!(keys.verify(&credential).as_deref(), Some("node-1"));
        assert_eq!(other.verify(&credential), None, "wrong key");
        let forged = credential.replace("node-1", "node-2");
        assert_eq!(keys.verify(&forged), None, "wrong name");
        assert_eq!(keys.verify("Bearer whatever"), None);
        assert_eq!(keys.verify(&other.credential("node-1")), None);
    }

    #[test]
    fn node_link_join_secrets_match_only_their_cluster() {
        let keys = NodeKeys::new("cluster-token-0123456789");
        let other = NodeKeys::new("another-token-0123456789");
        assert!(keys.join_secret_matches(&keys.join_secret()));
        assert!(!keys.join_secret_matches(&other.join_secret()));
        assert!(!keys.join_secret_matches("not hex"));
        let token = JoinToken::parse(&keys.join_token(b"ca der")).unwrap();
        assert_eq!(token.secret, keys.join_secret());
        let hash = ring::digest::digest(&ring::digest::SHA256, b"ca der");
        assert_eq!(token.ca_hash, hex(hash.as_ref()));
        assert!(!keys.join_secret().contains("cluster-token"));
    }
}
