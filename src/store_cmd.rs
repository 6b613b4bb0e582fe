//! `keelson store`: put, get, del, range, watch, compact, status and membership changes
//! against a running store cluster.

use std::io::Write;

use anyhow::{bail, Context};
use keelson_raft::{
    Check, Compare, Consistency, EventKind, KeyRange, Member, Op, OpResult, RangeRequest,
    StoreClient, Txn, WatchRequest,
};
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    /// Store members to talk to: ADDR[,ADDR...]
    #[arg(
        long,
        env = "KEELSON_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    endpoints: Vec<String>,
    /// The cluster token (see DATA_DIR/join-token on a master).
    #[arg(long, env = "KEELSON_TOKEN", required = true)]
    token: String,
    #[command(subcommand)]
    op: StoreOp,
}

#[derive(clap::Subcommand)]
enum StoreOp {
    /// Write a value; prints the new revision.
    Put {
        key: String,
        value: String,
        /// Only if the key is absent.
        #[arg(long, conflicts_with = "if_revision")]
        if_absent: bool,
        /// Only if the key was last changed at this revision.
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Print a key's value.
    Get {
        key: String,
        /// Read at this revision instead of the current one.
        #[arg(long, default_value_t = 0)]
        revision: u64,
        /// Read this member's state without asking the leader.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key.
    Del { key: String },
    /// List keys under a prefix, one `key = value` line each.
    Range {
        prefix: String,
        #[arg(long, default_value_t = 0)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        revision: u64,
    },
    /// Print changes under a prefix as they happen (from a revision if given).
    Watch {
        prefix: String,
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
        /// Stop after this many events (0: never).
        #[arg(long, default_value_t = 0)]
        count: usize,
    },
    /// Forget history below a revision.
    Compact { revision: u64 },
    /// Show each endpoint's view: members, leader, term, revisions, size.
    Status,
    /// Add or remove a member.
    #[command(subcommand)]
    Member(MemberOp),
}

#[derive(clap::Subcommand)]
enum MemberOp {
    /// Add NAME=ADDR; it catches up as a learner, then votes.
    Add { member: String },
    /// Remove the member called NAME.
    Remove { name: String },
}

pub(crate) async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let client = StoreClient::new(args.endpoints, &args.token)?;
    let mut out = std::io::stdout().lock();
    match args.op {
        StoreOp::Put {
            key,
            value,
            if_absent,
            if_revision,
        } => {
            let check = match (if_absent, if_revision) {
                (true, _) => Some(Check::Absent),
                (false, Some(rev)) => Some(Check::ModRevision(rev)),
                (false, None) => None,
            };
            let txn = Txn {
                compare: check
                    .map(|check| Compare {
                        key: key.clone().into_bytes(),
                        check,
                    })
                    .into_iter()
                    .collect(),
                success: vec![Op::put(key.clone(), value)],
                failure: vec![Op::get(key.clone())],
            };
            let response = client.txn(txn).await?;
            if !response.succeeded {
                let current = match response.results.first() {
                    Some(OpResult::Get { kv: Some(kv) }) => {
                        format!("it was last changed at revision {}", kv.mod_revision)
                    }
                    _ => "it does not exist".to_string(),
                };
                bail!("condition failed for {key:?}: {current}; nothing written");
            }
            writeln!(out, "{}", response.revision)?;
        }
        StoreOp::Get {
            key,
            revision,
            serializable,
        } => {
            let mut request = RangeRequest::new(KeyRange::key(key.clone()));
            request.revision = revision;
            if serializable {
                request.consistency = Consistency::Serializable;
            }
            let response = client.range(request).await?;
            let Some(kv) = response.kvs.into_iter().next() else {
                bail!("key {key:?} not found");
            };
            out.write_all(&kv.value)?;
            writeln!(out)?;
        }
        StoreOp::Del { key } => {
            let response = client
                .txn(Txn {
                    success: vec![Op::delete(key.clone())],
                    ..Txn::default()
                })
                .await?;
            match response.results.first() {
                Some(OpResult::Delete { prev: Some(_) }) => writeln!(out, "{}", response.revision)?,
                _ => bail!("key {key:?} not found"),
            }
        }
        StoreOp::Range {
            prefix,
            limit,
            revision,
        } => {
            let mut request = RangeRequest::new(KeyRange::prefix(prefix));
            request.limit = limit;
            request.revision = revision;
            let response = client.range(request).await?;
            for kv in &response.kvs {
                writeln!(
                    out,
                    "{} = {}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                )?;
            }
            if let Some(next) = response.next_key {
                eprintln!(
                    "more keys from {:?} at revision {}",
                    String::from_utf8_lossy(&next),
                    response.revision
                );
            }
        }
        StoreOp::Watch {
            prefix,
            from_revision,
            count,
        } => {
            let mut watch = client.watch(WatchRequest {
                range: KeyRange::prefix(prefix),
                start_revision: from_revision,
            });
            let mut seen = 0usize;
            let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
            let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
            loop {
                let batch = tokio::select! {
                    batch = watch.next() => batch?,
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                };
                for event in batch {
                    let kind = match event.kind {
                        EventKind::Put => "PUT",
                        EventKind::Delete => "DELETE",
                    };
                    writeln!(
                        out,
                        "{} {kind} {} {}",
                        event.kv.mod_revision,
                        String::from_utf8_lossy(&event.kv.key),
                        String::from_utf8_lossy(&event.kv.value)
                    )?;
                    out.flush()?;
                    seen += 1;
                    if count > 0 && seen >= count {
                        return Ok(());
                    }
                }
            }
        }
        StoreOp::Compact { revision } => {
            let compacted = client.compact(revision).await?;
            writeln!(out, "compacted to revision {compacted}")?;
        }
        StoreOp::Status => {
            let mut failures = 0;
            for (endpoint, status) in client.status_all().await {
                match status {
                    Ok(s) => {
                        let members: Vec<String> = s
                            .members
                            .iter()
                            .map(|m| {
                                format!(
                                    "{}={}{}",
                                    m.name,
                                    m.addr,
                                    if m.voter { "" } else { " (learner)" }
                                )
                            })
                            .collect();
                        writeln!(out, "{endpoint}: member {}", s.name)?;
                        writeln!(
                            out,
                            "  leader:    {}",
                            s.leader.as_deref().unwrap_or("(none)")
                        )?;
                        writeln!(out, "  term:      {}", s.term)?;
                        writeln!(out, "  members:   {}", members.join(", "))?;
                        writeln!(
                            out,
                            "  applied:   {} (log {})",
                            s.applied_index, s.last_log_index
                        )?;
                        writeln!(
                            out,
                            "  revision:  {} (compacted {})",
                            s.revision, s.compacted_revision
                        )?;
                        writeln!(out, "  db size:   {} bytes", s.db_size_bytes)?;
                        writeln!(out, "  watchers:  {}", s.watchers)?;
                    }
                    Err(e) => {
                        failures += 1;
                        writeln!(out, "{endpoint}: error: {e}")?;
                    }
                }
            }
            if failures > 0 {
                bail!("{failures} endpoint(s) did not answer");
            }
        }
        StoreOp::Member(MemberOp::Add { member }) => {
            let (name, addr) = member
                .split_once('=')
                .context("the member to add must be NAME=ADDR")?;
            client
                .add_member(Member {
                    name: name.to_string(),
                    addr: addr.to_string(),
                })
                .await?;
            writeln!(out, "added {name}")?;
        }
        StoreOp::Member(MemberOp::Remove { name }) => {
            client.remove_member(&name).await?;
            writeln!(out, "removed {name}")?;
        }
    }
    Ok(())
}
