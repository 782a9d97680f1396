//! Every core state machine has the one drive contract of `core::drive` (issue 13; DESIGN.md
//! "One drive contract"):
//! - it implements [`Machine`], and [`drain`] on a fresh machine ends in its `Timeout`;
//! - in `sdk/src/core`, every public `now` parameter is a [`Millis`] and the last parameter,
//!   no public function takes a local time as `now_ms`, every `poll_output` takes
//!   `now: Millis`, and none of the older output shapes (`poll_timeout`, `poll_event`,
//!   `poll_transmit`, `poll_send`, `poll_probe`) is public.
//!
//! The source rules read every `.rs` file under `sdk/src/core` outside test modules.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};

use p3_lanes::core::client::Client;
use p3_lanes::core::drive::{drain, Machine, Millis, Polled};
use p3_lanes::core::lane::Lane;
use p3_lanes::core::music::Room;
use p3_lanes::core::mux::{Mux, MuxConfig, MuxOutput};
use p3_lanes::core::p2p::election::{Claim, Election};
use p3_lanes::core::p2p::mesh::{Mesh, MeshConfig};
use p3_lanes::core::p2p::tier::{Tier, TierConfig, TierMachine};
use p3_lanes::core::pwa::{Coordinator, GuardConfig};
use p3_lanes::core::sse::post::PostQueue;
use p3_lanes::core::sync::clock::{ClockConfig, ClockSync};
use p3_lanes::core::sync::follower::{Follower, FollowerConfig};

/// Drains `m` at `now` and returns how many outputs came before the `Timeout` and its deadline.
fn drained<M: Machine>(m: &mut M, now: Millis) -> (usize, Millis) {
    let mut n = 0;
    let next = drain(m, now, |o| {
        assert!(
            o.timeout().is_none(),
            "drain hands out only non-timeout outputs"
        );
        n += 1;
    });
    (n, next)
}

/// Compiles only if every machine of the issue implements the contract.
#[test]
fn every_machine_implements_the_trait() {
    fn machine<M: Machine>() {}
    machine::<Mux>();
    machine::<Client>();
    machine::<PostQueue>();
    machine::<ClockSync>();
    machine::<Follower>();
    machine::<Mesh>();
    machine::<TierMachine>();
    machine::<Election>();
    machine::<Coordinator>();
    machine::<Room>();
}

#[test]
fn every_machine_drains_to_its_timeout() {
    let t0 = Millis::from_u64(1_000);

    let mut mux = Mux::new(MuxConfig::for_lanes(&[Lane::Control, Lane::Data], 7)).unwrap();
    mux.handle_transport_resumed(t0);
    let mut frames = 0;
    let next = drain(&mut mux, t0, |o| {
        frames += usize::from(matches!(o, MuxOutput::Transmit(_)))
    });
    assert_eq!(frames, 1, "the resume frame");
    assert!(next > t0, "{next:?}");

    let mut posts = PostQueue::new();
    assert_eq!(drained(&mut posts, t0), (0, Millis::NEVER));

    let mut mesh = Mesh::new(MeshConfig::new("a", 1));
    mesh.handle_members(["a".to_string(), "b".to_string()], t0);
    let (n, _) = drained(&mut mesh, t0);
    assert!(n >= 1, "a link to b is wanted");

    let mut tier = TierMachine::new(TierConfig::default(), Tier::Socket);
    tier.handle_socket_open(t0);
    let (_, next) = drained(&mut tier, t0);
    assert!(!next.is_never(), "a server ping is scheduled");
    tier.handle_timeout(next);
    let (_, after) = drained(&mut tier, next);
    assert!(
        after > next && !after.is_never(),
        "the next ping: {after:?}"
    );

    let mut clock = ClockSync::new(ClockConfig::default(), t0);
    assert_eq!(
        drained(&mut clock, t0),
        (1, t0.plus(25.0)),
        "first burst probe, then 25 ms"
    );

    let mut follower = Follower::new(FollowerConfig::default());
    assert_eq!(drained(&mut follower, t0).1, Millis::NEVER);

    let mut election = Election::new("a", Claim::new(1, "b"));
    assert_eq!(drained(&mut election, t0), (0, Millis::NEVER));

    let mut coord = Coordinator::new("tab", &GuardConfig::default());
    assert_eq!(drained(&mut coord, t0), (0, Millis::NEVER));
    coord.claim("v2", t0);
    let (sent, deadline) = drained(&mut coord, t0);
    assert_eq!(sent, 1, "the claim is broadcast");
    assert!(deadline > t0 && !deadline.is_never(), "{deadline:?}");

    let mut room = Room::new("r", FollowerConfig::default(), None, t0);
    let (n, next) = drained(&mut room, t0);
    assert!(n >= 1, "the room's first clock probe");
    assert!(next > t0 && !next.is_never(), "{next:?}");
    room.handle_timeout(next);
    assert!(
        drained(&mut room, next).0 >= 1,
        "the next probe at the deadline"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("sdk/src/core is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The file's code before its test module, with line comments removed.
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `pub fn name(params)` in `code`: `(name, parameters split at top-level commas)`.
fn pub_fns(code: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("pub fn ") {
        rest = &rest[i + "pub fn ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = rest.find('(') else { break };
        let (mut depth, mut params, mut cur) = (0usize, Vec::new(), String::new());
        let mut prev = ' ';
        for c in rest[open..].chars() {
            let arrow = prev == '-' && c == '>';
            prev = c;
            match c {
                '>' if arrow => {}
                '(' | '<' | '[' | '{' => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                ')' | '>' | ']' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    params.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        params.push(cur);
        let params = params
            .into_iter()
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect();
        found.push((name, params));
    }
    found
}

/// Where a public function breaks the contract, if it does.
fn violation(name: &str, params: &[String]) -> Option<String> {
    const OLD: [&str; 5] = [
        "poll_timeout",
        "poll_event",
        "poll_transmit",
        "poll_send",
        "poll_probe",
    ];
    if OLD.contains(&name) {
        return Some("an older output shape: fold it into `poll_output`".into());
    }
    let names: Vec<&str> = params
        .iter()
        .map(|p| p.split(':').next().unwrap_or("").trim())
        .collect();
    if names.contains(&"now_ms") {
        return Some("a local time as `now_ms`: take `now: Millis`".into());
    }
    if let Some(i) = names.iter().position(|n| *n == "now" || *n == "_now") {
        if !params[i].ends_with(": Millis") {
            return Some(format!("`{}`: `now` must be a `Millis`", params[i]));
        }
        if i + 1 != params.len() {
            return Some("`now` must be the last parameter".into());
        }
    }
    if name == "poll_output" && !(params.len() == 2 && params[1].ends_with("now: Millis")) {
        return Some("`poll_output` takes `(&mut self, now: Millis)`".into());
    }
    None
}

/// Files exempt from the `now` rules (not from the `poll_*` rules), and why:
/// - the server's music authority and its offline reconcile work on the shared clock (server
///   wall ms), return their deliveries from each input and have no timers: their `now_ms` is
///   a reading of the shared clock, not the driver's `now`;
/// - the multiplexer's per-lane parts count whole ms and are driven only by the `Mux`, which
///   takes `now: Millis`;
/// - `drive.rs` defines the contract (its loops take the sink after `now`).
const EXEMPT_FILES: [&str; 5] = [
    "music/authority.rs",
    "sync/state.rs",
    "p2p/changes.rs",
    "mux/reliability.rs",
    "drive.rs",
];

#[test]
fn core_public_functions_follow_the_drive_contract() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let (mut bad, mut checked) = (Vec::new(), 0);
    for f in &files {
        let rel = f
            .strip_prefix(&core)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).expect("a readable source file");
        for (name, params) in pub_fns(&code(&text)) {
            checked += 1;
            if EXEMPT_FILES.contains(&rel.as_str()) && !name.starts_with("poll_") {
                continue;
            }
            if let Some(why) = violation(&name, &params) {
                bad.push(format!("{rel}: fn {name}({}): {why}", params.join(", ")));
            }
        }
    }
    assert!(checked > 200, "only {checked} public functions found");
    assert!(bad.is_empty(), "drive contract broken:\n{}", bad.join("\n"));
}

#[test]
fn the_scan_sees_each_kind_of_break() {
    let src = "impl X {\n    pub fn handle_input(&mut self, now: u64, bytes: &[u8]) {}\n    \
               pub fn handle_a(&mut self, now: Millis, b: u8) {}\n    \
               pub fn handle_b(&mut self, now_ms: f64) {}\n    \
               pub fn poll_timeout(&self) -> Option<u64> {}\n    \
               pub fn poll_output(&mut self) -> Option<Out> {}\n    \
               pub fn handle_ok(&mut self, f: impl FnOnce() -> Vec<(u8, u8)>, now: Millis) {}\n}";
    let found: Vec<_> = pub_fns(&code(src))
        .into_iter()
        .map(|(n, p)| (n.clone(), violation(&n, &p).is_some()))
        .collect();
    assert_eq!(
        found,
        [
            ("handle_input".to_string(), true),
            ("handle_a".to_string(), true),
            ("handle_b".to_string(), true),
            ("poll_timeout".to_string(), true),
            ("poll_output".to_string(), true),
            ("handle_ok".to_string(), false),
        ]
    );
}
