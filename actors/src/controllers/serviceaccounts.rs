//! The service-account controller: a `default` ServiceAccount per namespace and token Secrets.
//!
//! Every Active namespace gets a `default` ServiceAccount (again, if it is deleted). Every
//! ServiceAccount gets a Secret of type `kubernetes.io/service-account-token` named
//! `<sa>-token-<5 random chars>` holding a random bearer token, the cluster CA and the
//! namespace, and lists it in `secrets`. Token Secrets whose ServiceAccount is gone are
//! deleted. The API accepts these tokens while their Secret exists.

use base64::Engine;
use keelson_api::object;
use keelson_api::resources::{self, Resource};
use serde_json::{json, Value};

use super::{feed, work, Requeue, QUEUE_KEYS_MAX};
use crate::apiserver::{SA_NAME_ANNOTATION, SA_TOKEN_TYPE, SA_UID_ANNOTATION};
use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::informer::{key_of, split_key, Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

const DEFAULT_ACCOUNT: &str = "default";
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const SUFFIX_LEN: usize = 5;

/// A unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Namespace(String),
    ServiceAccount(String),
    Secret(String),
}

/// Whether a namespace needs its `default` ServiceAccount created.
pub(crate) fn needs_default(namespace: &Value, default_exists: bool) -> bool {
    !default_exists
        && object::deletion_timestamp(namespace).is_none()
        && namespace
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .is_none_or(|p| p == "Active")
}

/// Whether `secret` is a token Secret of `account` (by name and uid).
pub(crate) fn is_token_of(secret: &Value, account: &Value) -> bool {
    let annotations = object::annotations(secret);
    secret.get("type").and_then(Value::as_str) == Some(SA_TOKEN_TYPE)
        && annotations.get(SA_NAME_ANNOTATION).map(String::as_str) == object::name(account)
        && annotations.get(SA_UID_ANNOTATION).map(String::as_str) == object::uid(account)
}

/// What the ServiceAccount needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccountAction {
    Nothing,
    /// No token Secret exists: create one.
    CreateToken,
    /// `secrets` should list exactly these names (token Secrets found, others kept).
    SetSecrets(Vec<String>),
}

/// The pure decision for a ServiceAccount given the Secrets of its namespace.
pub(crate) fn plan_account(account: &Value, secrets: &[Value]) -> AccountAction {
    if object::deletion_timestamp(account).is_some() {
        return AccountAction::Nothing;
    }
    let tokens: Vec<&str> = secrets
        .iter()
        .filter(|s| is_token_of(s, account) && object::deletion_timestamp(s).is_none())
        .filter_map(|s| object::name(s))
        .collect();
    if tokens.is_empty() {
        return AccountAction::CreateToken;
    }
    let listed: Vec<String> = account
        .get("secrets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let existing: Vec<&str> = secrets.iter().filter_map(|s| object::name(s)).collect();
    // Keep references to other Secrets that exist; drop those to deleted token Secrets.
    let mut wanted: Vec<String> = listed
        .iter()
        .filter(|n| existing.contains(&n.as_str()))
        .cloned()
        .collect();
    for token in tokens {
        if !wanted.iter().any(|n| n == token) {
            wanted.push(token.to_string());
        }
    }
    if wanted == listed {
        AccountAction::Nothing
    } else {
        AccountAction::SetSecrets(wanted)
    }
}

/// A random bearer token: 32 random bytes, hex.
fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..SUFFIX_LEN)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// The token Secret of `account`.
pub(crate) fn token_secret(account: &Value, token: &str, suffix: &str, ca_pem: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let name = object::name(account).unwrap_or_default();
    let namespace = object::namespace(account).unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": format!("{name}-token-{suffix}"),
            "namespace": namespace,
            "annotations": {
                SA_NAME_ANNOTATION: name,
                SA_UID_ANNOTATION: object::uid(account).unwrap_or_default(),
            },
        },
        "type": SA_TOKEN_TYPE,
        "data": {
            "token": b64(token),
            "ca.crt": b64(ca_pem),
            "namespace": b64(namespace),
        },
    })
}

struct Kinds {
    namespaces: Informer,
    accounts: Informer,
    secrets: Informer,
    accounts_resource: &'static Resource,
    secrets_resource: &'static Resource,
}

async fn reconcile(ctx: &ControllerContext, kinds: &Kinds, key: Key) -> anyhow::Result<Requeue> {
    let result = match key {
        Key::Namespace(name) => {
            let Some(namespace) = kinds.namespaces.get(&name) else {
                return Ok(Requeue::Done);
            };
            let exists = kinds
                .accounts
                .get(&format!("{name}/{DEFAULT_ACCOUNT}"))
                .is_some();
            if !needs_default(&namespace, exists) {
                return Ok(Requeue::Done);
            }
            let account = json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_ACCOUNT, "namespace": name},
            });
            ctx.client
                .create(kinds.accounts_resource, Some(&name), &account)
                .await
        }
        Key::ServiceAccount(key) => {
            let Some(account) = kinds.accounts.get(&key) else {
                return Ok(Requeue::Done);
            };
            let (Some(namespace), name) = split_key(&key) else {
                return Ok(Requeue::Done);
            };
            let secrets: Vec<Value> = kinds
                .secrets
                .list_namespace(namespace)
                .iter()
                .map(|s| (**s).clone())
                .collect();
            match plan_account(&account, &secrets) {
                AccountAction::Nothing => return Ok(Requeue::Done),
                AccountAction::CreateToken => {
                    let secret = token_secret(
                        &account,
                        &random_token(),
                        &random_suffix(),
                        ctx.client.ca_cert_pem(),
                    );
                    ctx.client
                        .create(kinds.secrets_resource, Some(namespace), &secret)
                        .await
                    // The Secret's arrival queues the account again to list it.
                }
                AccountAction::SetSecrets(names) => {
                    let refs: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
                    let patch = json!({"metadata": {"resourceVersion": object::resource_version(&account)},
                                       "secrets": refs});
                    ctx.client
                        .merge_patch(kinds.accounts_resource, Some(namespace), name, None, &patch)
                        .await
                }
            }
        }
        Key::Secret(key) => {
            let Some(secret) = kinds.secrets.get(&key) else {
                return Ok(Requeue::Done);
            };
            if secret.get("type").and_then(Value::as_str) != Some(SA_TOKEN_TYPE)
                || object::deletion_timestamp(&secret).is_some()
            {
                return Ok(Requeue::Done);
            }
            let (Some(namespace), name) = split_key(&key) else {
                return Ok(Requeue::Done);
            };
            let Some(account_name) = object::annotations(&secret)
                .get(SA_NAME_ANNOTATION)
                .cloned()
            else {
                return Ok(Requeue::Done);
            };
            let account_key = format!("{namespace}/{account_name}");
            if kinds
                .accounts
                .get(&account_key)
                .is_some_and(|a| is_token_of(&secret, &a))
            {
                return Ok(Requeue::Done);
            }
            // Confirm with a live read before deleting on what the cache says.
            match ctx
                .client
                .get(kinds.accounts_resource, Some(namespace), &account_name)
                .await
            {
                Ok(live) if is_token_of(&secret, &live) => return Ok(Requeue::Done),
                Ok(_) => {}
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e.into()),
            }
            let options = DeleteOptions {
                precondition_uid: object::uid(&secret).map(str::to_string),
                ..DeleteOptions::default()
            };
            ctx.client
                .delete(kinds.secrets_resource, Some(namespace), name, &options)
                .await
        }
    };
    match result {
        Ok(_) => Ok(Requeue::Done),
        Err(e) if e.code() == 404 || e.reason() == "AlreadyExists" => Ok(Requeue::Done),
        Err(e) => Err(e.into()),
    }
}

fn account_of_secret(secret: &Value) -> Vec<Key> {
    match (
        object::namespace(secret),
        object::annotations(secret).get(SA_NAME_ANNOTATION),
    ) {
        (Some(ns), Some(account)) => vec![
            Key::ServiceAccount(format!("{ns}/{account}")),
            Key::Secret(key_of(secret)),
        ],
        _ => Vec::new(),
    }
}

/// Keeps `default` ServiceAccounts and token Secrets.
pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let find =
        |p| resources::find("", "v1", p).ok_or_else(|| anyhow::anyhow!("{p} are not registered"));
    let kinds = std::sync::Arc::new(Kinds {
        namespaces: ctx.informers.of(find("namespaces")?),
        accounts: ctx.informers.of(find("serviceaccounts")?),
        secrets: ctx.informers.of(find("secrets")?),
        accounts_resource: find("serviceaccounts")?,
        secrets_resource: find("secrets")?,
    });
    let queue: WorkQueue<Key> = WorkQueue::new("serviceaccount", QUEUE_KEYS_MAX);
    let all_keys = {
        let kinds = kinds.clone();
        move || {
            let mut keys: Vec<Key> = kinds
                .namespaces
                .keys()
                .into_iter()
                .map(Key::Namespace)
                .collect();
            keys.extend(kinds.accounts.keys().into_iter().map(Key::ServiceAccount));
            keys.extend(
                kinds
                    .secrets
                    .list()
                    .iter()
                    .filter(|s| s.get("type").and_then(Value::as_str) == Some(SA_TOKEN_TYPE))
                    .map(|s| Key::Secret(key_of(s))),
            );
            keys
        }
    };
    let feeders = vec![
        feed(&kinds.namespaces, &queue, {
            let all_keys = all_keys.clone();
            move |change| match change {
                Change::Applied { new, .. } => vec![Key::Namespace(key_of(new))],
                Change::Deleted(_) => Vec::new(),
                Change::Resynced => all_keys(),
            }
        }),
        feed(&kinds.accounts, &queue, {
            let all_keys = all_keys.clone();
            move |change| match change {
                Change::Applied { new, .. } => vec![Key::ServiceAccount(key_of(new))],
                Change::Deleted(old) => {
                    let mut keys = vec![];
                    if object::name(old) == Some(DEFAULT_ACCOUNT) {
                        if let Some(ns) = object::namespace(old) {
                            keys.push(Key::Namespace(ns.to_string()));
                        }
                    }
                    keys
                }
                Change::Resynced => all_keys(),
            }
        }),
        feed(&kinds.secrets, &queue, {
            let all_keys = all_keys.clone();
            move |change| match change {
                Change::Applied { new, .. } => account_of_secret(new),
                Change::Deleted(old) => account_of_secret(old)
                    .into_iter()
                    .filter(|k| matches!(k, Key::ServiceAccount(_)))
                    .collect(),
                Change::Resynced => all_keys(),
            }
        }),
    ];
    for informer in [&kinds.namespaces, &kinds.accounts, &kinds.secrets] {
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            _ = informer.wait_synced() => {}
        }
    }
    work(
        "serviceaccount",
        queue,
        feeders,
        &mut stop,
        move |queue| {
            for key in all_keys() {
                queue.add(key);
            }
        },
        |key: Key| {
            let ctx = ctx.clone();
            let kinds = kinds.clone();
            async move { reconcile(&ctx, &kinds, key).await }
        },
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(secrets: &[&str]) -> Value {
        let refs: Vec<Value> = secrets.iter().map(|n| json!({"name": n})).collect();
        json!({"metadata": {"name": "default", "namespace": "ns", "uid": "sa-uid"}, "secrets": refs})
    }

    fn token(name: &str, uid: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns",
            "annotations": {SA_NAME_ANNOTATION: "default", SA_UID_ANNOTATION: uid}},
            "type": SA_TOKEN_TYPE})
    }

    #[test]
    fn default_accounts_go_to_active_namespaces_only() {
        let active = json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}});
        let mut deleting = active.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let cases = [
            (&active, false, true),
            (&active, true, false),
            (&deleting, false, false),
        ];
        for (ns, exists, want) in cases {
            assert_eq!(needs_default(ns, exists), want);
        }
    }

    #[test]
    fn accounts_get_one_token_and_list_it() {
        let other = json!({"metadata": {"name": "creds", "namespace": "ns"}, "type": "Opaque"});
        let cases: Vec<(&str, Value, Vec<Value>, AccountAction)> = vec![
            ("no token", account(&[]), vec![], AccountAction::CreateToken),
            (
                "token of a former account",
                account(&[]),
                vec![token("t1", "old-uid")],
                AccountAction::CreateToken,
            ),
            (
                "unlisted token",
                account(&[]),
                vec![token("t1", "sa-uid")],
                AccountAction::SetSecrets(vec!["t1".into()]),
            ),
            (
                "listed",
                account(&["t1"]),
                vec![token("t1", "sa-uid")],
                AccountAction::Nothing,
            ),
            (
                "deleted token replaced",
                account(&["t0", "creds"]),
                vec![token("t1", "sa-uid"), other],
                AccountAction::SetSecrets(vec!["creds".into(), "t1".into()]),
            ),
        ];
        for (name, sa, secrets, want) in cases {
            assert_eq!(plan_account(&sa, &secrets), want, "{name}");
        }
    }

    #[test]
    fn token_secrets_carry_token_ca_and_namespace() {
        let secret = token_secret(&account(&[]), "tok", "abcde", "PEM");
        assert_eq!(secret["metadata"]["name"], "default-token-abcde");
        assert_eq!(
            secret["metadata"]["annotations"][SA_UID_ANNOTATION],
            "sa-uid"
        );
        let decode = |k: &str| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(secret["data"][k].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(decode("token"), "tok");
        assert_eq!(decode("ca.crt"), "PEM");
        assert_eq!(decode("namespace"), "ns");
    }
}
