//! Leader election over a `coordination.k8s.io/v1` Lease, as Kubernetes' controller managers
//! do: the holder renews the Lease every retry period through the API (a compare-and-swap on
//! its resourceVersion); another master takes it over only after it saw the Lease unchanged
//! for a whole lease duration on its own clock; a holder that could not renew within the
//! renew deadline (shorter than the lease duration) stops its loops first. So the old leader's
//! loops have stopped before a new leader's start, with clocks that run at about the same rate.
//!
//! The core, [`decide`], is pure; [`Elector`] is the thin loop around it.

use std::time::{Duration, Instant};

use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::status::StatusError;
use serde_json::{json, Value};

use crate::client::ApiClient;

/// The Lease the control loops are elected on.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "keelson-controller-manager";

/// Timings of the election.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    /// How long a Lease left unrenewed stays with its holder.
    pub lease_duration: Duration,
    /// How long a holder keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or checked.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(6),
            renew_deadline: Duration::from_secs(4),
            retry_period: Duration::from_millis(1000),
        }
    }
}

/// The parts of the Lease the election looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub duration: Duration,
    pub transitions: i64,
    pub resource_version: String,
}

impl LeaseView {
    pub fn from_object(lease: &Value) -> LeaseView {
        LeaseView {
            holder: lease
                .pointer("/spec/holderIdentity")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(str::to_string),
            duration: Duration::from_secs(
                lease
                    .pointer("/spec/leaseDurationSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(15),
            ),
            transitions: lease
                .pointer("/spec/leaseTransitions")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            resource_version: object::resource_version(lease)
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// What to do with the Lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create the Lease, or take it over: it is free or expired.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it.
    Follow,
}

/// Pure election core: `lease` as last read (`None`: there is none), `unchanged_since` when
/// this master first saw it so (that version of it, or its absence). `patience` is how much
/// longer than its holder's lease duration this master leaves a free, missing or expired Lease
/// to others: zero on the master leading the store, a lease duration on the others. The loops
/// then run beside the store's leader, whose API commits their writes itself; on any other
/// master every write of theirs is forwarded to it over HTTPS. A master only prefers, never
/// waits for, the store's leader: if that one does not take the Lease, another does later.
pub fn decide(
    me: &str,
    lease: Option<&LeaseView>,
    unchanged_since: Instant,
    now: Instant,
    patience: Duration,
) -> Step {
    let waited = now.saturating_duration_since(unchanged_since);
    match lease {
        None => {
            if waited >= patience {
                Step::Acquire
            } else {
                Step::Follow
            }
        }
        Some(lease) => match lease.holder.as_deref() {
            Some(holder) if holder == me => Step::Renew,
            None if waited >= patience => Step::Acquire,
            Some(_) if waited >= lease.duration.saturating_add(patience) => Step::Acquire,
            _ => Step::Follow,
        },
    }
}

/// Whether a leader whose last successful renewal started at `last_renewed` must step down.
pub fn must_step_down(last_renewed: Instant, now: Instant, timings: &LeaseTimings) -> bool {
    now.saturating_duration_since(last_renewed) >= timings.renew_deadline
}

fn leases() -> Result<&'static Resource, StatusError> {
    resources::find("coordination.k8s.io", "v1", "leases")
        .ok_or_else(|| StatusError::internal("leases are not registered"))
}

/// Campaigns for and holds the Lease.
pub struct Elector {
    client: ApiClient,
    me: String,
    timings: LeaseTimings,
    /// The Lease as last read (`None`: there was none), and since when it has been so.
    observed: Option<(Option<LeaseView>, Instant)>,
}

impl Elector {
    pub fn new(client: ApiClient, me: &str, timings: LeaseTimings) -> Self {
        Elector {
            client,
            me: me.to_string(),
            timings,
            observed: None,
        }
    }

    pub fn timings(&self) -> &LeaseTimings {
        &self.timings
    }

    /// One round: reads the Lease and acquires or renews it if it may. Returns whether this
    /// master holds the Lease after the round.
    pub async fn round(&mut self) -> Result<bool, StatusError> {
        let resource = leases()?;
        let current = match self
            .client
            .get(resource, Some(LEASE_NAMESPACE), LEASE_NAME)
            .await
        {
            Ok(lease) => Some(lease),
            Err(e) if e.code() == 404 => None,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let view = current.as_ref().map(LeaseView::from_object);
        let unchanged_since = match &self.observed {
            Some((seen, since)) if *seen == view => *since,
            _ => now,
        };
        self.observed = Some((view.clone(), unchanged_since));
        let patience = if self.client.leads_store() {
            Duration::ZERO
        } else {
            self.timings.lease_duration
        };
        match decide(&self.me, view.as_ref(), unchanged_since, now, patience) {
            Step::Follow => Ok(false),
            step => {
                let renewed = self.write(step, current.as_ref(), view.as_ref()).await?;
                Ok(renewed)
            }
        }
    }

    async fn write(
        &mut self,
        step: Step,
        current: Option<&Value>,
        view: Option<&LeaseView>,
    ) -> Result<bool, StatusError> {
        let resource = leases()?;
        let now = micro_time(jiff::Timestamp::now());
        let duration_secs = self.timings.lease_duration.as_secs().max(1);
        let result = match current {
            None => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
                    "spec": {
                        "holderIdentity": self.me,
                        "leaseDurationSeconds": duration_secs,
                        "acquireTime": now,
                        "renewTime": now,
                        "leaseTransitions": 0,
                    },
                });
                self.client
                    .create(resource, Some(LEASE_NAMESPACE), &lease)
                    .await
            }
            Some(current) => {
                let mut lease = current.clone();
                lease["spec"]["holderIdentity"] = json!(self.me);
                lease["spec"]["leaseDurationSeconds"] = json!(duration_secs);
                lease["spec"]["renewTime"] = json!(now);
                if step == Step::Acquire {
                    lease["spec"]["acquireTime"] = json!(now);
                    let transitions = view.map_or(0, |v| v.transitions);
                    lease["spec"]["leaseTransitions"] = json!(transitions + 1);
                }
                self.client
                    .update(resource, Some(LEASE_NAMESPACE), LEASE_NAME, &lease)
                    .await
            }
        };
        match result {
            Ok(written) => {
                self.observed = Some((Some(LeaseView::from_object(&written)), Instant::now()));
                Ok(true)
            }
            // Another master wrote first: it holds the Lease now.
            Err(e) if e.code() == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown), so another master need not wait for it to expire.
    pub async fn release(&mut self) -> Result<(), StatusError> {
        let resource = leases()?;
        let current = self
            .client
            .get(resource, Some(LEASE_NAMESPACE), LEASE_NAME)
            .await?;
        if LeaseView::from_object(&current).holder.as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        let mut lease = current;
        lease["spec"]["holderIdentity"] = Value::Null;
        // An expired renewTime tells others the Lease is free.
        lease["spec"]["leaseDurationSeconds"] = json!(1);
        self.client
            .update(resource, Some(LEASE_NAMESPACE), LEASE_NAME, &lease)
            .await
            .map(|_| ())
    }
}

/// A Kubernetes MicroTime: RFC 3339 with microseconds.
pub fn micro_time(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, rv: &str) -> LeaseView {
        LeaseView {
            holder: holder.map(str::to_string),
            duration: Duration::from_secs(6),
            transitions: 0,
            resource_version: rv.to_string(),
        }
    }

    #[test]
    fn decide_cases() {
        let t0 = Instant::now();
        let duration = Duration::from_secs(6);
        let soon = t0 + Duration::from_secs(2);
        let later = t0 + Duration::from_secs(7);
        let much_later = t0 + Duration::from_secs(13);
        let (eager, patient) = (Duration::ZERO, duration);
        let cases: &[(&str, Option<LeaseView>, Instant, Duration, Step)] = &[
            (
                "no lease, store leader: create it",
                None,
                t0,
                eager,
                Step::Acquire,
            ),
            (
                "no lease, another master: leave it to the store leader",
                None,
                soon,
                patient,
                Step::Follow,
            ),
            (
                "no lease for a lease duration, another master: create it",
                None,
                later,
                patient,
                Step::Acquire,
            ),
            (
                "ours: renew",
                Some(lease(Some("m1"), "5")),
                soon,
                patient,
                Step::Renew,
            ),
            (
                "released, store leader: take it",
                Some(lease(None, "5")),
                t0,
                eager,
                Step::Acquire,
            ),
            (
                "released, another master: wait",
                Some(lease(None, "5")),
                soon,
                patient,
                Step::Follow,
            ),
            (
                "released for a lease duration, another master: take it",
                Some(lease(None, "5")),
                later,
                patient,
                Step::Acquire,
            ),
            (
                "another's, fresh: follow",
                Some(lease(Some("m2"), "5")),
                soon,
                eager,
                Step::Follow,
            ),
            (
                "another's, unchanged for a lease duration, store leader: take over",
                Some(lease(Some("m2"), "5")),
                later,
                eager,
                Step::Acquire,
            ),
            (
                "another's, unchanged for a lease duration, another master: wait",
                Some(lease(Some("m2"), "5")),
                later,
                patient,
                Step::Follow,
            ),
            (
                "another's, unchanged for two, another master: take over",
                Some(lease(Some("m2"), "5")),
                much_later,
                patient,
                Step::Acquire,
            ),
        ];
        for (what, view, now, patience, expected) in cases {
            assert_eq!(
                decide("m1", view.as_ref(), t0, *now, *patience),
                *expected,
                "{what}"
            );
        }
    }

    #[test]
    fn a_leader_steps_down_before_others_may_take_over() {
        let timings = LeaseTimings::default();
        assert!(timings.renew_deadline < timings.lease_duration);
        let t0 = Instant::now();
        assert!(!must_step_down(t0, t0 + Duration::from_secs(1), &timings));
        assert!(must_step_down(t0, t0 + timings.renew_deadline, &timings));
    }

    #[test]
    fn micro_time_has_microseconds() {
        let t: jiff::Timestamp = "2026-01-02T03:04:05.123456789Z".parse().unwrap();
        assert_eq!(micro_time(t), "2026-01-02T03:04:05.123456Z");
    }
}
