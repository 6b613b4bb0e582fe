//! `kctl cluster status`: Keelson's `GET /keelson/v1/cluster` (leader, term, revision and the
//! masters) as a table, with each master's own `/readyz`. Exits non-zero without a leader.

use std::time::Duration;

use anyhow::bail;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::Client;
use crate::printer::{out, to_json, TabWriter, TABLE_MINWIDTH, TABLE_PADDING};
use crate::session::Session;

/// The Keelson-specific cluster endpoint.
pub(crate) const CLUSTER_PATH: &str = "/keelson/v1/cluster";
/// How long one master's `/readyz` may take.
const READYZ_TIMEOUT_MS: u64 = 5_000;
/// The most members shown (and asked for `/readyz`).
const MEMBERS_MAX: usize = 64;
/// The longest `/readyz` message shown.
const READYZ_MESSAGE_CHARS_MAX: usize = 80;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// The masters, the Raft leader and each master's health
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Output format: wide or json
    #[arg(short = 'o', long)]
    output: Option<String>,
}

/// `GET /keelson/v1/cluster`; every field may be missing or null.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct ClusterStatus {
    pub(crate) leader: Option<String>,
    pub(crate) term: Option<u64>,
    pub(crate) revision: Option<u64>,
    pub(crate) members: Option<Vec<Member>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct Member {
    pub(crate) name: Option<String>,
    pub(crate) peer: Option<String>,
    pub(crate) api: Option<String>,
    pub(crate) voter: Option<bool>,
    pub(crate) reachable: Option<bool>,
    pub(crate) leader: Option<bool>,
    pub(crate) matched: Option<u64>,
}

/// A master's answer to `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    NotReady(String),
    /// Its API address did not answer.
    Down,
    /// No API address to ask.
    Unknown,
}

impl ClusterStatus {
    pub(crate) fn members(&self) -> &[Member] {
        let members = self.members.as_deref().unwrap_or(&[]);
        &members[..members.len().min(MEMBERS_MAX)]
    }

    /// The leader's name: `leader`, else the member flagged as leader.
    pub(crate) fn leader_name(&self) -> Option<&str> {
        self.leader
            .as_deref()
            .filter(|l| !l.is_empty())
            .or_else(|| {
                self.members()
                    .iter()
                    .find(|m| m.leader == Some(true))
                    .and_then(|m| m.name.as_deref())
            })
    }
}

fn role(status: &ClusterStatus, member: &Member) -> &'static str {
    let is_leader = member.leader == Some(true)
        || (member.name.is_some() && member.name.as_deref() == status.leader.as_deref());
    if is_leader {
        "leader"
    } else if member.voter == Some(false) {
        "learner"
    } else {
        "follower"
    }
}

fn health(member: &Member, readiness: &Readiness) -> String {
    let mut text = match readiness {
        Readiness::Ready => "ready".to_string(),
        Readiness::NotReady(why) if why.is_empty() => "not ready".to_string(),
        Readiness::NotReady(why) => format!("not ready ({why})"),
        Readiness::Down => "api down".to_string(),
        Readiness::Unknown => "unknown".to_string(),
    };
    if member.reachable == Some(false) {
        text.push_str(", peer unreachable");
    }
    text
}

/// The status text: a summary and one row per master.
pub(crate) fn render(status: &ClusterStatus, readiness: &[Readiness], wide: bool) -> String {
    let dash = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    let number = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    let mut summary = String::new();
    summary.push_str(&format!(
        "Leader:\t{}\n",
        status.leader_name().unwrap_or("<none>")
    ));
    summary.push_str(&format!("Term:\t{}\n", number(status.term)));
    summary.push_str(&format!("Revision:\t{}\n", number(status.revision)));
    let mut table = String::from("MASTER\tPEER\tAPI\tROLE\tHEALTH");
    if wide {
        table.push_str("\tMATCHED");
    }
    table.push('\n');
    for (i, member) in status.members().iter().enumerate() {
        let ready = readiness.get(i).unwrap_or(&Readiness::Unknown);
        table.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}",
            dash(member.name.as_deref()),
            dash(member.peer.as_deref()),
            dash(member.api.as_deref()),
            role(status, member),
            health(member, ready)
        ));
        if wide {
            table.push_str(&format!("\t{}", number(member.matched)));
        }
        table.push('\n');
    }
    let summary = TabWriter::new(0, 2).format(&summary);
    format!(
        "{summary}\n{}",
        TabWriter::new(TABLE_MINWIDTH, TABLE_PADDING).format(&table)
    )
}

/// A member's API URL: its `api` address with the kubeconfig server's scheme, and the
/// kubeconfig server's host when it is a wildcard bind address.
pub(crate) fn member_url(api: &str, kubeconfig_server: &Url) -> Option<Url> {
    let api = api.trim();
    if api.is_empty() {
        return None;
    }
    let text = if api.contains("://") {
        api.to_string()
    } else {
        format!("{}://{api}", kubeconfig_server.scheme())
    };
    let mut url = Url::parse(&text).ok()?;
    let wildcard = matches!(url.host_str(), Some("0.0.0.0" | "[::]" | "::"));
    if wildcard {
        url.set_host(kubeconfig_server.host_str()).ok()?;
    }
    Some(url)
}

async fn readiness(session: &Session, member: &Member) -> Readiness {
    let Some(url) = member
        .api
        .as_deref()
        .and_then(|api| member_url(api, session.client.base()))
    else {
        return Readiness::Unknown;
    };
    let mut config = session.connection.clone();
    config.server = url.as_str().trim_end_matches('/').to_string();
    let Ok(client) = Client::new(&config, session.timeouts) else {
        return Readiness::Unknown;
    };
    match client
        .get_text("/readyz", Duration::from_millis(READYZ_TIMEOUT_MS))
        .await
    {
        Ok((200, _)) => Readiness::Ready,
        Ok((_, body)) => Readiness::NotReady(
            body.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(READYZ_MESSAGE_CHARS_MAX)
                .collect(),
        ),
        Err(_) => Readiness::Down,
    }
}

pub(crate) async fn run(session: &mut Session, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status(args) = command;
    let output = args.output.as_deref().unwrap_or("");
    if !matches!(output, "" | "wide" | "json") {
        bail!("--output must be 'wide' or 'json'");
    }
    let raw = session.client.get(CLUSTER_PATH, &[]).await?;
    let status: ClusterStatus = serde_json::from_value(raw.clone())
        .map_err(|err| anyhow::anyhow!("cannot decode {CLUSTER_PATH}: {err}"))?;
    let checks = status.members().iter().map(|m| readiness(session, m));
    let ready: Vec<Readiness> = futures::future::join_all(checks).await;
    if output == "json" {
        let mut doc = raw;
        if let Some(Value::Array(members)) = doc.get_mut("members") {
            for (member, r) in members.iter_mut().zip(&ready) {
                if let Some(map) = member.as_object_mut() {
                    let (ok, text) = match r {
                        Readiness::Ready => (json!(true), "ready".to_string()),
                        Readiness::NotReady(why) => (json!(false), why.clone()),
                        Readiness::Down => (json!(false), "api down".to_string()),
                        Readiness::Unknown => (Value::Null, "unknown".to_string()),
                    };
                    map.insert("ready".to_string(), ok);
                    map.insert("readyz".to_string(), Value::String(text));
                }
            }
        }
        out(&to_json(&doc))?;
    } else {
        out(&render(&status, &ready, output == "wide"))?;
    }
    if status.leader_name().is_none() {
        bail!("the cluster has no leader");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let status: ClusterStatus = serde_json::from_value(json!({
            "leader": "m1", "term": 3, "revision": 120,
            "members": [
                {"name": "m1", "peer": "127.0.0.1:7001", "api": "127.0.0.1:6443", "voter": true, "reachable": true, "leader": true, "matched": 120},
                {"name": "m2", "peer": "127.0.0.1:7002", "api": "127.0.0.1:6444", "voter": true, "reachable": true, "leader": false, "matched": null},
                {"name": "m3", "peer": "127.0.0.1:7003", "voter": false, "reachable": false}
            ]
        }))
        .unwrap();
        let ready = vec![
            Readiness::Ready,
            Readiness::NotReady("catching up".into()),
            Readiness::Unknown,
        ];
        assert_eq!(
            render(&status, &ready, false),
            "\
Leader:    m1
Term:      3
Revision:  120

MASTER   PEER             API              ROLE       HEALTH
m1       127.0.0.1:7001   127.0.0.1:6443   leader     ready
m2       127.0.0.1:7002   127.0.0.1:6444   follower   not ready (catching up)
m3       127.0.0.1:7003   -                learner    unknown, peer unreachable
"
        );
        let wide = render(&status, &ready, true);
        assert!(
            wide.contains("HEALTH                      MATCHED\n"),
            "{wide}"
        );
        assert!(wide.contains("ready                       120\n"), "{wide}");
    }

    #[test]
    fn missing_fields_and_no_leader() {
        let status: ClusterStatus =
            serde_json::from_value(json!({"leader": null, "members": [{"name": "m1"}]})).unwrap();
        assert_eq!(status.leader_name(), None);
        let text = render(&status, &[Readiness::Down], false);
        assert!(
            text.starts_with("Leader:    <none>\nTerm:      -\n"),
            "{text}"
        );
        assert!(
            text.contains("m1       -      -     follower   api down\n"),
            "{text}"
        );
        let flagged: ClusterStatus =
            serde_json::from_value(json!({"members": [{"name": "m2", "leader": true}]})).unwrap();
        assert_eq!(flagged.leader_name(), Some("m2"));
        let empty: ClusterStatus = serde_json::from_value(json!({})).unwrap();
        assert!(empty.members().is_empty());
    }

    #[test]
    fn member_urls() {
        let base = Url::parse("https://10.0.0.1:6443").unwrap();
        assert_eq!(
            member_url("127.0.0.1:6444", &base).unwrap().as_str(),
            "https://127.0.0.1:6444/"
        );
        assert_eq!(
            member_url("0.0.0.0:6445", &base).unwrap().as_str(),
            "https://10.0.0.1:6445/"
        );
        assert_eq!(
            member_url("http://h:1", &base).unwrap().as_str(),
            "http://h:1/"
        );
        assert_eq!(member_url("", &base), None);
    }
}
