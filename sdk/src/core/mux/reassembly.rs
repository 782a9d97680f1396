//! Reassembly of chunked messages with a per-peer memory budget (issue 3 "Scheduling":
//! "Reassembly memory is bounded; a peer that exceeds it gets a typed error, not an OOM").
//!
//! A [`Partial`] collects the chunks of one message. Chunks that arrive in order are appended
//! to one buffer allocated for the declared size (no copy on completion); chunks that arrive
//! early (a reordering transport) wait in a small map until the gap is filled. The
//! [`Budget`] counts, per peer, the declared size of every partial message plus early chunks
//! and complete messages held for in-order delivery; the multiplexer checks it *before*
//! allocating, so a peer can make this side allocate at most `max_reassembly_bytes`.

use std::collections::BTreeMap;

/// Bytes held for one peer, against a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    used: usize,
    limit: usize,
}

impl Budget {
    /// An empty budget of `limit` bytes.
    pub fn new(limit: usize) -> Budget {
        Budget { used: 0, limit }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The limit, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `n` bytes, or returns the total that would be held (over the limit) and takes
    /// nothing.
    pub fn try_take(&mut self, n: usize) -> Result<(), usize> {
        match self.used.checked_add(n) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(())
            }
            other => Err(other.unwrap_or(usize::MAX)),
        }
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&mut self, n: usize) {
        debug_assert!(n <= self.used, "budget underflow");
        self.used = self.used.saturating_sub(n);
    }
}

/// The chunks disagree with each other or with the declared size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch;

/// What adding a chunk did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// A chunk already held (a retransmission); nothing changed.
    Duplicate,
    /// Stored; the message is not complete yet. `extra` bytes were held outside the main
    /// buffer (an early chunk) and must be taken from the budget by the caller first.
    Stored,
    /// The message is complete: take it with [`Partial::finish`].
    Complete,
}

/// One message being reassembled.
#[derive(Debug)]
pub struct Partial {
    total: usize,
    /// The contiguous prefix: chunks `0..next_index`.
    buf: Vec<u8>,
    next_index: u32,
    /// Chunks that arrived before their predecessors.
    early: BTreeMap<u32, Vec<u8>>,
    early_bytes: usize,
    last_index: Option<u32>,
}

impl Partial {
    /// A partial message of `total` bytes (the caller took `total` from the budget).
    pub fn new(total: usize) -> Partial {
        Partial {
            total,
            buf: Vec::with_capacity(total),
            next_index: 0,
            early: BTreeMap::new(),
            early_bytes: 0,
            last_index: None,
        }
    }

    /// Declared message size, bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes this partial holds against the budget: the declared size plus early chunks.
    pub fn held(&self) -> usize {
        self.total + self.early_bytes
    }

    /// Whether chunk `index` is already held.
    pub fn has(&self, index: u32) -> bool {
        index < self.next_index || self.early.contains_key(&index)
    }

    /// Whether adding chunk `index` would hold it early (outside the main buffer): the
    /// caller must take `data.len()` more bytes from the budget first.
    pub fn would_hold_early(&self, index: u32) -> bool {
        index > self.next_index && !self.early.contains_key(&index)
    }

    /// Adds chunk `index` (`last`: it is the final one) with its bytes.
    ///
    /// Errors: [`Mismatch`] if the chunk contradicts the others (two different last chunks,
    /// a chunk after the last one, or more bytes than declared).
    pub fn add(&mut self, index: u32, last: bool, data: &[u8]) -> Result<Added, Mismatch> {
        if self.has(index) {
            return Ok(Added::Duplicate);
        }
        match self.last_index {
            Some(l) if index > l || (last && index != l) => return Err(Mismatch),
            _ => {}
        }
        if last && (index < self.next_index || self.early.range(index..).next().is_some()) {
            return Err(Mismatch);
        }
        if self.buf.len() + self.early_bytes + data.len() > self.total {
            return Err(Mismatch);
        }
        if last {
            self.last_index = Some(index);
        }
        if index == self.next_index {
            self.buf.extend_from_slice(data);
            self.next_index += 1;
            while let Some(chunk) = self.early.remove(&self.next_index) {
                self.early_bytes -= chunk.len();
                self.buf.extend_from_slice(&chunk);
                self.next_index += 1;
            }
        } else {
            self.early_bytes += data.len();
            self.early.insert(index, data.to_vec());
        }
        match self.last_index {
            Some(l) if self.next_index == l + 1 => {
                if self.buf.len() == self.total {
                    Ok(Added::Complete)
                } else {
                    Err(Mismatch)
                }
            }
            _ => Ok(Added::Stored),
        }
    }

    /// The complete message (after [`Added::Complete`]).
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_reordered_chunks_reassemble() {
        let msg: Vec<u8> = (0..=255).collect();
        let chunks: Vec<&[u8]> = msg.chunks(100).collect();
        let mut p = Partial::new(msg.len());
        assert_eq!(p.add(0, false, chunks[0]), Ok(Added::Stored));
        assert_eq!(p.add(0, false, chunks[0]), Ok(Added::Duplicate));
        assert_eq!(p.add(1, false, chunks[1]), Ok(Added::Stored));
        assert_eq!(p.add(2, true, chunks[2]), Ok(Added::Complete));
        assert_eq!(p.finish(), msg);

        let mut p = Partial::new(msg.len());
        assert!(p.would_hold_early(2));
        assert_eq!(p.add(2, true, chunks[2]), Ok(Added::Stored));
        assert_eq!(p.held(), msg.len() + chunks[2].len());
        assert_eq!(p.add(1, false, chunks[1]), Ok(Added::Stored));
        assert_eq!(p.add(0, false, chunks[0]), Ok(Added::Complete));
        assert_eq!(p.finish(), msg);
    }

    #[test]
    fn contradictions_are_mismatches() {
        let mut p = Partial::new(10);
        assert_eq!(p.add(1, true, &[0; 5]), Ok(Added::Stored));
        assert_eq!(p.add(2, false, &[0; 1]), Err(Mismatch), "after the last");
        assert_eq!(p.add(0, true, &[0; 5]), Err(Mismatch), "second last");
        let mut p = Partial::new(4);
        assert_eq!(p.add(0, false, &[0; 3]), Ok(Added::Stored));
        assert_eq!(p.add(1, false, &[0; 3]), Err(Mismatch), "over the size");
        let mut p = Partial::new(4);
        assert_eq!(p.add(0, false, &[0; 2]), Ok(Added::Stored));
        assert_eq!(p.add(1, true, &[0; 1]), Err(Mismatch), "short of the size");
    }

    #[test]
    fn budget_refuses_over_limit_without_taking() {
        let mut b = Budget::new(100);
        assert_eq!(b.try_take(60), Ok(()));
        assert_eq!(b.try_take(41), Err(101));
        assert_eq!(b.used(), 60);
        assert_eq!(b.try_take(usize::MAX), Err(usize::MAX));
        b.give(60);
        assert_eq!(b.used(), 0);
    }
}
