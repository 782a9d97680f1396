//! What every benchmark of the project shares: merging its figures into `bench-results.json`
//! at the repository root, a list of `{name, value, unit, baseline, ratio}`.
//! Included by the p3-lanes benches and by server-stub's (`#[path]`).

use serde_json::Value;

/// Replaces this benchmark's entries (names starting with `prefix`) in bench-results.json
/// with `ours`, keeping every other benchmark's entries.
pub fn write_results(prefix: &str, mut ours: Vec<Value>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results.json");
    let mut all: Vec<Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    all.retain(|e| !e["name"].as_str().is_some_and(|n| n.starts_with(prefix)));
    all.append(&mut ours);
    std::fs::write(&path, serde_json::to_vec_pretty(&all).unwrap())
        .expect("write bench-results.json");
    println!("wrote {}", path.display());
}
