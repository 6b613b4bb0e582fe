//! The controllers on a real master: namespace deletion, default ServiceAccounts with tokens
//! the API accepts, Endpoints that follow a Service's selector and pod readiness, and the
//! garbage collector's Orphan, Foreground and Background propagation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine;
use common::cluster::{Api, Cluster};
use serde_json::{json, Value};

const NS: &str = "/api/v1/namespaces/apps";
const WAIT: Duration = Duration::from_secs(30);

async fn eventually<F, Fut>(what: &str, mut check: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<Value>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn gone(api: &Api, path: &str) {
    eventually(path, || async {
        (api.get(path).await.code == 404).then_some(Value::Null)
    })
    .await;
}

fn owned(kind: &str, name: &str, owner_uid: &str, block: bool) -> Value {
    let mut obj = json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid,
            "blockOwnerDeletion": block}]},
    });
    if kind == "Pod" {
        obj["spec"] = json!({"containers": [{"name": "c", "image": "busybox:1.36"}]});
    }
    obj
}

async fn delete_with(api: &Api, path: &str, policy: &str) -> common::cluster::Reply {
    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy});
    api.send(
        reqwest::Method::DELETE,
        path,
        Some("application/json"),
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await
}

async fn new_owner(api: &Api) -> String {
    let owner = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}});
    let reply = api.post(&format!("{NS}/configmaps"), &owner).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    reply.body["metadata"]["uid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn controllers_reconcile_against_a_real_master() {
    let cluster = Cluster::start_with(
        1,
        &["--controllers=namespace-controller,serviceaccount-controller,endpoints-controller,garbage-collector"],
    )
    .await;
    let api = cluster.client(0);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}});
    assert_eq!(api.post("/api/v1/namespaces", &ns).await.code, 201);

    // Phase 1: a default ServiceAccount with a token Secret whose token authenticates.
    eprintln!("phase 1: service accounts");
    let secret_name = eventually("the default ServiceAccount's token", || async {
        let sa = api.get(&format!("{NS}/serviceaccounts/default")).await;
        sa.body["secrets"][0]["name"].as_str().map(|s| json!(s))
    })
    .await;
    let secret_name = secret_name.as_str().unwrap().to_string();
    assert!(secret_name.starts_with("default-token-"), "{secret_name}");
    let secret_path = format!("{NS}/secrets/{secret_name}");
    let secret = api.get(&secret_path).await.body;
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    assert_eq!(
        secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "default"
    );
    let token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(secret["data"]["ca.crt"].is_string());
    let as_sa = Api {
        token: token.clone(),
        ..api.clone()
    };
    eventually("the token to authenticate", || async {
        (as_sa.get(&format!("{NS}/configmaps")).await.code == 200).then_some(Value::Null)
    })
    .await;
    let stranger = Api {
        token: "not-a-token".into(),
        ..api.clone()
    };
    assert_eq!(stranger.get(&format!("{NS}/configmaps")).await.code, 401);
    assert_eq!(api.delete(&secret_path).await.code, 200);
    eventually("the deleted Secret's token to be refused", || async {
        (as_sa.get(&format!("{NS}/configmaps")).await.code == 401).then_some(Value::Null)
    })
    .await;
    eventually("a new token Secret", || async {
        let sa = api.get(&format!("{NS}/serviceaccounts/default")).await;
        let names: Vec<String> = sa.body["secrets"]
            .as_array()?
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect();
        (!names.is_empty() && !names.contains(&secret_name)).then_some(Value::Null)
    })
    .await;

    // Phase 2: Endpoints follow the selector and pod readiness.
    eprintln!("phase 2: endpoints");
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    assert_eq!(
        api.post(&format!("{NS}/services"), &service).await.code,
        201
    );
    for name in ["p1", "p2"] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                "ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(api.post(&format!("{NS}/pods"), &pod).await.code, 201);
    }
    let endpoints = format!("{NS}/endpoints/web");
    eventually("empty Endpoints", || async {
        let e = api.get(&endpoints).await;
        (e.code == 200).then_some(Value::Null)
    })
    .await;
    let set_status = |name: &'static str, ip: &'static str, ready: bool| {
        let api = api.clone();
        async move {
            let patch = json!({"status": {"podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
            let reply = api
                .patch(
                    &format!("{NS}/pods/{name}/status"),
                    "application/merge-patch+json",
                    &patch.to_string(),
                )
                .await;
            assert_eq!(reply.code, 200, "{}", reply.text);
        }
    };
    set_status("p1", "10.1.0.1", true).await;
    set_status("p2", "10.1.0.2", false).await;
    let subsets = eventually("p1 ready and p2 not ready in the Endpoints", || async {
        let e = api.get(&endpoints).await.body;
        let s = &e["subsets"][0];
        (s["addresses"][0]["ip"] == "10.1.0.1" && s["notReadyAddresses"][0]["ip"] == "10.1.0.2")
            .then(|| e["subsets"].clone())
    })
    .await;
    assert_eq!(
        subsets[0]["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(subsets[0]["addresses"][0]["targetRef"]["name"], "p1");
    set_status("p2", "10.1.0.2", true).await;
    eventually("both pods ready", || async {
        let e = api.get(&endpoints).await.body;
        (e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(2)).then_some(Value::Null)
    })
    .await;
    let reselect = r#"{"spec": {"selector": {"app": "nothing"}}}"#;
    assert_eq!(
        api.patch(
            &format!("{NS}/services/web"),
            "application/merge-patch+json",
            reselect
        )
        .await
        .code,
        200
    );
    eventually("no addresses once the selector matches nothing", || async {
        let e = api.get(&endpoints).await.body;
        e["subsets"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(Value::Null)
    })
    .await;
    assert_eq!(api.delete(&format!("{NS}/services/web")).await.code, 200);
    gone(&api, &endpoints).await;

    // Phase 3: garbage collection with each propagation policy.
    eprintln!("phase 3: background");
    let owner_path = format!("{NS}/configmaps/owner");
    let uid = new_owner(&api).await;
    assert_eq!(
        api.post(
            &format!("{NS}/configmaps"),
            &owned("ConfigMap", "dep-cm", &uid, false)
        )
        .await
        .code,
        201
    );
    assert_eq!(
        api.post(&format!("{NS}/pods"), &owned("Pod", "dep-pod", &uid, false))
            .await
            .code,
        201
    );
    let reply = delete_with(&api, &owner_path, "Background").await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(
        api.get(&owner_path).await.code,
        404,
        "a Background delete is immediate"
    );
    gone(&api, &format!("{NS}/configmaps/dep-cm")).await;
    gone(&api, &format!("{NS}/pods/dep-pod")).await;

    eprintln!("phase 3: orphan");
    let uid = new_owner(&api).await;
    assert_eq!(
        api.post(
            &format!("{NS}/configmaps"),
            &owned("ConfigMap", "dep-cm", &uid, true)
        )
        .await
        .code,
        201
    );
    let reply = delete_with(&api, &owner_path, "Orphan").await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(
        reply.body["metadata"]["finalizers"],
        json!(["orphan"]),
        "{}",
        reply.text
    );
    gone(&api, &owner_path).await;
    let orphan = api.get(&format!("{NS}/configmaps/dep-cm")).await;
    assert_eq!(orphan.code, 200, "the orphan stays");
    assert!(
        orphan.body["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        orphan.text
    );
    assert_eq!(
        api.delete(&format!("{NS}/configmaps/dep-cm")).await.code,
        200
    );

    eprintln!("phase 3: foreground");
    let uid = new_owner(&api).await;
    let mut held = owned("ConfigMap", "dep-held", &uid, true);
    held["metadata"]["finalizers"] = json!(["test.keelson.io/hold"]);
    assert_eq!(api.post(&format!("{NS}/configmaps"), &held).await.code, 201);
    assert_eq!(
        api.post(&format!("{NS}/pods"), &owned("Pod", "dep-pod", &uid, false))
            .await
            .code,
        201
    );
    let reply = delete_with(&api, &owner_path, "Foreground").await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(
        reply.body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert!(reply.body["metadata"]["deletionTimestamp"].is_string());
    gone(&api, &format!("{NS}/pods/dep-pod")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = api.get(&owner_path).await;
    assert_eq!(
        waiting.code, 200,
        "the owner waits for its blocking dependent"
    );
    let dependent = api.get(&format!("{NS}/configmaps/dep-held")).await;
    assert!(
        dependent.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        dependent.text
    );
    let release = r#"{"metadata": {"finalizers": null}}"#;
    let released = api
        .patch(
            &format!("{NS}/configmaps/dep-held"),
            "application/merge-patch+json",
            release,
        )
        .await;
    assert_eq!(released.code, 200, "{}", released.text);
    gone(&api, &format!("{NS}/configmaps/dep-held")).await;
    gone(&api, &owner_path).await;

    // Phase 4: deleting the namespace removes its objects, then the namespace.
    eprintln!("phase 4: namespace deletion");
    assert_eq!(
        api.post(
            &format!("{NS}/configmaps"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "left"}})
        )
        .await
        .code,
        201
    );
    let reply = api.delete("/api/v1/namespaces/apps").await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(reply.body["status"]["phase"], "Terminating");
    gone(&api, "/api/v1/namespaces/apps").await;
    for collection in [
        "configmaps",
        "pods",
        "secrets",
        "serviceaccounts",
        "endpoints",
    ] {
        let list = api.get(&format!("{NS}/{collection}")).await;
        assert_eq!(list.body["items"], json!([]), "{collection}: {}", list.text);
    }
}
