//! The two exposition formats Prometheus scrapes:
//!
//! - text (0.0.4), with classic histograms: one `le` bound per power of two
//!   of the kernel's layout (2^-26 s = 14.9 ns to 2^14 s = 16384 s, 41
//!   bounds and `+Inf`). At scale 3 every power of two is a bucket
//!   boundary, so each classic count is exact; only the resolution between
//!   two powers of two is lost (`histogram_quantile` within a factor of 2).
//! - protobuf (`io.prometheus.client.MetricFamily`, length-delimited), with
//!   native histograms: schema = the OTLP scale (3), the zero bucket and
//!   every populated bucket as they are, so nothing of the resolution is
//!   lost (quantiles within 4.33 %). The classic buckets ride along for
//!   scrapers that want them.
//!
//! The messages are declared here with prost (only these few fields).

use std::fmt::Write as _;

use prost::Message as _;
use syscope_common::hist::{NUM_BUCKETS, OTLP_INDEX_OFFSET, SCALE};

use super::translate::{Family, Hist, Kind, Value};

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The classic bounds: every power of two the layout covers, as exponents.
pub fn classic_exponents() -> std::ops::RangeInclusive<i32> {
    let per_octave = 1 << SCALE;
    OTLP_INDEX_OFFSET.div_euclid(per_octave)
        ..=(OTLP_INDEX_OFFSET + NUM_BUCKETS as i32).div_euclid(per_octave)
}

/// Cumulative count at or below 2^`exp` (the zero bucket included); exact
/// when 2^exp is a bucket boundary, which it is for any scale >= 0.
fn cumulative_at(h: &Hist, exp: i32) -> u64 {
    // Bucket i's upper bound is 2^((i+1)/2^scale) <= 2^exp  <=>  i < exp*2^scale.
    let below = if h.scale >= 0 {
        i64::from(exp) << h.scale
    } else {
        i64::from(exp) >> -h.scale
    };
    let n = (below - i64::from(h.offset)).clamp(0, h.counts.len() as i64) as usize;
    h.zero_count + h.counts[..n].iter().sum::<u64>()
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if v != 0.0 && (v.abs() < 1e-4 || v.abs() >= 1e21) {
        // Go's strconv 'g' form (what client_golang writes, so `le` values
        // read the same as elsewhere): shortest digits, two-digit exponent.
        let e = format!("{v:e}");
        let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        // Shortest text that reads back as the same f64; integers without ".0".
        format!("{v}")
    }
}

fn write_labels(out: &mut String, labels: &[(String, String)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra)
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label(v, out);
        out.push('"');
    }
    out.push('}');
}

/// The text exposition of `families`.
pub fn text(families: &[Family]) -> String {
    let exps = classic_exponents();
    let bounds: Vec<(i32, String)> = exps.map(|e| (e, float(2f64.powi(e)))).collect();
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            match &s.value {
                Value::Number(v) => {
                    out.push_str(&f.name);
                    write_labels(&mut out, &s.labels, None);
                    let _ = writeln!(out, " {}", float(*v));
                }
                Value::Histogram(h) => {
                    for (exp, le) in &bounds {
                        out.push_str(&f.name);
                        out.push_str("_bucket");
                        write_labels(&mut out, &s.labels, Some(("le", le)));
                        let _ = writeln!(out, " {}", cumulative_at(h, *exp));
                    }
                    out.push_str(&f.name);
                    out.push_str("_bucket");
                    write_labels(&mut out, &s.labels, Some(("le", "+Inf")));
                    let _ = writeln!(out, " {}", h.count);
                    out.push_str(&f.name);
                    out.push_str("_sum");
                    write_labels(&mut out, &s.labels, None);
                    let _ = writeln!(out, " {}", float(h.sum));
                    out.push_str(&f.name);
                    out.push_str("_count");
                    write_labels(&mut out, &s.labels, None);
                    let _ = writeln!(out, " {}", h.count);
                }
            }
        }
    }
    out
}

/// io.prometheus.client metrics.proto (proto2), the fields used here.
/// Repeated numbers are not packed, as proto2 writes them.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, tag = "1")]
        pub cumulative_count: u64,
        #[prost(double, tag = "2")]
        pub upper_bound: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub sample_count: u64,
        #[prost(double, tag = "2")]
        pub sample_sum: f64,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(sint32, tag = "5")]
        pub schema: i32,
        #[prost(double, tag = "6")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "7")]
        pub zero_count: u64,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, packed = "false", tag = "13")]
        pub positive_delta: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Gauge>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Counter>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }

    /// COUNTER = 0, GAUGE = 1, HISTOGRAM = 4.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub help: String,
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }
}

/// A native histogram: Prometheus' bucket `i` holds (2^((i-1)/2^s), 2^(i/2^s)],
/// OTLP's (2^(i/2^s), 2^((i+1)/2^s)]: the same bucket is one index higher.
/// Runs of empty buckets split the spans; counts are deltas from the
/// previous populated bucket.
fn native(h: &Hist, classic: &[(i32, f64)]) -> proto::Histogram {
    let mut spans: Vec<proto::BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let mut prev_count = 0i64;
    // Index (Prometheus) right after the last bucket put in a span.
    let mut next_index: Option<i32> = None;
    for (k, &n) in h.counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let index = h.offset + k as i32 + 1;
        match (next_index, spans.last_mut()) {
            (Some(next), Some(span)) if next == index => span.length += 1,
            (Some(next), _) => spans.push(proto::BucketSpan {
                offset: index - next,
                length: 1,
            }),
            (None, _) => spans.push(proto::BucketSpan {
                offset: index,
                length: 1,
            }),
        }
        next_index = Some(index + 1);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        deltas.push(n - prev_count);
        prev_count = n;
    }
    proto::Histogram {
        sample_count: h.count,
        sample_sum: h.sum,
        bucket: classic
            .iter()
            .map(|&(exp, bound)| proto::Bucket {
                cumulative_count: cumulative_at(h, exp),
                upper_bound: bound,
            })
            .collect(),
        schema: h.scale,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count,
        positive_span: spans,
        positive_delta: deltas,
    }
}

/// The protobuf exposition: length-delimited `MetricFamily` messages.
pub fn protobuf(families: &[Family]) -> Vec<u8> {
    let classic: Vec<(i32, f64)> = classic_exponents().map(|e| (e, 2f64.powi(e))).collect();
    let mut out = Vec::new();
    for f in families {
        let metric = f
            .samples
            .iter()
            .map(|s| {
                let label = s
                    .labels
                    .iter()
                    .map(|(name, value)| proto::LabelPair {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect();
                let mut m = proto::Metric {
                    label,
                    ..Default::default()
                };
                match (&s.value, f.kind) {
                    (Value::Number(v), Kind::Counter) => {
                        m.counter = Some(proto::Counter { value: *v })
                    }
                    (Value::Number(v), _) => m.gauge = Some(proto::Gauge { value: *v }),
                    (Value::Histogram(h), _) => m.histogram = Some(native(h, &classic)),
                }
                m
            })
            .collect();
        let family = proto::MetricFamily {
            name: f.name.clone(),
            help: f.help.clone(),
            r#type: Some(match f.kind {
                Kind::Counter => 0,
                Kind::Gauge => 1,
                Kind::Histogram => 4,
            }),
            metric,
        };
        // Writing to a Vec cannot fail.
        let _ = family.encode_length_delimited(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::translate::Sample;

    fn hist() -> Hist {
        // Buckets at OTLP indexes -40 (2^-5 .. 2^-4.875], -39, -30: 20 ms, 31 ms...
        Hist {
            count: 10,
            sum: 0.5,
            scale: 3,
            zero_count: 1,
            zero_threshold: 2f64.powi(-26),
            offset: -40,
            counts: vec![2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 4],
        }
    }

    #[test]
    fn classic_buckets_are_exact_at_powers_of_two() {
        assert_eq!(classic_exponents(), -26..=14);
        let h = hist();
        // 2^-5: below bucket -40's upper bound, so only the zero bucket.
        assert_eq!(cumulative_at(&h, -5), 1);
        // 2^-4 = upper bound of bucket -33: -40 and -39 in.
        assert_eq!(cumulative_at(&h, -4), 6);
        // 2^-3: bucket -30 (upper 2^(-29/8)) in.
        assert_eq!(cumulative_at(&h, -3), 10);
        assert_eq!(cumulative_at(&h, 14), 10);
        assert_eq!(cumulative_at(&h, -26), 1);
    }

    #[test]
    fn native_spans_and_deltas() {
        let p = native(&hist(), &[]);
        assert_eq!(p.schema, 3);
        assert_eq!(p.zero_count, 1);
        assert_eq!(
            p.positive_span,
            vec![
                proto::BucketSpan {
                    offset: -39,
                    length: 2
                },
                proto::BucketSpan {
                    offset: 8,
                    length: 1
                }
            ]
        );
        assert_eq!(p.positive_delta, vec![2, 1, 1]);
    }

    #[test]
    fn text_has_classic_buckets_and_escapes() {
        let f = Family {
            name: "syscall_duration_seconds".into(),
            help: "a\nb".into(),
            kind: Kind::Histogram,
            samples: vec![Sample {
                labels: vec![("process_executable_name".into(), "a\"b".into())],
                value: Value::Histogram(hist()),
            }],
        };
        let t = text(&[f]);
        assert!(t.contains("# HELP syscall_duration_seconds a\\nb\n"), "{t}");
        assert!(t.contains(
            "syscall_duration_seconds_bucket{process_executable_name=\"a\\\"b\",le=\"0.0625\"} 6\n"
        ), "{t}");
        assert!(t.contains("le=\"+Inf\"} 10\n"), "{t}");
        assert!(
            t.contains("syscall_duration_seconds_count{process_executable_name=\"a\\\"b\"} 10\n")
        );
        assert_eq!(t.matches("_bucket{").count(), 42);
    }

    #[test]
    fn floats_read_like_go() {
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.0625), "0.0625");
        assert_eq!(float(2f64.powi(-26)), "1.4901161193847656e-08");
        assert_eq!(float(16384.0), "16384");
        assert_eq!(float(0.0), "0");
        assert_eq!(float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn protobuf_round_trips() {
        let f = Family {
            name: "c_total".into(),
            help: String::new(),
            kind: Kind::Counter,
            samples: vec![Sample {
                labels: vec![],
                value: Value::Number(3.0),
            }],
        };
        let bytes = protobuf(&[f]);
        let m = proto::MetricFamily::decode_length_delimited(bytes.as_slice()).unwrap();
        assert_eq!(m.name, "c_total");
        assert_eq!(m.r#type, Some(0));
        assert_eq!(m.metric[0].counter.as_ref().unwrap().value, 3.0);
    }
}
