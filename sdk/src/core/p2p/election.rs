//! Controller (DJ) election when the server is gone (seed 004 §2.3 "Controller Election (P2P
//! Mode)", "Challenge 3: Split Brain"; issue #5).
//!
//! # The rule (one, deterministic)
//! The seed's comment says "highest userId", its code sorts ascending and takes the first
//! (lowest). We follow the code: **the lowest member id (byte-wise string order) among the
//! reachable members wins**.
//! - Server lost and the current controller still reachable: it stays, the claim is unchanged
//!   (no election, no new epoch).
//! - Otherwise an election: the new claim is `(epoch + 1, lowest reachable id, self included)`.
//!   Every election increments the epoch. Members with the same view compute the same claim
//!   without exchanging a vote; members with different views converge by gossip (below).
//! - Claims are totally ordered by [`Claim`]'s `Ord`: **higher epoch wins; at equal epoch the
//!   lower controller id wins**. A member adopts any claim that beats its own and answers a
//!   beaten claim with its own ([`ElectionOutput::Announce`]), so two partitions that heal with
//!   two controllers agree on the greater claim after one exchange.
//! - Changes stamped with an epoch lower than the adopted claim's are rejected
//!   ([`crate::core::p2p::changes::ChangeLog::accept`]); the loser's changes are re-submitted
//!   to the winner from the origins' queues and the loser's log, not lost.
//! - **Server wins** (seed): when the server is back its claim is adopted whatever its epoch;
//!   the changes it has not seen are pushed to it ([`crate::core::p2p::changes`]). The server
//!   should then move to an epoch above every peer epoch it is told about.
//!
//! - **Numbers from peers** (issue 11): a peer's claim with an epoch above
//!   [`MAX_SAFE_INTEGER`] or more than [`MAX_EPOCH_JUMP`] above the adopted claim's is ignored
//!   (neither adopted nor answered): one peer cannot push the room's epoch to the cap or make
//!   it wrap. An election at epoch [`MAX_SAFE_INTEGER`] (unreachable in practice) does not
//!   happen: the claim stays.
//!
//! # Drive contract
//! The one contract of [`crate::core::drive`]: call the `handle_*` inputs; after each, drain
//! [`Election::poll_output`] until [`ElectionOutput::Timeout`]. No timers and no time: the
//! tier machine and the membership view (DataChannels open) drive it.

use crate::core::drive::Millis;
use crate::core::sync::state::{MAX_EPOCH_JUMP, MAX_SAFE_INTEGER};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeSet, VecDeque};

/// Who controls the room, in which epoch. JSON `{epoch, controller}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// Controller epoch (counts controller changes; the epoch of [`crate::core::sync::state::RoomState`]).
    pub epoch: u64,
    /// The controller's member (session) id.
    pub controller: String,
}

impl Claim {
    /// A claim.
    pub fn new(epoch: u64, controller: impl Into<String>) -> Self {
        Claim {
            epoch,
            controller: controller.into(),
        }
    }
}

impl Ord for Claim {
    /// Higher epoch is greater; at equal epoch the *lower* controller id is greater.
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| other.controller.cmp(&self.controller))
    }
}

impl PartialOrd for Claim {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The rule: the lowest id of `candidates`, or `None` if empty.
pub fn pick_controller<'a>(candidates: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    candidates.into_iter().min()
}

/// Who is the authority right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    /// The server orders changes (Tier 1).
    Server,
    /// The claim's controller orders changes (Tier 2/3).
    Peer,
}

/// Outputs of [`Election::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum ElectionOutput {
    /// The claim changed. `elected` is true when this member ran the election (a new epoch),
    /// false when it adopted someone else's claim or the server's.
    ControllerChanged {
        /// The new claim.
        claim: Claim,
        /// The claim it replaced.
        previous: Claim,
        /// Whether this member computed it.
        elected: bool,
    },
    /// Send this claim to the reachable members (after an election, or to answer a beaten claim).
    Announce(Claim),
    /// Drained. The election has no timers: always [`Millis::NEVER`].
    Timeout(Millis),
}

crate::core::drive::machine!(Election, ElectionOutput);

/// One member's view of the election (see the module doc for the rule).
#[derive(Debug)]
pub struct Election {
    me: String,
    claim: Claim,
    authority: Authority,
    out: VecDeque<ElectionOutput>,
}

impl Election {
    /// Member `me`, starting from the server's claim (the last `sync-state`'s epoch and controller).
    pub fn new(me: impl Into<String>, server_claim: Claim) -> Self {
        Election {
            me: me.into(),
            claim: server_claim,
            authority: Authority::Server,
            out: VecDeque::new(),
        }
    }

    /// The adopted claim.
    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// Who orders changes now.
    pub fn authority(&self) -> Authority {
        self.authority
    }

    /// Whether this member orders changes (peer authority and the claim names it).
    pub fn is_controller(&self) -> bool {
        self.authority == Authority::Peer && self.claim.controller == self.me
    }

    /// The server is gone (tier left `socket`); `reachable` are the members with an open
    /// DataChannel (self need not be included).
    pub fn handle_server_lost(&mut self, reachable: &BTreeSet<String>) {
        self.authority = Authority::Peer;
        self.handle_membership(reachable);
    }

    /// The set of reachable members changed. Ignored while the server is the authority;
    /// without it, a controller missing from `reachable` triggers an election (none at epoch
    /// [`MAX_SAFE_INTEGER`]).
    pub fn handle_membership(&mut self, reachable: &BTreeSet<String>) {
        if self.authority == Authority::Server {
            return;
        }
        if self.claim.controller == self.me || reachable.contains(&self.claim.controller) {
            return;
        }
        let Some(epoch) = self
            .claim
            .epoch
            .checked_add(1)
            .filter(|e| *e <= MAX_SAFE_INTEGER)
        else {
            return;
        };
        let me = &self.me;
        let winner = pick_controller(reachable.iter().chain(std::iter::once(me)))
            .cloned()
            .unwrap_or_else(|| me.clone());
        let claim = Claim::new(epoch, winner);
        let previous = std::mem::replace(&mut self.claim, claim.clone());
        self.out.push_back(ElectionOutput::ControllerChanged {
            claim: claim.clone(),
            previous,
            elected: true,
        });
        self.out.push_back(ElectionOutput::Announce(claim));
    }

    /// A peer announced `claim`. Adopt it if it beats ours; answer with ours if ours beats it.
    /// A claim whose epoch is above [`MAX_SAFE_INTEGER`] or more than [`MAX_EPOCH_JUMP`] above
    /// ours is ignored (module docs).
    pub fn handle_claim(&mut self, claim: &Claim) {
        if self.authority == Authority::Server {
            return;
        }
        let max = self
            .claim
            .epoch
            .saturating_add(MAX_EPOCH_JUMP)
            .min(MAX_SAFE_INTEGER);
        if claim.epoch > max {
            return;
        }
        match claim.cmp(&self.claim) {
            Ordering::Greater => {
                let previous = std::mem::replace(&mut self.claim, claim.clone());
                self.out.push_back(ElectionOutput::ControllerChanged {
                    claim: claim.clone(),
                    previous,
                    elected: false,
                });
            }
            Ordering::Less => self
                .out
                .push_back(ElectionOutput::Announce(self.claim.clone())),
            Ordering::Equal => {}
        }
    }

    /// The server is back and says `server_claim`: it is the authority (server wins).
    pub fn handle_server_back(&mut self, server_claim: Claim) {
        self.authority = Authority::Server;
        if server_claim != self.claim {
            let previous = std::mem::replace(&mut self.claim, server_claim.clone());
            self.out.push_back(ElectionOutput::ControllerChanged {
                claim: server_claim,
                previous,
                elected: false,
            });
        }
    }

    /// No timers: nothing to do (the contract's timer input).
    pub fn handle_timeout(&mut self, _now: Millis) {}

    /// The next output, oldest first, then [`ElectionOutput::Timeout`] ([`Millis::NEVER`]);
    /// `now` is unused (no timers).
    #[must_use]
    pub fn poll_output(&mut self, _now: Millis) -> ElectionOutput {
        self.out
            .pop_front()
            .unwrap_or(ElectionOutput::Timeout(Millis::NEVER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn drain(e: &mut Election) -> Vec<ElectionOutput> {
        let mut out = Vec::new();
        crate::core::drive::drain(e, Millis::ZERO, |o| out.push(o));
        out
    }

    #[test]
    fn claim_order() {
        assert!(Claim::new(3, "z") > Claim::new(2, "a"));
        assert!(Claim::new(3, "a") > Claim::new(3, "b"));
        assert_eq!(
            pick_controller(&set(&["c", "a", "b"])),
            Some(&"a".to_string())
        );
    }

    #[test]
    fn out_of_range_claims_are_ignored_and_elections_never_wrap() {
        let mut e = Election::new("c", Claim::new(4, "d"));
        e.handle_server_lost(&set(&["a", "d"]));
        for epoch in [u64::MAX, MAX_SAFE_INTEGER + 1, 4 + MAX_EPOCH_JUMP + 1] {
            e.handle_claim(&Claim::new(epoch, "a"));
            assert_eq!(e.claim(), &Claim::new(4, "d"), "{epoch}");
            assert!(drain(&mut e).is_empty());
        }
        e.handle_claim(&Claim::new(4 + MAX_EPOCH_JUMP, "z"));
        assert_eq!(e.claim().epoch, 4 + MAX_EPOCH_JUMP);
        // At the cap (reached step by step), the controller's loss elects no one.
        let mut e = Election::new("c", Claim::new(MAX_SAFE_INTEGER, "d"));
        e.handle_server_lost(&set(&["a"]));
        assert_eq!(e.claim(), &Claim::new(MAX_SAFE_INTEGER, "d"));
        let mut e = Election::new("c", Claim::new(MAX_SAFE_INTEGER - 1, "d"));
        e.handle_server_lost(&set(&["a"]));
        assert_eq!(e.claim(), &Claim::new(MAX_SAFE_INTEGER, "a"));
    }

    #[test]
    fn reachable_dj_stays() {
        let mut e = Election::new("c", Claim::new(4, "d"));
        e.handle_server_lost(&set(&["a", "d"]));
        assert!(drain(&mut e).is_empty());
        assert_eq!(e.claim(), &Claim::new(4, "d"));
        assert_eq!(e.authority(), Authority::Peer);
    }

    #[test]
    fn missing_dj_elects_lowest_with_new_epoch() {
        let mut e = Election::new("c", Claim::new(4, "d"));
        e.handle_server_lost(&set(&["b", "e"]));
        assert_eq!(e.claim(), &Claim::new(5, "b"));
        assert!(matches!(
            drain(&mut e)[..],
            [
                ElectionOutput::ControllerChanged { elected: true, .. },
                ElectionOutput::Announce(_)
            ]
        ));
        // The elected one leaves: a further election.
        e.handle_membership(&set(&["e"]));
        assert_eq!(e.claim(), &Claim::new(6, "c"));
        assert!(!e.is_controller() || e.claim().controller == "c");
        assert!(e.is_controller());
    }

    #[test]
    fn healed_partitions_agree_on_greater_claim() {
        let mut a = Election::new("a", Claim::new(1, "x"));
        let mut f = Election::new("f", Claim::new(1, "x"));
        a.handle_server_lost(&set(&["b", "c"]));
        f.handle_server_lost(&set(&["e", "g"]));
        assert_eq!(a.claim(), &Claim::new(2, "a"));
        assert_eq!(f.claim(), &Claim::new(2, "e"));
        drain(&mut a);
        drain(&mut f);
        f.handle_claim(&a.claim().clone());
        assert_eq!(f.claim(), &Claim::new(2, "a"));
        a.handle_claim(&Claim::new(2, "e"));
        assert_eq!(
            drain(&mut a),
            vec![ElectionOutput::Announce(Claim::new(2, "a"))]
        );
    }

    #[test]
    fn server_wins() {
        let mut e = Election::new("a", Claim::new(1, "x"));
        e.handle_server_lost(&set(&["b"]));
        assert!(e.is_controller());
        drain(&mut e);
        e.handle_server_back(Claim::new(1, "x"));
        assert_eq!(e.authority(), Authority::Server);
        assert_eq!(e.claim(), &Claim::new(1, "x"));
        assert!(!e.is_controller());
        // Claims from peers are ignored while the server is the authority.
        e.handle_claim(&Claim::new(9, "a"));
        assert_eq!(e.claim(), &Claim::new(1, "x"));
    }
}
