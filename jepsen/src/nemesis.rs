//! Nemeses: the faults injected into the cluster on a schedule — network partitions of several
//! shapes (nftables rules inside each host's namespace), kill -9 and restart, SIGSTOP/SIGCONT,
//! membership changes, wall-clock skew, and losing every write not yet synced. Each fault is
//! recorded as installed, skipped (with why) or indeterminate; after each heal the nemesis
//! measures how long the cluster takes to accept writes again.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::checker::{Anomaly, CheckResult, Validity};
use crate::client::Register;
use crate::history::{FaultStatus, Phase};
use crate::net::Host;
use crate::recorder::Recorder;

/// The longest the cluster may take to accept writes after a fault heals.
pub const RECOVERY_MAX: Duration = Duration::from_secs(5);

/// How long the nemesis keeps trying a write after a heal before giving up on the probe.
const PROBE_LIMIT: Duration = Duration::from_secs(60);

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Two random halves, the smaller one a minority.
    PartitionHalves,
    /// The store leader alone on one side.
    PartitionLeader,
    /// Each master sees a majority, but a different one (needs 5 masters).
    PartitionRing,
    /// Two halves that one master bridges.
    PartitionBridge,
    /// `kill -9` of a minority, restarted at the heal.
    Kill,
    /// SIGSTOP of a minority (the leader among them), SIGCONT at the heal.
    Pause,
    /// A master removed from the store's membership and restarted outside it (it must still
    /// start and serve), then added back at the heal.
    Member,
    /// Masters' wall clocks moved by up to a minute either way.
    Clock,
    /// Every master killed at once, every write it had not synced lost, then restarted.
    LoseUnsynced,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::PartitionHalves,
        Fault::PartitionLeader,
        Fault::PartitionRing,
        Fault::PartitionBridge,
        Fault::Kill,
        Fault::Pause,
        Fault::Member,
        Fault::Clock,
        Fault::LoseUnsynced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionRing => "partition-ring",
            Fault::PartitionBridge => "partition-bridge",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Member => "member",
            Fault::Clock => "clock",
            Fault::LoseUnsynced => "lose-unsynced",
        }
    }

    /// Parses a comma-separated list: fault names, `partition` (all four shapes), `all` or
    /// `none`.
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<Fault>> {
        let mut faults = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => faults.extend(Fault::ALL),
                "none" => {}
                "partition" => faults.extend(&Fault::ALL[..4]),
                _ => match Fault::ALL.iter().find(|f| f.name() == word) {
                    Some(f) => faults.push(*f),
                    None => bail!(
                        "unknown nemesis {word:?}: use all, none, partition or one of {}",
                        Fault::ALL.map(Fault::name).join(", ")
                    ),
                },
            }
        }
        faults.dedup();
        Ok(faults)
    }
}

/// What the nemesis needs from the system under test.
#[async_trait::async_trait]
pub trait Db: Send {
    fn hosts(&self) -> Vec<Host>;
    /// The index of the current leader, if known.
    async fn leader(&self) -> Option<usize>;
    fn kill(&mut self, i: usize);
    fn start(&mut self, i: usize) -> anyhow::Result<()>;
    fn pause(&mut self, i: usize);
    fn resume(&mut self, i: usize);
    /// Moves member `i`'s wall clock; an error says why it cannot be done.
    fn skew_clock(&mut self, i: usize, seconds: i64) -> anyhow::Result<()>;
    async fn remove_member(&mut self, i: usize) -> anyhow::Result<()>;
    async fn add_member(&mut self, i: usize) -> anyhow::Result<()>;
    /// Drops member `i`'s unsynced writes (it must be stopped); an error says why it cannot.
    fn lose_unsynced(&mut self, i: usize) -> anyhow::Result<String>;
    /// Whether faults of this kind can be injected at all here (`Err`: why not).
    fn supports(&self, fault: Fault) -> Result<(), String>;
}

/// The nftables table a partition installs in a host's namespace.
const TABLE: &str = "jepsen-partition";

/// Makes `host` drop every packet from and to `peers`.
fn drop_traffic(host: &Host, peers: &[&Host]) -> anyhow::Result<()> {
    let addresses: Vec<String> = peers.iter().map(|p| p.ip.to_string()).collect();
    let set = addresses.join(", ");
    let rules = format!(
        "table inet {TABLE} {{\n\
         chain input {{ type filter hook input priority -200; policy accept; ip saddr {{ {set} }} drop; }}\n\
         chain output {{ type filter hook output priority -200; policy accept; ip daddr {{ {set} }} drop; }}\n\
         }}\n"
    );
    let mut child = host
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nft (install nftables)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn heal_traffic(host: &Host) {
    let _ = host
        .command("nft")
        .args(["delete", "table", "inet", TABLE])
        .stderr(Stdio::null())
        .status();
}

/// For each member, the members it cannot hear from.
pub type Grudge = Vec<Vec<usize>>;

/// Cuts `a` from `b` completely.
fn split(n: usize, a: &[usize], b: &[usize]) -> Grudge {
    let mut grudge = vec![Vec::new(); n];
    for &x in a {
        grudge[x].extend_from_slice(b);
    }
    for &y in b {
        grudge[y].extend_from_slice(a);
    }
    grudge
}

/// Each member hears only its neighbours within a majority window around a ring.
pub fn ring(order: &[usize]) -> Grudge {
    let n = order.len();
    // A majority is n/2 + 1 members: itself and n/2 others, half on each side.
    let reach = (n / 2).div_ceil(2);
    let mut grudge = vec![Vec::new(); n];
    for (pos, &x) in order.iter().enumerate() {
        for (other_pos, &y) in order.iter().enumerate() {
            let d = pos.abs_diff(other_pos);
            let distance = d.min(n - d);
            if distance > reach {
                grudge[x].push(y);
            }
        }
    }
    grudge
}

/// What the nemesis has in place, to undo at the heal.
enum Active {
    Partition,
    Killed(Vec<usize>),
    Paused(Vec<usize>),
    Removed(usize),
    Skewed(Vec<usize>),
}

/// The nemesis: runs the fault schedule against a database and checks recovery.
pub struct Nemesis<D: Db> {
    pub db: D,
    recorder: Arc<Recorder>,
    /// Clients of each member, used to probe that writes are accepted after a heal.
    probes: Vec<Arc<dyn Register>>,
    recoveries: Vec<(String, Option<Duration>)>,
    /// Heals that could not put the cluster back as it was (a removed member not re-added).
    unrestored: Vec<String>,
}

impl<D: Db> Nemesis<D> {
    pub fn new(db: D, recorder: Arc<Recorder>, probes: Vec<Arc<dyn Register>>) -> Self {
        Nemesis {
            db,
            recorder,
            probes,
            recoveries: Vec::new(),
            unrestored: Vec::new(),
        }
    }

    /// Runs `faults` in turn (repeating them) until `until`: `quiet` of calm, then a fault held
    /// for `active`, then the heal and a recovery probe. Every fault runs at least once when
    /// `until` allows it.
    pub async fn run(
        &mut self,
        faults: &[Fault],
        until: Instant,
        quiet: Duration,
        active: Duration,
    ) {
        if faults.is_empty() {
            tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
            return;
        }
        let mut round = 0usize;
        loop {
            tokio::time::sleep(quiet).await;
            if Instant::now() + active > until {
                break;
            }
            let fault = faults[round % faults.len()];
            round += 1;
            self.inject(fault, active).await;
        }
    }

    /// One fault: install, hold, heal, probe.
    pub async fn inject(&mut self, fault: Fault, hold: Duration) {
        let name = fault.name();
        if let Err(why) = self.db.supports(fault) {
            self.recorder
                .nemesis(name, Phase::Start, FaultStatus::Skipped, why);
            return;
        }
        let active = match self.install(fault).await {
            Ok((active, detail)) => {
                self.recorder
                    .nemesis(name, Phase::Start, FaultStatus::Installed, detail);
                active
            }
            Err((active, e)) => {
                self.recorder.nemesis(
                    name,
                    Phase::Start,
                    FaultStatus::Indeterminate,
                    format!("{e:#}"),
                );
                active
            }
        };
        tokio::time::sleep(hold).await;
        let detail = self.heal(active).await;
        self.recorder
            .nemesis(name, Phase::Stop, FaultStatus::Installed, detail);
        let recovered = self.probe().await;
        self.recoveries.push((name.to_string(), recovered));
    }

    async fn install(&mut self, fault: Fault) -> Result<(Active, String), (Active, anyhow::Error)> {
        let hosts = self.db.hosts();
        let n = hosts.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand::rng());
        let minority: Vec<usize> = order[..(n - 1) / 2].to_vec();
        let names = |set: &[usize]| {
            set.iter()
                .map(|i| hosts[*i].name.clone())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let partition = |grudge: Grudge, detail: String| {
            for (i, cut) in grudge.iter().enumerate() {
                if cut.is_empty() {
                    continue;
                }
                let peers: Vec<&Host> = cut.iter().map(|j| &hosts[*j]).collect();
                if let Err(e) = drop_traffic(&hosts[i], &peers) {
                    return Err((Active::Partition, e));
                }
            }
            Ok((Active::Partition, detail))
        };
        match fault {
            Fault::PartitionHalves => {
                let (a, b) = order.split_at(n / 2);
                partition(split(n, a, b), format!("[{}] | [{}]", names(a), names(b)))
            }
            Fault::PartitionLeader => {
                let leader = self.db.leader().await.unwrap_or(order[0]);
                let rest: Vec<usize> = (0..n).filter(|i| *i != leader).collect();
                partition(
                    split(n, &[leader], &rest),
                    format!("leader [{}] | [{}]", names(&[leader]), names(&rest)),
                )
            }
            Fault::PartitionRing => partition(ring(&order), format!("ring {}", names(&order))),
            Fault::PartitionBridge => {
                let half = (n - 1) / 2;
                let a = &order[..half];
                let bridge = order[half];
                let b = &order[half + 1..];
                partition(
                    split(n, a, b),
                    format!(
                        "[{}] | [{}] bridged by {}",
                        names(a),
                        names(b),
                        names(&[bridge])
                    ),
                )
            }
            Fault::Kill => {
                for &i in &minority {
                    self.db.kill(i);
                }
                Ok((
                    Active::Killed(minority.clone()),
                    format!("killed {}", names(&minority)),
                ))
            }
            Fault::Pause => {
                // The leader among the paused when it is known: the interesting case.
                let mut paused = minority.clone();
                if let Some(leader) = self.db.leader().await {
                    if !paused.contains(&leader) {
                        paused[0] = leader;
                    }
                }
                for &i in &paused {
                    self.db.pause(i);
                }
                let detail = format!("paused {}", names(&paused));
                Ok((Active::Paused(paused), detail))
            }
            Fault::Member => {
                let i = order[0];
                match self.db.remove_member(i).await {
                    Ok(()) => Ok((
                        Active::Removed(i),
                        format!(
                            "removed {} and restarted it outside the membership",
                            names(&[i])
                        ),
                    )),
                    Err(e) => Err((Active::Removed(i), e)),
                }
            }
            Fault::Clock => {
                let mut skewed = Vec::new();
                let mut detail = Vec::new();
                for &i in order.iter().take(n.div_ceil(2)) {
                    let seconds = rand::rng().random_range(-60i64..=60);
                    if let Err(e) = self.db.skew_clock(i, seconds) {
                        return Err((Active::Skewed(skewed), e));
                    }
                    skewed.push(i);
                    detail.push(format!("{} {seconds:+}s", hosts[i].name));
                }
                Ok((Active::Skewed(skewed), detail.join(", ")))
            }
            Fault::LoseUnsynced => {
                let mut detail = Vec::new();
                for i in 0..n {
                    self.db.kill(i);
                }
                for (i, host) in hosts.iter().enumerate() {
                    match self.db.lose_unsynced(i) {
                        Ok(lost) => detail.push(format!("{}: {lost}", host.name)),
                        Err(e) => return Err((Active::Killed((0..n).collect()), e)),
                    }
                }
                Ok((Active::Killed((0..n).collect()), detail.join("; ")))
            }
        }
    }

    async fn heal(&mut self, active: Active) -> String {
        match active {
            Active::Partition => {
                for host in self.db.hosts() {
                    heal_traffic(&host);
                }
                "healed the network".to_string()
            }
            Active::Killed(killed) => {
                let mut failed = Vec::new();
                for i in killed {
                    if let Err(e) = self.db.start(i) {
                        failed.push(format!("{i}: {e:#}"));
                    }
                }
                if failed.is_empty() {
                    "restarted".to_string()
                } else {
                    format!("restart failed: {}", failed.join("; "))
                }
            }
            Active::Paused(paused) => {
                for i in paused {
                    self.db.resume(i);
                }
                "resumed".to_string()
            }
            Active::Removed(i) => {
                // Re-adding needs a leader; keep trying for a while.
                let start = Instant::now();
                let deadline = start + PROBE_LIMIT;
                loop {
                    match self.db.add_member(i).await {
                        Ok(()) => {
                            break format!("added back in {:.2} s", start.elapsed().as_secs_f64())
                        }
                        Err(e) if Instant::now() > deadline => {
                            let failure = format!(
                                "could not add {} back to the membership: {e:#}",
                                self.db.hosts()[i].name
                            );
                            self.unrestored.push(failure.clone());
                            break failure;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
            }
            Active::Skewed(skewed) => {
                for i in skewed {
                    let _ = self.db.skew_clock(i, 0);
                }
                "clocks reset".to_string()
            }
        }
    }

    /// Writes through each member in turn until one write succeeds; the time it took, or
    /// `None` after [`PROBE_LIMIT`].
    async fn probe(&self) -> Option<Duration> {
        let start = Instant::now();
        let mut k = 0usize;
        while start.elapsed() < PROBE_LIMIT {
            let client = &self.probes[k % self.probes.len().max(1)];
            k += 1;
            if client.write("probe", k as i64).await.is_ok() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Heals whatever may be left (partitions, paused members, stopped members, clocks).
    pub async fn heal_all(&mut self) {
        for host in self.db.hosts() {
            heal_traffic(&host);
        }
        for i in 0..self.db.hosts().len() {
            self.db.resume(i);
            let _ = self.db.start(i);
            let _ = self.db.skew_clock(i, 0);
        }
    }

    /// The recovery check: every heal was followed by an accepted write within
    /// [`RECOVERY_MAX`].
    pub fn recovery_result(&self) -> CheckResult {
        let mut anomalies = Vec::new();
        let mut slowest: std::collections::BTreeMap<&str, Duration> = Default::default();
        for (fault, took) in &self.recoveries {
            if let Some(t) = took {
                let worst = slowest.entry(fault.as_str()).or_default();
                *worst = (*worst).max(*t);
            }
            match took {
                Some(t) if *t <= RECOVERY_MAX => {}
                Some(t) => anomalies.push(Anomaly {
                    kind: "slow-recovery".into(),
                    key: None,
                    message: format!("after {fault} healed, the first write was accepted after {t:?} (limit {RECOVERY_MAX:?})"),
                    ops: Vec::new(),
                }),
                None => anomalies.push(Anomaly {
                    kind: "no-recovery".into(),
                    key: None,
                    message: format!("after {fault} healed, no write was accepted in {PROBE_LIMIT:?}"),
                    ops: Vec::new(),
                }),
            }
        }
        for failure in &self.unrestored {
            anomalies.push(Anomaly {
                kind: "member-not-restored".into(),
                key: None,
                message: failure.clone(),
                ops: Vec::new(),
            });
        }
        CheckResult {
            name: "recovery".into(),
            validity: if anomalies.is_empty() {
                Validity::Valid
            } else {
                Validity::Invalid
            },
            summary: format!(
                "{} heals; slowest first write after each fault: {}",
                self.recoveries.len(),
                slowest
                    .iter()
                    .map(|(fault, t)| format!("{fault} {:.2} s", t.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            anomalies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_of_five_gives_each_member_a_different_majority() {
        let grudge = ring(&[0, 1, 2, 3, 4]);
        for (i, cut) in grudge.iter().enumerate() {
            assert_eq!(cut.len(), 2, "member {i} hears 3 of 5: {grudge:?}");
        }
        assert_eq!(grudge[0], vec![2, 3]);
        assert_eq!(grudge[2], vec![0, 4]);
    }

    #[test]
    fn split_is_symmetric() {
        let grudge = split(5, &[0, 1], &[3, 4]);
        assert_eq!(grudge[0], vec![3, 4]);
        assert_eq!(grudge[4], vec![0, 1]);
        assert!(grudge[2].is_empty());
    }

    #[test]
    fn fault_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(Fault::parse_list("all").unwrap().len(), 9);
        assert_eq!(
            Fault::parse_list("kill,pause").unwrap(),
            vec![Fault::Kill, Fault::Pause]
        );
        assert_eq!(Fault::parse_list("partition").unwrap().len(), 4);
        let e = Fault::parse_list("kil").unwrap_err().to_string();
        assert!(e.contains("unknown nemesis \"kil\""), "{e}");
    }
}
