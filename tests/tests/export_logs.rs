//! SLO events leave the agent as OTLP log records through its own exporter
//! (`export::spawn` + `ExportHandle::submit_logs`, the same buffer, retries
//! and transport as metrics), over gRPC and HTTP/protobuf, and a real
//! receiver (rotel) gets each record with its attributes; metrics sent
//! through the same exporter still parse beside them. No root needed.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use syscope::export::{self, Protocol, Settings};
use syscope::telemetry::SelfStats;
use syscope_tests::{latest, Receiver};

const TIMEOUT: Duration = Duration::from_secs(20);

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: &str) -> Value {
    Value::StringValue(s.to_owned())
}

fn resource(protocol: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", text("syscope")),
            kv("test.protocol", text(protocol)),
        ],
        ..Default::default()
    })
}

/// An SLO event as issue 12 describes it: a string, a double and an array
/// of strings among its attributes.
fn event(protocol: &str) -> ExportLogsServiceRequest {
    let record = LogRecord {
        time_unix_nano: 1_795_303_133_040_957_944,
        severity_number: SeverityNumber::Warn as i32,
        severity_text: "WARN".to_owned(),
        body: Some(AnyValue {
            value: Some(text(&format!("SLO checkout burning ({protocol})"))),
        }),
        attributes: vec![
            kv("slo.name", text("checkout")),
            kv("slo.burn_rate", Value::DoubleValue(14.4)),
            kv(
                "slo.windows",
                Value::ArrayValue(ArrayValue {
                    values: ["5m", "1h"]
                        .map(|w| AnyValue {
                            value: Some(text(w)),
                        })
                        .to_vec(),
                }),
            ),
            kv("test.protocol", text(protocol)),
        ],
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(protocol),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "syscope.slo".to_owned(),
                    ..Default::default()
                }),
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One gauge point, so the metrics of the same exporter can be found too.
fn interval(protocol: &str) -> ExportMetricsServiceRequest {
    let point = NumberDataPoint {
        attributes: vec![kv("test.protocol", text(protocol))],
        time_unix_nano: 5,
        value: Some(number_data_point::Value::AsDouble(2.5)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(protocol),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "test.gauge".to_owned(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn slo_events_reach_a_real_receiver_over_grpc_and_http() {
    let rx = Receiver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (protocol, endpoint) in [
        (Protocol::Grpc, rx.grpc_endpoint()),
        (Protocol::HttpProtobuf, rx.http_endpoint()),
    ] {
        let tag = protocol.to_string();
        let stats = Arc::new(SelfStats::default());
        let left = rt.block_on(async {
            let settings = Settings {
                protocol,
                ..Settings::new(endpoint)
            };
            let handle = export::spawn(settings, Arc::clone(&stats)).unwrap();
            handle.submit_logs(event(&tag));
            handle.submit(interval(&tag));
            handle.shutdown(Duration::from_secs(10)).await
        });
        assert_eq!(left, 0, "{tag}: unsent at shutdown");
        assert_eq!(stats.dropped_total(), 0, "{tag}");

        let logs = rx.wait_for_logs(TIMEOUT, |logs| {
            logs.iter().any(|r| r.attr("test.protocol") == Some(&tag))
        });
        let r = logs
            .iter()
            .find(|r| r.attr("test.protocol") == Some(&tag))
            .unwrap();
        assert_eq!(r.body, format!("SLO checkout burning ({tag})"), "{r:?}");
        assert_eq!((r.severity_text.as_str(), r.severity_number), ("WARN", 13));
        assert_eq!(r.time_unix_nano, 1_795_303_133_040_957_944);
        assert_eq!(r.scope, "syscope.slo");
        assert_eq!(r.resource["service.name"], "syscope");
        assert_eq!(r.resource["test.protocol"], tag);
        assert_eq!(r.attr("slo.name"), Some("checkout"));
        assert_eq!(r.attr("slo.burn_rate"), Some("14.4"));
        assert_eq!(r.attr("slo.windows"), Some("Slice(Str(5m), Str(1h))"));

        // The interval went through the same exporter, and parses beside the logs.
        let points = rx.wait_for(TIMEOUT, |p| {
            latest(p, "test.gauge", &[("test.protocol", &tag)]).is_some()
        });
        let g = latest(&points, "test.gauge", &[("test.protocol", &tag)]).unwrap();
        assert_eq!(g.number(), Some(2.5));
        assert_eq!(g.time_unix_nano, 5);
        assert_eq!(g.resource["test.protocol"], tag);
    }
    // Each record once: one request per protocol, none duplicated.
    assert_eq!(rx.logs().len(), 2);
}
