//! `kctl wait` end to end against a fake API server on loopback (a thread answering the few
//! requests `wait` makes): the context's namespace as the default, a pod that turns Ready
//! after a few polls, a timeout, `--for=delete`, a selector, and a missing object.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// The paths the fake server was asked, in order.
type Seen = Arc<Mutex<Vec<String>>>;

fn pod(name: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "team-dev", "uid": format!("uid-{name}"),
                        "labels": {"app": "web"}},
           "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn not_found(name: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": format!("pods \"{name}\" not found"), "reason": "NotFound", "code": 404}),
    )
}

/// The answer to `GET path`; `hits` counts the requests of each path so far (this one
/// included).
fn answer(path: &str, hits: usize) -> (u16, Value) {
    match path {
        "/api/v1" => (
            200,
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                 "verbs": ["get", "list", "watch"], "shortNames": ["po"]}]}),
        ),
        // Ready from the third poll on.
        "/api/v1/namespaces/team-dev/pods/web" => (200, pod("web", hits >= 3)),
        "/api/v1/namespaces/team-dev/pods/stuck" => (200, pod("stuck", false)),
        "/api/v1/namespaces/team-dev/pods" => (
            200,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "5"},
                   "items": [pod("web", true)]}),
        ),
        other => not_found(other.rsplit('/').next().unwrap_or("")),
    }
}

fn serve(stream: TcpStream, seen: &Seen, hits: &mut HashMap<String, usize>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(target.clone());
    let path = target.split('?').next().unwrap_or("").to_string();
    let count = hits.entry(path.clone()).or_insert(0);
    *count += 1;
    let (code, body) = answer(&path, *count);
    let body = body.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Starts the fake server; it lives until the test process ends.
fn start_server() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let server_seen = seen.clone();
    std::thread::spawn(move || {
        let mut hits = HashMap::new();
        for stream in listener.incoming().flatten() {
            serve(stream, &server_seen, &mut hits);
        }
    });
    (url, seen)
}

struct Kctl {
    dir: tempfile::TempDir,
}

impl Kctl {
    fn new(server: &str) -> Kctl {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            format!(
                "clusters:\n- name: fake\n  cluster: {{server: '{server}'}}\n\
                 contexts:\n- name: dev\n  context: {{cluster: fake, namespace: team-dev}}\n\
                 current-context: dev\n"
            ),
        )
        .unwrap();
        Kctl { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kctl"))
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn wait_for_conditions_and_deletion() {
    let (server, seen) = start_server();
    let kctl = Kctl::new(&server);

    eprintln!("phase 1: a pod that turns Ready on the third poll, in the context's namespace");
    let out = kctl.run(&["wait", "--for=condition=Ready", "pod/web", "--timeout=20s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pod/web condition met\n");
    let web_polls = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.as_str() == "/api/v1/namespaces/team-dev/pods/web")
        .count();
    assert_eq!(web_polls, 3);

    eprintln!("phase 2: a pod that never turns Ready times out");
    let out = kctl.run(&["wait", "--for=condition=Ready", "pod/stuck", "--timeout=1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: timed out waiting for the condition on pods/stuck\n"
    );

    eprintln!("phase 3: --for=delete on a pod that is gone, with -n over the context's namespace");
    let out = kctl.run(&["wait", "--for=delete", "pod/gone", "-n", "other"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pod/gone condition met\n");
    assert!(seen
        .lock()
        .unwrap()
        .contains(&"/api/v1/namespaces/other/pods/gone".to_string()));

    eprintln!("phase 4: a label selector lists, then waits for each object");
    let out = kctl.run(&["wait", "--for=condition=Ready", "pods", "-l", "app=web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pod/web condition met\n");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.starts_with("/api/v1/namespaces/team-dev/pods?")
            && p.contains("labelSelector=app%3Dweb")));

    eprintln!("phase 5: waiting for a condition on a pod that does not exist fails at once");
    let out = kctl.run(&["wait", "--for=condition=Ready", "pod/missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error from server (NotFound): pods \"missing\" not found\n"
    );
}
