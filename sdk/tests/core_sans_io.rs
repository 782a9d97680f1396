//! `sdk/src/core` is sans-IO (DESIGN.md, STYLE.md): it never names a browser or runtime crate
//! (web-sys, js-sys, gloo, tokio, wasm-bindgen, web-time) and never reads a clock
//! (`Instant::now`, `SystemTime`, `Date.now`, `performance.now`): time comes in as an
//! argument. This test reads every `.rs` file under `sdk/src/core` and fails on any such use
//! in code (comments, which may name what is forbidden, are skipped).
//!
//! It also checks the wasm side's one spawner (DESIGN.md "One wasm runtime"): under
//! `sdk/src/wasm` only `runtime.rs` calls `spawn_local`; every driver goes through
//! `runtime::spawn`.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};

/// What the core must not contain, and why.
const FORBIDDEN: [(&str, &str); 14] = [
    ("web_sys", "a browser API crate"),
    ("js_sys", "a browser API crate"),
    ("wasm_bindgen", "the JS binding crate"),
    ("gloo", "a browser API crate"),
    ("tokio", "an async runtime"),
    ("web_time", "a clock crate"),
    ("Instant::now", "a clock read"),
    ("std::time::Instant", "the clock type"),
    ("SystemTime", "a clock read"),
    ("UNIX_EPOCH", "a clock read"),
    ("Date::now", "a clock read (js_sys)"),
    ("Date.now", "a clock read (JS)"),
    ("performance.now", "a clock read (JS)"),
    ("spawn_local", "a task spawner"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("sdk/src/core is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (line and doc comments; a `//` inside a string literal
/// cuts the line short, which can only hide code after it, never invent a finding).
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// Every forbidden use in `text`, as `(line number, token)`.
fn findings(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = code_of(line);
        for (token, _) in FORBIDDEN {
            if code.contains(token) {
                found.push((n + 1, token));
            }
        }
    }
    found
}

#[test]
fn core_uses_no_browser_runtime_or_clock() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(files.len() > 10, "found only {files:?} under {core:?}");
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("a readable source file");
        for (line, token) in findings(&text) {
            let why = FORBIDDEN.iter().find(|t| t.0 == token).map_or("", |t| t.1);
            bad.push(format!("{}:{line}: `{token}` ({why})", f.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "sdk/src/core must stay sans-IO:\n{}",
        bad.join("\n")
    );
}

#[test]
fn only_the_wasm_runtime_spawns() {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/wasm");
    let mut files = Vec::new();
    rust_files(&wasm, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("runtime.rs")),
        "found no runtime.rs in {files:?}"
    );
    let mut bad = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("runtime.rs")) {
        let text = std::fs::read_to_string(f).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            if code_of(line).contains("spawn_local") {
                bad.push(format!("{}:{}", f.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "only sdk/src/wasm/runtime.rs may call spawn_local (use runtime::spawn):\n{}",
        bad.join("\n")
    );
}

/// The scanner itself finds each forbidden use in code and skips comments.
#[test]
fn scanner_finds_uses_and_skips_comments() {
    let text = "use web_sys::WebSocket;\n\
                // web_sys in a comment is fine\n\
                /// so is `std::time::Instant::now()` in a doc\n\
                let t = std::time::Instant::now(); // and a trailing tokio\n\
                let d = js_sys::Date::now();\n";
    let got = findings(text);
    assert_eq!(
        got,
        vec![
            (1, "web_sys"),
            (4, "Instant::now"),
            (4, "std::time::Instant"),
            (5, "js_sys"),
            (5, "Date::now"),
        ]
    );
}
