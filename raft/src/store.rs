//! A store member: the Raft node, its storage and keyspace, the QUIC service it answers peers
//! and clients with, bootstrap from the `--peers` list, and the leader's compactor.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::{ChangeMembers, Config, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::task::JoinHandle;

use crate::command::{
    Command, CommandResponse, Consistency, RangeRequest, RangeResponse, Txn, TxnResponse,
    WatchRequest,
};
use crate::db;
use crate::error::StoreError;
use crate::keyspace::Keyspace;
use crate::log_growth::{self, LogGrowth};
use crate::log_store::LogStore;
use crate::network::Network;
use crate::pre_vote::{self, PreVoteRequest, VoteView};
use crate::proposer::{self, Proposer};
use crate::protocol::{PeerRequest, PeerResponse, FORWARD_HOPS_MAX};
use crate::read_index::{NotConfirmed, ReadIndex};
use crate::state_machine::StateMachineStore;
use crate::status::{MemberStatus, StoreStatus};
use crate::transport::{Handler, Reply, Transport, TransportError};
use crate::types::{member_id, Member, MemberId, TypeConfig};
use crate::watch::{WatchError, WatchStream};

/// How a member runs. [`StoreConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This member's name, unique in the cluster.
    pub name: String,
    pub data_dir: PathBuf,
    /// The UDP address QUIC listens on.
    pub listen: SocketAddr,
    /// The address other members reach this one at (default: `listen`).
    pub advertise: String,
    /// The initial members, the same list on every member; empty for a single member.
    pub peers: Vec<Member>,
    /// The cluster token every member and client proves knowledge of.
    pub token: String,
    /// How much history (for watches and reads at old revisions) the leader keeps.
    pub history_window: Duration,
    /// How often the leader considers compacting.
    pub compaction_interval: Duration,
    /// How many events a watcher may fall behind before it is cut off.
    pub watch_buffer_events_max: usize,
    /// How long a write may wait to commit before its outcome is reported unknown.
    pub write_timeout: Duration,
    /// Applied entries between snapshots (etcd's `--snapshot-count`, 100,000 by default);
    /// a snapshot is also built whenever the log outgrows the last one (`log_growth`).
    pub snapshot_logs_since_last: u64,
    /// A snapshot is built whenever the log written since the last one holds more bytes
    /// than it, and than this (`log_growth`).
    pub snapshot_log_bytes_min: u64,
    /// Entries kept in the log behind the last snapshot, for followers slightly behind.
    pub logs_kept_after_snapshot: u64,
    pub heartbeat_interval_ms: u64,
    /// How long adding a member waits for it to catch up as a learner, and then for the
    /// change to commit, before it reports the member unreachable.
    pub membership_timeout: Duration,
    /// Deliberately unsafe behaviour for the Jepsen suite; the default is safe.
    pub unsafe_mode: UnsafeMode,
}

/// Switches that break the store's guarantees on purpose, so the Jepsen suite can prove its
/// checkers notice. Never set them in a real cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnsafeMode {
    /// Linearizable reads are answered from this member's local state without a read index,
    /// on any member (leader or not): reads may be stale.
    pub stale_reads: bool,
    /// Log appends and vote/meta writes are acknowledged without fsync: acknowledged writes
    /// may be lost in a crash.
    pub no_sync: bool,
}

impl UnsafeMode {
    pub fn any(&self) -> bool {
        self.stale_reads || self.no_sync
    }
}

impl StoreConfig {
    pub fn new(name: &str, data_dir: &Path, listen: SocketAddr, token: &str) -> Self {
        StoreConfig {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            listen,
            advertise: listen.to_string(),
            peers: Vec::new(),
            token: token.to_string(),
            history_window: Duration::from_secs(300),
            compaction_interval: Duration::from_secs(30),
            watch_buffer_events_max: 10_000,
            write_timeout: Duration::from_secs(10),
            snapshot_logs_since_last: 100_000,
            snapshot_log_bytes_min: log_growth::LOG_BYTES_MIN,
            logs_kept_after_snapshot: 1_000,
            heartbeat_interval_ms: 150,
            membership_timeout: Duration::from_secs(60),
            unsafe_mode: UnsafeMode::default(),
        }
    }

    /// This member's slot: its position in the sorted `--peers` list, or one derived from its
    /// id past the list. Slots give members disjoint election timeout ranges, because openraft
    /// draws a member's timeout once per process and equal draws can split votes forever.
    fn election_slot(&self) -> u64 {
        let mut names: Vec<&str> = self.peers.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        match names.iter().position(|n| *n == self.name) {
            Some(i) => i as u64,
            None => names.len() as u64 + member_id(&self.name) % 4,
        }
    }

    fn raft_config(&self) -> Result<Config, StoreError> {
        let heartbeat = self.heartbeat_interval_ms.max(10);
        let min = heartbeat * 4 + self.election_slot() * heartbeat * 3 / 2;
        let config = Config {
            cluster_name: "keelson".to_string(),
            heartbeat_interval: heartbeat,
            election_timeout_min: min,
            election_timeout_max: min + heartbeat,
            install_snapshot_timeout: 2_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last.max(1)),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            purge_batch_size: 64,
            max_payload_entries: 256,
            // The election loop (`Store::elections`) campaigns, after a pre-vote.
            enable_elect: false,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| StoreError::Invalid(format!("raft configuration: {e}")))
    }
}

/// A running store member. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    id: MemberId,
    config: StoreConfig,
    raft: Raft<TypeConfig>,
    keyspace: Arc<Keyspace>,
    transport: Arc<Transport>,
    /// Where transactions queue to be proposed in batches.
    proposer: Proposer,
    /// Where linearizable reads wait for a shared read-index round.
    reads: Arc<ReadIndex>,
    /// The log, read for its last id when this member campaigns or answers a pre-vote.
    log: LogStore,
    /// Whether this member campaigns when its election timer runs out (not while it believes
    /// it was removed: see `removal_watch`).
    standing: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closing: AtomicBool,
    /// The leader other members named when this one knew none, and when they were asked.
    leader_hint: Mutex<Option<(Option<Member>, Instant)>>,
}

/// How often a member without a leader checks whether it has been removed.
const REMOVAL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How many log entries a learner may still lag behind the leader when it is made a voter.
const CATCH_UP_LAG_MAX: u64 = 256;

/// How long the leader other members named (or that they named none) is trusted before
/// asking again.
const LEADER_HINT_TTL: Duration = Duration::from_millis(500);

/// Answers peers and clients on this member's QUIC endpoint.
struct Service {
    store: Store,
}

impl Store {
    /// Opens the member's directory, joins the cluster and starts serving peers.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let storage_error = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Storage(format!("{what} in {}: {e}", config.data_dir.display()))
        };
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| storage_error("cannot create the data directory", &e))?;
        let raft_config = Arc::new(config.raft_config()?);
        let opening = Instant::now();
        let db = db::open(&config.data_dir.join("db"))
            .map_err(|e| storage_error("cannot open the database", &e))?;
        let keyspace = Arc::new(
            Keyspace::open(db.clone(), config.watch_buffer_events_max)
                .map_err(|e| storage_error("cannot read the keyspace", &e))?,
        );
        if config.unsafe_mode.any() {
            tracing::warn!(
                name = %config.name,
                stale_reads = config.unsafe_mode.stale_reads,
                no_sync = config.unsafe_mode.no_sync,
                "UNSAFE MODE: this member deliberately breaks the store's guarantees \
                 (stale reads and/or unsynced writes); for the Jepsen suite only"
            );
        }
        let db_open_ms = opening.elapsed().as_millis();
        let mut state_machine =
            StateMachineStore::open(keyspace.clone(), config.data_dir.join("snapshot"))
                .map_err(|e| storage_error("cannot read the state machine", &e))?;
        let growth = state_machine.log_growth();
        growth.set_floor(config.snapshot_log_bytes_min);
        let log_store = LogStore::new(db, config.unsafe_mode.no_sync)
            .purge_within(state_machine.durable_snapshot())
            .counting_into(growth.clone());
        log_store
            .forget_vote_grant()
            .map_err(|e| storage_error("cannot read the vote", &e))?;
        repair_snapshot(&log_store, &mut state_machine)
            .await
            .map_err(|e| storage_error("cannot repair the snapshot", &e))?;
        let transport = Arc::new(
            Transport::bind_server(config.listen, &config.token).map_err(StoreError::Invalid)?,
        );
        let id = member_id(&config.name);
        let raft = Raft::new(
            id,
            raft_config,
            Network::new(transport.clone()),
            log_store.clone(),
            state_machine,
        )
        .await
        .map_err(|e| storage_error("cannot start raft", &e))?;
        let (proposer, proposals) = Proposer::new();
        let reads = ReadIndex::new(raft.clone(), config.write_timeout);
        crate::metrics::register();
        let leaders = tokio::spawn(crate::metrics::watch_leader(raft.server_metrics()));
        let store = Store {
            inner: Arc::new(Inner {
                id,
                config,
                raft,
                keyspace,
                transport: transport.clone(),
                proposer,
                reads,
                log: log_store,
                standing: AtomicBool::new(true),
                tasks: Mutex::new(Vec::new()),
                closing: AtomicBool::new(false),
                leader_hint: Mutex::new(None),
            }),
        };
        let service = Arc::new(Service {
            store: store.clone(),
        });
        let serve = tokio::spawn(transport.serve(service));
        let bootstrap = tokio::spawn(store.clone().bootstrap());
        let compactor = tokio::spawn(store.clone().compactor());
        let removal = tokio::spawn(store.clone().removal_watch());
        let elections = tokio::spawn(store.clone().elections());
        let snapshots = tokio::spawn(store.clone().snapshots_by_size(growth));
        let batches = {
            let store = store.clone();
            tokio::spawn(proposer::run(proposals, move |command, deadline| {
                let store = store.clone();
                async move { store.replicate(command, 0, deadline).await }
            }))
        };
        store.lock_tasks().extend([
            serve, bootstrap, compactor, removal, elections, snapshots, batches, leaders,
        ]);
        tracing::info!(
            name = %store.inner.config.name,
            id,
            db_open_ms,
            open_ms = opening.elapsed().as_millis(),
            "store member started"
        );
        Ok(store)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn id(&self) -> MemberId {
        self.inner.id
    }

    /// The UDP address the member serves QUIC on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.transport.local_addr()
    }

    /// The member's keyspace for local (serializable) reads and watches.
    pub fn keyspace(&self) -> &Arc<Keyspace> {
        &self.inner.keyspace
    }

    fn me(&self) -> Member {
        Member {
            name: self.inner.config.name.clone(),
            addr: self.inner.config.advertise.clone(),
        }
    }

    /// Initializes the cluster if this member is the first of the `--peers` list (by name),
    /// has no state of its own, and no reachable peer has any.
    async fn bootstrap(self) {
        let mut members = self.inner.config.peers.clone();
        if !members.iter().any(|m| m.name == self.inner.config.name) {
            if !members.is_empty() {
                // Not in the initial list: this member joins when a leader adds it.
                return;
            }
            members.push(self.me());
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        if members[0].name != self.inner.config.name {
            return;
        }
        match self.inner.raft.is_initialized().await {
            Ok(false) => {}
            _ => return,
        }
        for member in members.iter().filter(|m| m.name != self.inner.config.name) {
            let status = self
                .inner
                .transport
                .call(&member.addr, &PeerRequest::Status, Duration::from_secs(1))
                .await;
            if let Ok(PeerResponse::Status(Ok(status))) = status {
                if status.initialized {
                    tracing::info!(
                        peer = %member.name,
                        "not initializing: a peer already has cluster state; waiting to be added"
                    );
                    return;
                }
            }
        }
        let nodes: BTreeMap<MemberId, Member> = members
            .into_iter()
            .map(|m| (member_id(&m.name), m))
            .collect();
        match self.inner.raft.initialize(nodes).await {
            Ok(()) => tracing::info!("initialized the cluster"),
            Err(e) => tracing::info!("not initializing: {e}"),
        }
    }

    /// Stops a removed member from disrupting the cluster. A member removed from the
    /// membership often never receives the configuration without it (the leader stops
    /// replicating to it once that commits), so it believes it still votes: it campaigns with
    /// ever higher terms, and a leader that re-adds it later is pushed aside by those terms.
    /// When this member has heard from no leader for a while and the leader the others name
    /// does not count it among the voters, it stops standing for election, until a leader
    /// again replicates a membership in which it votes.
    async fn removal_watch(self) {
        let mut leaderless_since: Option<Instant> = None;
        let mut electing = true;
        loop {
            tokio::time::sleep(REMOVAL_CHECK_INTERVAL).await;
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            if self.leader_id().is_some() {
                leaderless_since = None;
                if !electing && self.votes_here() {
                    tracing::info!(
                        "a leader counts this member among the voters again: standing for election"
                    );
                    self.inner.standing.store(true, Ordering::SeqCst);
                    electing = true;
                }
                continue;
            }
            let since = *leaderless_since.get_or_insert_with(Instant::now);
            if !electing || since.elapsed() < REMOVAL_CHECK_INTERVAL * 2 {
                continue;
            }
            if let Some(voters) = self.voters_per_others().await {
                if !voters.contains(&self.inner.config.name) {
                    tracing::warn!(
                        voters = ?voters,
                        "the cluster's leader does not count this member among the voters \
                         (removed?): not standing for election until it is added back"
                    );
                    self.inner.standing.store(false, Ordering::SeqCst);
                    electing = false;
                }
            }
        }
    }

    /// Campaigns when this member's election timer runs out and a pre-vote finds a quorum
    /// that would elect it (see `pre_vote`); openraft's own election timer is off.
    async fn elections(self) {
        let config = self.inner.raft.config().clone();
        let (min, max) = (config.election_timeout_min, config.election_timeout_max);
        let tick = Duration::from_millis((config.heartbeat_interval / 3).max(5));
        let draw = || Duration::from_millis(rand::random_range(min..=max));
        let mut timeout = draw();
        let mut not_before = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            if !self.inner.standing.load(Ordering::SeqCst)
                || self.leads()
                || Instant::now() < not_before
            {
                continue;
            }
            let Some(view) = self.vote_view().await else {
                continue;
            };
            if !view.timer_expired(timeout) {
                continue;
            }
            not_before = Instant::now() + timeout;
            timeout = draw();
            let (voter_sets, peers) = {
                let metrics = self.inner.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                let peers: Vec<(MemberId, String)> = membership
                    .nodes()
                    .filter(|(id, _)| **id != self.inner.id)
                    .map(|(id, member)| (*id, member.addr.clone()))
                    .collect();
                (membership.get_joint_config().clone(), peers)
            };
            if !voter_sets.iter().any(|set| set.contains(&self.inner.id)) {
                continue;
            }
            let Ok(last_log_id) = self.last_log_id().await else {
                continue;
            };
            let request = PeerRequest::PreVote(PreVoteRequest {
                candidate: self.inner.id,
                last_log_id,
            });
            let voters: BTreeSet<MemberId> = voter_sets.iter().flatten().copied().collect();
            let wait = Duration::from_millis(min / 2);
            let answers = peers
                .iter()
                .filter(|(id, _)| voters.contains(id))
                .map(|(id, addr)| {
                    let (request, transport) = (&request, &self.inner.transport);
                    async move {
                        let answer = transport.call(addr, request, wait).await;
                        (*id, matches!(answer, Ok(PeerResponse::PreVote(true))))
                    }
                });
            let mut granted: BTreeSet<MemberId> = futures::future::join_all(answers)
                .await
                .into_iter()
                .filter_map(|(id, yes)| yes.then_some(id))
                .collect();
            granted.insert(self.inner.id);
            if !pre_vote::quorum(&voter_sets, &granted) {
                tracing::debug!(?granted, "pre-vote: no quorum would elect this member");
                continue;
            }
            tracing::info!(
                ?granted,
                "pre-vote: a quorum would elect this member; campaigning"
            );
            if self.inner.raft.trigger().elect().await.is_err() {
                return;
            }
        }
    }

    /// This member's vote as openraft holds it; `None` once Raft stopped.
    async fn vote_view(&self) -> Option<VoteView> {
        let lease = Duration::from_millis(self.inner.raft.config().election_timeout_max);
        self.inner
            .raft
            .with_raft_state(move |state| VoteView {
                committed: state.vote_ref().is_committed(),
                since_renewed: state.vote_last_modified().map(|at| at.elapsed()),
                lease,
            })
            .await
            .ok()
    }

    /// The id of the last entry in this member's log (or of the last one purged).
    async fn last_log_id(&self) -> Result<Option<openraft::LogId<MemberId>>, StoreError> {
        use openraft::storage::RaftLogStorage;
        let mut log = self.inner.log.clone();
        log.get_log_state()
            .await
            .map(|state| state.last_log_id)
            .map_err(|e| StoreError::Storage(format!("cannot read the log: {e}")))
    }

    /// Whether this member would vote for the candidate now (a pre-vote; nothing changes).
    async fn answer_pre_vote(&self, request: &PreVoteRequest) -> bool {
        let (Some(view), Ok(own)) = (self.vote_view().await, self.last_log_id().await) else {
            return false;
        };
        let grant = pre_vote::would_grant(&view, own.as_ref(), request.last_log_id.as_ref());
        tracing::debug!(
            candidate = request.candidate,
            grant,
            ?view,
            "pre-vote asked"
        );
        grant
    }

    /// Whether this member is the Raft leader now.
    fn leads(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Whether this member is a voter of its own (uniform) membership.
    fn votes_here(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership.get_joint_config().len() == 1
            && membership.voter_ids().any(|v| v == self.inner.id)
    }

    /// The voters of a uniform membership as reported by a member that knows a leader (and is
    /// not this one); `None` if no member answers so.
    async fn voters_per_others(&self) -> Option<BTreeSet<String>> {
        for addr in self.other_addrs() {
            let Some(status) = self.status_of(&addr).await else {
                continue;
            };
            if status.leader.is_none() || status.joint {
                continue;
            }
            return Some(
                status
                    .members
                    .into_iter()
                    .filter(|m| m.voter)
                    .map(|m| m.name)
                    .collect(),
            );
        }
        None
    }

    /// What the member at `addr` says of itself, if it answers within half a second.
    async fn status_of(&self, addr: &str) -> Option<StoreStatus> {
        let answer = self
            .inner
            .transport
            .call(addr, &PeerRequest::Status, Duration::from_millis(500))
            .await;
        match answer {
            Ok(PeerResponse::Status(Ok(status))) => Some(status),
            _ => None,
        }
    }

    /// The peer addresses of the other members this one knows of: its last membership and
    /// `--peers`.
    fn other_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(_, node)| node.addr.clone())
                .collect()
        };
        addrs.extend(self.inner.config.peers.iter().map(|m| m.addr.clone()));
        addrs.sort();
        addrs.dedup();
        addrs.retain(|addr| *addr != self.inner.config.advertise);
        addrs
    }

    /// Builds a snapshot whenever the log written since the last one outgrows it (see
    /// [`crate::log_growth`]); on every member, as each keeps its own snapshots.
    async fn snapshots_by_size(self, growth: Arc<LogGrowth>) {
        loop {
            tokio::time::sleep(log_growth::CHECK_INTERVAL).await;
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            if growth.take_due() {
                tracing::debug!("the log outgrew the last snapshot: building one");
                if let Err(e) = self.inner.raft.trigger().snapshot().await {
                    tracing::warn!(error = %e, "cannot start building a snapshot");
                }
            }
        }
    }

    /// On the leader, compacts history older than the window, every interval.
    async fn compactor(self) {
        let interval = self
            .inner
            .config
            .compaction_interval
            .max(Duration::from_millis(10));
        let window = self.inner.config.history_window;
        let samples_max = (window.as_millis() / interval.as_millis()).max(1) as usize + 2;
        let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
        loop {
            tokio::time::sleep(interval).await;
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            if self.leader_id() != Some(self.inner.id) {
                samples.clear();
                continue;
            }
            let now = Instant::now();
            samples.push_back((now, self.inner.keyspace.revision()));
            if samples.len() > samples_max {
                samples.pop_front();
            }
            let mut target = None;
            while let Some(&(at, revision)) = samples.front() {
                if now.duration_since(at) < window {
                    break;
                }
                target = Some(revision);
                samples.pop_front();
            }
            if let Some(revision) = target {
                if revision > self.inner.keyspace.compacted() {
                    if let Err(e) = self.compact(revision).await {
                        tracing::warn!(revision, "compaction failed: {e}");
                    }
                }
            }
        }
    }

    /// The leader this member can vouch for: openraft's (from its committed vote), except
    /// itself once it no longer leads (a leader that removed itself keeps its committed vote)
    /// and anyone while this member is outside the membership (no leader talks to it, so its
    /// view is stale; [`Store::leader_from_others`] asks the members instead).
    fn known_leader(&self, metrics: &RaftMetrics<MemberId, Member>) -> Option<MemberId> {
        let leader = metrics.current_leader?;
        if leader == self.inner.id && metrics.state != ServerState::Leader {
            return None;
        }
        metrics
            .membership_config
            .membership()
            .get_node(&self.inner.id)
            .map(|_| leader)
    }

    fn leader_id(&self) -> Option<MemberId> {
        self.known_leader(&self.inner.raft.metrics().borrow())
    }

    fn member_by_id(&self, id: MemberId) -> Option<Member> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.config.write_timeout
    }

    /// Sends `request` to the leader described by `forward`; `Ok(None)` if it could not be
    /// delivered (retry), `Err` for an answer that is final.
    async fn forward(
        &self,
        forward: &ForwardToLeader<MemberId, Member>,
        request: &PeerRequest,
        deadline: Instant,
    ) -> Result<Option<PeerResponse>, StoreError> {
        // Outside the membership, the leader openraft names is whoever led when this member
        // was removed: ask the members instead.
        let known = if self.is_outside() {
            None
        } else {
            forward
                .leader_node
                .clone()
                .or_else(|| forward.leader_id.and_then(|id| self.member_by_id(id)))
        };
        // A voter of a uniform membership learns its leader from Raft within an election;
        // only a member outside it, or left in a joint configuration it never saw completed
        // (removed), asks the others.
        let leader = match known {
            Some(leader) => leader,
            None if self.votes_here() => return Ok(None),
            None => match self.leader_from_others().await {
                Some(leader) => leader,
                None => return Ok(None),
            },
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .inner
            .transport
            .call(&leader.addr, request, remaining)
            .await
        {
            Ok(PeerResponse::Refused(e)) => Err(e.into()),
            Ok(response) => Ok(Some(response)),
            Err(TransportError::NotSent { .. }) => Ok(None),
            Err(e @ TransportError::NoAnswer { .. }) => Err(StoreError::Unknown(e.to_string())),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    /// Whether this member is outside its own view of the membership (removed, or not yet
    /// added): no leader sends it anything then, so it must ask the others who leads.
    fn is_outside(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&self.inner.id)
            .is_none()
    }

    /// The leader the other known members (the last membership this one saw, and `--peers`)
    /// name, for a member outside the membership (or left in a joint configuration it never
    /// saw completed), which hears from no leader. The answer, even
    /// "none", is kept for [`LEADER_HINT_TTL`] so that retries do not flood the members.
    async fn leader_from_others(&self) -> Option<Member> {
        let hint = self.inner.leader_hint.lock().ok().and_then(|h| h.clone());
        if let Some((leader, at)) = hint {
            if at.elapsed() < LEADER_HINT_TTL {
                return leader;
            }
        }
        let leader = self.ask_others_for_leader().await;
        if let Ok(mut hint) = self.inner.leader_hint.lock() {
            *hint = Some((leader.clone(), Instant::now()));
        }
        leader
    }

    /// Asks every other member at once (a partitioned one must not delay the answer) and
    /// takes the first that names a leader other than this member.
    async fn ask_others_for_leader(&self) -> Option<Member> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let addrs = self.other_addrs();
        let mut answers: FuturesUnordered<_> =
            addrs.iter().map(|addr| self.status_of(addr)).collect();
        while let Some(answer) = answers.next().await {
            let Some(status) = answer else { continue };
            let Some(name) = status.leader else { continue };
            let Some(leader) = status.members.iter().find(|m| m.name == name) else {
                continue;
            };
            if leader.name == self.inner.config.name {
                continue;
            }
            return Some(Member {
                name: leader.name.clone(),
                addr: leader.addr.clone(),
            });
        }
        None
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.inner.closing.load(Ordering::SeqCst) {
            Err(StoreError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Replicates `command` through the leader and returns what applying it answered. A
    /// transaction is proposed in a batch with the others running concurrently on this member
    /// (see `proposer`); it is answered as if it were alone.
    pub async fn write(&self, command: Command) -> Result<CommandResponse, StoreError> {
        let started = Instant::now();
        let result = self.write_hops(command, 0).await;
        // An answer from the state machine (a rejection too) means the entry was committed.
        crate::metrics::record_write(started.elapsed(), result.is_ok());
        result
    }

    async fn write_hops(&self, command: Command, hops: u8) -> Result<CommandResponse, StoreError> {
        self.check_open()?;
        command.validate().map_err(StoreError::Invalid)?;
        let deadline = self.deadline();
        match command {
            // From a client of this member (a transaction forwarded by a peer was already
            // that peer's to batch).
            Command::Txn(txn) if hops == 0 => self.inner.proposer.propose(txn, deadline).await,
            command => self.replicate(command, hops, deadline).await,
        }
    }

    /// Proposes `command` (validated) as one log entry, forwarding it to the leader if this
    /// member does not lead, until `deadline`.
    async fn replicate(
        &self,
        command: Command,
        hops: u8,
        deadline: Instant,
    ) -> Result<CommandResponse, StoreError> {
        self.check_open()?;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(StoreError::NoLeader(
                    "no leader accepted the write in time; it was not applied".to_string(),
                ));
            }
            let written =
                tokio::time::timeout(remaining, self.inner.raft.client_write(command.clone()))
                    .await;
            let forward = match written {
                Err(_) => {
                    return Err(StoreError::Unknown(format!(
                        "the write did not commit within {:?}",
                        self.inner.config.write_timeout
                    )))
                }
                Ok(Ok(response)) => return Ok(response.data),
                // Refused before it was appended, or appended and then truncated: either way
                // not applied, so it is safe to send again.
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => forward,
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                    return Err(StoreError::Invalid(e.to_string()))
                }
                Ok(Err(RaftError::Fatal(e))) => return Err(StoreError::Storage(e.to_string())),
            };
            if hops < FORWARD_HOPS_MAX {
                let request = PeerRequest::Write {
                    command: command.clone(),
                    hops: hops + 1,
                };
                match self.forward(&forward, &request, deadline).await? {
                    Some(PeerResponse::Write(result)) => return result.map_err(Into::into),
                    Some(other) => {
                        return Err(StoreError::Unknown(format!(
                            "unexpected answer from the leader: {other:?}"
                        )))
                    }
                    None => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        match self.write(Command::Txn(txn)).await? {
            CommandResponse::Txn(response) => Ok(response),
            CommandResponse::Rejected { reason } => Err(StoreError::Invalid(reason)),
            other => Err(StoreError::Storage(format!(
                "unexpected answer to a transaction: {other:?}"
            ))),
        }
    }

    /// Compacts history below `revision`; returns the compacted revision in force.
    pub async fn compact(&self, revision: u64) -> Result<u64, StoreError> {
        match self.write(Command::Compact { revision }).await? {
            CommandResponse::Compacted { compacted } => Ok(compacted),
            CommandResponse::Rejected { reason } => Err(StoreError::Invalid(reason)),
            other => Err(StoreError::Storage(format!(
                "unexpected answer to a compaction: {other:?}"
            ))),
        }
    }

    /// Reads a range; linearizable reads go through the leader's read index.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.range_hops(request, 0).await
    }

    fn range_local(&self, request: &RangeRequest) -> Result<RangeResponse, StoreError> {
        Ok(self
            .inner
            .keyspace
            .range(&request.range, request.revision, request.limit)?)
    }

    async fn range_hops(
        &self,
        request: RangeRequest,
        hops: u8,
    ) -> Result<RangeResponse, StoreError> {
        self.check_open()?;
        if request.consistency == Consistency::Serializable
            || self.inner.config.unsafe_mode.stale_reads
        {
            // With `stale_reads` (Jepsen only) a linearizable read skips the read index.
            return self.range_local(&request);
        }
        let deadline = self.deadline();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(StoreError::NoLeader(
                    "no leader confirmed the read in time".to_string(),
                ));
            }
            let checked = tokio::time::timeout(remaining, self.inner.reads.confirm()).await;
            match checked {
                Err(_) => continue,
                Ok(Err(NotConfirmed::Busy)) => {
                    return Err(StoreError::Unavailable(
                        "too many linearizable reads are waiting; try again".to_string(),
                    ))
                }
                Ok(Err(NotConfirmed::Abandoned)) => {}
                Ok(Ok(Ok(_))) => return self.range_local(&request),
                Ok(Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))))) => {
                    if hops < FORWARD_HOPS_MAX {
                        let forwarded = PeerRequest::Range {
                            request: request.clone(),
                            hops: hops + 1,
                        };
                        match self.forward(&forward, &forwarded, deadline).await {
                            Ok(Some(PeerResponse::Range(result))) => {
                                return result.map_err(Into::into)
                            }
                            Ok(Some(other)) => {
                                return Err(StoreError::Unavailable(format!(
                                    "unexpected answer from the leader: {other:?}"
                                )))
                            }
                            Ok(None) => {}
                            // A read has no effect: an unanswered one can be tried again.
                            Err(StoreError::Unknown(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))))) => {}
                Ok(Ok(Err(RaftError::Fatal(e)))) => return Err(StoreError::Storage(e.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The name of the member this one believes leads, from its Raft metrics (no network
    /// round, no disk).
    pub fn leader(&self) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let id = self.known_leader(&metrics)?;
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.name.clone())
    }

    /// The revision this member has applied; no network round, so possibly behind the leader.
    pub fn revision(&self) -> u64 {
        self.inner.keyspace.revision()
    }

    /// Watches a range on this member.
    pub fn watch(&self, request: WatchRequest) -> Result<WatchStream, StoreError> {
        self.check_open()?;
        WatchStream::open(self.inner.keyspace.clone(), request).map_err(Into::into)
    }

    /// Adds a member: first as a learner that catches up (by snapshot if it is far behind),
    /// then as a voter.
    pub async fn add_member(&self, member: Member) -> Result<(), StoreError> {
        self.change_membership(MembershipChange::Add(member), 0)
            .await
    }

    /// Removes a member from the voters and the cluster.
    pub async fn remove_member(&self, name: &str) -> Result<(), StoreError> {
        self.change_membership(MembershipChange::Remove(name.to_string()), 0)
            .await
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
        hops: u8,
    ) -> Result<(), StoreError> {
        self.check_open()?;
        let deadline = Instant::now() + self.inner.config.membership_timeout;
        let result = loop {
            match self.change_membership_here(&change, deadline).await? {
                // openraft looks for a change in progress before it checks leadership: a member
                // that does not lead (one removed while it saw only the joint configuration,
                // which it then never sees completed) would wait here for ever. The leader
                // decides.
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if !self.leads() => {
                    let leader_id = self.inner.raft.metrics().borrow().current_leader;
                    break Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                        ForwardToLeader {
                            leader_id: leader_id.filter(|id| *id != self.inner.id),
                            leader_node: None,
                        },
                    )));
                }
                // Another change (possibly one cut off by a leader change, which the next
                // leader completes) is under way: wait for it, within the bound.
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => break result,
            }
        };
        self.membership_outcome(result, change, hops).await
    }

    /// One attempt at `change` on this member: the leader's answer, or openraft's reason to
    /// send it elsewhere.
    async fn change_membership_here(
        &self,
        change: &MembershipChange,
        deadline: Instant,
    ) -> Result<Result<(), RaftError<MemberId, ClientWriteError<MemberId, Member>>>, StoreError>
    {
        let raft = &self.inner.raft;
        Ok(match change {
            MembershipChange::Add(member) if self.is_voter(member) => Ok(()),
            MembershipChange::Add(member) => {
                let id = member_id(&member.name);
                // Not blocking: openraft's blocking wait has no end if the learner is down.
                match raft.add_learner(id, member.clone(), false).await {
                    Ok(_) => {
                        self.wait_caught_up(member, deadline).await?;
                        self.commit_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                            .await?
                    }
                    Err(e) => Err(e),
                }
            }
            MembershipChange::Remove(name) if self.member_by_id(member_id(name)).is_none() => {
                Ok(())
            }
            MembershipChange::Remove(name) => {
                self.commit_membership(ChangeMembers::RemoveVoters(BTreeSet::from([member_id(
                    name,
                )])))
                .await?
            }
        })
    }

    async fn membership_outcome(
        &self,
        result: Result<(), RaftError<MemberId, ClientWriteError<MemberId, Member>>>,
        change: MembershipChange,
        hops: u8,
    ) -> Result<(), StoreError> {
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))
                if hops < FORWARD_HOPS_MAX =>
            {
                let request = match change {
                    MembershipChange::Add(member) => PeerRequest::AddMember {
                        member,
                        hops: hops + 1,
                    },
                    MembershipChange::Remove(name) => PeerRequest::RemoveMember {
                        name,
                        hops: hops + 1,
                    },
                };
                let deadline = Instant::now() + Duration::from_secs(120);
                match self.forward(&forward, &request, deadline).await? {
                    Some(PeerResponse::Membership(result)) => result.map_err(Into::into),
                    Some(other) => Err(StoreError::Unknown(format!(
                        "unexpected answer from the leader: {other:?}"
                    ))),
                    None => Err(StoreError::NoLeader(
                        "the leader is unreachable".to_string(),
                    )),
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(StoreError::NoLeader("no leader known".to_string()))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(StoreError::Invalid(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(StoreError::Storage(e.to_string())),
        }
    }

    /// Whether `member` is already a voter at the same address (adding it again is a no-op).
    fn is_voter(&self, member: &Member) -> bool {
        let id = member_id(&member.name);
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership.get_joint_config().len() == 1
            && membership.voter_ids().any(|v| v == id)
            && membership
                .get_node(&id)
                .is_some_and(|n| n.addr == member.addr)
    }

    /// Waits until this leader has replicated its log to the learner `member` (within
    /// openraft's replication lag threshold), until `deadline`.
    async fn wait_caught_up(&self, member: &Member, deadline: Instant) -> Result<(), StoreError> {
        let id = member_id(&member.name);
        let mut metrics = self.inner.raft.metrics();
        loop {
            let (matched, last, leading) = {
                let m = metrics.borrow_and_update();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|log_id| log_id.index);
                (matched, m.last_log_index, m.replication.is_some())
            };
            if !leading {
                return Err(StoreError::NoLeader(format!(
                    "this member lost the leadership while {} caught up; try again",
                    member.name
                )));
            }
            if let (Some(matched), Some(last)) = (matched, last) {
                if last.saturating_sub(matched) <= CATCH_UP_LAG_MAX {
                    return Ok(());
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "{} at {} has not caught up as a learner in {:?} (it has entry {} of {}): is \
                     it running and reachable? It stays a learner; adding it again resumes",
                    member.name,
                    member.addr,
                    self.inner.config.membership_timeout,
                    matched.map_or_else(|| "none".to_string(), |m| m.to_string()),
                    last.unwrap_or(0),
                )));
            }
            let _ =
                tokio::time::timeout(remaining.min(Duration::from_millis(500)), metrics.changed())
                    .await;
        }
    }

    /// Proposes a membership change (openraft commits a joint configuration, then the new
    /// one), bounded by the membership timeout.
    async fn commit_membership(
        &self,
        change: ChangeMembers<MemberId, Member>,
    ) -> Result<Result<(), RaftError<MemberId, ClientWriteError<MemberId, Member>>>, StoreError>
    {
        let timeout = self.inner.config.membership_timeout;
        match tokio::time::timeout(timeout, self.inner.raft.change_membership(change, false)).await
        {
            Ok(result) => Ok(result.map(|_| ())),
            Err(_) => Err(StoreError::Unknown(format!(
                "the membership change did not commit in {timeout:?}; it may still complete"
            ))),
        }
    }

    /// This member's view of itself and the cluster.
    pub async fn status(&self) -> StoreStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                name: node.name.clone(),
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let leader = self
            .known_leader(&metrics)
            .and_then(|id| membership.get_node(&id).map(|n| n.name.clone()));
        StoreStatus {
            name: self.inner.config.name.clone(),
            leader,
            role: format!("{:?}", metrics.state).to_lowercase(),
            joint: membership.get_joint_config().len() > 1,
            term: metrics.current_term,
            members,
            initialized: self.inner.raft.is_initialized().await.unwrap_or(false),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            revision: self.inner.keyspace.revision(),
            compacted_revision: self.inner.keyspace.compacted(),
            db_size_bytes: dir_size(&self.inner.config.data_dir),
            watchers: self.inner.keyspace.hub().len(),
        }
    }

    /// Waits until this member sees a leader, for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<String, StoreError> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                if let Some(id) = self.known_leader(&metrics.borrow()) {
                    return Ok(id);
                }
                if metrics.changed().await.is_err() {
                    return Err(StoreError::Shutdown);
                }
            }
        };
        let id = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| StoreError::NoLeader(format!("no leader after {timeout:?}")))??;
        Ok(self
            .member_by_id(id)
            .map_or_else(|| id.to_string(), |m| m.name))
    }

    /// Whether this member currently leads.
    pub fn is_leader(&self) -> bool {
        self.leader_id() == Some(self.inner.id)
    }

    /// Resolves when this member's Raft core has stopped: after [`Store::shutdown`], or on its
    /// own after a fatal error (a panic, a storage failure). Every store call fails from then
    /// on, so the process should exit and be restarted rather than serve.
    pub async fn core_stopped(&self) {
        // The server metrics: their channel closes with the core as the full metrics' does, but
        // they do not wake this task at every append and apply.
        let mut metrics = self.inner.raft.server_metrics();
        while metrics.changed().await.is_ok() {}
    }

    /// Stops serving, stops Raft, ends watches and closes the database.
    pub async fn shutdown(self) {
        if self.inner.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.transport.close();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("raft did not stop cleanly: {e}");
        }
        self.inner.keyspace.hub().end_all(WatchError::Closed);
        for task in self.lock_tasks().drain(..) {
            task.abort();
        }
        let db = self.inner.keyspace.db().clone();
        let name = self.inner.config.name.clone();
        drop(self);
        // Wait (bounded) for the tasks that still hold the database to let go of it.
        let mut db = db;
        for _ in 0..100 {
            match db::close(db) {
                Ok(()) => {
                    tracing::info!(%name, "store member stopped");
                    return;
                }
                Err(still_shared) => db = still_shared,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        db::quiesce(&db);
        tracing::warn!(
            %name,
            holders = Arc::strong_count(&db) - 1,
            "database still in use after shutdown: background work stopped, left open"
        );
    }
}

enum MembershipChange {
    Add(Member),
    Remove(String),
}

/// The bytes of every file below `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A member killed after installing a snapshot's state but before writing its file has a
/// state machine ahead of both its log and its snapshot file; openraft would purge the log up
/// to the state machine at start, past the snapshot, and then refuse the hole it made. So the
/// state machine is written as a snapshot first.
async fn repair_snapshot(
    log: &LogStore,
    state_machine: &mut StateMachineStore,
) -> Result<(), openraft::StorageError<MemberId>> {
    use openraft::storage::RaftLogStorage;
    let last_log = log.clone().get_log_state().await?.last_log_id;
    let applied = state_machine.applied();
    let snapshot = *state_machine.durable_snapshot().borrow();
    if last_log < applied && snapshot < applied {
        tracing::warn!(
            ?last_log,
            ?applied,
            ?snapshot,
            "the state machine is ahead of the log and of the snapshot file (stopped while \
             installing a snapshot): writing a snapshot of it before Raft starts"
        );
        state_machine.snapshot_now().await?;
    }
    Ok(())
}

impl Handler for Service {
    async fn handle(&self, request: PeerRequest, mut reply: Reply) {
        let store = &self.store;
        let raft = &store.inner.raft;
        let response = match request {
            PeerRequest::AppendEntries(rpc) => {
                PeerResponse::AppendEntries(raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => PeerResponse::Vote(raft.vote(rpc).await),
            PeerRequest::InstallSnapshot(rpc) => {
                PeerResponse::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            PeerRequest::Write { command, hops } => {
                PeerResponse::Write(store.write_hops(command, hops).await.map_err(Into::into))
            }
            PeerRequest::Range { request, hops } => {
                PeerResponse::Range(store.range_hops(request, hops).await.map_err(Into::into))
            }
            PeerRequest::Status => PeerResponse::Status(Ok(store.status().await)),
            PeerRequest::PreVote(request) => {
                PeerResponse::PreVote(store.answer_pre_vote(&request).await)
            }
            PeerRequest::AddMember { member, hops } => PeerResponse::Membership(
                store
                    .change_membership(MembershipChange::Add(member), hops)
                    .await
                    .map_err(Into::into),
            ),
            PeerRequest::RemoveMember { name, hops } => PeerResponse::Membership(
                store
                    .change_membership(MembershipChange::Remove(name), hops)
                    .await
                    .map_err(Into::into),
            ),
            PeerRequest::Watch(request) => {
                serve_watch(store, request, &mut reply).await;
                return;
            }
            // Only the first frame of a stream may open a multiplexed one.
            PeerRequest::Multiplexed => PeerResponse::Refused(crate::error::WireError::Invalid(
                "a multiplexed stream cannot be opened inside another".to_string(),
            )),
        };
        if let Err(e) = reply.send(&response).await {
            tracing::debug!("could not answer a peer: {e}");
        }
    }
}

async fn serve_watch(store: &Store, request: WatchRequest, reply: &mut Reply) {
    let mut stream = match store.watch(request) {
        Ok(stream) => stream,
        Err(e) => {
            let _ = reply.send(&PeerResponse::Watch(Err(e.into()))).await;
            return;
        }
    };
    let started = PeerResponse::WatchStarted {
        start_revision: stream.start_revision(),
    };
    if reply.send(&started).await.is_err() {
        return;
    }
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = reply.stopped() => return,
        };
        let Some(batch) = next else { return };
        let end = batch.is_err();
        let frame = PeerResponse::Watch(batch.map_err(|e| StoreError::from(e).into()));
        if reply.send(&frame).await.is_err() || end {
            return;
        }
    }
}
