//! Pre-vote (Raft thesis §9.6): a member whose election timer ran out first asks the voters
//! whether they *would* vote for it, and only stands for election (a new term) when a quorum
//! says yes.
//!
//! openraft 0.9 has no pre-vote. Without it, a member cut off from the leader but not from
//! everyone (a ring partition, a bridge, one dropped link) campaigns term after term and loses
//! every time, because the voters that still hear the leader refuse it. When the network
//! heals, its higher term reaches the leader and deposes it, and the cluster spends seconds on
//! elections that the stale member can never win. With pre-vote its term stays where it was.
//!
//! So openraft's own election timer is off (`enable_elect: false`) and the member's election
//! loop in `store.rs` decides when to run [`openraft::raft::Trigger::elect`]: when its timer
//! (openraft's rule: the leader lease plus an election timeout since the vote last changed)
//! has run out and a quorum of every voter set would grant. A voter grants by openraft's own
//! vote rules, without changing anything: its leader lease has run out (it heard from no
//! leader within the lease) and the candidate's log is at least as up to date as its own.
//! The election itself is openraft's, so pre-vote changes when members campaign, never what a
//! vote means: safety does not rest on it.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::LogId;
use serde::{Deserialize, Serialize};

use crate::types::MemberId;

/// "Would you vote for me?"
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: MemberId,
    pub last_log_id: Option<LogId<MemberId>>,
}

/// What a member knows of its own vote when it campaigns or answers a pre-vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VoteView {
    /// The vote was granted by a quorum: there is (or was) a leader of this term.
    pub committed: bool,
    /// Time since the vote last changed or was renewed (a leader's heartbeat renews it);
    /// `None` if it never did since the member started.
    pub since_renewed: Option<Duration>,
    /// How long a renewal holds off other candidates (openraft: the election timeout max).
    pub lease: Duration,
}

impl VoteView {
    /// Whether the lease of a live leader still holds this member's vote.
    fn leased(&self) -> bool {
        self.committed && self.since_renewed.is_some_and(|since| since <= self.lease)
    }

    /// Whether this member's election timer has run out, by openraft's rule: with a leader
    /// known, its lease plus `timeout`; otherwise `timeout`.
    pub(crate) fn timer_expired(&self, timeout: Duration) -> bool {
        let wait = if self.committed {
            self.lease + timeout
        } else {
            timeout
        };
        self.since_renewed.is_none_or(|since| since > wait)
    }
}

/// Whether a voter with `view` and `own_last_log` would grant a real vote to a candidate whose
/// last log id is `candidate_last_log`, by openraft's checks (`handle_vote_req`).
pub(crate) fn would_grant(
    view: &VoteView,
    own_last_log: Option<&LogId<MemberId>>,
    candidate_last_log: Option<&LogId<MemberId>>,
) -> bool {
    !view.leased() && candidate_last_log >= own_last_log
}

/// Whether `granted` holds a majority of each voter set (two during a joint change).
pub(crate) fn quorum(voter_sets: &[BTreeSet<MemberId>], granted: &BTreeSet<MemberId>) -> bool {
    !voter_sets.is_empty()
        && voter_sets
            .iter()
            .all(|set| set.iter().filter(|m| granted.contains(m)).count() * 2 > set.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> LogId<MemberId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn view(committed: bool, since_ms: Option<u64>) -> VoteView {
        VoteView {
            committed,
            since_renewed: since_ms.map(Duration::from_millis),
            lease: Duration::from_millis(750),
        }
    }

    #[test]
    fn a_voter_that_still_hears_its_leader_refuses() {
        let own = Some(log(3, 10));
        let candidate = Some(log(3, 12));
        assert!(!would_grant(
            &view(true, Some(100)),
            own.as_ref(),
            candidate.as_ref()
        ));
        assert!(!would_grant(
            &view(true, Some(750)),
            own.as_ref(),
            candidate.as_ref()
        ));
        // The lease ran out, or the vote names no elected leader.
        assert!(would_grant(
            &view(true, Some(751)),
            own.as_ref(),
            candidate.as_ref()
        ));
        assert!(would_grant(
            &view(false, Some(1)),
            own.as_ref(),
            candidate.as_ref()
        ));
        assert!(would_grant(
            &view(true, None),
            own.as_ref(),
            candidate.as_ref()
        ));
    }

    #[test]
    fn a_candidate_behind_the_voter_is_refused() {
        let free = view(false, None);
        let own = log(4, 10);
        for (candidate, grant) in [
            (Some(log(4, 10)), true),
            (Some(log(4, 11)), true),
            (Some(log(5, 2)), true),
            (Some(log(4, 9)), false),
            (Some(log(3, 50)), false),
            (None, false),
        ] {
            assert_eq!(
                would_grant(&free, Some(&own), candidate.as_ref()),
                grant,
                "{candidate:?}"
            );
        }
        assert!(would_grant(&free, None, None));
    }

    #[test]
    fn the_timer_waits_out_a_known_leaders_lease() {
        let timeout = Duration::from_millis(600);
        assert!(view(false, None).timer_expired(timeout));
        assert!(!view(false, Some(600)).timer_expired(timeout));
        assert!(view(false, Some(601)).timer_expired(timeout));
        assert!(!view(true, Some(1_000)).timer_expired(timeout));
        assert!(view(true, Some(1_351)).timer_expired(timeout));
    }

    #[test]
    fn a_quorum_is_a_majority_of_every_voter_set() {
        let set = |ids: &[MemberId]| ids.iter().copied().collect::<BTreeSet<MemberId>>();
        let five = set(&[1, 2, 3, 4, 5]);
        let uniform = [five.clone()];
        assert!(quorum(&uniform, &set(&[1, 2, 3])));
        assert!(!quorum(&uniform, &set(&[1, 2])));
        assert!(!quorum(&uniform, &set(&[1, 2, 9, 10])), "non-voters");
        assert!(quorum(&[set(&[7])], &set(&[7])), "a lone voter");
        // Joint: both the old and the new set.
        let new = set(&[3, 4, 5, 6]);
        assert!(!quorum(&[five.clone(), new.clone()], &set(&[1, 2, 3])));
        assert!(quorum(&[five, new], &set(&[3, 4, 5])));
        assert!(!quorum(&[], &set(&[1])));
    }
}
