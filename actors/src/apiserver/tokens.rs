//! Service-account bearer tokens: an index of the tokens in Secrets of type
//! `kubernetes.io/service-account-token`, kept by this master's own watch of Secrets, so that
//! authentication is a hash lookup and a deleted Secret's token stops working.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use keelson_api::object;
use keelson_raft::Store;
use serde_json::Value;
use tokio::sync::watch as signal;

use super::decoded::Decoded;
use crate::informer::{key_of, Change, Informer};

/// The Secret type of service-account tokens.
pub(crate) const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// The annotation naming the token's ServiceAccount.
pub(crate) const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// The annotation with the token's ServiceAccount's uid.
pub(crate) const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// Tokens longer than this are not indexed (a real one is 64 characters).
const TOKEN_BYTES_MAX: usize = 4096;

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenOwner {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
}

/// Tokens by value; clones share it.
#[derive(Clone, Default)]
pub(crate) struct TokenIndex {
    tokens: Arc<RwLock<HashMap<String, TokenOwner>>>,
    /// The token of each indexed Secret, by `namespace/name`.
    by_secret: Arc<RwLock<HashMap<String, String>>>,
}

/// The bearer token and owner a Secret holds, if it is a service-account token.
pub(crate) fn token_of(secret: &Value) -> Option<(String, TokenOwner)> {
    if secret.get("type").and_then(Value::as_str) != Some(SA_TOKEN_TYPE) {
        return None;
    }
    let encoded = secret.pointer("/data/token").and_then(Value::as_str)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let token = String::from_utf8(bytes).ok()?;
    if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
        return None;
    }
    let service_account = object::annotations(secret)
        .get(SA_NAME_ANNOTATION)
        .cloned()?;
    let namespace = object::namespace(secret)?.to_string();
    Some((
        token,
        TokenOwner {
            namespace,
            service_account,
        },
    ))
}

impl TokenIndex {
    /// Starts indexing Secrets of `store` until `stopped` turns true.
    pub(crate) fn start(
        store: Store,
        decoded: Arc<Decoded>,
        stopped: signal::Receiver<bool>,
    ) -> TokenIndex {
        let index = TokenIndex::default();
        let Some(secrets) = keelson_api::resources::find("", "v1", "secrets") else {
            tracing::error!("secrets are not registered: service-account tokens are refused");
            return index;
        };
        let informer = Informer::start(store, decoded, secrets, stopped);
        tokio::spawn(index.clone().follow(informer));
        index
    }

    /// Who `token` belongs to, if a Secret holds it now.
    pub(crate) fn lookup(&self, token: &str) -> Option<TokenOwner> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    async fn follow(self, informer: Informer) {
        let mut changes = informer.subscribe();
        informer.wait_synced().await;
        self.rebuild(&informer);
        while let Some(change) = changes.recv().await {
            match change {
                Change::Applied { new, .. } => self.put(&new),
                Change::Deleted(old) => self.remove(&key_of(&old)),
                Change::Resynced => self.rebuild(&informer),
            }
        }
    }

    fn rebuild(&self, informer: &Informer) {
        let mut tokens = HashMap::new();
        let mut by_secret = HashMap::new();
        for secret in informer.list() {
            if let Some((token, owner)) = token_of(&secret) {
                by_secret.insert(key_of(&secret), token.clone());
                tokens.insert(token, owner);
            }
        }
        let mut t = self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut s = self
            .by_secret
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t = tokens;
        *s = by_secret;
    }

    fn put(&self, secret: &Value) {
        let key = key_of(secret);
        self.remove(&key);
        if let Some((token, owner)) = token_of(secret) {
            self.by_secret
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key, token.clone());
            self.tokens
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(token, owner);
        }
    }

    fn remove(&self, key: &str) {
        let old = self
            .by_secret
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        if let Some(token) = old {
            self.tokens
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(kind: &str, token: &str) -> Value {
        json!({
            "metadata": {"name": "s", "namespace": "ns",
                "annotations": {SA_NAME_ANNOTATION: "default"}},
            "type": kind,
            "data": {"token": base64::engine::general_purpose::STANDARD.encode(token)},
        })
    }

    #[test]
    fn only_service_account_token_secrets_hold_tokens() {
        let cases = [
            (secret(SA_TOKEN_TYPE, "abc"), Some("abc")),
            (secret("Opaque", "abc"), None),
            (secret(SA_TOKEN_TYPE, ""), None),
        ];
        for (secret, want) in cases {
            assert_eq!(token_of(&secret).map(|(t, _)| t).as_deref(), want);
        }
    }

    #[test]
    fn a_removed_secret_takes_its_token_along() {
        let index = TokenIndex::default();
        index.put(&secret(SA_TOKEN_TYPE, "abc"));
        assert_eq!(
            index.lookup("abc").map(|o| o.service_account).as_deref(),
            Some("default")
        );
        index.put(&secret(SA_TOKEN_TYPE, "def"));
        assert!(
            index.lookup("abc").is_none(),
            "a changed token replaces the old"
        );
        index.remove("ns/s");
        assert!(index.lookup("def").is_none());
    }
}
