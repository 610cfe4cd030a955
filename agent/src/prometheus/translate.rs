//! OpenTelemetry to Prometheus, as the OpenTelemetry compatibility spec
//! ("Prometheus and OpenMetrics Compatibility") writes it: names and units
//! become `syscall_duration_seconds`, monotonic sums get `_total`,
//! attributes become labels with `_` for every character Prometheus does
//! not allow, the resource becomes `target_info`. The input is the OTLP
//! request the catalogue already produced (cumulative), so every name here
//! is derived from `aggregate/metrics.rs` and `telemetry.rs`, never listed.

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue, KeyValue},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric, number_data_point, Metric,
        ResourceMetrics,
    },
};

/// A metric family, ready to encode in either format.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    /// Sorted by labels, so output is stable from scrape to scrape.
    pub samples: Vec<Sample>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Hist),
}

/// A cumulative base-2 exponential histogram, as OTLP has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Hist {
    pub count: u64,
    pub sum: f64,
    pub scale: i32,
    pub zero_count: u64,
    pub zero_threshold: f64,
    /// OTLP index of `counts[0]`: bucket `i` holds (2^(i/2^scale), 2^((i+1)/2^scale)].
    pub offset: i32,
    pub counts: Vec<u64>,
}

/// The Prometheus metric name of an OpenTelemetry metric: the name
/// sanitized, the unit's Prometheus word appended unless already there,
/// `_total` for counters (the family name: histograms add `_bucket`,
/// `_sum` and `_count` per sample).
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut out = sanitize(name, true);
    if let Some(unit) = unit_word(unit, kind) {
        if !out.ends_with(&format!("_{unit}")) && out != unit {
            out.push('_');
            out.push_str(&unit);
        }
    }
    if kind == Kind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// The label name of an attribute key (`server.port` -> `server_port`).
pub fn label_name(key: &str) -> String {
    let mut out = sanitize(key, false);
    if out.starts_with("__") {
        // Reserved for Prometheus' own labels.
        out = format!("key{out}");
    }
    out
}

/// Characters outside `[a-zA-Z0-9_]` (and `:` in metric names) become `_`,
/// runs of `_` collapse, and a leading digit gets a `_` before it.
fn sanitize(s: &str, metric: bool) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// UCUM unit -> the word Prometheus names carry; annotations (`{error}`)
/// carry none, `1` is `ratio` for gauges only.
fn unit_word(unit: &str, kind: Kind) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit.starts_with('{') {
        return None;
    }
    if unit == "1" {
        return (kind == Kind::Gauge).then(|| "ratio".to_owned());
    }
    let word = |u: &str| -> String {
        match u {
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "min" => "minutes",
            "h" => "hours",
            "d" => "days",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "bit" => "bits",
            "%" => "percent",
            "Hz" => "hertz",
            other => return sanitize(other, false),
        }
        .to_owned()
    };
    Some(match unit.split_once('/') {
        Some((a, b)) => format!("{}_per_{}", word(a), word(b)),
        None => word(unit),
    })
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn labels(attrs: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(attrs.len());
    for kv in attrs {
        let name = label_name(&kv.key);
        let value = value_text(&kv.value);
        // Two keys that sanitize alike are joined with `;` (the spec's rule).
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
    out.sort();
    out
}

/// `target_info`: the resource's attributes, value 1.
fn target_info(rm: &ResourceMetrics) -> Family {
    let attrs = rm
        .resource
        .as_ref()
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default();
    Family {
        name: "target_info".to_owned(),
        help: "Target metadata".to_owned(),
        kind: Kind::Gauge,
        samples: vec![Sample {
            labels: labels(attrs),
            value: Value::Number(1.0),
        }],
    }
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => 0.0,
    }
}

/// One family per OTLP metric; `None` for what has no Prometheus form here
/// (delta data, which the endpoint never gets, and other point types).
fn family(m: &Metric) -> Option<Family> {
    let (kind, mut samples) = match m.data.as_ref()? {
        metric::Data::Sum(s) => {
            let kind = if s.is_monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let samples: Vec<Sample> = s
                .data_points
                .iter()
                .map(|p| Sample {
                    labels: labels(&p.attributes),
                    value: Value::Number(number(&p.value)),
                })
                .collect();
            (kind, samples)
        }
        metric::Data::Gauge(g) => (
            Kind::Gauge,
            g.data_points
                .iter()
                .map(|p| Sample {
                    labels: labels(&p.attributes),
                    value: Value::Number(number(&p.value)),
                })
                .collect(),
        ),
        metric::Data::ExponentialHistogram(h) => (
            Kind::Histogram,
            h.data_points
                .iter()
                .map(|p| {
                    let Buckets {
                        offset,
                        bucket_counts,
                    } = p.positive.clone().unwrap_or_default();
                    Sample {
                        labels: labels(&p.attributes),
                        value: Value::Histogram(Hist {
                            count: p.count,
                            sum: p.sum.unwrap_or(0.0),
                            scale: p.scale,
                            zero_count: p.zero_count,
                            zero_threshold: p.zero_threshold,
                            offset,
                            counts: bucket_counts,
                        }),
                    }
                })
                .collect(),
        ),
        _ => return None,
    };
    samples.sort_by(|a, b| a.labels.cmp(&b.labels));
    Some(Family {
        name: metric_name(&m.name, &m.unit, kind),
        help: m.description.clone(),
        kind,
        samples,
    })
}

/// Every family of a (cumulative) request's resource: `target_info` first,
/// then the metrics of every scope in order; metrics that translate to one
/// name are merged into one family.
pub fn families(rm: &ResourceMetrics) -> Vec<Family> {
    let mut out = vec![target_info(rm)];
    for sm in &rm.scope_metrics {
        for m in &sm.metrics {
            let Some(f) = family(m) else { continue };
            match out.iter_mut().find(|have| have.name == f.name) {
                Some(have) if have.kind == f.kind => have.samples.extend(f.samples),
                Some(_) => {} // a clash of kinds: the first wins
                None => out.push(f),
            }
        }
    }
    out
}

/// The Prometheus family name of every SLI and self-metric, derived from
/// the catalogues (docs/metrics.md's table).
pub fn doc_table() -> String {
    use crate::aggregate::metrics::{Instrument, Metric as Sli};
    use crate::telemetry::{Instrument as SelfInstrument, CATALOGUE};
    let mut out =
        String::from("| OpenTelemetry | Prometheus | type | labels |\n|---|---|---|---|\n");
    for m in Sli::all() {
        let s = m.spec();
        let kind = match s.instrument {
            Instrument::Histogram => Kind::Histogram,
            Instrument::Counter => Kind::Counter,
        };
        let labels: Vec<String> = s
            .attrs
            .iter()
            .map(|(a, _)| format!("`{}`", label_name(a.key())))
            .collect();
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            s.name,
            metric_name(s.name, s.unit, kind),
            kind_word(kind),
            labels.join(", ")
        ));
    }
    for m in &CATALOGUE {
        let kind = match m.instrument {
            SelfInstrument::Counter => Kind::Counter,
            SelfInstrument::Gauge => Kind::Gauge,
        };
        let label = m
            .dimension
            .map(|d| format!("`{}`", label_name(d.key())))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {label} |\n",
            m.name,
            metric_name(m.name, m.unit, kind),
            kind_word(kind),
        ));
    }
    for m in &crate::slo::METRICS {
        let kind = match m.instrument {
            crate::slo::SloInstrument::Counter => Kind::Counter,
            crate::slo::SloInstrument::Gauge => Kind::Gauge,
        };
        let labels: Vec<String> = m
            .attrs
            .iter()
            .map(|a| format!("`{}`", label_name(a)))
            .collect();
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            m.name,
            m.prometheus_name(),
            kind_word(kind),
            labels.join(", ")
        ));
    }
    out
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram (native over protobuf, classic in text)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        assert_eq!(
            metric_name("syscall.duration", "s", Kind::Histogram),
            "syscall_duration_seconds"
        );
        assert_eq!(
            metric_name("tcp.connect.errors", "{error}", Kind::Counter),
            "tcp_connect_errors_total"
        );
        assert_eq!(
            metric_name("syscope.export.duration", "s", Kind::Gauge),
            "syscope_export_duration_seconds"
        );
        assert_eq!(metric_name("x.ratio", "1", Kind::Gauge), "x_ratio");
        assert_eq!(metric_name("x", "1", Kind::Counter), "x_total");
        assert_eq!(
            metric_name("net.io", "By/s", Kind::Gauge),
            "net_io_bytes_per_seconds"
        );
        assert_eq!(metric_name("2xx..count", "", Kind::Gauge), "_2xx_count");
        assert_eq!(label_name("server.port"), "server_port");
        assert_eq!(label_name("otel.metric.overflow"), "otel_metric_overflow");
        assert_eq!(label_name("__x"), "_x");
        assert_eq!(label_name("9lives"), "_9lives");
    }

    #[test]
    fn doc_table_matches_docs() {
        crate::docgen::check_section("prometheus-names", &doc_table());
    }
}
