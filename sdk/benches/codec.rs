//! Codec benchmark: encoded size and encode/decode speed of the dictionary codec against
//! JSON (serde_json) and plain named-field MessagePack (rmp-serde), on messages shaped like
//! the seeds' (handshake, music-control, lane events, signaling, call quality).
//!
//! Run with `cargo bench -p p3-lanes --bench codec` (or `npm run bench`). Prints a table of
//! ratios against JSON measured in this run, and merges its figures into
//! `bench-results.json` at the repository root as `{name, value, unit, baseline, ratio}`.
//!
//! `cargo bench -p p3-lanes --bench codec -- --corpus-json` prints the corpus instead, as
//! `{"dictionary": <handshake dictionary v2>, "messages": [{"name", "value"}]}`: the Node.js
//! codec benchmark (`scripts/bench-codec-node.mjs`) reads it, so both run on one corpus.
//! Its `learned` list holds the sequences of the learned-shapes comparison below, with our
//! byte counts, so the Node bench compares them with msgpackr records.
//!
//! Learned shapes (PROTOCOL.md §8.3, issue 15): the bench also encodes message *sequences*
//! through one [`ShapeSender`] (as one lane would) and compares their bytes with plain
//! dictionary MessagePack of the same messages: the seed-shaped corpus's app messages sent
//! 10 times over, and seeded random corpora of repeated layouts the dictionary does not list
//! ([`random_corpus`]). `-- --learned` prints only that table.

use p3_lanes::core::codec::learned::{ShapeReceiver, ShapeSender};
use p3_lanes::core::codec::{decode_msgpack, encode_msgpack};
use p3_lanes::core::dictionary::Dictionary;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};

mod support;
use support::write_results;

fn corpus() -> Vec<(&'static str, Value)> {
    let d = Dictionary::current();
    vec![
        (
            "handshake request",
            json!({"clientId": "device-123", "wallet": "0x71C7656EC7ab88b098defB751B7401B5f6d8976F",
                   "capabilities": {"transports": ["websocket"], "encodings": ["msgpack", "json"], "lanes": [1, 2, 3, 4]},
                   "deviceInfo": {"platform": "web", "version": "1.0.0"}}),
        ),
        (
            "handshake response",
            json!({"sessionId": "7f1c2a9e-1b2c-4d5e-8f90-123456789abc", "transport": "websocket",
                   "lanes": [{"id": 1, "name": "Control", "encoding": "msgpack", "url": "/api/protocol/v2/session/7f1c2a9e-1b2c-4d5e-8f90-123456789abc/lane/1/stream"},
                             {"id": 2, "name": "Messaging", "encoding": "msgpack", "url": "/api/protocol/v2/session/7f1c2a9e-1b2c-4d5e-8f90-123456789abc/lane/2/stream"}],
                   "dictionary": d.to_wire(), "serverTime": 1735689600000u64, "ttlSeconds": 3600,
                   "protocol": {"version": "2.0.0", "features": ["msgpack", "dictionary", "priority"]}}),
        ),
        (
            "music-control",
            json!({"type": "music-control", "action": "seek",
                   "data": {"position": 45.2, "trackId": "abc123",
                            "track": {"id": "abc123", "title": "Morning Drive", "artist": "TrafficJamz", "duration": 215.4, "url": "/media/abc123.ogg"},
                            "timestamp": 1735689600123u64, "from": "user-17", "controllerId": "user-17"},
                   "sequence": 156, "signature": "9f86d081884c7d65"}),
        ),
        (
            "message:receive",
            json!({"type": "message:receive", "data": {"from": "0xabc", "content": "on my way, 5 min", "timestamp": 1735689600456u64, "encrypted": false}}),
        ),
        (
            "presence:update",
            json!({"type": "presence:update", "data": {"status": "online", "lastSeen": 1735689600789u64}}),
        ),
        (
            "typing:indicator",
            json!({"type": "typing:indicator", "data": {"from": "0xabc", "isTyping": true, "conversationId": "c-42"}}),
        ),
        (
            "pong",
            json!({"type": "pong", "clientTime": 123456.5, "serverTime": 1735689600000u64}),
        ),
        (
            "call stats",
            json!({"type": "stats", "data": {"rtt": 42.5, "jitter": 3.1, "packetLoss": 0.4, "bitrate": 48000, "codec": "opus/48000/2", "iceState": "connected", "timestamp": 1735689600000u64}}),
        ),
        (
            "ice candidate",
            json!({"type": "ice", "roomId": "room-7", "data": {"candidate": "candidate:842163049 1 udp 1677729535 192.0.2.10 54400 typ srflx raddr 0.0.0.0 rport 0 generation 0", "sdpMid": "0", "sdpMLineIndex": 0}}),
        ),
    ]
}

/// Median time per call of `f` over several rounds of about 40 ms each.
fn time_per_op(mut f: impl FnMut()) -> Duration {
    let mut iters = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() > Duration::from_millis(40) {
            break;
        }
        iters *= 2;
    }
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

struct Row {
    name: &'static str,
    bytes: usize,
    encode: Duration,
    decode: Duration,
}

/// Random corpus seeds (the bench and the Node bench use the same).
const SEEDS: [u64; 3] = [1, 2, 3];

/// Key name parts of [`random_corpus`]: camelCase app keys (those the dictionary lists are
/// skipped, so every layout is one the dictionary never saw).
const KEY_WORDS: &[&str] = &[
    "user", "room", "item", "order", "price", "status", "created", "updated", "device", "score",
    "level", "player", "color", "label", "note", "tag", "source", "target", "reply", "thread",
    "reaction", "emoji", "seen", "muted", "battery", "signal", "lat", "lng", "heading", "speed",
    "cart", "total", "channel", "avatar", "locale", "badge", "streak", "queue",
];
const KEY_SUFFIXES: &[&str] = &[
    "", "Id", "At", "Name", "Count", "Ms", "Url", "Kind", "State",
];

/// What a key of a random layout holds (fixed per key, as in an app's messages).
#[derive(Clone, Copy)]
enum Field {
    SmallInt,
    Timestamp,
    Quarter,
    Real,
    Flag,
    /// One of 4 short words drawn for this key.
    Enum(usize),
    Id,
    Text,
    /// An object of the layout with this index.
    Nested(usize),
}

/// A seeded random corpus: `layouts` layouts of 2..=8 keys the dictionary does not list
/// (a quarter of them nested in others), and `n` messages drawing layouts with a skew
/// (some layouts frequent, some rare), each value drawn by its key's [`Field`].
fn random_corpus(seed: u64, layouts: usize, n: usize) -> Vec<Value> {
    let dict = Dictionary::current();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut words: Vec<String> = Vec::new();
    let mut shapes: Vec<Vec<(String, Field)>> = Vec::new();
    for li in 0..layouts {
        let mut keys: Vec<(String, Field)> = Vec::new();
        while keys.len() < rng.usize(2..=8) {
            let w = KEY_WORDS[rng.usize(..KEY_WORDS.len())];
            let k = format!("{w}{}", KEY_SUFFIXES[rng.usize(..KEY_SUFFIXES.len())]);
            if dict.index_of(&k).is_some() || keys.iter().any(|(have, _)| *have == k) {
                continue;
            }
            let field = match rng.u8(0..20) {
                0..=3 => Field::SmallInt,
                4..=5 => Field::Timestamp,
                6 => Field::Quarter,
                7 => Field::Real,
                8..=9 => Field::Flag,
                10..=12 => {
                    for _ in 0..4 {
                        let len = rng.usize(3..=8);
                        words.push((0..len).map(|_| rng.lowercase()).collect());
                    }
                    Field::Enum(words.len() - 4)
                }
                13..=15 => Field::Id,
                16..=17 => Field::Text,
                // Nested: a layout defined before this one (none for the first).
                _ if li > 0 => Field::Nested(rng.usize(..li)),
                _ => Field::Flag,
            };
            keys.push((k, field));
        }
        shapes.push(keys);
    }
    fn value(
        rng: &mut fastrand::Rng,
        shapes: &[Vec<(String, Field)>],
        words: &[String],
        l: usize,
    ) -> Value {
        let mut map = serde_json::Map::new();
        for (k, field) in &shapes[l] {
            let v = match *field {
                Field::SmallInt => json!(rng.u32(0..1000)),
                Field::Timestamp => json!(1_735_689_600_000u64 + rng.u64(0..86_400_000)),
                Field::Quarter => json!(f64::from(rng.u32(0..4000)) / 4.0),
                Field::Real => json!(rng.f64() * 1000.0),
                Field::Flag => json!(rng.bool()),
                Field::Enum(i) => json!(words[i + rng.usize(..4)]),
                Field::Id => json!(format!("{:08x}", rng.u32(..))),
                Field::Text => {
                    let len = rng.usize(4..40);
                    json!((0..len).map(|_| rng.alphanumeric()).collect::<String>())
                }
                Field::Nested(c) => value(rng, shapes, words, c),
            };
            map.insert(k.clone(), v);
        }
        Value::Object(map)
    }
    // Skewed choice: layout i with weight 1 / (i + 1).
    let weights: Vec<f64> = (0..layouts).map(|i| 1.0 / (i + 1) as f64).collect();
    let sum: f64 = weights.iter().sum();
    (0..n)
        .map(|_| {
            let mut x = rng.f64() * sum;
            let l = weights
                .iter()
                .position(|w| {
                    x -= w;
                    x < 0.0
                })
                .unwrap_or(layouts - 1);
            value(&mut rng, &shapes, &words, l)
        })
        .collect()
}

/// The sequences of the learned-shapes comparison: (name, messages).
fn learned_sequences() -> Vec<(String, Vec<Value>)> {
    let apps: Vec<Value> = corpus()
        .into_iter()
        .filter(|(name, _)| *name != "handshake response")
        .map(|(_, v)| v)
        .collect();
    let mut seqs = vec![(
        "bench corpus app messages x10".to_string(),
        (0..10).flat_map(|_| apps.iter().cloned()).collect(),
    )];
    for seed in SEEDS {
        seqs.push((
            format!("random layouts seed {seed}"),
            random_corpus(seed, 12, 500),
        ));
    }
    seqs
}

/// Bytes of `msgs` sent in order on one lane: (plain dictionary MessagePack, learned
/// shapes). Checks that the receiver gets every message back exactly.
fn learned_bytes(msgs: &[Value], dict: &Dictionary) -> (usize, usize) {
    let (mut tx, mut rx) = (ShapeSender::new(), ShapeReceiver::new());
    let mut plain = 0;
    let mut learned = 0;
    for m in msgs {
        plain += encode_msgpack(m, Some(dict)).len();
        let bytes = tx.encode(m, Some(dict));
        learned += bytes.len();
        assert_eq!(
            &rx.decode(&bytes, Some(dict)).unwrap(),
            m,
            "learned round trip"
        );
    }
    (plain, learned)
}

/// Prints the learned-shapes table and returns its `bench-results.json` rows.
fn learned_table() -> Vec<Value> {
    let dict = Dictionary::current();
    println!("learned shapes: bytes of message sequences on one lane, dictionary v3, this run");
    println!(
        "{:<34} {:>6} {:>12} {:>12} {:>7}",
        "sequence", "msgs", "p3 dict", "p3 learned", "ratio"
    );
    let mut results = Vec::new();
    for (name, msgs) in learned_sequences() {
        let (plain, learned) = learned_bytes(&msgs, &dict);
        let ratio = learned as f64 / plain as f64;
        println!(
            "{name:<34} {:>6} {plain:>12} {learned:>12} {ratio:>7.3}",
            msgs.len()
        );
        results.push(json!({
            "name": format!("codec-learned.bytes.{name}"),
            "value": learned, "unit": "bytes",
            "baseline": format!("p3 dictionary v3 msgpack: {plain} bytes"),
            "ratio": ratio,
        }));
    }
    results
}

fn main() {
    if std::env::args().any(|a| a == "--corpus-json") {
        let messages: Vec<Value> = corpus()
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        let dict = Dictionary::current();
        let learned: Vec<Value> = learned_sequences()
            .into_iter()
            .map(|(name, msgs)| {
                let (plain, learned) = learned_bytes(&msgs, &dict);
                json!({"name": name, "messages": msgs,
                       "bytes": {"p3 dictionary": plain, "p3 learned shapes": learned}})
            })
            .collect();
        let out = json!({"dictionary": dict.to_wire(), "messages": messages, "learned": learned});
        println!("{out}");
        return;
    }
    if std::env::args().any(|a| a == "--learned") {
        write_results("codec-learned.", learned_table());
        return;
    }
    let dict = Dictionary::current();
    let corpus = corpus();
    let msgs: Vec<&Value> = corpus.iter().map(|(_, v)| v).collect();

    let json_bytes: Vec<Vec<u8>> = msgs
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    let named_bytes: Vec<Vec<u8>> = msgs
        .iter()
        .map(|v| rmp_serde::to_vec_named(v).unwrap())
        .collect();
    let dict_bytes: Vec<Vec<u8>> = msgs
        .iter()
        .map(|v| encode_msgpack(v, Some(&dict)))
        .collect();
    // Dictionary v1 indexes keys only: the row shows what v2's value indices add.
    let v1 = Dictionary::v1();
    let v1_bytes: Vec<Vec<u8>> = msgs.iter().map(|v| encode_msgpack(v, Some(&v1))).collect();
    for (v, b) in msgs.iter().zip(&dict_bytes) {
        assert_eq!(
            &decode_msgpack(b, Some(&dict)).unwrap(),
            *v,
            "dictionary codec must round-trip"
        );
    }
    let total = |bs: &[Vec<u8>]| bs.iter().map(Vec::len).sum::<usize>();

    let rows = [
        Row {
            name: "json (serde_json)",
            bytes: total(&json_bytes),
            encode: time_per_op(|| {
                for v in &msgs {
                    black_box(serde_json::to_vec(black_box(v)).unwrap());
                }
            }),
            decode: time_per_op(|| {
                for b in &json_bytes {
                    black_box(serde_json::from_slice::<Value>(black_box(b)).unwrap());
                }
            }),
        },
        Row {
            name: "msgpack named (rmp-serde)",
            bytes: total(&named_bytes),
            encode: time_per_op(|| {
                for v in &msgs {
                    black_box(rmp_serde::to_vec_named(black_box(v)).unwrap());
                }
            }),
            decode: time_per_op(|| {
                for b in &named_bytes {
                    black_box(rmp_serde::from_slice::<Value>(black_box(b)).unwrap());
                }
            }),
        },
        Row {
            name: "p3 dictionary v1 msgpack",
            bytes: total(&v1_bytes),
            encode: time_per_op(|| {
                for v in &msgs {
                    black_box(encode_msgpack(black_box(v), Some(&v1)));
                }
            }),
            decode: time_per_op(|| {
                for b in &v1_bytes {
                    black_box(decode_msgpack(black_box(b), Some(&v1)).unwrap());
                }
            }),
        },
        Row {
            name: "p3 dictionary v2 msgpack",
            bytes: total(&dict_bytes),
            encode: time_per_op(|| {
                for v in &msgs {
                    black_box(encode_msgpack(black_box(v), Some(&dict)));
                }
            }),
            decode: time_per_op(|| {
                for b in &dict_bytes {
                    black_box(decode_msgpack(black_box(b), Some(&dict)).unwrap());
                }
            }),
        },
    ];

    let base = &rows[0];
    println!(
        "codec benchmark: {} seed-shaped messages, ratios against JSON measured in this run",
        msgs.len()
    );
    println!(
        "{:<28} {:>8} {:>7} {:>12} {:>7} {:>12} {:>7}",
        "codec", "bytes", "ratio", "encode ns", "ratio", "decode ns", "ratio"
    );
    let mut results = Vec::new();
    for r in &rows {
        let (e, d) = (r.encode.as_nanos() as f64, r.decode.as_nanos() as f64);
        let (be, bd) = (base.encode.as_nanos() as f64, base.decode.as_nanos() as f64);
        println!(
            "{:<28} {:>8} {:>7.3} {:>12.0} {:>7.3} {:>12.0} {:>7.3}",
            r.name,
            r.bytes,
            r.bytes as f64 / base.bytes as f64,
            e,
            e / be,
            d,
            d / bd
        );
        for (metric, value, unit, baseline) in [
            ("bytes", r.bytes as f64, "bytes", base.bytes as f64),
            ("encode", e, "ns/corpus", be),
            ("decode", d, "ns/corpus", bd),
        ] {
            results.push(json!({
                "name": format!("codec.{metric}.{}", r.name),
                "value": value, "unit": unit,
                "baseline": format!("json (serde_json): {baseline:.0} {unit}"),
                "ratio": value / baseline,
            }));
        }
    }
    let per_msg: Vec<String> = corpus
        .iter()
        .zip(dict_bytes.iter().zip(&json_bytes))
        .map(|((n, _), (d, j))| format!("{n}: {}/{} B", d.len(), j.len()))
        .collect();
    println!("per message (dictionary/json): {}", per_msg.join(", "));
    write_results("codec.", results);
    write_results("codec-learned.", learned_table());
}
