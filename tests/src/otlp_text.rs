//! Parser for what rotel-agent prints with `--debug-log metrics --debug-log logs
//! --debug-log-verbosity detailed`: metric points ([`parse`]) and log records
//! ([`parse_logs`]); each parser skips the other signal's requests.
//!
//! rotel mirrors the OpenTelemetry Collector's debug exporter, for example:
//!
//! ```text
//! ResourceMetrics #0
//! Resource attributes:
//!      -> service.name: Str(syscope)
//! ScopeMetrics #0
//! InstrumentationScope syscope 0.1.0
//! Metric #0
//! Descriptor:
//!      -> Name: syscall.duration
//!      -> Unit: s
//!      -> DataType: ExponentialHistogram
//!      -> AggregationTemporality: AGGREGATION_TEMPORALITY_CUMULATIVE
//! ExponentialHistogramDataPoints #0
//! Data point attributes:
//!      -> syscall.name: Str(openat)
//! StartTimestamp: 1795303123040957944
//! Timestamp: 1795303133040957944
//! Count: 11
//! Sum: 0.000123
//! Bucket [0, 0], Count: 1
//! Bucket (0.002322670146489691, 0.002532889755177753], Count: 2
//! ```
//!
//! It does not print an exponential histogram's scale, offset or zero_threshold: it prints
//! bucket bounds `exp(index * ln2 * 2^-scale)`, so scale and offset are recovered from them,
//! and zero_threshold cannot be observed at all. The zero bucket line only appears when
//! zero_count != 0. Lines this parser does not know (rotel's own log lines, exemplars,
//! explicit histograms' buckets, summaries' quantiles) are skipped, so log lines may interleave.
//!
//! Log records print as:
//!
//! ```text
//! ResourceLog #0
//! Resource SchemaURL:
//! Resource attributes:
//!      -> service.name: Str(syscope)
//! ScopeLogs #0
//! ScopeLogs SchemaURL:
//! InstrumentationScope syscope.slo 0.1.0
//! LogRecord #0
//! ObservedTimestamp: 1795303133040957945
//! Timestamp: 1795303133040957944
//! SeverityText: WARN
//! SeverityNumber: SEVERITY_NUMBER_WARN(13)
//! Body: Str(SLO checkout burning: page)
//! Attributes:
//!      -> slo.burn_rate: Double(14.4)
//!      -> slo.windows: Slice(Str(5m), Str(1h))
//!     Trace ID       :
//!     Span ID        :
//! Flags: 0
//! ```
//!
//! A body or string attribute holding a newline would span lines; such a record's text is
//! cut at the first one (the agent's events are one line).

use std::collections::BTreeMap;

/// One data point as a receiver got it, flattened with its metric and resource.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub name: String,
    pub unit: String,
    /// Instrumentation scope name ("" when the request had none).
    pub scope: String,
    pub resource: BTreeMap<String, String>,
    /// Values rendered as strings: `Str(x)` -> `x`, `Bool(true)` -> `true`, `Int(7)` -> `7`,
    /// `Double(0.5)` -> `0.5`; arrays, maps and bytes stay as rotel printed them (`Slice(...)`).
    pub attributes: BTreeMap<String, String>,
    pub start_unix_nano: u64,
    pub time_unix_nano: u64,
    pub value: PointValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// Int and double values both arrive here (rotel prints `7` for both 7 and 7.0).
    Sum {
        value: f64,
        monotonic: bool,
        temporality: Temporality,
    },
    Gauge(f64),
    ExpHistogram(ExpHistogram),
    /// Explicit-bucket histograms and summaries: not modelled, only their type name is kept.
    Other(String),
}

/// One log record as a receiver got it, flattened with its scope and resource.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogRecord {
    /// Instrumentation scope name ("" when the request had none).
    pub scope: String,
    pub resource: BTreeMap<String, String>,
    pub time_unix_nano: u64,
    pub observed_unix_nano: u64,
    /// As sent ("" when unset).
    pub severity_text: String,
    /// The number in `SEVERITY_NUMBER_WARN(13)`; 0 when unspecified.
    pub severity_number: i32,
    /// Rendered as attribute values are: `Str(x)` -> `x`; other kinds as rotel printed them
    /// (`Map(a:Int(1))`); "" when empty.
    pub body: String,
    /// Rendered as [`MetricPoint::attributes`] are: `Double(14.4)` -> `14.4`, arrays as
    /// printed (`Slice(Str(5m), Str(1h))`).
    pub attributes: BTreeMap<String, String>,
}

impl LogRecord {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// True when every (key, value) pair is among the record's attributes.
    pub fn has_attrs(&self, attrs: &[(&str, &str)]) -> bool {
        attrs.iter().all(|(k, v)| self.attr(k) == Some(*v))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    Unspecified,
    Delta,
    Cumulative,
}

/// An exponential histogram data point (positive buckets; negative ones are skipped since
/// latencies are never negative).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpHistogram {
    pub temporality: Temporality,
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Recovered from the printed bounds; 0 when there are no positive buckets.
    pub scale: i32,
    pub zero_count: u64,
    /// Recovered from the printed bounds; 0 when there are no positive buckets.
    pub offset: i32,
    pub bucket_counts: Vec<u64>,
}

impl ExpHistogram {
    /// ln(base) where base = 2^(2^-scale): the same factor rotel uses to print bounds.
    fn ln_base(&self) -> f64 {
        std::f64::consts::LN_2 * (-self.scale as f64).exp2()
    }

    /// base = 2^(2^-scale); bucket index i covers (base^i, base^(i+1)].
    pub fn base(&self) -> f64 {
        self.ln_base().exp()
    }

    /// Bounds (lower, upper] of the bucket at `position` in `bucket_counts`.
    pub fn bucket_bounds(&self, position: usize) -> (f64, f64) {
        let index = self.offset as f64 + position as f64;
        let f = self.ln_base();
        ((index * f).exp(), ((index + 1.0) * f).exp())
    }

    /// zero_count plus all positive bucket counts (what quantile() ranks over).
    pub fn bucket_total(&self) -> u64 {
        self.zero_count + self.bucket_counts.iter().sum::<u64>()
    }

    /// The q-quantile (0 < q <= 1) in the metric's unit: the representative value (2·lo·hi/(lo+hi)) of the bucket holding
    /// rank ceil(q * total), or 0 for the zero bucket. NaN when the histogram is empty.
    /// Resolution is the bucket width (about 9% at scale 3), so compare with a tolerance.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.bucket_total();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = self.zero_count;
        if seen >= rank {
            return 0.0;
        }
        for (pos, &n) in self.bucket_counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = self.bucket_bounds(pos);
                // Equal worst-case relative error at both ends of the bucket:
                // (base - 1) / (base + 1), 4.33 % at scale 3.
                return 2.0 * lo * hi / (lo + hi);
            }
        }
        unreachable!("rank is at most the total")
    }
}

impl MetricPoint {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// True when every (key, value) pair is among the point's attributes.
    pub fn has_attrs(&self, attrs: &[(&str, &str)]) -> bool {
        attrs.iter().all(|(k, v)| self.attr(k) == Some(*v))
    }

    /// The value of a Sum or Gauge point.
    pub fn number(&self) -> Option<f64> {
        match self.value {
            PointValue::Sum { value, .. } | PointValue::Gauge(value) => Some(value),
            _ => None,
        }
    }

    pub fn exp_histogram(&self) -> Option<&ExpHistogram> {
        match &self.value {
            PointValue::ExpHistogram(h) => Some(h),
            _ => None,
        }
    }
}

/// All points named `name` carrying all of `attrs`, in the order they were received.
pub fn select<'a>(
    points: &'a [MetricPoint],
    name: &'a str,
    attrs: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a MetricPoint> + 'a {
    points
        .iter()
        .filter(move |p| p.name == name && p.has_attrs(attrs))
}

/// The most recently received point named `name` carrying all of `attrs`.
pub fn latest<'a>(
    points: &'a [MetricPoint],
    name: &str,
    attrs: &[(&str, &str)],
) -> Option<&'a MetricPoint> {
    points
        .iter()
        .rev()
        .find(|p| p.name == name && p.has_attrs(attrs))
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    None,
    ResourceAttrs,
    Descriptor,
    PointAttrs,
    /// Scope attributes and exemplars: their `->` lines are not ours.
    Ignored,
}

#[derive(Default)]
struct Descriptor {
    name: String,
    unit: String,
    data_type: String,
    monotonic: bool,
    temporality: Option<Temporality>,
}

#[derive(Default)]
struct PointBuilder {
    attributes: BTreeMap<String, String>,
    start: u64,
    time: u64,
    value: Option<f64>,
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    zero_count: u64,
    /// (lower, upper, count) of positive buckets, as printed.
    buckets: Vec<(f64, f64, u64)>,
}

struct Parser {
    in_resource: bool,
    resource: BTreeMap<String, String>,
    scope: String,
    metric: Option<Descriptor>,
    point: Option<PointBuilder>,
    ctx: Ctx,
    out: Vec<MetricPoint>,
}

/// Parses everything rotel printed so far into data points, in the order received.
pub fn parse(text: &str) -> Vec<MetricPoint> {
    let mut p = Parser {
        in_resource: false,
        resource: BTreeMap::new(),
        scope: String::new(),
        metric: None,
        point: None,
        ctx: Ctx::None,
        out: Vec::new(),
    };
    for line in text.lines() {
        p.line(line.trim_end_matches('\r'));
    }
    p.flush();
    p.out
}

impl Parser {
    fn line(&mut self, line: &str) {
        if other_signal(line, "ResourceMetrics #") {
            // Another signal's request: its timestamps and attributes are not ours.
            self.flush();
            self.in_resource = false;
            self.metric = None;
            self.ctx = Ctx::None;
        } else if line.starts_with("ResourceMetrics #") {
            self.flush();
            self.in_resource = true;
            self.resource.clear();
            self.scope.clear();
            self.metric = None;
            self.ctx = Ctx::None;
        } else if line == "Resource attributes:" {
            self.ctx = Ctx::ResourceAttrs;
        } else if line.starts_with("ScopeMetrics #") {
            self.flush();
            self.scope.clear();
            self.metric = None;
            self.ctx = Ctx::None;
        } else if line == "InstrumentationScope attributes:" {
            self.ctx = Ctx::Ignored;
        } else if let Some(rest) = line.strip_prefix("InstrumentationScope ") {
            // "InstrumentationScope <name> <version>"
            self.scope = rest.split(' ').next().unwrap_or("").to_string();
            self.ctx = Ctx::None;
        } else if line.starts_with("Metric #") {
            self.flush();
            self.metric = Some(Descriptor::default());
            self.ctx = Ctx::None;
        } else if line == "Descriptor:" {
            self.ctx = Ctx::Descriptor;
        } else if [
            "NumberDataPoints #",
            "ExponentialHistogramDataPoints #",
            "HistogramDataPoints #",
            "SummaryDataPoints #",
        ]
        .iter()
        .any(|h| line.starts_with(h))
        {
            self.flush();
            self.point = Some(PointBuilder::default());
            self.ctx = Ctx::None;
        } else if line == "Data point attributes:" {
            self.ctx = Ctx::PointAttrs;
        } else if line == "Exemplars:" {
            self.ctx = Ctx::Ignored;
        } else if let Some(rest) = line.strip_prefix("     -> ") {
            self.arrow(rest);
        } else {
            self.field(line);
        }
    }

    /// A `     -> ...` line: an attribute or a descriptor field, depending on context.
    fn arrow(&mut self, rest: &str) {
        match self.ctx {
            Ctx::ResourceAttrs => {
                if let Some((k, v)) = split_attr(rest) {
                    self.resource.insert(k, v);
                }
            }
            Ctx::PointAttrs => {
                if let (Some(p), Some((k, v))) = (self.point.as_mut(), split_attr(rest)) {
                    p.attributes.insert(k, v);
                }
            }
            Ctx::Descriptor => {
                let Some(m) = self.metric.as_mut() else {
                    return;
                };
                if let Some(v) = rest.strip_prefix("Name: ") {
                    m.name = v.to_string();
                } else if let Some(v) = rest.strip_prefix("Unit: ") {
                    m.unit = v.to_string();
                } else if rest == "Unit:" {
                    m.unit.clear();
                } else if let Some(v) = rest.strip_prefix("DataType: ") {
                    m.data_type = v.to_string();
                } else if let Some(v) = rest.strip_prefix("IsMonotonic: ") {
                    m.monotonic = v == "true";
                } else if let Some(v) = rest.strip_prefix("AggregationTemporality: ") {
                    m.temporality = Some(match v {
                        "AGGREGATION_TEMPORALITY_DELTA" => Temporality::Delta,
                        "AGGREGATION_TEMPORALITY_CUMULATIVE" => Temporality::Cumulative,
                        _ => Temporality::Unspecified,
                    });
                }
            }
            Ctx::None | Ctx::Ignored => {}
        }
    }

    /// A data point field such as `Count: 3` or `Bucket (l, u], Count: n`.
    fn field(&mut self, line: &str) {
        let Some(p) = self.point.as_mut() else { return };
        let num = |s: &str| s.trim().parse::<f64>().ok();
        let int = |s: &str| s.trim().parse::<u64>().ok();
        if let Some(v) = line.strip_prefix("StartTimestamp: ") {
            p.start = int(v).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Timestamp: ") {
            p.time = int(v).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Value: ") {
            p.value = num(v);
        } else if let Some(v) = line.strip_prefix("Count: ") {
            p.count = int(v).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Sum: ") {
            p.sum = num(v);
        } else if let Some(v) = line.strip_prefix("Min: ") {
            p.min = num(v);
        } else if let Some(v) = line.strip_prefix("Max: ") {
            p.max = num(v);
        } else if let Some(v) = line.strip_prefix("Bucket [0, 0], Count: ") {
            p.zero_count = int(v).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Bucket (") {
            // "(lower, upper], Count: n"
            let parsed = v.split_once("], Count: ").and_then(|(bounds, n)| {
                let (lo, hi) = bounds.split_once(", ")?;
                Some((num(lo)?, num(hi)?, int(n)?))
            });
            if let Some(b) = parsed {
                p.buckets.push(b);
            }
        } else {
            // Unknown lines (log lines etc.) do not end an attribute block.
            return;
        }
        self.ctx = Ctx::None;
    }

    fn flush(&mut self) {
        let Some(p) = self.point.take() else { return };
        let Some(m) = self.metric.as_ref() else {
            return;
        };
        if !self.in_resource {
            return;
        }
        let temporality = m.temporality.unwrap_or(Temporality::Unspecified);
        let value = match m.data_type.as_str() {
            "Sum" => PointValue::Sum {
                value: p.value.unwrap_or(f64::NAN),
                monotonic: m.monotonic,
                temporality,
            },
            "Gauge" => PointValue::Gauge(p.value.unwrap_or(f64::NAN)),
            "ExponentialHistogram" => {
                let (scale, offset) = scale_and_offset(&p.buckets);
                PointValue::ExpHistogram(ExpHistogram {
                    temporality,
                    count: p.count,
                    sum: p.sum,
                    min: p.min,
                    max: p.max,
                    scale,
                    zero_count: p.zero_count,
                    offset,
                    bucket_counts: p.buckets.iter().map(|b| b.2).collect(),
                })
            }
            other => PointValue::Other(other.to_string()),
        };
        self.out.push(MetricPoint {
            name: m.name.clone(),
            unit: m.unit.clone(),
            scope: self.scope.clone(),
            resource: self.resource.clone(),
            attributes: p.attributes,
            start_unix_nano: p.start,
            time_unix_nano: p.time,
            value,
        });
    }
}

/// Recovers (scale, offset) from printed bounds: rotel prints exp(i * f) with
/// f = ln2 * 2^-scale, so f is the mean log-width of the buckets and i = ln(lower) / f.
fn scale_and_offset(buckets: &[(f64, f64, u64)]) -> (i32, i32) {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return (0, 0);
    };
    let width = (last.1.ln() - first.0.ln()) / buckets.len() as f64;
    if !width.is_finite() || width <= 0.0 {
        return (0, 0);
    }
    let scale = (std::f64::consts::LN_2 / width).log2().round() as i32;
    let f = std::f64::consts::LN_2 * (-scale as f64).exp2();
    let offset = (first.0.ln() / f).round() as i32;
    (scale, offset)
}

/// Whether `line` starts a request of a signal other than the one whose header is `ours`.
fn other_signal(line: &str, ours: &str) -> bool {
    ["ResourceMetrics #", "ResourceLog #", "ResourceSpans #"]
        .iter()
        .any(|h| *h != ours && line.starts_with(h))
}

/// Splits `key: Type(value)` into (key, rendered value). Keys may themselves contain ": ",
/// so the split is at the first ": " followed by a known value type.
fn split_attr(s: &str) -> Option<(String, String)> {
    let mut from = 0;
    while let Some(i) = s[from..].find(": ").map(|i| i + from) {
        if let Some(rendered) = render_value(&s[i + 2..]) {
            return Some((s[..i].to_string(), rendered));
        }
        from = i + 2;
    }
    None
}

/// A printed value rendered as text: `Str(x)` -> `x`, `Bool`/`Int`/`Double` -> their text,
/// `Empty` -> "", arrays, maps and bytes as printed. `None` if it is not a printed value.
fn render_value(v: &str) -> Option<String> {
    const TYPES: [&str; 7] = [
        "Str(", "Bool(", "Int(", "Double(", "Slice(", "Map(", "Bytes(",
    ];
    if v == "Empty" {
        return Some(String::new());
    }
    if !(v.ends_with(')') && TYPES.iter().any(|t| v.starts_with(t))) {
        return None;
    }
    let rendered = ["Str(", "Bool(", "Int(", "Double("]
        .iter()
        .find_map(|t| v.strip_prefix(t))
        .map(|inner| inner[..inner.len() - 1].to_string())
        .unwrap_or_else(|| v.to_string());
    Some(rendered)
}

#[derive(Clone, Copy, PartialEq)]
enum LogCtx {
    None,
    ResourceAttrs,
    RecordAttrs,
    /// Scope attributes: their `->` lines are not ours.
    Ignored,
}

struct LogParser {
    in_resource: bool,
    resource: BTreeMap<String, String>,
    scope: String,
    record: Option<LogRecord>,
    ctx: LogCtx,
    out: Vec<LogRecord>,
}

/// Parses everything rotel printed so far into log records, in the order received.
pub fn parse_logs(text: &str) -> Vec<LogRecord> {
    let mut p = LogParser {
        in_resource: false,
        resource: BTreeMap::new(),
        scope: String::new(),
        record: None,
        ctx: LogCtx::None,
        out: Vec::new(),
    };
    for line in text.lines() {
        p.line(line.trim_end_matches('\r'));
    }
    p.flush();
    p.out
}

impl LogParser {
    fn line(&mut self, line: &str) {
        if other_signal(line, "ResourceLog #") {
            self.flush();
            self.in_resource = false;
            self.ctx = LogCtx::None;
        } else if line.starts_with("ResourceLog #") {
            self.flush();
            self.in_resource = true;
            self.resource.clear();
            self.scope.clear();
            self.ctx = LogCtx::None;
        } else if !self.in_resource {
            // Metrics, traces, or a cut-off tail: nothing of ours until the next header.
        } else if line == "Resource attributes:" {
            self.ctx = LogCtx::ResourceAttrs;
        } else if line.starts_with("ScopeLogs #") {
            self.flush();
            self.scope.clear();
            self.ctx = LogCtx::None;
        } else if line == "InstrumentationScope attributes:" {
            self.ctx = LogCtx::Ignored;
        } else if let Some(rest) = line.strip_prefix("InstrumentationScope ") {
            // "InstrumentationScope <name> <version>"
            self.scope = rest.split(' ').next().unwrap_or("").to_string();
            self.ctx = LogCtx::None;
        } else if line.starts_with("LogRecord #") {
            self.flush();
            self.record = Some(LogRecord {
                scope: self.scope.clone(),
                resource: self.resource.clone(),
                ..LogRecord::default()
            });
            self.ctx = LogCtx::None;
        } else if line == "Attributes:" {
            self.ctx = LogCtx::RecordAttrs;
        } else if let Some(rest) = line.strip_prefix("     -> ") {
            match self.ctx {
                LogCtx::ResourceAttrs => {
                    if let Some((k, v)) = split_attr(rest) {
                        self.resource.insert(k, v);
                    }
                }
                LogCtx::RecordAttrs => {
                    if let (Some(r), Some((k, v))) = (self.record.as_mut(), split_attr(rest)) {
                        r.attributes.insert(k, v);
                    }
                }
                LogCtx::None | LogCtx::Ignored => {}
            }
        } else {
            self.field(line);
        }
    }

    /// A record field such as `SeverityText: WARN`.
    fn field(&mut self, line: &str) {
        let Some(r) = self.record.as_mut() else {
            return;
        };
        let value = |prefix: &str| line.strip_prefix(prefix).map(str::trim);
        if let Some(v) = value("ObservedTimestamp:") {
            r.observed_unix_nano = v.parse().unwrap_or(0);
        } else if let Some(v) = value("Timestamp:") {
            r.time_unix_nano = v.parse().unwrap_or(0);
        } else if let Some(v) = value("SeverityText:") {
            r.severity_text = v.to_string();
        } else if let Some(v) = value("SeverityNumber:") {
            // "SEVERITY_NUMBER_WARN(13)"
            r.severity_number = v
                .rsplit_once('(')
                .and_then(|(_, n)| n.strip_suffix(')'))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = value("Body:") {
            r.body = render_value(v).unwrap_or_else(|| v.to_string());
        } else if value("Flags:").is_some() {
            // The last line of a record.
        } else {
            // Unknown lines (log lines, trace ids) do not end an attribute block.
            return;
        }
        self.ctx = LogCtx::None;
    }

    fn flush(&mut self) {
        if let Some(r) = self.record.take() {
            self.out.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = include_str!("testdata/rotel_metrics_detailed.txt");

    fn attrs(p: &MetricPoint) -> Vec<(&str, &str)> {
        p.attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn parses_exponential_histogram() {
        let points = parse(GOLDEN);
        // Four requests (gRPC, HTTP+gzip, gRPC+gzip, HTTP) carry the same histogram.
        let hs: Vec<_> =
            select(&points, "syscall.duration", &[("syscall.name", "openat")]).collect();
        assert_eq!(hs.len(), 4);
        let tags: Vec<_> = hs.iter().map(|p| p.resource["test.tag"].as_str()).collect();
        assert_eq!(tags, ["grpc", "http-gzip", "grpc-gzip", "http"]);
        let p = hs[0];
        assert_eq!(p.unit, "s");
        assert_eq!(p.scope, "syscope");
        assert_eq!(
            attrs(p),
            [
                ("container.id", "abc"),
                ("process.executable.name", "foo"),
                ("syscall.name", "openat")
            ]
        );
        assert_eq!(p.resource["service.name"], "syscope");
        assert_eq!(p.resource["host.name"], "h1");
        assert_eq!(p.start_unix_nano, 1795303123040957944);
        assert_eq!(p.time_unix_nano, 1795303133040957944);
        let h = p.exp_histogram().unwrap();
        assert_eq!(
            *h,
            ExpHistogram {
                temporality: Temporality::Cumulative,
                count: 11,
                sum: Some(0.000123),
                min: None,
                max: None,
                scale: 3,
                zero_count: 1,
                offset: -70,
                bucket_counts: vec![2, 0, 5, 3],
            }
        );
        for other in &hs[1..] {
            assert_eq!(other.exp_histogram(), Some(h));
        }
    }

    #[test]
    fn parses_sums_and_gauges() {
        let points = parse(GOLDEN);
        let p = latest(&points, "syscall.errors", &[("error.type", "ENOENT")]).unwrap();
        assert_eq!(p.resource["test.tag"], "http");
        assert_eq!(p.unit, "{error}");
        assert_eq!(
            p.value,
            PointValue::Sum {
                value: 7.0,
                monotonic: true,
                temporality: Temporality::Cumulative
            }
        );
        assert_eq!(p.attr("syscall.name"), Some("openat"));
        let o = latest(
            &points,
            "syscall.errors",
            &[("otel.metric.overflow", "true")],
        )
        .unwrap();
        assert_eq!(o.attributes.len(), 1);
        assert_eq!(o.number(), Some(3.0));

        let d = latest(&points, "net.bytes", &[]).unwrap();
        assert_eq!(d.scope, "syscope.self");
        assert_eq!(
            attrs(d),
            [("direction", "tx"), ("port", "443"), ("ratio", "0.5")]
        );
        assert_eq!(
            d.value,
            PointValue::Sum {
                value: 2.5,
                monotonic: false,
                temporality: Temporality::Delta
            }
        );

        let g: Vec<_> = select(&points, "syscope.maps.used", &[]).collect();
        assert_eq!(g.len(), 8);
        assert_eq!(g[0].value, PointValue::Gauge(0.25));
        assert_eq!(g[1].value, PointValue::Gauge(42.0));
        assert_eq!(g[0].start_unix_nano, 0);

        // The second resource of the gRPC requests.
        let o: Vec<_> = select(&points, "other.gauge", &[]).collect();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].resource.len(), 1);
        assert_eq!(o[0].resource["service.name"], "other");
        assert_eq!(o[0].scope, "");
        assert_eq!(o[0].unit, "");
        assert_eq!(o[0].value, PointValue::Gauge(-3.0));
    }

    #[test]
    fn parses_edge_cases() {
        let points = parse(GOLDEN);
        let exp = |case: &str| {
            latest(&points, "edge.exp", &[("case", case)])
                .and_then(MetricPoint::exp_histogram)
                .unwrap()
                .clone()
        };
        let mm = exp("minmax-neg");
        assert_eq!(mm.temporality, Temporality::Delta);
        assert_eq!(
            (mm.min, mm.max, mm.sum),
            (Some(-1.2), Some(3.0), Some(-1.5))
        );
        assert_eq!((mm.scale, mm.offset, mm.zero_count), (1, 1, 0));
        assert_eq!(mm.bucket_counts, [1, 1]);

        let z = exp("zero-only");
        assert_eq!((z.count, z.zero_count, z.sum), (4, 4, None));
        assert!(z.bucket_counts.is_empty());
        assert_eq!(z.quantile(0.99), 0.0);
        let zp = latest(&points, "edge.exp", &[("case", "zero-only")]).unwrap();
        assert_eq!(zp.attr("weird key: x"), Some("a: b (c) -> d"));

        let hi = exp("hiscale");
        assert_eq!((hi.scale, hi.offset), (20, 33030144));
        assert_eq!(hi.bucket_counts, [3]);
        let q = hi.quantile(0.5);
        assert!((q / 2f64.powf(31.5) - 1.0).abs() < 1e-6, "{q}");

        let neg = exp("negscale");
        assert_eq!((neg.scale, neg.offset), (-2, 1));
        assert_eq!(neg.bucket_counts, [1, 0, 1]);

        let e = exp("empty");
        assert_eq!((e.count, e.scale, e.offset), (0, 0, 0));
        assert!(e.quantile(0.5).is_nan());

        let h = latest(&points, "edge.hist", &[]).unwrap();
        assert_eq!(h.value, PointValue::Other("Histogram".into()));
        let s = latest(&points, "edge.summary", &[]).unwrap();
        assert_eq!(s.value, PointValue::Other("Summary".into()));

        let g: Vec<_> = select(&points, "edge.gauge", &[]).collect();
        assert_eq!(g.len(), 4);
        assert_eq!(g[0].attr("arr"), Some("Slice(Str(x), Int(2))"));
        assert_eq!(g[0].attr("bytes"), Some("Bytes([1, 97, 98])"));
        assert_eq!(g[0].attr("empty"), Some(""));
        assert_eq!(g[0].attr("big"), Some("4611686018427387904"));
        assert_eq!(g[0].attr("neg"), Some("-0.000000125"));
        assert!(g[0].number().unwrap().is_nan());
        assert_eq!(g[1].number(), Some(1e21));
        assert!(g[3].number().unwrap().is_nan());
        assert_eq!(g[0].scope, "edge.scope");
        // Exemplar and scope attributes must not leak into point or resource attributes.
        assert!(points.iter().all(|p| !p.attributes.contains_key("ex")));
        assert!(points
            .iter()
            .all(|p| !p.resource.contains_key("scope.attr")));

        let n = latest(&points, "noresource", &[]).unwrap();
        assert!(n.resource.is_empty());
        assert_eq!(n.number(), Some(-5.0));
        assert_eq!(n.time_unix_nano, 0);
    }

    #[test]
    fn robust_to_interleaved_log_lines_and_partial_heads() {
        // Colored log lines between any two lines, CRLF, and a cut-off tail of a previous dump.
        let log =
            "\x1b[2m2026-11-21T23:18:51.771922Z\x1b[0m \x1b[32m INFO\x1b[0m Something happened.";
        let mut noisy = String::from("Value: 99\n     -> stray: Str(x)\nBucket (1, 2], Count: 5\n");
        for line in GOLDEN.lines() {
            noisy.push_str(line);
            noisy.push_str("\r\n");
            noisy.push_str(log);
            noisy.push('\n');
        }
        // Debug text, since NaN gauges make == false.
        assert_eq!(
            format!("{:?}", parse(&noisy)),
            format!("{:?}", parse(GOLDEN))
        );
        // gRPC requests: 6 points + 1 in a second resource; HTTP: 6; the edge-case request: 12.
        assert_eq!(parse(GOLDEN).len(), 2 * 7 + 2 * 6 + 12);
    }

    #[test]
    fn quantile_picks_bucket_representative() {
        let h = ExpHistogram {
            temporality: Temporality::Cumulative,
            count: 11,
            sum: None,
            min: None,
            max: None,
            scale: 3,
            zero_count: 1,
            offset: -70,
            bucket_counts: vec![2, 0, 5, 3],
        };
        let mid = |pos| {
            let (lo, hi) = h.bucket_bounds(pos);
            2.0 * lo * hi / (lo + hi)
        };
        assert_eq!(h.quantile(0.05), 0.0); // rank 1: zero bucket
        assert_eq!(h.quantile(0.2), mid(0)); // rank 3
        assert_eq!(h.quantile(0.5), mid(2)); // rank 6
        assert_eq!(h.quantile(1.0), mid(3)); // rank 11
        let (lo, hi) = h.bucket_bounds(0);
        assert!((lo - 2f64.powf(-70.0 / 8.0)).abs() < 1e-15);
        assert!((hi / lo - h.base()).abs() < 1e-12);
        assert!((h.base() - 2f64.powf(0.125)).abs() < 1e-12);
    }

    const LOGS: &str = include_str!("testdata/rotel_logs_detailed.txt");

    #[test]
    fn parses_log_records() {
        let logs = parse_logs(LOGS);
        assert_eq!(logs.len(), 3);
        let r = &logs[0];
        assert_eq!(r.scope, "syscope.slo");
        assert_eq!(r.resource["service.name"], "syscope");
        assert_eq!(r.resource["host.name"], "h1");
        assert_eq!(r.time_unix_nano, 1795303133040957944);
        assert_eq!(r.observed_unix_nano, 1795303133040957945);
        assert_eq!((r.severity_text.as_str(), r.severity_number), ("WARN", 13));
        assert_eq!(r.body, "SLO checkout burning: page");
        let attrs: Vec<(&str, &str)> = r
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            [
                ("slo.burn_rate", "14.4"),
                ("slo.count", "7"),
                ("slo.firing", "true"),
                ("slo.name", "checkout"),
                ("slo.windows", "Slice(Str(5m), Str(1h))"),
                ("weird key: x", "a: b (c) -> d"),
            ]
        );
        assert!(r.has_attrs(&[("slo.name", "checkout"), ("slo.count", "7")]));
        let r = &logs[1];
        assert_eq!((r.severity_text.as_str(), r.severity_number), ("INFO", 9));
        assert_eq!(r.body, "SLO checkout recovered");
        assert_eq!(r.observed_unix_nano, 0);
        assert_eq!(r.scope, "syscope.slo");
        assert_eq!(r.attributes.len(), 1);
        // No resource attributes, no scope, a map body, an unset severity.
        let r = &logs[2];
        assert!(r.resource.is_empty());
        assert_eq!(r.scope, "");
        assert_eq!((r.severity_text.as_str(), r.severity_number), ("", 0));
        assert_eq!(r.body, "Map(a:Int(1))");
        assert_eq!(r.attr("d"), Some("0.5"));
    }

    /// Metrics and logs in one output: each parser keeps to its own signal (a log record's
    /// `Timestamp:` must not land on the metric point printed before it, and back).
    #[test]
    fn metrics_and_logs_do_not_mix() {
        let points = parse(LOGS);
        assert_eq!(points.len(), 1);
        let g = &points[0];
        assert_eq!((g.name.as_str(), g.time_unix_nano), ("g", 5));
        assert_eq!(g.value, PointValue::Gauge(2.5));
        assert_eq!(attrs(g), [("k", "v")]);
        assert_eq!(g.resource.len(), 1);
        assert!(parse_logs(GOLDEN).is_empty());
        let both = format!("{GOLDEN}{LOGS}{GOLDEN}");
        assert_eq!(parse_logs(&both), parse_logs(LOGS));
        assert_eq!(
            format!("{:?}", parse(&both)),
            format!(
                "{:?}",
                [parse(GOLDEN), points.clone(), parse(GOLDEN)].concat()
            )
        );
    }

    #[test]
    fn split_attr_types() {
        let s = |x: &str| split_attr(x).unwrap();
        assert_eq!(s("a: Str(b)"), ("a".into(), "b".into()));
        assert_eq!(s("a: Str()"), ("a".into(), "".into()));
        assert_eq!(s("a: Str(x: Int(1))"), ("a".into(), "x: Int(1)".into()));
        assert_eq!(s("k: Bool(false)"), ("k".into(), "false".into()));
        assert_eq!(s("k: Map(a:Str(b))"), ("k".into(), "Map(a:Str(b))".into()));
        assert_eq!(split_attr("no value"), None);
    }
}
