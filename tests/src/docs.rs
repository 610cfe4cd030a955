//! What docs/metrics.md promises, read from the doc itself, so a test can
//! hold what the agent exports to what users are told.

use std::collections::BTreeMap;

use crate::{workspace_root, MetricPoint};

/// One metric's documented attributes: every one it may carry, and those
/// that must be on every point (not marked `*`, "only when known").
#[derive(Debug, Default, Clone)]
pub struct Documented {
    pub allowed: Vec<String>,
    pub required: Vec<String>,
}

/// The SLI table of docs/metrics.md: metric name -> its attributes.
pub fn documented_attributes() -> BTreeMap<String, Documented> {
    let text =
        std::fs::read_to_string(workspace_root().join("docs/metrics.md")).expect("docs/metrics.md");
    let table = text
        .split("<!-- metrics:begin -->")
        .nth(1)
        .and_then(|t| t.split("<!-- metrics:end -->").next())
        .expect("metrics table markers in docs/metrics.md");
    let mut out = BTreeMap::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        let mut d = Documented::default();
        for a in cells[4].split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let optional = a.ends_with('*');
            let key = a.trim_end_matches('*').trim_matches('`').to_owned();
            if !optional {
                d.required.push(key.clone());
            }
            d.allowed.push(key);
        }
        out.insert(name, d);
    }
    assert!(!out.is_empty(), "no rows in the metrics table");
    out
}

/// Every point of a documented SLI metric carries exactly its documented
/// attributes (all required ones, nothing unlisted); the overflow series is
/// the one exception the doc states. Returns the metrics that were checked.
pub fn assert_documented_attributes(points: &[MetricPoint]) -> Vec<String> {
    let docs = documented_attributes();
    let mut seen = vec![];
    for p in points {
        let Some(d) = docs.get(&p.name) else { continue };
        if p.attributes.get("otel.metric.overflow").map(String::as_str) == Some("true") {
            continue;
        }
        for k in p.attributes.keys() {
            assert!(
                d.allowed.contains(k),
                "{} carries `{k}`, which docs/metrics.md does not list: {:?}",
                p.name,
                p.attributes
            );
        }
        for k in &d.required {
            assert!(
                p.attributes.contains_key(k),
                "{} lacks `{k}`, which docs/metrics.md promises on every point: {:?}",
                p.name,
                p.attributes
            );
        }
        if !seen.contains(&p.name) {
            seen.push(p.name.clone());
        }
    }
    seen
}
