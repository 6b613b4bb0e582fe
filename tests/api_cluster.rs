//! The Kubernetes API of a 3-master cluster of real `keelson master` processes, driven over
//! HTTPS: CRUD, optimistic concurrency, every patch type, subresources, namespaces, bad input,
//! paged lists at one revision, watches that resume on another master and expire after
//! compaction, and no acknowledged write lost when the leader is killed or all restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{keelson, Api, Cluster, TOKEN};
use futures::StreamExt;
use serde_json::{json, Value};

const CM: &str = "/api/v1/namespaces/default/configmaps";
/// These tests write objects' status themselves, with resourceVersions from their creates;
/// the scheduler and the workload controllers would write status in between. The namespace
/// controller and the garbage collector, which finish deletions, run.
const API_ONLY: &[&str] = &["--controllers=namespace-controller,garbage-collector"];

fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}]}
    })
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_conflicts_patches_subresources_and_bad_input() {
    let cluster = Cluster::start_with(3, API_ONLY).await;
    let (c0, c1, c2) = (cluster.client(0), cluster.client(1), cluster.client(2));

    // Phase 1: discovery and authentication.
    eprintln!("phase 1");
    assert_eq!(c0.get("/api").await.body["versions"][0], "v1");
    let core = c1.get("/api/v1").await;
    assert!(core.text.contains("\"pods\""), "{}", core.text);
    assert!(c2.get("/apis").await.text.contains("apps"));
    let anonymous = Api {
        token: "wrong".into(),
        ..c0.clone()
    };
    let denied = anonymous.get("/api/v1/namespaces").await;
    assert_eq!(denied.code, 401, "{}", denied.text);
    assert_eq!(denied.body["kind"], "Status");
    let version = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{}/version", c0.base))
        .send()
        .await
        .unwrap();
    assert_eq!(version.status().as_u16(), 200);
    assert_eq!(c0.get("/api/v1/namespaces/default").await.code, 200);

    // Phase 2: create on one master, read on another; AlreadyExists; optimistic concurrency.
    eprintln!("phase 2");
    let created = c0.post(CM, &configmap("cm1", json!({"a": "1"}))).await;
    assert_eq!(created.code, 201, "{}", created.text);
    let rv1 = created.rv();
    assert!(created.body["metadata"]["uid"].as_str().is_some());
    assert!(created.body["metadata"]["creationTimestamp"]
        .as_str()
        .is_some());
    let read = c1.get(&format!("{CM}/cm1")).await;
    assert_eq!(read.code, 200);
    assert_eq!(read.body["data"]["a"], "1");
    assert_eq!(read.rv(), rv1);
    let again = c2.post(CM, &configmap("cm1", json!({}))).await;
    assert_eq!(again.code, 409);
    assert_eq!(again.body["reason"], "AlreadyExists");

    let mut update = read.body.clone();
    update["data"]["a"] = json!("2");
    let updated = c1.put(&format!("{CM}/cm1"), &update).await;
    assert_eq!(updated.code, 200, "{}", updated.text);
    assert!(updated.rv().parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    let stale = c2.put(&format!("{CM}/cm1"), &update).await;
    assert_eq!(stale.code, 409, "{}", stale.text);
    assert_eq!(stale.body["reason"], "Conflict");

    // generateName picks a free name with a random suffix.
    let generated = c2
        .post(
            CM,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
        )
        .await;
    assert_eq!(generated.code, 201, "{}", generated.text);
    let name = generated.body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    // Phase 3: every patch type.
    eprintln!("phase 3");
    let merged = c0
        .patch(
            &format!("{CM}/cm1"),
            "application/merge-patch+json",
            r#"{"data":{"b":"3"}}"#,
        )
        .await;
    assert_eq!(merged.code, 200, "{}", merged.text);
    assert_eq!(merged.body["data"], json!({"a": "2", "b": "3"}));
    let jsonpatched = c1
        .patch(
            &format!("{CM}/cm1"),
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/data/a","value":"9"}]"#,
        )
        .await;
    assert_eq!(jsonpatched.code, 200, "{}", jsonpatched.text);
    assert_eq!(jsonpatched.body["data"]["a"], "9");
    let failed_test = c1
        .patch(
            &format!("{CM}/cm1"),
            "application/json-patch+json",
            r#"[{"op":"test","path":"/data/a","value":"nope"}]"#,
        )
        .await;
    assert!(
        matches!(failed_test.code, 400 | 422),
        "{}",
        failed_test.text
    );

    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let created = c2.post(deploys, &deployment("web")).await;
    assert_eq!(created.code, 201, "{}", created.text);
    let smp = c0
        .patch(
            &format!("{deploys}/web"),
            "application/strategic-merge-patch+json",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}"#,
        )
        .await;
    assert_eq!(smp.code, 200, "{}", smp.text);
    let containers = &smp.body["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1);
    assert_eq!(containers[0]["image"], "nginx:2");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
    assert_eq!(smp.body["metadata"]["generation"], 2);

    let applied = c1
        .patch(
            &format!("{CM}/applied?fieldManager=e2e"),
            "application/apply-patch+yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  x: \"1\"\n  y: \"2\"\n",
        )
        .await;
    assert!(matches!(applied.code, 200 | 201), "{}", applied.text);
    let reapplied = c2
        .patch(
            &format!("{CM}/applied?fieldManager=e2e"),
            "application/apply-patch+yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  x: \"5\"\n",
        )
        .await;
    assert_eq!(reapplied.code, 200, "{}", reapplied.text);
    assert_eq!(reapplied.body["data"], json!({"x": "5"}));

    // Phase 4: subresources.
    eprintln!("phase 4");
    let scaled = c0
        .patch(
            &format!("{deploys}/web/scale"),
            "application/merge-patch+json",
            r#"{"spec":{"replicas":3}}"#,
        )
        .await;
    assert_eq!(scaled.code, 200, "{}", scaled.text);
    assert_eq!(scaled.body["kind"], "Scale");
    assert_eq!(scaled.body["spec"]["replicas"], 3);
    assert_eq!(
        c1.get(&format!("{deploys}/web")).await.body["spec"]["replicas"],
        3
    );

    let pods = "/api/v1/namespaces/default/pods";
    let created = c0.post(pods, &pod("p1")).await;
    assert_eq!(created.code, 201, "{}", created.text);
    assert_eq!(created.body["status"]["phase"], "Pending");
    assert_eq!(created.body["spec"]["restartPolicy"], "Always");
    let mut status = created.body.clone();
    status["status"]["phase"] = json!("Running");
    let status_put = c1.put(&format!("{pods}/p1/status"), &status).await;
    assert_eq!(status_put.code, 200, "{}", status_put.text);
    assert_eq!(status_put.body["status"]["phase"], "Running");
    // The main resource ignores status.
    let mut main = status_put.body.clone();
    main["status"]["phase"] = json!("Failed");
    main["metadata"]["labels"]["extra"] = json!("yes");
    let main_put = c2.put(&format!("{pods}/p1"), &main).await;
    assert_eq!(main_put.code, 200, "{}", main_put.text);
    assert_eq!(main_put.body["status"]["phase"], "Running");
    assert_eq!(main_put.body["metadata"]["labels"]["extra"], "yes");

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": "n1"}});
    let bound = c0.post(&format!("{pods}/p1/binding"), &binding).await;
    assert_eq!(bound.code, 201, "{}", bound.text);
    let twice = c1.post(&format!("{pods}/p1/binding"), &binding).await;
    assert_eq!(twice.code, 409, "{}", twice.text);
    assert_eq!(
        c2.get(&format!("{pods}/p1")).await.body["spec"]["nodeName"],
        "n1"
    );
    let logs = c2.get(&format!("{pods}/p1/log")).await;
    assert_eq!(logs.code, 503, "{}", logs.text);

    // Graceful deletion: a bound pod stays with a deletionTimestamp until deleted with grace 0.
    let deleting = c0.delete(&format!("{pods}/p1")).await;
    assert_eq!(deleting.code, 200, "{}", deleting.text);
    assert!(deleting.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(c1.get(&format!("{pods}/p1")).await.code, 200);
    let now = c1.delete(&format!("{pods}/p1?gracePeriodSeconds=0")).await;
    assert_eq!(now.code, 200, "{}", now.text);
    assert_eq!(c2.get(&format!("{pods}/p1")).await.code, 404);

    let table = c0
        .http
        .get(format!("{}{CM}", c0.base))
        .bearer_auth(&c0.token)
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert!(table["rows"].as_array().unwrap().len() >= 2);

    // Phase 5: validation lists every violation.
    eprintln!("phase 5");
    let mut bad = pod("Bad_Name");
    bad["spec"]["containers"][0]["image"] = json!("");
    let invalid = c0.post(pods, &bad).await;
    assert_eq!(invalid.code, 422, "{}", invalid.text);
    assert_eq!(invalid.body["reason"], "Invalid");
    assert!(invalid.body["details"]["causes"].as_array().unwrap().len() >= 2);

    // Phase 6: bad input gets the right 4xx and changes nothing.
    eprintln!("phase 6");
    let before = c0.get(CM).await.body["items"].clone();
    let send = |ct: &'static str, body: Vec<u8>| {
        let c = c1.clone();
        async move {
            c.send(reqwest::Method::POST, CM, Some(ct), Some(body))
                .await
        }
    };
    assert_eq!(
        send("application/json", b"{not json".to_vec()).await.code,
        400
    );
    assert_eq!(send("application/yaml", b"a: [b".to_vec()).await.code, 400);
    assert_eq!(send("text/plain", b"hello".to_vec()).await.code, 415);
    let wrong_kind = c1
        .post(
            CM,
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(wrong_kind.code, 400, "{}", wrong_kind.text);
    let huge = configmap("huge", json!({"k": "x".repeat(4 * 1024 * 1024)}));
    let too_large = c2.post(CM, &huge).await;
    assert_eq!(too_large.code, 413, "{}", too_large.text);
    assert_eq!(c0.get("/api/v1/widgets").await.code, 404);
    assert_eq!(
        c0.get(&format!("{CM}?labelSelector=a%20in%20(")).await.code,
        400
    );
    assert_eq!(
        c0.get(&format!("{CM}?fieldSelector=spec.foo%3Dx"))
            .await
            .code,
        400
    );
    let unsupported = c0
        .send(
            reqwest::Method::PATCH,
            &format!("{CM}/cm1"),
            Some("application/xml"),
            Some(b"<a/>".to_vec()),
        )
        .await;
    assert_eq!(unsupported.code, 415);
    for reply in [&wrong_kind, &too_large, &unsupported] {
        assert_eq!(reply.body["kind"], "Status", "{}", reply.text);
    }
    assert_eq!(c0.get(CM).await.body["items"], before);

    // Phase 7: deleting a namespace removes its contents, then the namespace.
    eprintln!("phase 7");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    assert_eq!(c0.post("/api/v1/namespaces", &ns).await.code, 201);
    let in_team = "/api/v1/namespaces/team/configmaps";
    assert_eq!(c1.post(in_team, &configmap("c", json!({}))).await.code, 201);
    let missing_ns = c1
        .post(
            "/api/v1/namespaces/nowhere/configmaps",
            &configmap("c", json!({})),
        )
        .await;
    assert_eq!(missing_ns.code, 404, "{}", missing_ns.text);
    let terminating = c2.delete("/api/v1/namespaces/team").await;
    assert_eq!(terminating.code, 200, "{}", terminating.text);
    assert_eq!(terminating.body["status"]["phase"], "Terminating");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c0.get("/api/v1/namespaces/team").await.code != 404 {
        assert!(Instant::now() < deadline, "namespace team was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c0.get(&format!("{in_team}/c")).await.code, 404);

    // Monitoring: the requests above are counted, and the store's state is exported.
    let metrics = c0.get("/metrics").await;
    assert_eq!(metrics.code, 200);
    for series in [
        "apiserver_request_total{",
        "apiserver_request_duration_seconds_bucket{",
        "keelson_store_revision ",
        "keelson_raft_term ",
        "apiserver_registered_watchers ",
    ] {
        assert!(
            metrics.text.contains(series),
            "{series} missing from:\n{}",
            metrics.text
        );
    }
    assert!(
        metrics.text.contains("resource=\"configmaps\""),
        "{}",
        metrics.text
    );

    // Writes taken by a follower are carried out (and stamped) by the leader's API.
    let leader = c0.get("/keelson/v1/cluster").await.body["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let leader_index = cluster
        .masters
        .iter()
        .position(|m| m.name == leader)
        .unwrap();
    let follower = (leader_index + 1) % 3;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "stringData": {"k": "v"}});
    let via_follower = cluster
        .client(follower)
        .post("/api/v1/namespaces/default/secrets", &secret)
        .await;
    assert_eq!(via_follower.code, 201, "{}", via_follower.text);
    let leader_metrics = cluster.client(leader_index).get("/metrics").await.text;
    assert!(
        leader_metrics
            .lines()
            .any(|l| l.starts_with("apiserver_request_total{")
                && l.contains("verb=\"create\"")
                && l.contains("resource=\"secrets\"")
                && l.contains("code=\"201\"")),
        "the leader did not serve the follower's create:\n{leader_metrics}"
    );

    // Plain deletion returns the object.
    let deleted = c2.delete(&format!("{CM}/cm1")).await;
    assert_eq!(deleted.code, 200);
    assert_eq!(deleted.body["kind"], "ConfigMap");
    assert_eq!(c0.get(&format!("{CM}/cm1")).await.code, 404);
}

/// Reads watch events (one JSON object per line) until `n` arrived or the timeout.
async fn read_events(
    lines: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    n: usize,
    timeout: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Vec::new();
    while events.len() < n {
        while let Some(pos) = buffer.find('\n') {
            let line: String = buffer.drain(..=pos).collect();
            if !line.trim().is_empty() {
                let event: Value = serde_json::from_str(&line).unwrap();
                if event["type"] != "BOOKMARK" {
                    events.push(event);
                }
            }
            if events.len() == n {
                return events;
            }
        }
        match tokio::time::timeout_at(deadline, lines.next()).await {
            Ok(Some(Ok(chunk))) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    events
}

async fn open_watch(
    api: &Api,
    query: &str,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin {
    let response = api
        .http
        .get(format!("{}{CM}?watch=true&{query}", api.base))
        .bearer_auth(&api.token)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    Box::pin(response.bytes_stream())
}

fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_lists_and_watches_that_resume_and_expire() {
    let mut cluster = Cluster::start(3).await;
    let (c0, c1) = (cluster.client(0), cluster.client(1));

    // Phase 1: a paged list keeps its first page's revision while writes continue.
    eprintln!("phase 1");
    for i in 0..30 {
        let mut cm = configmap(&format!("page-{i:02}"), json!({}));
        cm["metadata"]["labels"] = json!({"set": "page"});
        assert_eq!(c0.post(CM, &cm).await.code, 201);
    }
    let writer = {
        let c = cluster.client(2);
        tokio::spawn(async move {
            for i in 0..20 {
                let mut cm = configmap(&format!("page-late-{i:02}"), json!({}));
                cm["metadata"]["labels"] = json!({"set": "page"});
                c.post(CM, &cm).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut revision = None;
    loop {
        let mut path = format!("{CM}?labelSelector=set%3Dpage&limit=7");
        if let Some(t) = &token {
            path.push_str(&format!("&continue={t}"));
        }
        let page = c1.get(&path).await;
        assert_eq!(page.code, 200, "{}", page.text);
        let rv = page.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            *revision.get_or_insert(rv.clone()),
            rv,
            "every page at one revision"
        );
        seen.extend(names(&page.body));
        token = page.body["metadata"]["continue"]
            .as_str()
            .map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    writer.await.unwrap();
    // The writer races the first page: the late objects created at or before the first
    // page's revision belong in the list (none is ever modified, so its resourceVersion is
    // its creation revision), and none created after it.
    let list_revision: u64 = revision.unwrap().parse().unwrap();
    let all = c1.get(&format!("{CM}?labelSelector=set%3Dpage")).await;
    let mut expected: Vec<String> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cm| {
            cm["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse::<u64>().ok())
                .is_some_and(|rv| rv <= list_revision)
        })
        .map(|cm| cm["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert!(expected.len() >= 30 && expected.len() < 50, "{expected:?}");
    assert_eq!(
        seen, expected,
        "exactly the objects of the first page's revision"
    );

    // Phase 2: a watch sees exactly the changes, in order.
    eprintln!("phase 2");
    let list = c1.get(&format!("{CM}?labelSelector=w%3D1")).await;
    let start = list.rv();
    let mut stream = open_watch(&c1, &format!("labelSelector=w%3D1&resourceVersion={start}")).await;
    let mut buffer = String::new();
    let mut a = configmap("wa", json!({"v": "1"}));
    a["metadata"]["labels"] = json!({"w": "1"});
    let created = c0.post(CM, &a).await;
    let mut a2 = created.body.clone();
    a2["data"]["v"] = json!("2");
    assert_eq!(c0.put(&format!("{CM}/wa"), &a2).await.code, 200);
    let mut b = configmap("wb", json!({}));
    b["metadata"]["labels"] = json!({"w": "1"});
    assert_eq!(c0.post(CM, &b).await.code, 201);
    // Leaving the selection is a DELETED event for this watch.
    assert_eq!(
        c0.patch(
            &format!("{CM}/wb"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"w":"2"}}}"#
        )
        .await
        .code,
        200
    );
    assert_eq!(c0.delete(&format!("{CM}/wa")).await.code, 200);
    let events = read_events(&mut stream, &mut buffer, 5, Duration::from_secs(20)).await;
    assert_eq!(
        summary(&events),
        vec![
            ("ADDED".into(), "wa".into()),
            ("MODIFIED".into(), "wa".into()),
            ("ADDED".into(), "wb".into()),
            ("DELETED".into(), "wb".into()),
            ("DELETED".into(), "wa".into()),
        ]
    );
    let rvs: Vec<u64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");

    // sendInitialEvents: the current objects, then a bookmark marking their end.
    let mut c = configmap("wc", json!({}));
    c["metadata"]["labels"] = json!({"w": "1"});
    assert_eq!(c0.post(CM, &c).await.code, 201);
    let mut stream = open_watch(
        &c1,
        "labelSelector=w%3D1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
    )
    .await;
    let mut buffer = String::new();
    let mut initial = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while !buffer.contains('\n') {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
        let pos = buffer.find('\n').unwrap();
        let line: String = buffer.drain(..=pos).collect();
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["type"] == "BOOKMARK" {
            assert_eq!(
                event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
                "true"
            );
            break;
        }
        initial.push(event);
    }
    assert_eq!(
        summary(&initial),
        vec![("ADDED".to_string(), "wc".to_string())]
    );
    let no_match = c1
        .get(&format!("{CM}?watch=true&sendInitialEvents=true"))
        .await;
    assert_eq!(
        no_match.code, 400,
        "sendInitialEvents needs resourceVersionMatch: {}",
        no_match.text
    );

    // Phase 3: a watch on master 2 resumes on master 0 after master 2 is killed.
    eprintln!("phase 3");
    let c2 = cluster.client(2);
    let from = c0.get(CM).await.rv();
    let mut stream = open_watch(&c2, &format!("labelSelector=r%3D1&resourceVersion={from}")).await;
    let mut buffer = String::new();
    let mut made = Vec::new();
    for i in 0..3 {
        let mut cm = configmap(&format!("r{i}"), json!({}));
        cm["metadata"]["labels"] = json!({"r": "1"});
        assert_eq!(c0.post(CM, &cm).await.code, 201);
        made.push(format!("r{i}"));
    }
    let first = read_events(&mut stream, &mut buffer, 2, Duration::from_secs(20)).await;
    assert_eq!(first.len(), 2);
    let last_rv = first[1]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.kill(2);
    for i in 3..6 {
        let mut cm = configmap(&format!("r{i}"), json!({}));
        cm["metadata"]["labels"] = json!({"r": "1"});
        assert_eq!(c0.post(CM, &cm).await.code, 201);
        made.push(format!("r{i}"));
    }
    let mut stream = open_watch(
        &c0,
        &format!("labelSelector=r%3D1&resourceVersion={last_rv}"),
    )
    .await;
    let mut buffer = String::new();
    let rest = read_events(&mut stream, &mut buffer, 4, Duration::from_secs(20)).await;
    let mut all = summary(&first);
    all.extend(summary(&rest));
    let expected: Vec<(String, String)> = made
        .iter()
        .map(|n| ("ADDED".to_string(), n.clone()))
        .collect();
    assert_eq!(
        all, expected,
        "no change missed or repeated across the reconnect"
    );

    // Phase 4: after compaction, an old resourceVersion is 410 Expired, for watch and continue.
    eprintln!("phase 4");
    let old_page = c0.get(&format!("{CM}?limit=2")).await;
    let old_continue = old_page.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let old_rv = old_page.rv();
    for i in 0..3 {
        assert_eq!(
            c0.post(CM, &configmap(&format!("later-{i}"), json!({})))
                .await
                .code,
            201
        );
    }
    let current = c0.get(CM).await.rv();
    let compact = keelson()
        .args([
            "store",
            "--endpoints",
            &cluster.store_endpoints(),
            "--token",
            TOKEN,
        ])
        .args(["compact", &current])
        .output()
        .unwrap();
    assert!(compact.status.success(), "{compact:?}");
    let mut stream = open_watch(&c1, &format!("resourceVersion={old_rv}")).await;
    let mut buffer = String::new();
    let expired = read_events(&mut stream, &mut buffer, 1, Duration::from_secs(20)).await;
    assert_eq!(expired[0]["type"], "ERROR", "{expired:?}");
    assert_eq!(expired[0]["object"]["code"], 410);
    assert_eq!(expired[0]["object"]["reason"], "Expired");
    let gone = c1
        .get(&format!("{CM}?limit=2&continue={old_continue}"))
        .await;
    assert_eq!(gone.code, 410, "{}", gone.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_lost_when_the_leader_dies_or_all_restart() {
    let mut cluster = Cluster::start(3).await;
    let info = cluster.client(0).get("/keelson/v1/cluster").await;
    let leader = info.body["leader"].as_str().unwrap().to_string();
    let leader_index = cluster
        .masters
        .iter()
        .position(|m| m.name == leader)
        .unwrap();
    let followers: Vec<Api> = (0..3)
        .filter(|i| *i != leader_index)
        .map(|i| cluster.client(i))
        .collect();

    // Phase 1: writers on the followers while the leader is killed.
    eprintln!("phase 1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, api) in followers.iter().enumerate() {
        for lane in 0..2 {
            let api = api.clone();
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("load-{w}-{lane}-{i}");
                    i += 1;
                    let reply = api
                        .send(
                            reqwest::Method::POST,
                            CM,
                            Some("application/json"),
                            Some(serde_json::to_vec(&configmap(&name, json!({}))).unwrap()),
                        )
                        .await;
                    if reply.code == 201 {
                        acknowledged.push(name);
                    }
                }
                acknowledged
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(leader_index);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = BTreeSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "too few writes went through: {}",
        acknowledged.len()
    );
    let survivor = followers[0].clone();
    let listed: BTreeSet<String> = names(&survivor.get(CM).await.body).into_iter().collect();
    let lost: Vec<&String> = acknowledged.difference(&listed).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // Phase 2: every master restarted; all data is there.
    eprintln!("phase 2");
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    for i in 0..3 {
        cluster.wait_serving(i, Duration::from_secs(60)).await;
    }
    let after: BTreeSet<String> = names(&cluster.client(1).get(CM).await.body)
        .into_iter()
        .collect();
    assert_eq!(after, listed);
}

/// One valid object of every kind the API serves, with its collection path.
fn every_kind() -> Vec<(String, Value)> {
    let ns = "/api/v1/namespaces/default";
    let apps = "/apis/apps/v1/namespaces/default";
    let template = json!({
        "metadata": {"labels": {"app": "k"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    vec![
        (
            "/api/v1/namespaces".to_string(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kind-ns"}}),
        ),
        (format!("{ns}/pods"), pod("kind-pod")),
        (
            "/api/v1/nodes".to_string(),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kind-node"}}),
        ),
        (
            format!("{ns}/services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kind-svc"}, "spec": {"selector": {"app": "k"}, "ports": [{"port": 80}]}}),
        ),
        (
            format!("{ns}/endpoints"),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kind-ep"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
        ),
        (
            format!("{ns}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kind-sa"}}),
        ),
        (
            format!("{ns}/secrets"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kind-secret"}, "data": {"k": "dg=="}}),
        ),
        (
            format!("{ns}/configmaps"),
            configmap("kind-cm", json!({"k": "v"})),
        ),
        (
            format!("{ns}/replicationcontrollers"),
            json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "kind-rc"}, "spec": {"replicas": 1, "selector": {"app": "k"}, "template": template}}),
        ),
        (
            format!("{ns}/events"),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "kind-ev"}, "involvedObject": {"kind": "Pod", "name": "kind-pod", "namespace": "default"}, "reason": "Test", "message": "hello", "type": "Normal"}),
        ),
        (
            format!("{apps}/replicasets"),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "kind-rs"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "k"}}, "template": template}}),
        ),
        (format!("{apps}/deployments"), deployment("kind-deploy")),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases".to_string(),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "kind-lease"}, "spec": {"holderIdentity": "m0", "leaseDurationSeconds": 15}}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_created_read_listed_updated_and_deleted() {
    let cluster = Cluster::start_with(3, API_ONLY).await;
    for (i, (collection, object)) in every_kind().into_iter().enumerate() {
        let api = cluster.client(i % 3);
        let kind = object["kind"].as_str().unwrap().to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let item = format!("{collection}/{name}");
        eprintln!("kind {kind}");
        let created = api.post(&collection, &object).await;
        assert_eq!(created.code, 201, "create {kind}: {}", created.text);
        let read = cluster.client((i + 1) % 3).get(&item).await;
        assert_eq!(read.code, 200, "get {kind}: {}", read.text);
        assert_eq!(read.body["kind"], kind.as_str());
        let listed = api.get(&collection).await;
        assert!(
            names(&listed.body).contains(&name),
            "list {kind}: {}",
            listed.text
        );
        let mut update = read.body.clone();
        update["metadata"]["labels"]["touched"] = json!("yes");
        let updated = cluster.client((i + 2) % 3).put(&item, &update).await;
        assert_eq!(updated.code, 200, "update {kind}: {}", updated.text);
        assert_eq!(updated.body["metadata"]["labels"]["touched"], "yes");
        let deleted = api.delete(&item).await;
        assert_eq!(deleted.code, 200, "delete {kind}: {}", deleted.text);
        if kind == "Namespace" {
            let deadline = Instant::now() + Duration::from_secs(30);
            while api.get(&item).await.code != 404 {
                assert!(
                    Instant::now() < deadline,
                    "namespace {name} was not removed"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } else {
            assert_eq!(
                api.get(&item).await.code,
                404,
                "{kind} still there after delete"
            );
        }
    }
}
