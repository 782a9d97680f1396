//! Unsigned LEB128 varints, the integer encoding of every frame header (PROTOCOL.md §5, §11).
//! One implementation for the v1 frame layout ([`crate::core::frame`]) and the multiplexer's
//! frames ([`crate::core::mux`]); each maps [`VarintError`] into its own error type.

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 64 bits (over 10 bytes, or a 10th byte above 1).
    Overflow,
}

/// Appends `v` as an unsigned LEB128 varint (1..=10 bytes).
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Bytes [`put`] writes for `v`.
pub fn len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads one varint from the front of `buf`, advancing it.
///
/// Errors: [`VarintError`]; never panics.
pub fn get(buf: &mut &[u8]) -> Result<u64, VarintError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(VarintError::Truncated)?;
        *buf = rest;
        let bits = u64::from(b & 0x7f);
        if i == 9 && bits > 1 {
            return Err(VarintError::Overflow);
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(VarintError::Overflow)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges() {
        let mut out = Vec::new();
        put(&mut out, 0);
        assert_eq!(out, [0]);
        assert_eq!(len(u64::MAX), 10);
        assert_eq!(get(&mut &[0x80][..]), Err(VarintError::Truncated));
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(get(&mut &overflow[..]), Err(VarintError::Overflow));
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put(&mut out, v);
            prop_assert_eq!(out.len(), len(v));
            let mut s = out.as_slice();
            prop_assert_eq!(get(&mut s).unwrap(), v);
            prop_assert!(s.is_empty());
        }
    }
}
