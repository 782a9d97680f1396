//! The v2 frames of the multiplexer: chunk, ack and resume (PROTOCOL.md "Multiplexer (v2
//! frames)"). One transport message (WebSocket binary message or DataChannel message) is
//! exactly one frame. Multi-byte integers are unsigned LEB128 varints.
//!
//! ```text
//! chunk  (0x10)  type | lane | flags | seq | index | total | [floor] | bytes..
//!                flags: bit 0 LAST, bit 1 RELIABLE, bit 2 FLOOR present, bits 3-7 reserved (0)
//! ack    (0x11)  type | count (1..=8) | count × (lane | cumulative | nranges | nranges × (gap | len))
//! resume (0x12)  type | flags (0) | nonce | echo
//!                | nsend (0..=8) | nsend × (lane | epoch | floor | next)
//!                | nrecv (0..=8) | nrecv × (lane | epoch | delivered)
//! ```
//!
//! The types start at `0x10` so that a receiver can tell them from the v1 kinds `0x01` Data
//! and `0x02` Control while both are in use. Decoders never panic, reject reserved bits and
//! trailing bytes (ack, resume), and check every arithmetic step.

use super::error::DecodeError;
use crate::core::lane::Lane;
use crate::core::varint::{self, VarintError};

/// Frame type of a message chunk.
pub const TYPE_CHUNK: u8 = 0x10;
/// Frame type of an acknowledgement.
pub const TYPE_ACK: u8 = 0x11;
/// Frame type of the resume handshake.
pub const TYPE_RESUME: u8 = 0x12;

const FLAG_LAST: u8 = 0b001;
const FLAG_RELIABLE: u8 = 0b010;
const FLAG_FLOOR: u8 = 0b100;

/// Most acknowledgement ranges one lane entry may carry.
pub const MAX_ACK_RANGES: usize = 16;

/// Largest chunk header: type, lane, flags, seq (10), index (5), total (10), floor (10).
pub const CHUNK_HEADER_MAX: usize = 3 + 10 + 5 + 10 + 10;

/// Everything in a chunk frame but its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The lane the message travels on.
    pub lane: Lane,
    /// The sender treats the lane as reliable (must match the receiver's configuration).
    pub reliable: bool,
    /// This is the message's final chunk.
    pub last: bool,
    /// The message's per-lane, per-direction sequence number (from 1).
    pub seq: u64,
    /// Chunk index inside the message (from 0).
    pub index: u32,
    /// Size of the whole message, bytes.
    pub total: u64,
    /// Reliable lanes only: the oldest sequence number the sender still holds, present when
    /// the sender forgot messages the receiver has not acknowledged (a discontinuity signal).
    pub floor: Option<u64>,
}

/// One lane's entry in an ack frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneAck {
    /// The acknowledged lane (the receiver's direction of it).
    pub lane: Lane,
    /// Highest sequence number delivered in order (0: none yet).
    pub cumulative: u64,
    /// Complete messages held beyond a gap, as inclusive `(first, last)` ranges, ascending,
    /// disjoint, each starting at least 2 after the previous end (and after `cumulative`).
    pub ranges: Vec<(u64, u64)>,
}

/// A sender's state of one reliable lane in a resume frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendState {
    /// The lane.
    pub lane: Lane,
    /// The sender's epoch for this lane-direction (non-zero; changes when the sender loses
    /// its history, e.g. restarts).
    pub epoch: u32,
    /// Oldest sequence number the sender can still (re)send; `next` when it holds nothing.
    pub floor: u64,
    /// The next sequence number the sender will assign.
    pub next: u64,
}

/// A receiver's state of one reliable lane in a resume frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvState {
    /// The lane.
    pub lane: Lane,
    /// The sender epoch this receiver follows; 0: none (a fresh receiver).
    pub epoch: u32,
    /// Highest sequence number delivered in order in that epoch (0: none).
    pub delivered: u64,
}

/// The resume handshake, sent by both sides at the start of every transport connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// Random, non-zero, fixed for one connection.
    pub nonce: u64,
    /// The peer's nonce last seen on this connection (0: none yet).
    pub echo: u64,
    /// The sender side of every reliable lane.
    pub send: Vec<SendState>,
    /// The receiver side of every reliable lane.
    pub recv: Vec<RecvState>,
}

/// One decoded v2 frame; chunk bytes borrow from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A chunk of a lane message.
    Chunk(ChunkHeader, &'a [u8]),
    /// Acknowledgements for one or more lanes.
    Ack(Vec<LaneAck>),
    /// The resume handshake.
    Resume(Resume),
}

impl ChunkHeader {
    /// Appends the header to `out` (the chunk bytes follow it).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.last {
            flags |= FLAG_LAST;
        }
        if self.reliable {
            flags |= FLAG_RELIABLE;
        }
        if self.floor.is_some() {
            flags |= FLAG_FLOOR;
        }
        out.extend_from_slice(&[TYPE_CHUNK, self.lane.id(), flags]);
        put_varint(out, self.seq);
        put_varint(out, u64::from(self.index));
        put_varint(out, self.total);
        if let Some(f) = self.floor {
            put_varint(out, f);
        }
    }

    /// The encoded header length, bytes.
    pub fn encoded_len(&self) -> usize {
        3 + varint_len(self.seq)
            + varint_len(u64::from(self.index))
            + varint_len(self.total)
            + self.floor.map_or(0, varint_len)
    }
}

/// Encodes an ack frame.
pub fn encode_ack(acks: &[LaneAck]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + acks.len() * 8);
    out.push(TYPE_ACK);
    out.push(acks.len() as u8);
    for a in acks {
        out.push(a.lane.id());
        put_varint(&mut out, a.cumulative);
        put_varint(&mut out, a.ranges.len() as u64);
        let mut prev_end = a.cumulative;
        for &(first, last) in &a.ranges {
            put_varint(&mut out, first - prev_end - 2);
            put_varint(&mut out, last - first);
            prev_end = last;
        }
    }
    out
}

/// Encodes a resume frame.
pub fn encode_resume(r: &Resume) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + r.send.len() * 12 + r.recv.len() * 8);
    out.extend_from_slice(&[TYPE_RESUME, 0]);
    put_varint(&mut out, r.nonce);
    put_varint(&mut out, r.echo);
    out.push(r.send.len() as u8);
    for s in &r.send {
        out.push(s.lane.id());
        put_varint(&mut out, u64::from(s.epoch));
        put_varint(&mut out, s.floor);
        put_varint(&mut out, s.next);
    }
    out.push(r.recv.len() as u8);
    for s in &r.recv {
        out.push(s.lane.id());
        put_varint(&mut out, u64::from(s.epoch));
        put_varint(&mut out, s.delivered);
    }
    out
}

impl Frame<'_> {
    /// Parses one v2 frame.
    ///
    /// Errors: [`DecodeError`] for anything malformed; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
        let (&ty, mut rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        match ty {
            TYPE_CHUNK => {
                let lane = get_lane(&mut rest)?;
                let flags = get_u8(&mut rest)?;
                if flags & !(FLAG_LAST | FLAG_RELIABLE | FLAG_FLOOR) != 0 {
                    return Err(DecodeError::BadFlags(flags));
                }
                let seq = get_varint(&mut rest)?;
                let index_raw = get_varint(&mut rest)?;
                let index = u32::try_from(index_raw).map_err(|_| DecodeError::VarintOverflow)?;
                let total = get_varint(&mut rest)?;
                let floor = if flags & FLAG_FLOOR != 0 {
                    Some(get_varint(&mut rest)?)
                } else {
                    None
                };
                let last = flags & FLAG_LAST != 0;
                // Every chunk but an empty message's only one carries at least one byte, so a
                // message of `total` bytes has at most `total` chunks; the bytes must fit.
                let len = rest.len();
                let bad = (len == 0 && (total != 0 || index != 0 || !last))
                    || u64::from(index) >= total.max(1)
                    || len as u64 > total;
                if bad {
                    return Err(DecodeError::BadChunk {
                        index: index_raw,
                        len,
                        total,
                    });
                }
                Ok(Frame::Chunk(
                    ChunkHeader {
                        lane,
                        reliable: flags & FLAG_RELIABLE != 0,
                        last,
                        seq,
                        index,
                        total,
                        floor,
                    },
                    rest,
                ))
            }
            TYPE_ACK => {
                let count = get_u8(&mut rest)?;
                if count == 0 || count > 8 {
                    return Err(DecodeError::BadAckCount(count));
                }
                let mut seen = 0u8;
                let mut acks = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let lane = get_lane(&mut rest)?;
                    mark_lane(&mut seen, lane)?;
                    let cumulative = get_varint(&mut rest)?;
                    let n = get_varint(&mut rest)?;
                    if n > MAX_ACK_RANGES as u64 {
                        return Err(DecodeError::TooManyRanges(n));
                    }
                    let mut ranges = Vec::with_capacity(n as usize);
                    let mut prev_end = cumulative;
                    for _ in 0..n {
                        let gap = get_varint(&mut rest)?;
                        let span = get_varint(&mut rest)?;
                        let first = prev_end
                            .checked_add(2)
                            .and_then(|v| v.checked_add(gap))
                            .ok_or(DecodeError::RangeOverflow)?;
                        let last = first.checked_add(span).ok_or(DecodeError::RangeOverflow)?;
                        ranges.push((first, last));
                        prev_end = last;
                    }
                    acks.push(LaneAck {
                        lane,
                        cumulative,
                        ranges,
                    });
                }
                no_trailing(rest)?;
                Ok(Frame::Ack(acks))
            }
            TYPE_RESUME => {
                let flags = get_u8(&mut rest)?;
                if flags != 0 {
                    return Err(DecodeError::BadFlags(flags));
                }
                let nonce = get_varint(&mut rest)?;
                if nonce == 0 {
                    return Err(DecodeError::Zero);
                }
                let echo = get_varint(&mut rest)?;
                let nsend = get_u8(&mut rest)?;
                if nsend > 8 {
                    return Err(DecodeError::BadAckCount(nsend));
                }
                let mut seen = 0u8;
                let mut send = Vec::with_capacity(nsend as usize);
                for _ in 0..nsend {
                    let lane = get_lane(&mut rest)?;
                    mark_lane(&mut seen, lane)?;
                    let epoch = get_u32(&mut rest)?;
                    let floor = get_varint(&mut rest)?;
                    let next = get_varint(&mut rest)?;
                    if epoch == 0 {
                        return Err(DecodeError::Zero);
                    }
                    if floor == 0 || floor > next {
                        return Err(DecodeError::BadFloor { floor, next });
                    }
                    send.push(SendState {
                        lane,
                        epoch,
                        floor,
                        next,
                    });
                }
                let nrecv = get_u8(&mut rest)?;
                if nrecv > 8 {
                    return Err(DecodeError::BadAckCount(nrecv));
                }
                let mut seen = 0u8;
                let mut recv = Vec::with_capacity(nrecv as usize);
                for _ in 0..nrecv {
                    let lane = get_lane(&mut rest)?;
                    mark_lane(&mut seen, lane)?;
                    let epoch = get_u32(&mut rest)?;
                    let delivered = get_varint(&mut rest)?;
                    recv.push(RecvState {
                        lane,
                        epoch,
                        delivered,
                    });
                }
                no_trailing(rest)?;
                Ok(Frame::Resume(Resume {
                    nonce,
                    echo,
                    send,
                    recv,
                }))
            }
            t => Err(DecodeError::UnknownType(t)),
        }
    }
}

fn mark_lane(seen: &mut u8, lane: Lane) -> Result<(), DecodeError> {
    let bit = 1u8 << (lane.id() - 1);
    if *seen & bit != 0 {
        return Err(DecodeError::DuplicateLane(lane));
    }
    *seen |= bit;
    Ok(())
}

fn no_trailing(rest: &[u8]) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes(rest.len()))
    }
}

fn get_u8(buf: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&b, rest) = buf.split_first().ok_or(DecodeError::Truncated)?;
    *buf = rest;
    Ok(b)
}

fn get_lane(buf: &mut &[u8]) -> Result<Lane, DecodeError> {
    let id = get_u8(buf)?;
    Lane::from_id(id).ok_or(DecodeError::UnknownLane(id))
}

fn get_u32(buf: &mut &[u8]) -> Result<u32, DecodeError> {
    u32::try_from(get_varint(buf)?).map_err(|_| DecodeError::VarintOverflow)
}

/// Appends `v` as an unsigned LEB128 varint ([`crate::core::varint::put`]).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    varint::put(out, v);
}

/// Bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    varint::len(v)
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    varint::get(buf).map_err(|e| match e {
        VarintError::Truncated => DecodeError::Truncated,
        VarintError::Overflow => DecodeError::VarintOverflow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(h: ChunkHeader, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        h.encode_into(&mut out);
        assert_eq!(out.len(), h.encoded_len());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn chunk_round_trip() {
        let h = ChunkHeader {
            lane: Lane::Data,
            reliable: true,
            last: false,
            seq: 300,
            index: 2,
            total: 70_000,
            floor: Some(299),
        };
        let bytes = chunk(h, &[7; 100]);
        assert_eq!(&bytes[..3], &[0x10, 5, 0b110]);
        assert_eq!(Frame::decode(&bytes), Ok(Frame::Chunk(h, &[7; 100][..])));
        let empty = ChunkHeader {
            lane: Lane::Control,
            reliable: true,
            last: true,
            seq: 1,
            index: 0,
            total: 0,
            floor: None,
        };
        assert_eq!(
            Frame::decode(&chunk(empty, &[])),
            Ok(Frame::Chunk(empty, &[][..]))
        );
    }

    #[test]
    fn impossible_chunks_are_refused() {
        let h = |index, total, last| ChunkHeader {
            lane: Lane::Sync,
            reliable: true,
            last,
            seq: 1,
            index,
            total,
            floor: None,
        };
        // index at or beyond the byte count, more bytes than declared, an empty middle chunk
        for (hdr, len) in [(h(5, 5, true), 1), (h(0, 2, true), 3), (h(0, 4, false), 0)] {
            assert!(matches!(
                Frame::decode(&chunk(hdr, &vec![0; len])),
                Err(DecodeError::BadChunk { .. })
            ));
        }
        assert_eq!(
            Frame::decode(&[0x10, 1, 0b1000, 1, 0, 1, 0]),
            Err(DecodeError::BadFlags(0b1000))
        );
        assert_eq!(
            Frame::decode(&[0x10, 9, 0, 1, 0, 1, 0]),
            Err(DecodeError::UnknownLane(9))
        );
    }

    #[test]
    fn ack_round_trip_and_bounds() {
        let acks = vec![
            LaneAck {
                lane: Lane::Control,
                cumulative: 10,
                ranges: vec![(12, 14), (20, 20)],
            },
            LaneAck {
                lane: Lane::Data,
                cumulative: 0,
                ranges: vec![],
            },
        ];
        let bytes = encode_ack(&acks);
        assert_eq!(Frame::decode(&bytes), Ok(Frame::Ack(acks)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Frame::decode(&trailing), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(
            Frame::decode(&[0x11, 2, 1, 0, 0, 1, 0, 0]),
            Err(DecodeError::DuplicateLane(Lane::Control))
        );
        assert_eq!(Frame::decode(&[0x11, 0]), Err(DecodeError::BadAckCount(0)));
        assert_eq!(
            Frame::decode(&[0x11, 1, 1, 0, 17]),
            Err(DecodeError::TooManyRanges(17))
        );
        let mut overflow = vec![0x11, 1, 1];
        put_varint(&mut overflow, u64::MAX - 1);
        overflow.extend_from_slice(&[1, 0, 0]);
        assert_eq!(Frame::decode(&overflow), Err(DecodeError::RangeOverflow));
    }

    #[test]
    fn resume_round_trip_and_checks() {
        let r = Resume {
            nonce: u64::MAX,
            echo: 0,
            send: vec![SendState {
                lane: Lane::Messaging,
                epoch: u32::MAX,
                floor: 3,
                next: 9,
            }],
            recv: vec![RecvState {
                lane: Lane::Messaging,
                epoch: 0,
                delivered: 0,
            }],
        };
        assert_eq!(Frame::decode(&encode_resume(&r)), Ok(Frame::Resume(r)));
        assert_eq!(
            Frame::decode(&[0x12, 0, 0, 0, 0, 0]),
            Err(DecodeError::Zero)
        );
        assert_eq!(
            Frame::decode(&[0x12, 0, 1, 0, 1, 2, 1, 5, 4, 0]),
            Err(DecodeError::BadFloor { floor: 5, next: 4 })
        );
        assert_eq!(Frame::decode(&[0x07]), Err(DecodeError::UnknownType(7)));
        assert_eq!(Frame::decode(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn varint_len_matches() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_typed_prefixes(
            ty in 0x10u8..=0x12,
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut v = vec![ty];
            v.extend(bytes);
            let _ = Frame::decode(&v);
        }

        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut s = out.as_slice();
            prop_assert_eq!(get_varint(&mut s).unwrap(), v);
            prop_assert!(s.is_empty());
        }

        #[test]
        fn acks_round_trip(
            cumulative in 0u64..1_000_000,
            spans in prop::collection::vec((0u64..50, 0u64..50), 0..=MAX_ACK_RANGES),
        ) {
            let mut ranges = Vec::new();
            let mut prev = cumulative;
            for (gap, span) in spans {
                let first = prev + 2 + gap;
                ranges.push((first, first + span));
                prev = first + span;
            }
            let acks = vec![LaneAck { lane: Lane::Relay, cumulative, ranges }];
            let bytes = encode_ack(&acks);
            prop_assert_eq!(Frame::decode(&bytes), Ok(Frame::Ack(acks.clone())));
        }
    }
}
