//! A client of a store cluster over QUIC, for tools outside the members (`keelson store`,
//! benchmarks, tests): tries the endpoints in turn and resumes watches on another member.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::command::{
    Command, CommandResponse, Consistency, Event, RangeRequest, RangeResponse, Txn, TxnResponse,
    WatchRequest,
};
use crate::error::StoreError;
use crate::protocol::{PeerRequest, PeerResponse};
use crate::status::StoreStatus;
use crate::transport::{ResponseStream, Transport, TransportError};
use crate::types::Member;

/// How long one request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a membership change may take: a member waits up to a minute for a learner to
/// catch up and the change to commit (`StoreConfig::membership_timeout`).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(75);
/// How many rounds over all endpoints a request makes before giving up.
const ROUNDS_MAX: usize = 3;

#[derive(Clone)]
pub struct StoreClient {
    transport: Arc<Transport>,
    endpoints: Arc<Vec<String>>,
    /// The endpoint that answered last; tried first.
    preferred: Arc<AtomicUsize>,
    /// Whether `preferred` was pointed at the leader (writes and linearizable reads then skip
    /// a forwarding hop).
    leader_sought: Arc<AtomicBool>,
}

impl StoreClient {
    pub fn new(endpoints: Vec<String>, token: &str) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no endpoints given".to_string()));
        }
        let transport = Transport::bind_client(token).map_err(StoreError::Unavailable)?;
        Ok(StoreClient {
            transport: Arc::new(transport),
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(AtomicUsize::new(0)),
            leader_sought: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Once per client, asks the endpoints who leads and prefers the leader's endpoint when it
    /// is one of them. Any member still serves every request; this only saves a hop.
    async fn seek_leader(&self) {
        if self.leader_sought.swap(true, Ordering::Relaxed) {
            return;
        }
        for endpoint in self.endpoints.iter() {
            let answer = self
                .transport
                .call(endpoint, &PeerRequest::Status, Duration::from_secs(1))
                .await;
            let Ok(PeerResponse::Status(Ok(status))) = answer else {
                continue;
            };
            let leader_addr = status.leader.and_then(|leader| {
                status
                    .members
                    .into_iter()
                    .find(|m| m.name == leader)
                    .map(|m| m.addr)
            });
            if let Some(i) =
                leader_addr.and_then(|addr| self.endpoints.iter().position(|e| *e == addr))
            {
                self.preferred.store(i, Ordering::Relaxed);
            }
            return;
        }
    }

    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n * ROUNDS_MAX).map(move |i| (first + i) % n)
    }

    /// Sends `request` to the first endpoint that takes it. Only undelivered requests move on
    /// to the next endpoint; a request that may have been applied is reported unknown.
    async fn call(&self, request: &PeerRequest) -> Result<PeerResponse, StoreError> {
        self.call_within(request, REQUEST_TIMEOUT).await
    }

    async fn call_within(
        &self,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, StoreError> {
        let mut last = StoreError::Unavailable("no endpoint tried".to_string());
        for (round, i) in self.order().enumerate() {
            if round > 0 && round % self.endpoints.len() == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match self
                .transport
                .call(&self.endpoints[i], request, timeout)
                .await
            {
                Ok(PeerResponse::Refused(e)) => return Err(e.into()),
                Ok(response) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(TransportError::NotSent { addr, reason }) => {
                    last = StoreError::Unavailable(format!("{addr}: {reason}"));
                }
                Err(e @ TransportError::Unauthenticated { .. }) => {
                    return Err(StoreError::Unauthenticated(e.to_string()))
                }
                Err(e @ TransportError::TooLarge(_)) => {
                    return Err(StoreError::Invalid(e.to_string()))
                }
                Err(e @ TransportError::NoAnswer { .. }) => {
                    return Err(StoreError::Unknown(e.to_string()))
                }
            }
        }
        Err(last)
    }

    pub async fn write(&self, command: Command) -> Result<CommandResponse, StoreError> {
        if let Command::Txn(txn) = &command {
            txn.validate().map_err(StoreError::Invalid)?;
        }
        self.seek_leader().await;
        match self.call(&PeerRequest::Write { command, hops: 0 }).await? {
            PeerResponse::Write(result) => result.map_err(Into::into),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        match self.write(Command::Txn(txn)).await? {
            CommandResponse::Txn(response) => Ok(response),
            CommandResponse::Rejected { reason } => Err(StoreError::Invalid(reason)),
            other => Err(StoreError::Storage(format!("unexpected answer: {other:?}"))),
        }
    }

    pub async fn compact(&self, revision: u64) -> Result<u64, StoreError> {
        match self.write(Command::Compact { revision }).await? {
            CommandResponse::Compacted { compacted } => Ok(compacted),
            CommandResponse::Rejected { reason } => Err(StoreError::Invalid(reason)),
            other => Err(StoreError::Storage(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Reads a range. Reads have no effect, so an unanswered read is retried elsewhere.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        if request.consistency == Consistency::Linearizable {
            self.seek_leader().await;
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self
                .call(&PeerRequest::Range {
                    request: request.clone(),
                    hops: 0,
                })
                .await;
            match result {
                Ok(PeerResponse::Range(result)) => return result.map_err(Into::into),
                Ok(other) => return Err(unexpected(&other)),
                Err(StoreError::Unknown(_) | StoreError::NoLeader(_)) if attempts < ROUNDS_MAX => {
                    self.rotate();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn rotate(&self) {
        self.preferred.fetch_add(1, Ordering::Relaxed);
    }

    /// The status of every endpoint that answers, with the error of those that do not.
    pub async fn status_all(&self) -> Vec<(String, Result<StoreStatus, StoreError>)> {
        let mut out = Vec::new();
        for endpoint in self.endpoints.iter() {
            let result = match self
                .transport
                .call(endpoint, &PeerRequest::Status, Duration::from_secs(3))
                .await
            {
                Ok(PeerResponse::Status(result)) => result.map_err(Into::into),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            };
            out.push((endpoint.clone(), result));
        }
        out
    }

    pub async fn add_member(&self, member: Member) -> Result<(), StoreError> {
        match self
            .call_within(
                &PeerRequest::AddMember { member, hops: 0 },
                MEMBERSHIP_TIMEOUT,
            )
            .await?
        {
            PeerResponse::Membership(result) => result.map_err(Into::into),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn remove_member(&self, name: &str) -> Result<(), StoreError> {
        let request = PeerRequest::RemoveMember {
            name: name.to_string(),
            hops: 0,
        };
        match self.call_within(&request, MEMBERSHIP_TIMEOUT).await? {
            PeerResponse::Membership(result) => result.map_err(Into::into),
            other => Err(unexpected(&other)),
        }
    }

    /// Watches a range; the watch moves to another member if its member fails, resuming after
    /// the last revision it delivered.
    pub fn watch(&self, request: WatchRequest) -> ClientWatch {
        ClientWatch {
            client: self.clone(),
            request,
            stream: None,
            last_revision: None,
            failures: 0,
        }
    }
}

fn unexpected(response: &PeerResponse) -> StoreError {
    StoreError::Storage(format!("unexpected answer: {response:?}"))
}

/// A watch through [`StoreClient`].
pub struct ClientWatch {
    client: StoreClient,
    request: WatchRequest,
    stream: Option<ResponseStream>,
    /// The revision of the last event delivered.
    last_revision: Option<u64>,
    failures: usize,
}

/// How many times in a row a watch may fail to (re)connect before it gives up.
const WATCH_RECONNECTS_MAX: usize = 20;

impl ClientWatch {
    /// The next batch of events. Errors that end the watch (compaction, overflow, too many
    /// failed reconnects) are returned once; the watch is then over.
    pub async fn next(&mut self) -> Result<Vec<Event>, StoreError> {
        loop {
            if self.stream.is_none() {
                self.connect().await?;
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                Ok(Some(PeerResponse::WatchStarted { start_revision })) => {
                    // Pin the start: a watch resumed on another member continues from here
                    // even if nothing has changed yet.
                    if self.last_revision.is_none() {
                        self.last_revision = Some(start_revision.saturating_sub(1));
                    }
                }
                Ok(Some(PeerResponse::Watch(Ok(events)))) => {
                    self.failures = 0;
                    if let Some(last) = events.last() {
                        self.last_revision = Some(last.kv.mod_revision);
                    }
                    return Ok(events);
                }
                Ok(Some(PeerResponse::Watch(Err(e)))) => {
                    let e: StoreError = e.into();
                    if matches!(e, StoreError::Compacted { .. }) {
                        return Err(e);
                    }
                    // Overflow, reset or shutdown of that member: resume elsewhere.
                    self.drop_stream(e)?;
                }
                Ok(Some(other)) => return Err(unexpected(&other)),
                Ok(None) => self.drop_stream(StoreError::Unavailable("watch ended".into()))?,
                Err(e) => self.drop_stream(StoreError::Unavailable(e.to_string()))?,
            }
        }
    }

    fn drop_stream(&mut self, error: StoreError) -> Result<(), StoreError> {
        self.stream = None;
        self.failures += 1;
        self.client.rotate();
        if self.failures > WATCH_RECONNECTS_MAX {
            return Err(error);
        }
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), StoreError> {
        let mut request = self.request.clone();
        if let Some(last) = self.last_revision {
            request.start_revision = last + 1;
        }
        let n = self.client.endpoints.len();
        let i = self.client.preferred.load(Ordering::Relaxed) % n;
        let endpoint = &self.client.endpoints[i];
        match self
            .client
            .transport
            .open_stream(endpoint, &PeerRequest::Watch(request.clone()))
            .await
        {
            Ok(stream) => {
                self.stream = Some(stream);
                Ok(())
            }
            Err(e @ TransportError::Unauthenticated { .. }) => {
                Err(StoreError::Unauthenticated(e.to_string()))
            }
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.drop_stream(StoreError::Unavailable(e.to_string()))
            }
        }
    }
}
