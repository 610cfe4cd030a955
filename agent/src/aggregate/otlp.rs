//! Series to OTLP: one `ExportMetricsServiceRequest` per interval, built from
//! the kernel's buckets without re-bucketing (the layouts are the same).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric, number_data_point,
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint,
        Metric as Metric_, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};
use syscope_common::hist::{OTLP_INDEX_OFFSET, SCALE, ZERO_THRESHOLD_S};

use super::{
    metrics::Instrument, Aggregator, Attr, Attrs, HistValue, Metric, MetricSeries, Series,
};
use crate::config::{ResourceConfig, Temporality};

/// Marks the series that holds what the cardinality limit folded.
pub const ATTR_OVERFLOW: &str = "otel.metric.overflow";

/// The OTLP attributes of a series of `m`, in the catalogue's order.
fn attributes(a: &Attrs, m: Metric) -> Vec<KeyValue> {
    m.spec()
        .attrs
        .iter()
        .filter_map(|(attr, _)| match attr {
            Attr::ServerPort => a.port.map(|p| KeyValue {
                key: attr.key().into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(p.into())),
                }),
                ..Default::default()
            }),
            _ => a.value(*attr).map(|v| kv_str(attr.key(), v)),
        })
        .collect()
}

pub fn kv_str(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kv_bool(k: &str, v: bool) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(v)),
        }),
        ..Default::default()
    }
}

/// Resource attributes per the OTel semantic conventions.
pub fn resource(cfg: &ResourceConfig) -> Resource {
    let mut attrs = vec![
        kv_str("service.name", cfg.service_name.clone()),
        kv_str("service.version", env!("CARGO_PKG_VERSION")),
        kv_str("host.name", hostname()),
        kv_str("host.arch", host_arch()),
        kv_str("os.type", "linux"),
        kv_str("telemetry.sdk.name", "syscope"),
        kv_str("telemetry.sdk.language", "rust"),
    ];
    for (k, v) in &cfg.attributes {
        // OTEL_RESOURCE_ATTRIBUTES may override our detected values, except
        // service.name, which OTEL_SERVICE_NAME already resolved.
        if k == "service.name" {
            continue;
        }
        attrs.retain(|a| &a.key != k);
        attrs.push(kv_str(k, v.clone()));
    }
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

/// `host.arch` values from the semantic conventions.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The series to export this interval and the value to send for each:
/// cumulative sends every live series, delta only the changed ones.
fn points<'a, V: super::Value>(
    agg: &'a Aggregator,
    metric: Metric,
    m: &'a MetricSeries<V>,
    t: Temporality,
) -> impl Iterator<Item = (Vec<KeyValue>, u64, &'a V)> + 'a {
    let start_delta = nanos(agg.interval_start);
    let pick = move |s: &'a Series<V>| -> Option<(u64, &'a V)> {
        match t {
            Temporality::Cumulative => Some((nanos(s.start), &s.cumulative)),
            Temporality::Delta => s.delta.as_ref().map(|d| (start_delta, d)),
        }
    };
    let regular = m
        .series
        .iter()
        .filter_map(move |(a, s)| pick(s).map(|(t, v)| (attributes(a, metric), t, v)));
    let overflow = m
        .overflow
        .iter()
        .filter_map(move |s| pick(s).map(|(t, v)| (vec![kv_bool(ATTR_OVERFLOW, true)], t, v)));
    regular.chain(overflow)
}

fn exp_point(
    attrs: Vec<KeyValue>,
    start: u64,
    time: u64,
    h: &HistValue,
) -> ExponentialHistogramDataPoint {
    // Send only the populated span of buckets; offset keeps indexes exact.
    let first = h.buckets.iter().position(|&n| n != 0);
    let last = h.buckets.iter().rposition(|&n| n != 0);
    let positive = match (first, last) {
        (Some(f), Some(l)) => Some(Buckets {
            offset: OTLP_INDEX_OFFSET + f as i32,
            bucket_counts: h.buckets[f..=l].to_vec(),
        }),
        _ => None,
    };
    ExponentialHistogramDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: h.count(),
        sum: Some(h.sum_ns as f64 * 1e-9),
        scale: SCALE,
        zero_count: h.zero,
        zero_threshold: ZERO_THRESHOLD_S,
        positive,
        ..Default::default()
    }
}

pub fn temporality(t: Temporality) -> AggregationTemporality {
    match t {
        Temporality::Cumulative => AggregationTemporality::Cumulative,
        Temporality::Delta => AggregationTemporality::Delta,
    }
}

/// The metric `m` with this interval's points; `None` without any.
fn metric(agg: &Aggregator, m: Metric, time: u64, t: Temporality) -> Option<Metric_> {
    let spec = m.spec();
    let temporality = temporality(t) as i32;
    let data = match spec.instrument {
        Instrument::Histogram => {
            let data_points: Vec<_> = points(agg, m, agg.hist(m), t)
                .map(|(a, start, h)| exp_point(a, start, time, h))
                .collect();
            (!data_points.is_empty()).then_some(metric::Data::ExponentialHistogram(
                ExponentialHistogram {
                    data_points,
                    aggregation_temporality: temporality,
                },
            ))
        }
        Instrument::Counter => {
            let data_points: Vec<_> = points(agg, m, agg.counter(m), t)
                .map(|(a, start, n)| NumberDataPoint {
                    attributes: a,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    value: Some(number_data_point::Value::AsInt(*n as i64)),
                    ..Default::default()
                })
                .collect();
            (!data_points.is_empty()).then_some(metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: temporality,
                is_monotonic: true,
            }))
        }
    }?;
    Some(Metric_ {
        name: spec.name.into(),
        description: spec.description.into(),
        unit: spec.unit.into(),
        data: Some(data),
        ..Default::default()
    })
}

/// This interval's SLI metrics, in catalogue order (empty: nothing to send).
pub fn sli_metrics(agg: &Aggregator) -> Vec<Metric_> {
    sli_metrics_as(agg, agg.temporality)
}

/// [`sli_metrics`] in temporality `t`: the aggregator keeps both, and the
/// Prometheus endpoint always wants cumulative values.
pub fn sli_metrics_as(agg: &Aggregator, t: Temporality) -> Vec<Metric_> {
    let time = nanos(agg.interval_end);
    Metric::all()
        .filter_map(|m| metric(agg, m, time, t))
        .collect()
}

/// An instrumentation scope of this agent: `syscope` for the SLIs (see
/// `telemetry::SCOPE` for the agent's own metrics).
pub fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// This interval's request: the resource, and the SLI scope when any metric
/// has points. The exporter adds the agent's own scope to it at send time,
/// so an interval without SLI points is still sent.
pub fn build_request(agg: &Aggregator, resource: &Resource) -> ExportMetricsServiceRequest {
    build_request_as(agg, resource, agg.temporality)
}

/// [`build_request`] in temporality `t`.
pub fn build_request_as(
    agg: &Aggregator,
    resource: &Resource,
    t: Temporality,
) -> ExportMetricsServiceRequest {
    let metrics = sli_metrics_as(agg, t);
    let scope_metrics = if metrics.is_empty() {
        Vec::new()
    } else {
        vec![ScopeMetrics {
            scope: Some(scope("syscope")),
            metrics,
            ..Default::default()
        }]
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics,
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collect::Deltas, enrich::cgroup::CgroupResolver};
    use syscope_common::SeriesKey;

    fn key(nr: u32, errno: u32) -> SeriesKey {
        SeriesKey {
            cgroup_id: u64::MAX, // resolves to nothing: no container.id
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            nr,
            errno,
        }
    }

    /// 3 durations of 20 ms.
    fn hist_value() -> crate::collect::HistValue {
        let mut d = crate::collect::HistValue {
            sum_ns: 20_000_000 * 3,
            zero: 0,
            buckets: Box::new([0; syscope_common::hist::NUM_BUCKETS]),
            ..Default::default()
        };
        let syscope_common::Bucket::Index(i) = syscope_common::bucket_index(20_000_000) else {
            unreachable!()
        };
        d.buckets[i] = 3;
        d
    }

    fn deltas() -> Deltas {
        Deltas {
            hist: [(key(0, 0), hist_value())].into_iter().collect(),
            counters: vec![(key(0, 2), 5)],
        }
    }

    fn tcp_key(kind: u8, port: u16) -> syscope_common::tcp::TcpKey {
        let mut addr = [0u8; 16];
        addr[10..].copy_from_slice(&[0xff, 0xff, 10, 1, 2, 3]);
        syscope_common::tcp::TcpKey {
            cgroup_id: 0,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            addr,
            port,
            kind,
            _pad: 0,
            code: 111,
        }
    }

    fn tcp_deltas() -> Deltas<syscope_common::tcp::TcpKey> {
        use syscope_common::tcp::{CountKind, HistKind};
        let mut d = hist_value();
        d.sum_ns /= 3;
        d.buckets.iter_mut().for_each(|b| *b /= 3);
        Deltas {
            hist: [(tcp_key(HistKind::Connect as u8, 443), d)]
                .into_iter()
                .collect(),
            counters: vec![
                (tcp_key(CountKind::ConnectError as u8, 443), 2),
                (tcp_key(CountKind::ResetSent as u8, 443), 1),
                (tcp_key(CountKind::ResetReceived as u8, 443), 4),
            ],
        }
    }

    /// Regression: histogram and counter kinds once shared numbers, and
    /// every connect-duration point carried `error.type=cancelled`.
    #[test]
    fn every_point_carries_exactly_its_catalogue_attributes() {
        use syscope_common::tcp::{CountKind, HistKind};
        let h = hist_value();
        let tcp = Deltas {
            hist: HistKind::ALL
                .iter()
                .map(|k| (tcp_key(*k as u8, 443), h.clone()))
                .collect(),
            counters: CountKind::ALL
                .iter()
                .map(|k| (tcp_key(*k as u8, 443), 1))
                .collect(),
        };
        let mut agg = Aggregator::new(Temporality::Delta, 100, 10);
        let mut cg = CgroupResolver::with_root("/nonexistent", std::time::Duration::from_secs(1));
        agg.ingest(&deltas(), &tcp, &mut cg, SystemTime::now());
        let ms = sli_metrics(&agg);
        assert_eq!(ms.len(), Metric::COUNT, "every metric has points");
        for m in &ms {
            let metric = Metric::all().find(|x| x.spec().name == m.name).unwrap();
            let attrs: Vec<_> = match &m.data {
                Some(metric::Data::ExponentialHistogram(h)) => {
                    h.data_points.iter().map(|p| &p.attributes).collect()
                }
                Some(metric::Data::Sum(s)) => s.data_points.iter().map(|p| &p.attributes).collect(),
                _ => panic!(),
            };
            for a in attrs {
                let keys: Vec<&str> = a.iter().map(|kv| kv.key.as_str()).collect();
                for k in &keys {
                    assert!(
                        metric.spec().attrs.iter().any(|(x, _)| x.key() == *k),
                        "{}: unexpected {k}",
                        m.name
                    );
                }
                for (x, p) in metric.spec().attrs {
                    if *p == super::super::metrics::Presence::Always {
                        assert!(keys.contains(&x.key()), "{}: missing {}", m.name, x.key());
                    }
                }
            }
        }
    }

    #[test]
    fn tcp_metrics_carry_their_attributes() {
        let req = request(Temporality::Delta, 1);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        let connect = m.iter().find(|m| m.name == "tcp.connect.duration").unwrap();
        let Some(metric::Data::ExponentialHistogram(h)) = &connect.data else {
            panic!()
        };
        let a = &h.data_points[0].attributes;
        assert!(a.contains(&kv_str("server.address", "10.1.2.3")));
        assert!(a.contains(&kv_str("process.executable.name", "curl")));
        assert!(a.iter().any(|kv| kv.key == "server.port"
            && kv.value.as_ref().unwrap().value == Some(any_value::Value::IntValue(443))));
        let errs = m.iter().find(|m| m.name == "tcp.connect.errors").unwrap();
        let Some(metric::Data::Sum(s)) = &errs.data else {
            panic!()
        };
        assert!(s.data_points[0]
            .attributes
            .contains(&kv_str("error.type", "ECONNREFUSED")));
        // Resets both ways in one metric, told apart by direction.
        assert_eq!(m.iter().filter(|m| m.name == "tcp.resets").count(), 1);
        let resets = m.iter().find(|m| m.name == "tcp.resets").unwrap();
        let Some(metric::Data::Sum(s)) = &resets.data else {
            panic!()
        };
        assert_eq!(s.data_points.len(), 2);
        let rx = s
            .data_points
            .iter()
            .find(|p| {
                p.attributes
                    .contains(&kv_str("network.io.direction", "receive"))
            })
            .unwrap();
        assert_eq!(rx.value, Some(number_data_point::Value::AsInt(4)));
    }

    fn request(t: Temporality, rounds: usize) -> ExportMetricsServiceRequest {
        let mut agg = Aggregator::new(t, 100, 10);
        let mut cg = CgroupResolver::with_root(
            "/nonexistent-cgroup-root",
            std::time::Duration::from_secs(3600),
        );
        for _ in 0..rounds {
            agg.ingest(&deltas(), &tcp_deltas(), &mut cg, SystemTime::now());
        }
        let res = resource(&ResourceConfig {
            service_name: "svc".into(),
            attributes: vec![("deployment.environment.name".into(), "test".into())],
        });
        build_request(&agg, &res)
    }

    #[test]
    fn histogram_and_errors_in_otlp_layout() {
        let req = request(Temporality::Cumulative, 2);
        let rm = &req.resource_metrics[0];
        let res = rm.resource.as_ref().unwrap();
        assert!(res.attributes.contains(&kv_str("service.name", "svc")));
        assert!(res
            .attributes
            .contains(&kv_str("deployment.environment.name", "test")));
        let m = &rm.scope_metrics[0].metrics;
        assert_eq!(m[0].name, "syscall.duration");
        assert_eq!(m[0].unit, "s");
        let Some(metric::Data::ExponentialHistogram(h)) = &m[0].data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!(p.count, 6, "cumulative over two intervals");
        assert_eq!(p.scale, 3);
        let b = p.positive.as_ref().unwrap();
        assert_eq!(b.bucket_counts, vec![6]);
        // 20 ms = 0.02 s lies in bucket offset: 2^(o/8) < 0.02 <= 2^((o+1)/8).
        let (lo, hi) = (
            (b.offset as f64 / 8.0).exp2(),
            ((b.offset + 1) as f64 / 8.0).exp2(),
        );
        assert!(lo < 0.02 && 0.02 <= hi, "{lo} {hi}");
        assert!(
            p.attributes.contains(&kv_str("syscall.name", "read"))
                || cfg!(not(target_arch = "x86_64"))
        );
        assert!(p
            .attributes
            .contains(&kv_str("process.executable.name", "curl")));
        assert_eq!(m[1].name, "syscall.errors");
        assert_eq!(m[1].unit, "{error}");
        let Some(metric::Data::Sum(s)) = &m[1].data else {
            panic!()
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(10))
        );
        assert!(s.data_points[0]
            .attributes
            .contains(&kv_str("error.type", "ENOENT")));
    }

    #[test]
    fn delta_sends_only_this_interval() {
        let req = request(Temporality::Delta, 2);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        let Some(metric::Data::ExponentialHistogram(h)) = &m[0].data else {
            panic!()
        };
        assert_eq!(h.data_points[0].count, 3);
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
    }
}
