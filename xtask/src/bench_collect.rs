//! The collection part of `cargo xtask bench`: a full map read key by key,
//! with a raw `BPF_MAP_LOOKUP_BATCH` loop, and by the agent's collection
//! path, side by side in one run (agent/examples/collect_bench.rs does the
//! measuring; this builds it, runs it and renders its figures).

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context, Result};

/// Full-map collection within this factor of a raw batch read (issue 13).
const TARGET_RATIO: f64 = 1.5;

/// Returns the markdown section and its figures as a JSON object.
pub fn section(root: &Path, quick: bool) -> Result<(String, String)> {
    crate::sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "--release",
                "-p",
                "syscope",
                "--example",
                "collect_bench",
            ]),
    )?;
    let bin = root.join("target/release/examples/collect_bench");
    let rounds = if quick { "7" } else { "21" };
    eprintln!("collection: a full map, {rounds} rounds");
    let out = Command::new(&bin)
        .args(["--rounds", rounds])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}\n{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = String::from_utf8(out.stdout)?.trim().to_owned();
    let md = render(&json)?;
    Ok((md, json))
}

/// The markdown for collect_bench's JSON line.
fn render(json: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("collect_bench printed {json}"))?;
    let f = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {json}"));
    let (per_key, raw, changed, idle) = (
        f("per_key_ms")?,
        f("raw_batch_ms")?,
        f("collect_changed_ms")?,
        f("collect_idle_ms")?,
    );
    let mut md = String::new();
    let _ = writeln!(
        md,
        "**Collection** of full maps: standalone kernel maps shaped like the agent's syscall \
         maps ({} latency histograms of {} bytes in a slotted map: a key hash to slots of a \
         mapped array; + {} error counters in a hash map; their default sizes, all filled), \
         every entry updated between rounds (untimed); medians of {} rounds.",
        f("latency_entries")?,
        f("histogram_bytes")?,
        f("error_entries")?,
        f("rounds")?
    );
    let _ = writeln!(md);
    let _ = writeln!(md, "| read of both maps | ms (median) | x raw batch |");
    let _ = writeln!(md, "|---|---:|---:|");
    for (name, ms) in [
        (
            "(a) key by key (aya iter and a lookup per slot: the fallback's route)",
            per_key,
        ),
        (
            "(b) raw BPF_MAP_LOOKUP_BATCH loop (keys, values array, errors) into preallocated buffers",
            raw,
        ),
        (
            "(c) the agent's collection, every entry changed (a delta each)",
            changed,
        ),
        ("(c') the agent's collection, no entry changed", idle),
    ] {
        let _ = writeln!(md, "| {name} | {ms:.2} | {:.2} |", ms / raw);
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| target | measured | limit | result |\n|---|---:|---:|---|"
    );
    for (name, ratio) in [
        (
            "full-map collection, every entry changed (c) / raw batch read (b)",
            changed / raw,
        ),
        (
            "full-map collection, none changed (c') / raw batch read (b)",
            idle / raw,
        ),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {ratio:.2} | {TARGET_RATIO} | {} |",
            if ratio <= TARGET_RATIO {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_collect_bench_output() {
        let md = super::render(
            r#"{"latency_entries": 4096, "error_entries": 4096, "histogram_bytes": 1312, "rounds": 21, "deltas_when_changed": 8192, "per_key_ms": 12.0, "raw_batch_ms": 2.0, "collect_changed_ms": 5.0, "collect_idle_ms": 2.5}"#,
        )
        .unwrap();
        assert!(
            md.contains(
                "| (b) raw BPF_MAP_LOOKUP_BATCH loop (keys, values array, errors) into preallocated buffers | 2.00 | 1.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("| 2.50 | 1.5 | MISSED |"), "{md}");
        assert!(md.contains("| 1.25 | 1.5 | met |"), "{md}");
    }
}
