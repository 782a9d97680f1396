//! Typed errors of the multiplexer, split by who is at fault (rustls habit, STYLE.md):
//! [`DecodeError`] (bad bytes from the wire), [`PeerMisbehaved`] (well-formed frames that break
//! the protocol), [`ApiMisuse`] (the caller's mistake, never caused by untrusted data), and the
//! one state error a caller must handle, [`MuxError::Backpressure`].
//!
//! Every error maps to exactly one [`ErrorCode`] ([`MuxError::code`]): the same snake_case name
//! the server puts in a Control `error` and the SDK puts in a JS error's `code`.

use crate::core::error::{ErrorCode, Fault};
use crate::core::lane::Lane;

/// Bytes that are not a v2 frame (PROTOCOL.md "Multiplexer (v2 frames)").
///
/// The frame is discarded. The transport may keep running (one transport message is one
/// frame, so the next one is unaffected), but a peer that sends these is broken:
/// [`MuxError::is_fatal`] is `true`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the frame's fixed fields need (or a field cut short).
    #[error("v2 frame truncated")]
    Truncated,
    /// First byte is not a known v2 frame type (`0x10` chunk, `0x11` ack, `0x12` resume).
    #[error("unknown v2 frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A lane byte outside `1..=8`.
    #[error("unknown lane id {0}")]
    UnknownLane(u8),
    /// Reserved flag bits are set.
    #[error("invalid flags 0b{0:08b}")]
    BadFlags(u8),
    /// A varint longer than its type allows, or a value that does not fit its field.
    #[error("varint overflows its field")]
    VarintOverflow,
    /// Bytes after the last field of an ack or resume frame.
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    /// The same lane twice in one ack or resume frame.
    #[error("lane {0} listed twice")]
    DuplicateLane(Lane),
    /// An ack frame with no lane entry, or more entries than lanes.
    #[error("ack frame with {0} lane entries (1..=8 allowed)")]
    BadAckCount(u8),
    /// More acknowledgement ranges than [`super::wire::MAX_ACK_RANGES`].
    #[error("{0} ack ranges, at most 16 allowed")]
    TooManyRanges(u64),
    /// Ack ranges whose arithmetic overflows `u64`.
    #[error("ack range overflows")]
    RangeOverflow,
    /// A resume frame with nonce 0, or a sender entry with epoch 0 (0 means "none").
    #[error("zero where a nonce or epoch is required")]
    Zero,
    /// A resume sender entry whose floor (oldest seq held) is 0 or after its next seq.
    #[error("resume floor {floor} is not within 1..={next}")]
    BadFloor {
        /// Oldest sequence number the sender holds.
        floor: u64,
        /// Next sequence number the sender will assign.
        next: u64,
    },
    /// A chunk whose index or size cannot belong to its declared message.
    #[error("chunk {index} of {len} bytes cannot belong to a message of {total} bytes")]
    BadChunk {
        /// Chunk index (0-based).
        index: u64,
        /// Bytes in this chunk.
        len: usize,
        /// Declared message size, bytes.
        total: u64,
    },
    /// The frame is larger than the receiver accepts (`MuxConfig::max_frame_bytes`).
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Frame size, bytes.
        size: usize,
        /// Limit, bytes.
        limit: usize,
    },
}

/// Well-formed frames that break the multiplexer protocol. Each discards the offending frame;
/// all are fatal ([`MuxError::is_fatal`]): the driver should close the transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// A chunk declares a message larger than `MuxConfig::max_message_bytes`.
    #[error("lane {lane}: message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The lane.
        lane: Lane,
        /// Declared size, bytes.
        size: u64,
        /// Limit, bytes.
        limit: usize,
    },
    /// Reassembly would hold more than `MuxConfig::max_reassembly_bytes` for this peer.
    #[error("lane {lane}: reassembly needs {needed} bytes, over the per-peer limit of {limit}")]
    ReassemblyLimit {
        /// The lane whose chunk was refused.
        lane: Lane,
        /// Bytes that would be held with this chunk.
        needed: usize,
        /// The per-peer limit, bytes.
        limit: usize,
    },
    /// Chunks of one message disagree (size, last index, more bytes than declared).
    #[error("lane {lane}: chunks of message {seq} are inconsistent")]
    ChunkMismatch {
        /// The lane.
        lane: Lane,
        /// The message's sequence number.
        seq: u64,
    },
    /// A frame names a lane this side did not configure (not negotiated).
    #[error("lane {0} is not configured on this side")]
    LaneNotConfigured(Lane),
    /// A chunk's reliable flag disagrees with this side's configuration of the lane.
    #[error("lane {lane}: peer sends it as {}", if *peer_reliable { "reliable" } else { "unreliable" })]
    ReliabilityMismatch {
        /// The lane.
        lane: Lane,
        /// What the peer's chunk says.
        peer_reliable: bool,
    },
    /// An ack or resume claims a sequence number this side never sent in the current epoch.
    #[error("lane {lane}: peer acknowledges seq {acked}, but only {sent} was sent")]
    AckOfUnsent {
        /// The lane.
        lane: Lane,
        /// The acknowledged sequence number.
        acked: u64,
        /// Highest sequence number sent in this epoch.
        sent: u64,
    },
    /// A chunk arrived on an ordered transport (no `retransmit_timeout_ms`) before the peer's
    /// resume for it: a peer sends its resume first and no chunk before it processed ours
    /// (PROTOCOL.md §11.6), so on an ordered transport this cannot happen honestly. (On a lossy
    /// transport the chunk is dropped instead: the resume may have been lost, and
    /// retransmission sends the chunk again.)
    #[error("lane {lane}: chunk of message {seq} before the peer's resume")]
    ChunkBeforeResume {
        /// The lane.
        lane: Lane,
        /// The chunk's sequence number.
        seq: u64,
    },
    /// A resume from the sender says it assigned fewer sequence numbers than this receiver
    /// already delivered in the same epoch.
    #[error("lane {lane}: peer's next seq {next} is at or below delivered seq {delivered}")]
    ResumeBehind {
        /// The lane.
        lane: Lane,
        /// Highest sequence number delivered here.
        delivered: u64,
        /// The sender's next sequence number.
        next: u64,
    },
}

/// The caller's mistake; never caused by bytes from the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// [`super::Mux::send`] on a lane not in the configuration (not negotiated).
    #[error("lane {0} is not configured (not negotiated)")]
    LaneNotConfigured(Lane),
    /// A message larger than `MuxConfig::max_message_bytes`.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Message size, bytes.
        size: usize,
        /// Limit, bytes.
        limit: usize,
    },
    /// [`super::MuxConfig`] values that cannot work (the text says which).
    #[error("invalid multiplexer configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Any multiplexer error: what [`super::Mux::send`] returns and what
/// [`super::MuxEvent::Error`] carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// Bad bytes from the wire.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The peer broke the protocol.
    #[error(transparent)]
    Peer(#[from] PeerMisbehaved),
    /// The caller's mistake.
    #[error(transparent)]
    Api(#[from] ApiMisuse),
    /// A reliable lane's queue holds `queue_depth` messages not yet sent: wait for
    /// [`super::MuxEvent::Drain`] for this lane and retry. Nothing was queued.
    #[error("lane {lane} queue is full ({queue_depth} messages); wait for drain")]
    Backpressure {
        /// The lane.
        lane: Lane,
        /// Its queue depth (messages).
        queue_depth: usize,
    },
}

impl MuxError {
    /// The machine-readable code (Control `error.code`, JS `err.code`).
    pub fn code(&self) -> ErrorCode {
        match self {
            MuxError::Decode(DecodeError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
            MuxError::Decode(_) => ErrorCode::BadFrame,
            MuxError::Peer(PeerMisbehaved::MessageTooLarge { .. }) => ErrorCode::FrameTooLarge,
            MuxError::Peer(PeerMisbehaved::ReassemblyLimit { .. }) => ErrorCode::ReassemblyLimit,
            MuxError::Peer(PeerMisbehaved::LaneNotConfigured(_)) => ErrorCode::LaneNotNegotiated,
            MuxError::Peer(_) => ErrorCode::ProtocolViolation,
            MuxError::Api(ApiMisuse::LaneNotConfigured(_)) => ErrorCode::LaneNotNegotiated,
            MuxError::Api(ApiMisuse::MessageTooLarge { .. }) => ErrorCode::FrameTooLarge,
            MuxError::Api(ApiMisuse::InvalidConfig(_)) => ErrorCode::InvalidArgument,
            MuxError::Backpressure { .. } => ErrorCode::Backpressure,
        }
    }

    /// Who is at fault: [`Fault::Decode`] and [`Fault::PeerMisbehaved`] for the peer's bytes
    /// and protocol, [`Fault::ApiMisuse`] for the caller's, [`Fault::Transient`] for
    /// backpressure. Finer than `self.code().fault()`: the caller's too-large message is
    /// `frame_too_large` like a peer's, but the caller's fault.
    pub fn fault(&self) -> Fault {
        match self {
            MuxError::Decode(_) => Fault::Decode,
            MuxError::Peer(_) => Fault::PeerMisbehaved,
            MuxError::Api(_) => Fault::ApiMisuse,
            MuxError::Backpressure { .. } => Fault::Transient,
        }
    }

    /// Whether the driver should close the transport: `true` for every error caused by the
    /// peer ([`MuxError::Decode`], [`MuxError::Peer`]); `false` for the caller's own
    /// ([`MuxError::Api`], [`MuxError::Backpressure`]). Same as
    /// `self.fault().closes_transport()`.
    pub fn is_fatal(&self) -> bool {
        self.fault().closes_transport()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_fatality() {
        let bp = MuxError::Backpressure {
            lane: Lane::Data,
            queue_depth: 3,
        };
        assert_eq!(bp.code(), ErrorCode::Backpressure);
        assert!(!bp.is_fatal());
        let r = MuxError::from(PeerMisbehaved::ReassemblyLimit {
            lane: Lane::Data,
            needed: 2,
            limit: 1,
        });
        assert_eq!(r.code().as_str(), "reassembly_limit");
        assert!(r.is_fatal());
        let a = MuxError::from(PeerMisbehaved::AckOfUnsent {
            lane: Lane::Control,
            acked: 9,
            sent: 1,
        });
        assert_eq!(a.code().as_str(), "protocol_violation");
        assert_eq!(
            MuxError::from(DecodeError::Truncated).code(),
            ErrorCode::BadFrame
        );
        assert_eq!(
            MuxError::from(ApiMisuse::LaneNotConfigured(Lane::Video)).code(),
            ErrorCode::LaneNotNegotiated
        );
    }

    /// The typed fault and the code's fault agree wherever the peer is at fault: a peer's
    /// error sent on the wire is classed the same by whoever receives its code.
    #[test]
    fn peer_faults_agree_with_their_codes() {
        let peer = [
            MuxError::from(DecodeError::Truncated),
            MuxError::from(DecodeError::TooLarge { size: 9, limit: 1 }),
            MuxError::from(PeerMisbehaved::MessageTooLarge {
                lane: Lane::Data,
                size: 9,
                limit: 1,
            }),
            MuxError::from(PeerMisbehaved::ReassemblyLimit {
                lane: Lane::Data,
                needed: 2,
                limit: 1,
            }),
            MuxError::from(PeerMisbehaved::LaneNotConfigured(Lane::Video)),
            MuxError::from(PeerMisbehaved::AckOfUnsent {
                lane: Lane::Control,
                acked: 9,
                sent: 1,
            }),
        ];
        for e in peer {
            assert!(e.fault().closes_transport(), "{e}");
            assert!(e.code().fault().closes_transport(), "{e}: {}", e.code());
        }
        let api = MuxError::from(ApiMisuse::MessageTooLarge { size: 9, limit: 1 });
        assert_eq!(api.fault(), Fault::ApiMisuse);
        assert!(!api.is_fatal());
    }
}
