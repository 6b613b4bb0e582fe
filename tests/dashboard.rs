//! The dashboard end to end in headless Chromium: a real master and hollow nodes, the login
//! gate, a pod applied with `kctl` appearing live, a deployment scaled from the page, a pod's
//! detail, a manifest applied and a pod deleted from the page; and, on a real runc node (root),
//! a pod's page following its container's log as new lines are printed. Screenshots of each
//! page go to `$KEELSON_SCREENSHOTS` or `<target>/dashboard-screenshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "dashboard/chromium.rs"]
mod chromium;
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chromium::Browser;
use common::cluster::{free_tcp_port, Cluster};
use common::nodes::HollowNodes;
use common::real_node::{node_ready, wait_for, RealNode};
use serde_json::json;

const MANIFEST: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: default
  labels: {app: hello}
spec:
  containers:
  - name: hello
    image: busybox:1.36
    ports:
    - containerPort: 8080
";

const UI_MANIFEST: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: from-the-page
data:
  greeting: hello
";

fn screenshots_dir() -> PathBuf {
    let dir = match std::env::var_os("KEELSON_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // The test binary is <target>/debug/deps/dashboard-…
            let exe = std::env::current_exe().unwrap();
            exe.ancestors()
                .nth(2)
                .map(|target| target.join("dashboard-screenshots"))
                .unwrap()
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("screenshots go to {}", dir.display());
    dir
}

fn phase(name: &str) {
    eprintln!("--- {name}");
}

/// Types `token` into the login page's form and submits it.
async fn submit_login(browser: &Browser, token: &str) {
    let long = Duration::from_secs(60);
    let field = browser.wait_for("#token", long).await;
    field.send_keys(token).await.unwrap();
    let submit = browser.wait_for("#login-submit", long).await;
    submit.click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_login_live_pods_scale_and_actions() {
    chromium::require_chromium();
    let shots = screenshots_dir();
    let long = Duration::from_secs(60);

    phase("a master and two hollow nodes");
    let cluster = Cluster::start(1).await;
    let _nodes = HollowNodes::start(&cluster, "dash", Some(2), &[]);
    let api = cluster.client(0);
    let base = cluster.masters[0].url();

    phase("the API takes the dashboard's cookie only with the dashboard's header");
    let cookie = format!("keelson_ui_token={}", api.token);
    let get = |headers: &[(&str, &str)]| {
        let mut request = api.http.get(format!("{base}/api/v1/pods"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(&[]).await, 401, "no credential");
    assert_eq!(get(&[("cookie", &cookie)]).await, 401, "the cookie alone");
    assert_eq!(
        get(&[("cookie", "keelson_ui_token=wrong"), ("x-keelson-ui", "1")]).await,
        401,
        "a wrong token in the cookie"
    );
    assert_eq!(
        get(&[("cookie", &cookie), ("x-keelson-ui", "1")]).await,
        200,
        "the cookie with the dashboard's header"
    );
    let page = api
        .http
        .get(format!("{base}/ui/pods"))
        .send()
        .await
        .unwrap();
    assert!(
        page.url().path() == "/ui/login",
        "a page without login redirects to the login page, not {}",
        page.url()
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"login-form\"") && !html.contains("data-page"));

    phase("Chromium: the login page first");
    let browser = Browser::start(free_tcp_port(), &shots.join("chromedriver.log")).await;
    browser.goto(&format!("{base}/ui/pods")).await;
    assert!(
        browser.current_url().await.ends_with("/ui/login"),
        "no data without login: {}",
        browser.current_url().await
    );
    assert!(browser.find("#list").await.is_none());
    submit_login(&browser, "not-a-token").await;
    browser
        .wait_text("#login-error", long, |t| t.contains("not valid"))
        .await;
    browser.screenshot(&shots.join("01-login.png")).await;

    phase("log in with the admin token: the overview");
    submit_login(&browser, &api.token).await;
    browser.wait_for("#masters-table", long).await;
    assert!(browser.current_url().await.ends_with("/ui/"));
    let masters = browser.text("#masters-table").await;
    assert!(
        masters.contains("m0") && masters.contains("leader"),
        "{masters}"
    );
    browser
        .wait_text("#nodes-table", long, |t| {
            t.contains("dash-0") && t.contains("dash-1") && t.contains("Ready")
        })
        .await;
    browser.screenshot(&shots.join("02-overview.png")).await;

    phase("the pods page shows a pod applied with kctl without a reload");
    browser.goto(&format!("{base}/ui/pods")).await;
    browser.wait_for("#list", long).await;
    browser
        .wait_text("#table-note", long, |t| t.contains("pods"))
        .await;
    browser
        .execute("window.keelsonMarker = 42; return 1;")
        .await;
    let manifest = cluster.base_dir().join("dashboard.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let out = Command::new(common::kctl_bin())
        .env("KUBECONFIG", cluster.masters[0].kubeconfig())
        .arg("apply")
        .arg("-f")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kctl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = Instant::now();
    browser
        .wait_for(r#"tr[data-key="default/hello"]"#, Duration::from_secs(20))
        .await;
    eprintln!(
        "the pod appeared on the page {:?} after kctl apply",
        applied.elapsed()
    );
    browser
        .wait_text(r#"tr[data-key="default/hello"]"#, long, |t| {
            t.contains("Running") && t.contains("dash-")
        })
        .await;
    browser
        .wait_for(r#"tr[data-key^="default/web-"]"#, long)
        .await;
    assert_eq!(
        browser.execute("return window.keelsonMarker;").await,
        json!(42),
        "the page was reloaded instead of updated live"
    );
    browser.screenshot(&shots.join("03-pods.png")).await;

    phase("scale the deployment from the page");
    browser.goto(&format!("{base}/ui/deployments")).await;
    let row = r#"tr[data-key="default/web"]"#;
    browser.wait_text(row, long, |t| t.contains("1/1")).await;
    let input = browser
        .wait_for(&format!("{row} input.replicas"), long)
        .await;
    input.clear().await.unwrap();
    input.send_keys("3").await.unwrap();
    browser
        .wait_for(&format!("{row} button.scale"), long)
        .await
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = api
            .get("/apis/apps/v1/namespaces/default/deployments/web")
            .await;
        if d.body["spec"]["replicas"] == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Scale button did not set spec.replicas: {}",
            d.body["spec"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser
        .wait_text(&format!("{row} td:nth-child(3)"), long, |t| t == "3/3")
        .await;
    assert_eq!(browser.text(&format!("{row} td:nth-child(4)")).await, "3");
    browser.screenshot(&shots.join("04-deployments.png")).await;

    phase("a pod's detail page");
    browser.goto(&format!("{base}/ui/pods/default/hello")).await;
    browser
        .wait_text("#pod-phase", long, |t| t == "Running")
        .await;
    let containers = browser.text("#containers-table").await;
    assert!(
        containers.contains("hello") && containers.contains("busybox:1.36"),
        "{containers}"
    );
    browser.wait_for("#log-note", long).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    browser.screenshot(&shots.join("05-pod.png")).await;

    phase("apply a manifest pasted into the form");
    browser.goto(&format!("{base}/ui/apply")).await;
    let text = browser.wait_for("#manifest", long).await;
    text.send_keys(UI_MANIFEST).await.unwrap();
    browser
        .wait_for("#apply", long)
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_text("#apply-results", long, |t| {
            t.contains("configmap/from-the-page") && t.contains("created")
        })
        .await;
    let cm = api
        .get("/api/v1/namespaces/default/configmaps/from-the-page")
        .await;
    assert_eq!(cm.code, 200, "{}", cm.text);
    assert_eq!(cm.body["data"]["greeting"], "hello");
    browser.screenshot(&shots.join("06-apply.png")).await;

    phase("delete a pod from the page (two clicks)");
    browser.goto(&format!("{base}/ui/pods")).await;
    let hello = r#"tr[data-key="default/hello"]"#;
    let delete = browser
        .wait_for(&format!("{hello} button.danger"), long)
        .await;
    delete.click().await.unwrap();
    delete.click().await.unwrap();
    let deadline = Instant::now() + long;
    loop {
        let pod = api.get("/api/v1/namespaces/default/pods/hello").await;
        if pod.code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pod was not deleted: {}",
            pod.code
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.find(hello).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the deleted pod stays on the page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    phase("log out");
    browser
        .wait_for("#logout", long)
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("#login-form", long).await;
    browser.goto(&format!("{base}/ui/deployments")).await;
    assert!(browser.current_url().await.ends_with("/ui/login"));
    browser.close().await;
}

/// The numbers of the `line N` lines of a log's text.
fn line_numbers(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_page_follows_a_real_containers_log() {
    chromium::require_chromium();
    let shots = screenshots_dir();
    let long = Duration::from_secs(60);

    phase("a master and a real runc node; a busybox pod prints a numbered line a second");
    let cluster = Cluster::start(1).await;
    let node = RealNode::start(&cluster, "dashlog", &[]);
    let api = cluster.client(0);
    node_ready(&api, "dashlog").await;
    let script = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 1; done";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "counter"},
        "spec": {"nodeName": "dashlog", "terminationGracePeriodSeconds": 1, "containers": [
            {"name": "count", "image": "keelson.local/busybox:stable",
             "command": ["sh", "-c", script]}]}});
    let reply = api.post("/api/v1/namespaces/default/pods", &pod).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    wait_for(
        &api,
        "/api/v1/namespaces/default/pods/counter",
        Duration::from_secs(90),
        "pod Running",
        |p| p["status"]["phase"] == "Running",
    )
    .await;

    phase("log in and open the pod's page: its log shows the lines printed so far");
    let base = cluster.masters[0].url();
    let browser = Browser::start(free_tcp_port(), &shots.join("chromedriver-log.log")).await;
    browser.goto(&format!("{base}/ui/login")).await;
    submit_login(&browser, &api.token).await;
    browser.wait_for("#masters-table", long).await;
    browser
        .goto(&format!("{base}/ui/pods/default/counter"))
        .await;
    browser
        .wait_text("#pod-phase", long, |t| t == "Running")
        .await;
    browser.execute("window.keelsonMarker = 7; return 1;").await;
    let first = browser
        .wait_text("#log", long, |t| !line_numbers(t).is_empty())
        .await;
    let numbers = line_numbers(&first);
    assert_eq!(
        numbers,
        (numbers[0]..numbers[0] + numbers.len() as u64).collect::<Vec<_>>(),
        "the log shows the lines in order, none missing:\n{first}"
    );
    let seen = *numbers.last().unwrap();
    eprintln!("the page opened with lines {}..={seen}", numbers[0]);
    let note = browser.text("#log-note").await;
    assert!(note.starts_with("following count"), "{note}");

    phase("lines printed after the page opened appear without a reload");
    let later = seen + 3;
    let log = browser
        .wait_text("#log", Duration::from_secs(30), |t| {
            line_numbers(t).contains(&later)
        })
        .await;
    let numbers = line_numbers(&log);
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1) && numbers.contains(&seen),
        "the followed log keeps every line once and in order:\n{log}"
    );
    assert_eq!(
        browser.execute("return window.keelsonMarker;").await,
        json!(7),
        "the page was reloaded instead of following the log"
    );
    browser
        .execute("document.getElementById('log').scrollIntoView(); return 1;")
        .await;
    browser.screenshot(&shots.join("07-pod-log.png")).await;
    browser.close().await;
    drop(node);
}
