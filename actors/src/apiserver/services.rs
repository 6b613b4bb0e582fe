//! Service writes that allocate: a create, update or delete of a Service claims and releases
//! its ClusterIP and NodePorts in the same store transaction as the Service itself; and the
//! repair loop that releases allocations whose Service is gone and records missing ones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keelson_api::object;
use keelson_api::status::StatusError;
use keelson_raft::{Check, Compare, Consistency, Op, Txn};
use serde_json::Value;
use tokio::sync::watch as signal;

use super::ranges::{self, Claim, Held, Plan, Used, RANGES_PREFIX};
use super::storage::{set_resource_version, ClaimedWrite, Stored, WriteRefused};
use super::ApiState;

/// How often a write retries after another writer took a value it picked.
const ALLOCATION_ATTEMPTS_MAX: usize = 16;
/// Keys read per page when reading allocations or Services.
const PAGE_KEYS_MAX: usize = 10_000;
/// Pages read at most (so at most this many times `PAGE_KEYS_MAX` keys).
const PAGES_MAX: usize = 200;
/// How often the leader's API audits allocations.
const REPAIR_INTERVAL: Duration = Duration::from_secs(10);
/// How long an allocation must stay orphaned (unchanged) before the repair loop releases it.
const REPAIR_GRACE: Duration = Duration::from_secs(30);

const SERVICES_PREFIX: &str = "/registry/services/";

pub(crate) fn is_service(resource: &keelson_api::resources::Resource) -> bool {
    resource.group.is_empty() && resource.kind == "Service"
}

/// Every key under `prefix` at `revision` (0: the newest), with the revision read at.
async fn read_all(
    state: &ApiState,
    prefix: &str,
    revision: u64,
) -> Result<(Vec<keelson_raft::KeyValue>, u64), StatusError> {
    let store = state.storage.store();
    let mut kvs = Vec::new();
    let mut start: Option<Vec<u8>> = None;
    let mut at = revision;
    for _ in 0..PAGES_MAX {
        let mut range = keelson_raft::KeyRange::prefix(prefix.as_bytes());
        if let Some(start) = start.take() {
            range.start = start;
        }
        let response = store
            .range(keelson_raft::RangeRequest {
                range,
                revision: at,
                limit: PAGE_KEYS_MAX,
                consistency: Consistency::Linearizable,
            })
            .await
            .map_err(super::storage::store_status)?;
        at = response.revision;
        kvs.extend(response.kvs);
        match response.next_key {
            Some(next) => start = Some(next),
            None => return Ok((kvs, at)),
        }
    }
    Err(StatusError::internal(&format!(
        "more than {} keys under {prefix}",
        PAGES_MAX * PAGE_KEYS_MAX
    )))
}

async fn used(state: &ApiState) -> Result<Used, StatusError> {
    let (kvs, _) = read_all(state, RANGES_PREFIX, 0).await?;
    let mut used = Used::default();
    for kv in &kvs {
        used.add_key(&kv.key);
    }
    Ok(used)
}

fn claims_of(plan: &Plan, service: &Value) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let owner = ranges::owner_value(service);
    let claims = plan
        .claim
        .keys()
        .into_iter()
        .map(|key| (key, owner.clone()))
        .collect();
    (claims, plan.release.keys())
}

fn name_of(service: &Value) -> String {
    object::name(service).unwrap_or_default().to_string()
}

fn too_many_races(service: &Value) -> StatusError {
    StatusError::conflict(
        "",
        "services",
        &name_of(service),
        "could not allocate a ClusterIP or NodePort: other writers took every value picked; \
         please try again",
    )
}

/// Writes `new` (`current`: the stored version, `None` for a create) with the allocations it
/// needs, retrying with other values when a concurrent writer took one.
async fn write(
    state: &ApiState,
    key: &str,
    current: Option<&Stored>,
    new: Value,
    dry_run: bool,
) -> Result<Result<Value, WriteRefused>, StatusError> {
    for _ in 0..ALLOCATION_ATTEMPTS_MAX {
        let used = used(state).await?;
        let mut candidate = new.clone();
        let plan = ranges::plan(
            &state.service_ranges,
            current.map(|c| &c.object),
            &mut candidate,
            &used,
            &mut rand::rng(),
        )
        .map_err(|e| e.status(&name_of(&new)))?;
        if dry_run {
            return Ok(Ok(candidate));
        }
        let (claims, releases) = claims_of(&plan, &candidate);
        let check = match current {
            Some(current) => Check::ModRevision(current.revision),
            None => Check::Absent,
        };
        match state
            .storage
            .write_with_claims(key, check, Some(&candidate), &claims, &releases)
            .await?
        {
            ClaimedWrite::Done(revision) => {
                set_resource_version(&mut candidate, revision);
                return Ok(Ok(candidate));
            }
            ClaimedWrite::Refused(refused) => return Ok(Err(refused)),
            ClaimedWrite::ClaimTaken => {
                tracing::debug!(service = %name_of(&new), "an allocation raced; picking again");
            }
        }
    }
    Err(too_many_races(&new))
}

/// Creates a Service with its allocations.
pub(crate) async fn create(
    state: &ApiState,
    key: &str,
    service: Value,
    dry_run: bool,
) -> Result<Result<Value, WriteRefused>, StatusError> {
    write(state, key, None, service, dry_run).await
}

/// Replaces a Service, claiming what it newly holds and releasing what it no longer holds.
pub(crate) async fn update(
    state: &ApiState,
    key: &str,
    current: &Stored,
    service: Value,
) -> Result<Result<Value, WriteRefused>, StatusError> {
    write(state, key, Some(current), service, false).await
}

/// Deletes a Service and releases everything it holds.
pub(crate) async fn delete(
    state: &ApiState,
    key: &str,
    current: &Stored,
) -> Result<Result<u64, WriteRefused>, StatusError> {
    let releases = Held::of(&current.object).keys();
    match state
        .storage
        .write_with_claims(
            key,
            Check::ModRevision(current.revision),
            None,
            &[],
            &releases,
        )
        .await?
    {
        ClaimedWrite::Done(revision) => Ok(Ok(revision)),
        ClaimedWrite::Refused(refused) => Ok(Err(refused)),
        ClaimedWrite::ClaimTaken => Ok(Err(WriteRefused::Changed)),
    }
}

/// While this master leads the store: releases allocations whose Service is gone (after
/// [`REPAIR_GRACE`]) and records allocations Services hold without a key.
pub(crate) async fn repair(state: ApiState, mut stopped: signal::Receiver<bool>) {
    let mut orphans: HashMap<String, (u64, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(REPAIR_INTERVAL) => {}
        }
        let store = state.storage.store();
        if store.leader().as_deref() != Some(store.name()) {
            orphans.clear();
            continue;
        }
        if let Err(e) = repair_pass(&state, &mut orphans, Instant::now()).await {
            tracing::debug!(error = %e, "auditing service allocations failed");
        }
    }
}

async fn repair_pass(
    state: &ApiState,
    orphans: &mut HashMap<String, (u64, Instant)>,
    now: Instant,
) -> Result<(), StatusError> {
    let (service_kvs, revision) = read_all(state, SERVICES_PREFIX, 0).await?;
    let (claim_kvs, _) = read_all(state, RANGES_PREFIX, revision).await?;
    let mut services = Vec::new();
    for kv in &service_kvs {
        match super::storage::decode(kv) {
            Ok(stored) => services.push(stored.object),
            Err(e) => tracing::warn!(error = %e, "skipping a stored Service"),
        }
    }
    let claims: Vec<Claim> = claim_kvs
        .iter()
        .filter_map(|kv| {
            Some(Claim {
                key: String::from_utf8(kv.key.clone()).ok()?,
                mod_revision: kv.mod_revision,
                value: kv.value.clone(),
            })
        })
        .collect();
    let audit = ranges::audit(&services, &claims);
    let orphaned: HashMap<String, u64> = audit.orphaned.into_iter().collect();
    orphans.retain(|key, (rev, _)| orphaned.get(key) == Some(rev));
    for (key, rev) in orphaned {
        let (_, since) = *orphans.entry(key.clone()).or_insert((rev, now));
        if now.duration_since(since) < REPAIR_GRACE {
            continue;
        }
        let txn = Txn {
            compare: vec![Compare {
                key: key.clone().into_bytes(),
                check: Check::ModRevision(rev),
            }],
            success: vec![Op::delete(key.clone().into_bytes())],
            failure: vec![],
        };
        let released = state
            .storage
            .store()
            .txn(txn)
            .await
            .map_err(super::storage::store_status)?;
        if released.succeeded {
            tracing::info!(%key, "released an allocation whose Service is gone");
        }
        orphans.remove(&key);
    }
    for (key, value) in audit.missing {
        let txn = Txn {
            compare: vec![Compare {
                key: key.clone().into_bytes(),
                check: Check::Absent,
            }],
            success: vec![Op::put(key.clone().into_bytes(), value)],
            failure: vec![],
        };
        let recorded = state
            .storage
            .store()
            .txn(txn)
            .await
            .map_err(super::storage::store_status)?;
        if recorded.succeeded {
            tracing::info!(%key, "recorded an allocation a Service held without a key");
        }
    }
    Ok(())
}
