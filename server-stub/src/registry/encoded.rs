//! A message in every encoding its receivers need: the one place that builds the
//! per-receiver encodings of a relayed or server message (WebSocket relay, SSE `POST`,
//! signaling on the Messaging lane, music deliveries). Built **outside** the registry lock
//! (transcoding is work proportional to the payload), then handed to
//! [`super::Registry::deliver`].

use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::lane::Encoding;
use p3_lanes::core::payload;
use serde_json::Value;
use std::borrow::Cow;

/// One encoding of a payload: bytes and the dictionary version they use.
#[derive(Clone, Debug)]
pub(crate) struct Variant<'a> {
    pub(crate) encoding: Encoding,
    pub(crate) bytes: Cow<'a, [u8]>,
    pub(crate) dict_version: u32,
}

/// A payload in each encoding asked for, at most one transcoding per encoding.
#[derive(Clone, Debug, Default)]
pub(crate) struct Encoded<'a> {
    variants: Vec<Variant<'a>>,
    /// The largest variant left out for exceeding the size limit, bytes (with the header).
    pub(crate) too_large: Option<usize>,
}

impl<'a> Encoded<'a> {
    /// `value` in every encoding of `wanted` (duplicates are fine), reusing `original` (the
    /// sender's bytes) for its own encoding. With `max_frame`, a variant whose frame could
    /// exceed it (`bytes + header_max`) is left out and reported in `too_large`; receivers in
    /// that encoding then get nothing. A value an encoding cannot carry is logged and left out.
    pub(crate) fn build(
        value: &Value,
        original: Option<Variant<'a>>,
        wanted: impl IntoIterator<Item = Encoding>,
        dict: &Dictionary,
        max_frame: Option<(usize, usize)>,
    ) -> Encoded<'a> {
        let mut e = Encoded::default();
        let mut tried: Vec<Encoding> = Vec::new();
        if let Some(o) = original {
            tried.push(o.encoding);
            e.keep(o, max_frame);
        }
        for enc in wanted {
            if tried.contains(&enc) {
                continue;
            }
            tried.push(enc);
            match payload::encode(value, enc, Some(dict)) {
                Ok((bytes, dict_version)) => e.keep(
                    Variant {
                        encoding: enc,
                        bytes: Cow::Owned(bytes),
                        dict_version,
                    },
                    max_frame,
                ),
                Err(err) => {
                    tracing::warn!(encoding = enc.as_str(), error = %err, "cannot encode; receivers in this encoding skipped");
                }
            }
        }
        e
    }

    fn keep(&mut self, v: Variant<'a>, max_frame: Option<(usize, usize)>) {
        if let Some((max, header)) = max_frame {
            let size = v.bytes.len().saturating_add(header);
            if size > max {
                self.too_large = Some(self.too_large.map_or(size, |s| s.max(size)));
                return;
            }
        }
        self.variants.push(v);
    }

    /// The variant in `encoding`, if built.
    pub(crate) fn get(&self, encoding: Encoding) -> Option<&Variant<'a>> {
        self.variants.iter().find(|v| v.encoding == encoding)
    }

    /// The JSON text, for SSE histories (ask for [`Encoding::Json`] when a receiver has one).
    pub(crate) fn json(&self) -> Option<&str> {
        std::str::from_utf8(&self.get(Encoding::Json)?.bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_variant_per_encoding_and_the_original_reused() {
        let dict = Dictionary::current();
        let v = json!({"text": "hi"});
        let original = Variant {
            encoding: Encoding::Json,
            bytes: Cow::Borrowed(br#"{"text":"hi"}"#),
            dict_version: 0,
        };
        let e = Encoded::build(
            &v,
            Some(original),
            [Encoding::Msgpack, Encoding::Json, Encoding::Msgpack],
            &dict,
            None,
        );
        assert_eq!(e.variants.len(), 2);
        assert_eq!(e.json(), Some(r#"{"text":"hi"}"#));
        assert!(matches!(
            e.get(Encoding::Json).unwrap().bytes,
            Cow::Borrowed(_)
        ));
        let small = Encoded::build(&v, None, [Encoding::Json], &dict, Some((10, 4)));
        assert!(small.get(Encoding::Json).is_none());
        assert_eq!(small.too_large, Some(13 + 4));
    }
}
