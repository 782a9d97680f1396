//! WebRTC signaling over the Messaging lane (seed 000 "Nexus as P2P signaling", seed 001
//! signaling server: `offer`, `answer`, `ice`, `end`), the perfect-negotiation glare rule, and
//! the mesh / hub topology (seed 004 "Challenge: mesh scalability": "DJ hub model").
//!
//! # Messages (JSON, tagged by `type`)
//! `{type: "offer"|"answer", from, to, sdp}`, `{type: "ice", from, to, candidate, sdpMid?,
//! sdpMLineIndex?}`, `{type: "end", from, to, reason?}`. `from` / `to` are session ids. The
//! server routes them while it is up; without it a peer connected to both relays them.
//!
//! # Glare (perfect negotiation, W3C WebRTC §10.x example)
//! Per remote peer one [`Negotiator`]. **The peer with the lower session id (byte-wise) is
//! polite**: on colliding offers the polite side rolls back its own offer and answers; the
//! impolite side ignores the incoming offer (and ICE candidates failing while ignoring).
//! Collision = an offer arrives while we are making an offer or our signaling state is not
//! `stable`.
//!
//! # Topology
//! [`mesh_links`]: full mesh up to [`FULL_MESH_MAX`] (6) members (15 links); above it the hub
//! model: every member links to the controller and to the deputy, and the two hubs link to
//! each other (`2n - 3` links: 21 for 12 devices instead of 66). The deputy is the member the
//! election rule would pick without the controller (lowest other id), so a controller loss
//! leaves a connected star around the deputy.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Full mesh up to this many members; hub model above.
pub const FULL_MESH_MAX: usize = 6;

/// Signaling body, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SignalBody {
    /// SDP offer.
    Offer {
        /// Session description.
        sdp: String,
    },
    /// SDP answer.
    Answer {
        /// Session description.
        sdp: String,
    },
    /// Trickled ICE candidate.
    Ice {
        /// `candidate` line.
        candidate: String,
        /// `sdpMid`.
        #[serde(default, rename = "sdpMid", skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// `sdpMLineIndex`.
        #[serde(
            default,
            rename = "sdpMLineIndex",
            skip_serializing_if = "Option::is_none"
        )]
        sdp_m_line_index: Option<u16>,
    },
    /// Hang up.
    End {
        /// Why, free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A signaling message between two sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalMessage {
    /// Sender session id.
    pub from: String,
    /// Receiver session id.
    pub to: String,
    /// The body.
    #[serde(flatten)]
    pub body: SignalBody,
}

/// What the driver must do on the RTCPeerConnection.
#[derive(Clone, Debug, PartialEq)]
pub enum NegotiationAction {
    /// `setLocalDescription()` (implicit offer); then call [`Negotiator::handle_local_offer`].
    CreateOffer,
    /// `setRemoteDescription(offer)` (rolls back our own offer if one is pending), then
    /// `setLocalDescription()` and call [`Negotiator::handle_local_answer`].
    AcceptOffer {
        /// The remote offer.
        sdp: String,
    },
    /// `setRemoteDescription(answer)`.
    AcceptAnswer {
        /// The remote answer.
        sdp: String,
    },
    /// `addIceCandidate`; if it fails and `ignore_errors`, swallow the error.
    AddIce {
        /// The candidate message body.
        body: SignalBody,
        /// True while an ignored offer's candidates may arrive.
        ignore_errors: bool,
    },
    /// Send this message (via the server or a relaying peer).
    Send(SignalMessage),
    /// Close the peer connection.
    Close,
}

/// Perfect negotiation with one remote peer (see the module doc).
#[derive(Debug)]
pub struct Negotiator {
    me: String,
    peer: String,
    making_offer: bool,
    ignore_offer: bool,
    stable: bool,
}

impl Negotiator {
    /// Negotiation between `me` and `peer`.
    pub fn new(me: impl Into<String>, peer: impl Into<String>) -> Self {
        Negotiator {
            me: me.into(),
            peer: peer.into(),
            making_offer: false,
            ignore_offer: false,
            stable: true,
        }
    }

    /// Whether we are the polite side (lower session id).
    pub fn polite(&self) -> bool {
        self.me < self.peer
    }

    /// `negotiationneeded` fired.
    pub fn handle_negotiation_needed(&mut self) -> Vec<NegotiationAction> {
        self.making_offer = true;
        vec![NegotiationAction::CreateOffer]
    }

    /// Our offer is set as local description: send it.
    pub fn handle_local_offer(&mut self, sdp: String) -> Vec<NegotiationAction> {
        self.making_offer = false;
        self.stable = false;
        vec![NegotiationAction::Send(self.msg(SignalBody::Offer { sdp }))]
    }

    /// `setLocalDescription()` for our offer failed: we are no longer making one, so the next
    /// `negotiationneeded` (or the peer's offer) is handled normally.
    pub fn handle_local_offer_failed(&mut self) {
        self.making_offer = false;
    }

    /// Our answer is set as local description: send it; signaling is stable again.
    pub fn handle_local_answer(&mut self, sdp: String) -> Vec<NegotiationAction> {
        self.stable = true;
        vec![NegotiationAction::Send(
            self.msg(SignalBody::Answer { sdp }),
        )]
    }

    /// A signaling message from the peer.
    pub fn handle_signal(&mut self, msg: SignalMessage) -> Vec<NegotiationAction> {
        if msg.from != self.peer || msg.to != self.me {
            return Vec::new();
        }
        match msg.body {
            SignalBody::Offer { sdp } => {
                let collision = self.making_offer || !self.stable;
                self.ignore_offer = !self.polite() && collision;
                if self.ignore_offer {
                    return Vec::new();
                }
                self.making_offer = false;
                self.stable = false;
                vec![NegotiationAction::AcceptOffer { sdp }]
            }
            SignalBody::Answer { sdp } => {
                self.stable = true;
                vec![NegotiationAction::AcceptAnswer { sdp }]
            }
            body @ SignalBody::Ice { .. } => vec![NegotiationAction::AddIce {
                body,
                ignore_errors: self.ignore_offer,
            }],
            SignalBody::End { .. } => {
                self.stable = true;
                self.making_offer = false;
                vec![NegotiationAction::Close]
            }
        }
    }

    fn msg(&self, body: SignalBody) -> SignalMessage {
        SignalMessage {
            from: self.me.clone(),
            to: self.peer.clone(),
            body,
        }
    }
}

/// The deputy: the lowest member id other than the controller.
pub fn deputy_for<'a>(members: &'a BTreeSet<String>, controller: &str) -> Option<&'a String> {
    members.iter().find(|m| m.as_str() != controller)
}

/// The links (unordered pairs, lower id first) the room should hold: full mesh up to
/// [`FULL_MESH_MAX`] members, hub model above it (see the module doc). `deputy` defaults to
/// [`deputy_for`].
pub fn mesh_links(
    members: &BTreeSet<String>,
    controller: &str,
    deputy: Option<&str>,
) -> BTreeSet<(String, String)> {
    let pair = |a: &String, b: &String| {
        if a < b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        }
    };
    let mut links = BTreeSet::new();
    if members.len() <= FULL_MESH_MAX {
        for a in members {
            for b in members
                .range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            {
                links.insert(pair(a, b));
            }
        }
        return links;
    }
    let deputy = deputy
        .map(str::to_owned)
        .or_else(|| deputy_for(members, controller).cloned());
    let hubs: Vec<String> = std::iter::once(controller.to_owned())
        .chain(deputy)
        .filter(|h| members.contains(h))
        .collect();
    for h in &hubs {
        for m in members {
            if m != h {
                links.insert(pair(h, m));
            }
        }
    }
    links
}

/// The peers `me` should hold a DataChannel with.
pub fn links_of(links: &BTreeSet<(String, String)>, me: &str) -> BTreeSet<String> {
    links
        .iter()
        .filter_map(|(a, b)| {
            if a == me {
                Some(b.clone())
            } else if b == me {
                Some(a.clone())
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("s{i:02}")).collect()
    }

    #[test]
    fn json_shapes() {
        let m = SignalMessage {
            from: "a".into(),
            to: "b".into(),
            body: SignalBody::Ice {
                candidate: "candidate:1".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
            },
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "ice");
        assert_eq!(v["sdpMLineIndex"], 0);
        assert_eq!(serde_json::from_value::<SignalMessage>(v).unwrap(), m);
        let end: SignalMessage =
            serde_json::from_str(r#"{"type":"end","from":"a","to":"b"}"#).unwrap();
        assert_eq!(end.body, SignalBody::End { reason: None });
    }

    #[test]
    fn glare_resolves_to_one_offer() {
        let mut a = Negotiator::new("a", "b"); // polite
        let mut b = Negotiator::new("b", "a"); // impolite
        assert!(a.polite() && !b.polite());
        a.handle_negotiation_needed();
        b.handle_negotiation_needed();
        let NegotiationAction::Send(offer_a) = a.handle_local_offer("A".into()).remove(0) else {
            panic!()
        };
        let NegotiationAction::Send(offer_b) = b.handle_local_offer("B".into()).remove(0) else {
            panic!()
        };
        // Both offers cross. The impolite side ignores a's; the polite side accepts b's.
        assert!(b.handle_signal(offer_a).is_empty());
        assert_eq!(
            a.handle_signal(offer_b),
            vec![NegotiationAction::AcceptOffer { sdp: "B".into() }]
        );
        let NegotiationAction::Send(answer) = a.handle_local_answer("ans".into()).remove(0) else {
            panic!()
        };
        assert_eq!(
            b.handle_signal(answer),
            vec![NegotiationAction::AcceptAnswer { sdp: "ans".into() }]
        );
        // ICE from a's dropped offer may fail on b: ignore errors.
        let ice = SignalMessage {
            from: "a".into(),
            to: "b".into(),
            body: SignalBody::Ice {
                candidate: "c".into(),
                sdp_mid: None,
                sdp_m_line_index: None,
            },
        };
        assert!(matches!(
            b.handle_signal(ice)[0],
            NegotiationAction::AddIce {
                ignore_errors: true,
                ..
            }
        ));
    }

    #[test]
    fn full_mesh_then_hub() {
        let six = members(6);
        assert_eq!(mesh_links(&six, "s03", None).len(), 15);
        let twelve = members(12);
        let links = mesh_links(&twelve, "s05", None);
        assert_eq!(links.len(), 2 * 12 - 3);
        assert!(links.len() < 66 / 3);
        // Every listener holds exactly the two hubs; the deputy is s00.
        assert_eq!(
            links_of(&links, "s07"),
            ["s00", "s05"].iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(links_of(&links, "s05").len(), 11);
        assert_eq!(links_of(&links, "s00").len(), 11);
        // Explicit deputy.
        assert_eq!(
            links_of(&mesh_links(&twelve, "s05", Some("s09")), "s00").len(),
            2
        );
    }
}
