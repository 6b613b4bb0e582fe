//! `kctl config` and `kctl completion` as a user runs them: kubeconfig lists merged from
//! `$KUBECONFIG`, `--kubeconfig` overriding it, switching and editing contexts in the right
//! file; no server is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Two kubeconfig files and a missing one, listed in `$KUBECONFIG`.
struct Configs {
    dir: tempfile::TempDir,
    first: PathBuf,
    second: PathBuf,
}

/// The first file defines `dev` and `shared` but sets no current context; the second defines
/// `shared` again (ignored) and `prod`, and sets the current context.
const FIRST: &str = "apiVersion: v1
kind: Config
clusters:
- name: dev-cluster
  cluster: {server: 'https://dev:6443'}
contexts:
- name: dev
  context: {cluster: dev-cluster, user: dev-user, namespace: team-dev}
- name: shared
  context: {cluster: dev-cluster, user: dev-user}
users:
- name: dev-user
  user: {token: dev-token}
";

const SECOND: &str = "apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: prod-cluster
  cluster: {server: 'https://prod:6443'}
contexts:
- name: prod
  context: {cluster: prod-cluster, user: prod-user}
- name: shared
  context: {cluster: prod-cluster, user: prod-user, namespace: ignored}
current-context: prod
users:
- name: prod-user
  user: {token: prod-token}
";

impl Configs {
    fn new() -> Configs {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.yaml");
        let second = dir.path().join("second.yaml");
        std::fs::write(&first, FIRST).unwrap();
        std::fs::write(&second, SECOND).unwrap();
        Configs { dir, first, second }
    }

    fn env_list(&self) -> String {
        let missing = self.dir.path().join("missing.yaml");
        format!(
            "{}:{}:{}",
            self.first.display(),
            missing.display(),
            self.second.display()
        )
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kctl"))
            .args(args)
            .env("KUBECONFIG", self.env_list())
            .env("HOME", self.dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kctl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(1), "kctl {args:?} should fail");
        String::from_utf8(output.stderr).unwrap()
    }
}

fn yaml(path: &Path) -> serde_norway::Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn contexts_are_merged_from_the_kubeconfig_list() {
    let configs = Configs::new();
    eprintln!("phase 1: get-contexts lists both files' contexts, the first definition winning");
    let table = configs.ok(&["config", "get-contexts"]);
    assert_eq!(
        table,
        "CURRENT   NAME     CLUSTER        AUTHINFO    NAMESPACE\n\
         \x20         dev      dev-cluster    dev-user    team-dev\n\
         *         prod     prod-cluster   prod-user   \n\
         \x20         shared   dev-cluster    dev-user    \n"
    );
    assert_eq!(
        configs.ok(&["config", "get-contexts", "-o", "name"]),
        "dev\nprod\nshared\n"
    );
    eprintln!("phase 2: the current context comes from the second file");
    assert_eq!(configs.ok(&["config", "current-context"]), "prod\n");
    eprintln!("phase 3: --kubeconfig reads its file alone");
    let first = configs.first.to_str().unwrap();
    assert_eq!(
        configs.ok(&[
            "config",
            "get-contexts",
            "-o",
            "name",
            "--kubeconfig",
            first
        ]),
        "dev\nshared\n"
    );
    let err = configs.fails(&["config", "current-context", "--kubeconfig", first]);
    assert_eq!(err, "error: current-context is not set\n");
    eprintln!("phase 4: an unknown name is an error");
    let err = configs.fails(&["config", "get-contexts", "nope"]);
    assert_eq!(err, "error: context nope not found\n");
}

#[test]
fn use_context_rewrites_only_the_file_that_sets_it() {
    let configs = Configs::new();
    std::fs::set_permissions(&configs.second, std::fs::Permissions::from_mode(0o644)).unwrap();
    let first_before = std::fs::read_to_string(&configs.first).unwrap();
    let second_before = yaml(&configs.second);

    eprintln!("phase 1: switch to a context of the first file");
    assert_eq!(
        configs.ok(&["config", "use-context", "dev"]),
        "Switched to context \"dev\".\n"
    );
    assert_eq!(configs.ok(&["config", "current-context"]), "dev\n");

    eprintln!("phase 2: the second file (which set current-context) changed in that key only");
    let mut expected = second_before;
    expected["current-context"] = "dev".into();
    assert_eq!(yaml(&configs.second), expected);
    let mode = std::fs::metadata(&configs.second)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(&configs.first).unwrap(),
        first_before
    );

    eprintln!("phase 3: an unknown context is refused and nothing is written");
    let err = configs.fails(&["config", "use-context", "x"]);
    assert_eq!(err, "error: no context exists with the name: \"x\"\n");
    assert_eq!(configs.ok(&["config", "current-context"]), "dev\n");
}

#[test]
fn set_context_changes_the_namespace_where_the_context_is_defined() {
    let configs = Configs::new();
    eprintln!("phase 1: --current edits prod in the second file");
    assert_eq!(
        configs.ok(&["config", "set-context", "--current", "--namespace=shop"]),
        "Context \"prod\" modified.\n"
    );
    let second = yaml(&configs.second);
    assert_eq!(
        second["contexts"][0]["context"]["namespace"].as_str(),
        Some("shop")
    );
    assert_eq!(
        second["contexts"][0]["context"]["user"].as_str(),
        Some("prod-user")
    );

    eprintln!("phase 2: a named context of the first file is edited there");
    configs.ok(&["config", "set-context", "dev", "--namespace", "other"]);
    let first = yaml(&configs.first);
    assert_eq!(
        first["contexts"][0]["context"]["namespace"].as_str(),
        Some("other")
    );

    eprintln!("phase 3: a new context lands in the first file of the list");
    assert_eq!(
        configs.ok(&["config", "set-context", "new", "--cluster=dev-cluster"]),
        "Context \"new\" created.\n"
    );
    let names = configs.ok(&["config", "get-contexts", "-o", "name"]);
    assert_eq!(names, "dev\nnew\nprod\nshared\n");
    assert_eq!(
        yaml(&configs.first)["contexts"][2]["name"].as_str(),
        Some("new")
    );
}

#[test]
fn wait_refuses_an_unknown_condition_before_any_request() {
    let configs = Configs::new();
    let err = configs.fails(&["wait", "--for=ready", "pod/x"]);
    assert!(
        err.starts_with("error: unrecognized condition: \"ready\""),
        "{err}"
    );
}

#[test]
fn completion_scripts() {
    let configs = Configs::new();
    let bash = configs.ok(&["completion", "bash"]);
    assert!(bash.contains("complete -F"), "{bash}");
    assert!(bash.contains("get-contexts") && bash.contains("wait"));
    let zsh = configs.ok(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef kctl"), "{zsh}");
}
