//! The node's image store against real tools: a busybox OCI layout built from `/bin/busybox`
//! is pushed with skopeo to Debian's `docker-registry` on loopback, then pulled with each pull
//! policy, with the registry up and down; an OCI archive is imported; the built-in busybox
//! image is made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keelson_node::images::{
    build_busybox_oci_layout, ImageError, ImageOptions, ImageStore, PullPolicy, BUILTIN_BUSYBOX,
};

const REGISTRY: &str = "/usr/bin/docker-registry";

fn require_tools() {
    assert!(
        Path::new(REGISTRY).is_file(),
        "{REGISTRY} is missing: install Debian's docker-registry package (apt-get install docker-registry)"
    );
    let skopeo = Command::new("skopeo").arg("--version").output();
    assert!(
        skopeo.is_ok_and(|o| o.status.success()),
        "skopeo is missing: install Debian's skopeo package (apt-get install skopeo)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: install Debian's busybox-static package"
    );
}

/// `docker-registry` on a free loopback port; killed on drop.
struct Registry {
    child: Option<Child>,
    port: u16,
    _storage: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let storage = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(storage.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child: Some(child),
            port,
            _storage: storage,
        }
    }

    /// GET requests for a path starting with `path` the registry logged as completed.
    fn gets(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(self._storage.path().join("registry.log")).unwrap();
        let count = log
            .lines()
            .filter(|l| l.contains("response completed") && l.contains("http.request.method=GET"))
            .filter_map(|l| {
                l.split_once("http.request.uri=")
                    .map(|(_, uri)| uri.trim_start_matches('"'))
            })
            .filter(|uri| uri.starts_with(path))
            .count();
        eprintln!("{count} GET {path}*");
        count
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A busybox OCI layout whose one image is named `tag` in the index.
fn busybox_layout(tag: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    build_busybox_oci_layout(Path::new("/bin/busybox"), &layout, tag).unwrap();
    (dir, layout)
}

fn assert_busybox(image: &keelson_node::images::Image) {
    assert_eq!(image.layers.len(), 1, "{image:?}");
    let busybox = image.layers[0].join("bin/busybox");
    let mode = std::fs::metadata(&busybox).unwrap().permissions().mode();
    assert!(
        mode & 0o111 != 0,
        "{} is not executable: {mode:o}",
        busybox.display()
    );
    assert_eq!(
        std::fs::read_link(image.layers[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert!(
        image.config.env.iter().any(|(k, _)| k == "PATH"),
        "{:?}",
        image.config.env
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pull_from_a_local_registry_with_each_policy() {
    require_tools();
    let (_layout_dir, layout) = busybox_layout("v1");
    let mut registry = Registry::start();
    let remote = format!("127.0.0.1:{}/test/busybox:1", registry.port);

    eprintln!("phase: push the layout with skopeo");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{remote}"),
    ]);

    eprintln!("phase: two concurrent ensures share one pull");
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path(), ImageOptions::default()).unwrap();
    let (a, b) = tokio::join!(
        store.ensure(&remote, PullPolicy::IfNotPresent, None),
        store.ensure(&remote, PullPolicy::IfNotPresent, None)
    );
    let image = a.unwrap();
    assert_eq!(image, b.unwrap());
    assert_eq!(image.reference, remote);
    assert!(image.digest.starts_with("sha256:"), "{}", image.digest);
    assert_busybox(&image);
    let layer = image.layers[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        registry.gets(&format!("/v2/test/busybox/blobs/sha256:{layer}")),
        1
    );
    assert_eq!(
        registry.gets("/v2/test/busybox/blobs/"),
        2,
        "the config and the layer"
    );
    assert_eq!(registry.gets("/v2/test/busybox/manifests/1 "), 1);
    assert_eq!(store.get(&remote), Some(image.clone()));
    let list = store.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].references, vec![remote.clone()]);
    assert!(list[0].size_bytes > 100_000, "{list:?}");

    eprintln!("phase: a missing tag carries the registry's message");
    let missing = format!("127.0.0.1:{}/test/busybox:nope", registry.port);
    match store.ensure(&missing, PullPolicy::IfNotPresent, None).await {
        Err(ImageError::Pull(message)) => {
            eprintln!("missing tag: {message}");
            assert!(message.contains("manifest unknown"), "{message}");
            assert!(message.starts_with(&missing), "{message}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }

    eprintln!("phase: Never on an absent image");
    match store.ensure(&missing, PullPolicy::Never, None).await {
        Err(ImageError::NeverPull(message)) => assert!(message.contains(&missing), "{message}"),
        other => panic!("expected NeverPull, got {other:?}"),
    }

    eprintln!("phase: the registry stops; IfNotPresent and Never still succeed, Always fails");
    registry.stop();
    assert_eq!(
        store
            .ensure(&remote, PullPolicy::IfNotPresent, None)
            .await
            .unwrap(),
        image
    );
    assert_eq!(
        store
            .ensure(&remote, PullPolicy::Never, None)
            .await
            .unwrap(),
        image
    );
    match store.ensure(&remote, PullPolicy::Always, None).await {
        Err(ImageError::Pull(message)) => {
            eprintln!("registry down: {message}");
            assert!(message.starts_with(&remote), "{message}");
            assert!(message.to_lowercase().contains("connect"), "{message}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }

    eprintln!("phase: a reopened store still has the image");
    drop(store);
    let store = ImageStore::open(store_dir.path(), ImageOptions::default()).unwrap();
    assert_eq!(store.get(&remote), Some(image));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_import_an_oci_archive_and_the_builtin_busybox() {
    require_tools();
    let (layout_dir, layout) = busybox_layout("v1");
    let archive = layout_dir.path().join("busybox.tar");

    eprintln!("phase: skopeo writes an oci-archive; importing it makes the image available");
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!(
            "oci-archive:{}:example.com/imported/busybox:2",
            archive.display()
        ),
    ]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(store_dir.path(), ImageOptions::default()).unwrap();
    let imported = store.import_oci_archive(&archive).await.unwrap();
    assert_eq!(imported, vec!["example.com/imported/busybox:2".to_string()]);
    let image = store
        .ensure("example.com/imported/busybox:2", PullPolicy::Never, None)
        .await
        .unwrap();
    assert_busybox(&image);

    eprintln!("phase: the air-gap directory imports every archive in it");
    let other = tempfile::tempdir().unwrap();
    let airgap = other.path().join("images");
    std::fs::create_dir(&airgap).unwrap();
    std::fs::copy(&archive, airgap.join("busybox.tar")).unwrap();
    std::fs::write(airgap.join("notes.txt"), "not an archive").unwrap();
    std::fs::write(airgap.join("broken.tar"), "not a tar").unwrap();
    let store2 = ImageStore::open(&other.path().join("store"), ImageOptions::default()).unwrap();
    let imported = store2.import_dir(&airgap).await.unwrap();
    assert_eq!(imported, vec!["example.com/imported/busybox:2".to_string()]);

    eprintln!("phase: the built-in busybox image");
    let reference = store.ensure_builtin_busybox().await.unwrap();
    assert_eq!(reference.as_deref(), Some(BUILTIN_BUSYBOX));
    let image = store.get(BUILTIN_BUSYBOX).unwrap();
    assert_busybox(&image);
    // The same layer as the imported image: it is stored once.
    assert_eq!(
        std::fs::read_dir(store_dir.path().join("layers"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        store.ensure_builtin_busybox().await.unwrap().as_deref(),
        Some(BUILTIN_BUSYBOX)
    );
    assert_eq!(store.list().len(), 1, "{:?}", store.list());
}

/// End to end: a pod on a real node runs an image pulled from the loopback registry; a pod
/// whose tag the registry does not have waits in ErrImagePull / ImagePullBackOff with the
/// registry's message in its status and an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_a_pod_pulls_from_a_registry_and_a_bad_reference_backs_off() {
    use common::real_node::{container_status, wait_for, RealNode};
    use serde_json::json;

    require_tools();
    let registry = Registry::start();
    let (_dir, layout) = busybox_layout("e2e");
    let dest = format!("docker://127.0.0.1:{}/e2e/busybox:1", registry.port);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:e2e", layout.display()),
        &dest,
    ]);

    let cluster = common::cluster::Cluster::start(1).await;
    let _node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    let ns = "/api/v1/namespaces/default";
    let image = format!("127.0.0.1:{}/e2e/busybox:1", registry.port);
    let pod = |name: &str, image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "nodeName": "n1",
            "containers": [{"name": "c", "image": image, "command": ["sh", "-c", "echo pulled; sleep 3600"]}],
        }})
    };
    assert_eq!(
        api.post(&format!("{ns}/pods"), &pod("pulled", &image))
            .await
            .code,
        201
    );
    let missing = format!("127.0.0.1:{}/e2e/busybox:nope", registry.port);
    assert_eq!(
        api.post(&format!("{ns}/pods"), &pod("missing", &missing))
            .await
            .code,
        201
    );

    let running = wait_for(
        &api,
        &format!("{ns}/pods/pulled"),
        Duration::from_secs(90),
        "Running",
        |p| p["status"]["phase"] == "Running",
    )
    .await;
    assert!(
        container_status(&running, "c")["imageID"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sha256:"),
        "{running}"
    );
    assert!(
        registry.gets("/v2/e2e/busybox/manifests/1") >= 1,
        "the node pulled from the registry"
    );

    // `kctl describe pod` shows the pull as Events: Pulling, then Pulled with time and size.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pulled = format!("Successfully pulled image {image:?} in ");
    loop {
        let out = Command::new(common::kctl_bin())
            .args(["describe", "pod", "pulled"])
            .env("KUBECONFIG", cluster.masters[0].kubeconfig())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let size_shown = text
            .lines()
            .find(|l| l.contains(&pulled))
            .and_then(|l| l.split("Image size: ").nth(1))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
        if size_shown && text.contains(&format!("Pulling image {image:?}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kctl describe pod shows no Pulling/Pulled events with a size:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let backing_off = wait_for(
        &api,
        &format!("{ns}/pods/missing"),
        Duration::from_secs(60),
        "ImagePullBackOff",
        |p| {
            let reason = container_status(p, "c")["state"]["waiting"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            reason == "ImagePullBackOff"
        },
    )
    .await;
    let waiting = &container_status(&backing_off, "c")["state"]["waiting"];
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or_default()
            .contains("manifest unknown"),
        "the registry's message reaches the pod status: {waiting}"
    );
    let events = api.get(&format!("{ns}/events")).await.body;
    let failed = events["items"].as_array().into_iter().flatten().any(|e| {
        e["involvedObject"]["name"] == "missing"
            && e["reason"] == "Failed"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("manifest unknown")
    });
    assert!(failed, "a Failed event names the pull error: {events}");
}
