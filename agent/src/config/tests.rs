use std::collections::HashMap;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::*;
use env::Vars;

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("syscope").chain(args.iter().copied())).unwrap()
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ok(args: &[&str], vars: &[(&str, &str)], toml: &str) -> Config {
    load_str(&cli(args), &env(vars), toml).unwrap()
}

fn err(args: &[&str], vars: &[(&str, &str)], toml: &str) -> String {
    load_str(&cli(args), &env(vars), toml)
        .unwrap_err()
        .to_string()
}

fn export(c: &Config) -> &ExportConfig {
    c.export.as_ref().expect("export configured")
}

const FILE_EP: &str = "[export]\nendpoint = \"http://file:4317\"\n";

// --- defaults ---

#[test]
fn defaults_are_table_mode() {
    let c = ok(&[], &[], "");
    assert_eq!(c, Config::default());
    assert_eq!(c.export, None);
    assert_eq!(c.interval, Duration::from_secs(5));
    assert_eq!(c.temporality, Temporality::Cumulative);
    assert_eq!(c.resource.service_name, "syscope");
    assert_eq!(c.limits.max_series_per_metric, 2000);
    for m in &syscope_common::maps::MAPS {
        assert_eq!(c.limits.kernel_maps[m.id], m.default_entries, "{}", m.label);
    }
    assert_eq!(c.limits.series_idle_intervals, 10);
    assert_eq!(c.log, "info");
    assert_eq!(c.table.rows, 20);
    assert_eq!(c.shutdown_grace, Duration::from_secs(5));
}

#[test]
fn export_defaults() {
    let c = ok(&["--endpoint", "http://c:4317"], &[], "");
    let e = export(&c);
    // Config fills what it resolves elsewhere: interval, health, temporality.
    let want = ExportConfig {
        interval: Duration::from_secs(60),
        max_failure: Some(Duration::from_secs(180)),
        ..ExportConfig::new("http://c:4317")
    };
    assert_eq!(e, &want);
    assert_eq!(e.protocol, Protocol::Grpc);
    assert_eq!(e.compression, Compression::None);
    assert_eq!(e.timeout, Duration::from_secs(10));
    assert_eq!(e.buffer_intervals, 60);
    assert_eq!(e.max_backoff, Duration::from_secs(30));
    assert_eq!(c.interval, Duration::from_secs(60));
}

// --- endpoint precedence ---

#[test]
fn endpoint_from_file() {
    assert_eq!(export(&ok(&[], &[], FILE_EP)).endpoint, "http://file:4317");
}

#[test]
fn endpoint_env_beats_file() {
    let c = ok(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")],
        FILE_EP,
    );
    assert_eq!(export(&c).endpoint, "http://env:4317");
}

#[test]
fn endpoint_flag_beats_env() {
    let c = ok(
        &["--endpoint", "http://cli:4317"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")],
        FILE_EP,
    );
    assert_eq!(export(&c).endpoint, "http://cli:4317");
}

#[test]
fn https_and_scheme_less_endpoints() {
    let ep = |vars: &[(&str, &str)]| export(&ok(&[], vars, "")).endpoint.clone();
    assert_eq!(
        ep(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "HTTPS://collector:4317")]),
        "https://collector:4317"
    );
    // gRPC without a scheme: TLS unless insecure (OTLP spec).
    assert_eq!(
        ep(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]),
        "https://collector:4317"
    );
    assert_eq!(
        ep(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true")
        ]),
        "http://collector:4317"
    );
    assert_eq!(
        ep(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "false")
        ]),
        "https://collector:4317"
    );
    // A scheme says it itself.
    assert_eq!(
        ep(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true")
        ]),
        "https://c:4317"
    );
    let e = err(&[], &[("OTEL_EXPORTER_OTLP_INSECURE", "yes")], "");
    assert!(
        e.starts_with("invalid configuration: OTEL_EXPORTER_OTLP_INSECURE: expected true or false"),
        "{e}"
    );
    let e = err(&["--insecure", "maybe"], &[], "");
    assert!(e.contains("--insecure"), "{e}");
}

#[test]
fn endpoint_flag_beats_env_metrics_endpoint() {
    let c = ok(
        &["--endpoint", "http://cli:4318"],
        &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://env:4318/m")],
        "",
    );
    let e = export(&c);
    assert_eq!(e.metrics_endpoint, None);
    assert_eq!(e.http_url(), "http://cli:4318/v1/metrics");
    assert_eq!(e.grpc_endpoint(), "http://cli:4318");
}

#[test]
fn metrics_endpoint_env_beats_generic() {
    let c = ok(
        &["--protocol", "http/protobuf"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://metrics:9999/custom",
            ),
        ],
        "",
    );
    let e = export(&c);
    assert_eq!(e.endpoint, "http://generic:4318");
    assert_eq!(e.http_url(), "http://metrics:9999/custom");
    assert_eq!(e.grpc_endpoint(), "http://metrics:9999/custom");
}

#[test]
fn metrics_endpoint_alone_enables_export() {
    let c = ok(
        &[],
        &[(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://m:4318/v1/metrics",
        )],
        "",
    );
    let e = export(&c);
    assert_eq!(e.endpoint, "http://m:4318/v1/metrics");
    assert_eq!(e.http_url(), "http://m:4318/v1/metrics");
}

#[test]
fn file_metrics_endpoint() {
    let c = ok(
        &[],
        &[],
        "[export]\nendpoint = \"http://a:4318\"\nmetrics_endpoint = \"http://b:1/x\"\n",
    );
    assert_eq!(export(&c).http_url(), "http://b:1/x");
}

#[test]
fn endpoint_needs_http_scheme() {
    let e = err(
        &[
            "--endpoint",
            "collector:4318",
            "--protocol",
            "http/protobuf",
        ],
        &[],
        "",
    );
    assert!(e.contains("--endpoint") && e.contains("http://"), "{e}");
    let e = err(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")], "");
    assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
    let e = err(
        &[],
        &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://")],
        "",
    );
    assert!(e.contains("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"), "{e}");
    let e = err(
        &[],
        &[],
        "[export]\nendpoint = \"localhost\"\nprotocol = \"http/protobuf\"\n",
    );
    assert!(e.contains("export.endpoint"), "{e}");
}

#[test]
fn endpoint_scheme_case_insensitive_and_trimmed() {
    let c = ok(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", " HTTP://c:4317 ")],
        "",
    );
    assert_eq!(export(&c).endpoint, "http://c:4317");
    let c = ok(
        &["--endpoint", "http://c:4317", "--temporality", "delta"],
        &[],
        "",
    );
    assert_eq!(
        export(&c).temporality,
        opentelemetry_proto::tonic::metrics::v1::AggregationTemporality::Delta,
        "the self-metrics follow the SLIs' temporality"
    );
}

// --- http_url ---

#[test]
fn http_url_joins_without_double_slash() {
    let mut e = ExportConfig::new("http://c:4318");
    assert_eq!(e.http_url(), "http://c:4318/v1/metrics");
    e.endpoint = "http://c:4318/".into();
    assert_eq!(e.http_url(), "http://c:4318/v1/metrics");
    e.endpoint = "https://c/otlp/".into();
    assert_eq!(e.http_url(), "https://c/otlp/v1/metrics");
    e.metrics_endpoint = Some("http://m/exact/".into());
    assert_eq!(e.http_url(), "http://m/exact/");
}

// --- protocol ---

#[test]
fn protocol_precedence() {
    let file = "[export]\nprotocol = \"http/protobuf\"\n";
    assert_eq!(
        export(&ok(
            &[],
            &[],
            &format!("{FILE_EP}protocol = \"http/protobuf\"\n")
        ))
        .protocol,
        Protocol::HttpProtobuf
    );
    let c = ok(
        &["--endpoint", "http://x"],
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
        file,
    );
    assert_eq!(export(&c).protocol, Protocol::Grpc, "env beats file");
    let c = ok(
        &["--endpoint", "http://x"],
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ],
        "",
    );
    assert_eq!(
        export(&c).protocol,
        Protocol::HttpProtobuf,
        "metrics env beats generic"
    );
    let c = ok(
        &["--endpoint", "http://x", "--protocol", "grpc"],
        &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")],
        file,
    );
    assert_eq!(export(&c).protocol, Protocol::Grpc, "flag beats env");
}

#[test]
fn bad_protocol_env_message() {
    let e = err(&[], &[("OTEL_EXPORTER_OTLP_PROTOCOL", "foo")], "");
    assert_eq!(
        e,
        "invalid configuration: OTEL_EXPORTER_OTLP_PROTOCOL: expected one of grpc, http/protobuf, got \"foo\""
    );
}

#[test]
fn bad_protocol_names_each_source() {
    assert!(err(&["--protocol", "x"], &[], "").contains("--protocol"));
    assert!(
        err(&[], &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "x")], "")
            .contains("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
    );
    assert!(err(&[], &[], "[export]\nprotocol = \"x\"\n").contains("export.protocol"));
}

#[test]
fn http_json_not_supported() {
    let e = err(&[], &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")], "");
    assert!(
        e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("not supported"),
        "{e}"
    );
}

// --- compression, temporality ---

#[test]
fn compression_precedence_and_errors() {
    let c = ok(
        &["--endpoint", "http://x"],
        &[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "GZIP"),
        ],
        "",
    );
    assert_eq!(export(&c).compression, Compression::Gzip);
    let c = ok(
        &["--endpoint", "http://x", "--compression", "none"],
        &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
        "",
    );
    assert_eq!(export(&c).compression, Compression::None);
    assert!(err(&["--compression", "zstd"], &[], "")
        .contains("--compression: expected one of gzip, none"));
    assert!(err(&[], &[("OTEL_EXPORTER_OTLP_COMPRESSION", "br")], "")
        .contains("OTEL_EXPORTER_OTLP_COMPRESSION"));
    assert!(err(&[], &[], "[export]\ncompression = \"lz4\"\n").contains("export.compression"));
}

#[test]
fn temporality_values() {
    let t = |v: &str| ok(&["--temporality", v], &[], "").temporality;
    assert_eq!(t("cumulative"), Temporality::Cumulative);
    assert_eq!(t("Delta"), Temporality::Delta);
    assert_eq!(t("LOWMEMORY"), Temporality::Delta);
    let key = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
    assert_eq!(
        ok(&[], &[(key, "delta")], "temporality = \"cumulative\"").temporality,
        Temporality::Delta
    );
    assert_eq!(
        ok(&["--temporality", "cumulative"], &[(key, "delta")], "").temporality,
        Temporality::Cumulative
    );
    assert_eq!(
        ok(&[], &[], "temporality = \"delta\"").temporality,
        Temporality::Delta
    );
    assert!(err(&["--temporality", "x"], &[], "").contains("--temporality"));
    assert!(err(&[], &[(key, "x")], "").contains(key));
    assert!(err(&[], &[], "temporality = \"x\"")
        .contains("temporality: expected one of cumulative, delta, lowmemory"));
}

// --- interval ---

#[test]
fn interval_precedence() {
    assert_eq!(
        ok(&[], &[], "interval = \"30s\"").interval,
        Duration::from_secs(30)
    );
    let c = ok(
        &[],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "15000")],
        "interval = \"30s\"",
    );
    assert_eq!(c.interval, Duration::from_secs(15), "env (ms) beats file");
    let c = ok(
        &["--interval", "10s"],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "15000")],
        "interval = \"30s\"",
    );
    assert_eq!(c.interval, Duration::from_secs(10), "flag beats env");
}

#[test]
fn interval_default_depends_on_mode() {
    assert_eq!(ok(&[], &[], "").interval, Duration::from_secs(5));
    assert_eq!(ok(&[], &[], FILE_EP).interval, Duration::from_secs(60));
    assert_eq!(
        ok(&["--interval", "1m"], &[], "").interval,
        Duration::from_secs(60),
        "explicit in table mode"
    );
    assert_eq!(
        ok(&["--interval", "2s"], &[], FILE_EP).interval,
        Duration::from_secs(2)
    );
}

#[test]
fn interval_minimum_and_errors() {
    assert_eq!(
        ok(&["--interval", "100ms"], &[], "").interval,
        Duration::from_millis(100)
    );
    let e = err(&["--interval", "99ms"], &[], "");
    assert!(
        e.contains("--interval: must be between 100ms and 1h, got 99ms"),
        "{e}"
    );
    assert!(
        err(&[], &[("OTEL_METRIC_EXPORT_INTERVAL", "50")], "").contains(
            "OTEL_METRIC_EXPORT_INTERVAL: must be between 100 and 3600000 milliseconds, got 50"
        )
    );
    assert!(err(&[], &[("OTEL_METRIC_EXPORT_INTERVAL", "10s")], "")
        .contains("OTEL_METRIC_EXPORT_INTERVAL: expected a whole number of milliseconds"));
    assert!(err(&["--interval", "10"], &[], "").contains("--interval: expected a duration"));
    assert!(err(&[], &[], "interval = \"soon\"").contains("interval: expected a duration"));
}

// --- timeout, numbers ---

#[test]
fn timeout_precedence_and_errors() {
    let file = format!("{FILE_EP}timeout = \"3s\"\n");
    assert_eq!(export(&ok(&[], &[], &file)).timeout, Duration::from_secs(3));
    let c = ok(&[], &[("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")], &file);
    assert_eq!(export(&c).timeout, Duration::from_secs(2));
    let c = ok(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1500"),
        ],
        &file,
    );
    assert_eq!(export(&c).timeout, Duration::from_millis(1500));
    assert!(err(&[], &[("OTEL_EXPORTER_OTLP_TIMEOUT", "abc")], "")
        .contains("OTEL_EXPORTER_OTLP_TIMEOUT"));
    assert!(err(&[], &[("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0")], "")
        .contains("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: must be between 1 and 600000 milliseconds"));
    assert!(err(&[], &[], "[export]\ntimeout = \"0s\"\n").contains("export.timeout"));
}

#[test]
fn numbers_from_flags_and_file() {
    let file = "table_rows = 7\n[limits]\nmax_series_per_metric = 50\n[limits.kernel_maps]\nsyscall_latency = 1\n[export]\nbuffer_intervals = 3\nendpoint = \"http://x\"\n";
    let c = ok(&[], &[], file);
    assert_eq!(c.table.rows, 7);
    assert_eq!(c.limits.max_series_per_metric, 50);
    assert_eq!(
        c.limits.kernel_maps[syscope_common::maps::SYSCALL_LATENCY],
        1
    );
    assert_eq!(export(&c).buffer_intervals, 3);
    let c = ok(
        &[
            "--table-rows",
            "9",
            "--max-series",
            "2",
            "--buffer-intervals",
            "1",
        ],
        &[],
        file,
    );
    assert_eq!(c.table.rows, 9);
    assert_eq!(c.limits.max_series_per_metric, 2);
    assert_eq!(export(&c).buffer_intervals, 1);
}

#[test]
fn bad_numbers_name_the_key() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--max-series", "abc"],
            "",
            "--max-series: expected a whole number from 2 to 1000000, got \"abc\"",
        ),
        (
            &["--max-series", "1"],
            "",
            "--max-series: must be between 2 and 1000000, got 1",
        ),
        (
            &["--buffer-intervals", "0"],
            "",
            "--buffer-intervals: must be between 1 and 10000, got 0",
        ),
        (
            &["--buffer-intervals=-3"],
            "",
            "--buffer-intervals: expected a whole number",
        ),
        (
            &["--table-rows", "x"],
            "",
            "--table-rows: expected a whole number",
        ),
        (
            &[],
            "table_rows = 0",
            "table_rows: must be between 1 and 10000",
        ),
        (
            &[],
            "[limits]\nmax_series_per_metric = 1",
            "limits.max_series_per_metric: must be between 2 and 1000000",
        ),
        (
            &[],
            "[limits.kernel_maps]\nsyscall_latency = 0",
            "limits.kernel_maps.syscall_latency: must be between 1 and 65536, got 0",
        ),
        (
            &[],
            "[limits.kernel_maps]\nsyscall_errors = 4294967295",
            "limits.kernel_maps.syscall_errors: must be between 1 and 1048576, got 4294967295",
        ),
        (
            &[],
            "[limits.kernel_maps]\nthreds = 8",
            "limits.kernel_maps.threds: unknown kernel map (known: threads,",
        ),
        (
            &[],
            "[limits]\nseries_idle_intervals = 0",
            "limits.series_idle_intervals: must be between 1 and 1000000",
        ),
        (
            &[],
            "[export]\nbuffer_intervals = 0",
            "export.buffer_intervals: must be between 1 and 10000",
        ),
        (
            &[],
            "[export]\nmax_backoff = \"0s\"",
            "export.max_backoff: must be between 1ms and 1h, got 0s",
        ),
        (
            &[],
            "shutdown_grace = \"never\"",
            "shutdown_grace: expected a duration",
        ),
    ];
    for (args, toml, want) in cases {
        let e = err(args, &[], toml);
        assert!(e.contains(want), "{args:?} {toml:?}: {e}");
        assert!(e.starts_with("invalid configuration: "), "{e}");
    }
}

#[test]
fn file_durations() {
    let c = ok(
        &[],
        &[],
        "shutdown_grace = \"0s\"\n[export]\nmax_backoff = \"1m\"\nendpoint = \"http://x\"\n",
    );
    assert_eq!(c.shutdown_grace, Duration::ZERO);
    assert_eq!(export(&c).max_backoff, Duration::from_secs(60));
}

// --- file errors ---

#[test]
fn unknown_top_level_key() {
    let e = err(&[], &[], "interval = \"1s\"\nintervall = \"2s\"\n");
    assert!(
        e.contains("unknown field `intervall`") && e.contains("line 2"),
        "{e}"
    );
    assert!(e.starts_with("invalid configuration: test.toml: "), "{e}");
}

#[test]
fn unknown_nested_keys() {
    for (toml, key, line) in [
        ("[export]\nendpiont = \"http://x\"\n", "endpiont", "line 2"),
        ("[resource]\nservice = \"x\"\n", "service", "line 2"),
        ("\n[limits]\nmax_series = 3\n", "max_series", "line 3"),
        ("[exporter]\n", "exporter", "line 1"),
    ] {
        let e = err(&[], &[], toml);
        assert!(
            e.contains(&format!("unknown field `{key}`")) && e.contains(line),
            "{e}"
        );
    }
}

#[test]
fn wrong_type_in_file() {
    let e = err(
        &[],
        &[],
        "[limits.kernel_maps]\nsyscall_latency = \"many\"\n",
    );
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains(": limits.kernel_maps.syscall_latency: "), "{e}");
    let e = err(&[], &[], "table_rows = -1\n");
    assert!(e.contains("line 1, column 14: table_rows: "), "{e}");
    // The key is named for a wrong type anywhere: top level, nested, inline.
    for (toml, key) in [
        ("interval = 5\n", "interval"),
        (
            "[limits]\nmax_series_per_metric = \"abc\"\n",
            "limits.max_series_per_metric",
        ),
        ("[prometheus]\nport = \"x\"\n", "prometheus.port"),
        (
            "limits = { series_idle_intervals = \"x\" }\n",
            "limits.series_idle_intervals",
        ),
    ] {
        let e = err(&[], &[], toml);
        assert!(e.contains(&format!(": {key}: invalid type")), "{toml}: {e}");
    }
    let e = err(&[], &[], "interval = \n");
    assert!(e.contains("test.toml"), "{e}");
}

#[test]
fn unreadable_file_names_it() {
    let c = cli(&["--config", "/nonexistent/syscope.toml"]);
    let e = load(&c, &env(&[])).unwrap_err();
    assert!(matches!(e, ConfigError::ReadFile { .. }));
    assert!(e.to_string().contains("/nonexistent/syscope.toml"), "{e}");
}

#[test]
fn reads_file_from_flag_and_syscope_config() {
    let path =
        std::env::temp_dir().join(format!("syscope-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, "table_rows = 3\n").unwrap();
    let p = path.to_str().unwrap();
    let from_flag = load(&cli(&["--config", p]), &env(&[]));
    let from_env = load(&cli(&[]), &env(&[("SYSCOPE_CONFIG", p)]));
    let flag_wins = load(
        &cli(&["-c", "/nonexistent"]),
        &env(&[("SYSCOPE_CONFIG", p)]),
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_flag.unwrap().table.rows, 3);
    assert_eq!(from_env.unwrap().table.rows, 3);
    assert!(flag_wins.is_err());
}

// --- resource ---

#[test]
fn resource_attributes_parse() {
    let c = ok(
        &[],
        &[(
            "OTEL_RESOURCE_ATTRIBUTES",
            " host.name = node%201 ,k8s.pod.name=a%3Db%2Cc,, empty= ",
        )],
        "",
    );
    assert_eq!(
        c.resource.attributes,
        vec![
            ("host.name".into(), "node 1".into()),
            ("k8s.pod.name".into(), "a=b,c".into()),
            ("empty".into(), String::new()),
        ]
    );
}

#[test]
fn resource_attributes_malformed() {
    for bad in ["novalue", "a=b,c", "=v", "a=%zz", "a=%4", "a=%ff"] {
        let e = err(&[], &[("OTEL_RESOURCE_ATTRIBUTES", bad)], "");
        assert!(
            e.starts_with("invalid configuration: OTEL_RESOURCE_ATTRIBUTES: "),
            "{bad}: {e}"
        );
    }
}

#[test]
fn service_name_precedence() {
    let attrs = ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=a");
    let file = "[resource]\nservice_name = \"from-file\"\nattributes = { \"service.name\" = \"file-attr\" }\n";
    let name = |args: &[&str], vars: &[(&str, &str)], toml: &str| {
        ok(args, vars, toml).resource.service_name
    };
    assert_eq!(
        name(
            &[],
            &[],
            "[resource]\nattributes = { \"service.name\" = \"file-attr\" }"
        ),
        "file-attr"
    );
    assert_eq!(name(&[], &[], file), "from-file");
    assert_eq!(name(&[], &[attrs], file), "from-attrs");
    assert_eq!(
        name(&[], &[attrs, ("OTEL_SERVICE_NAME", "from-env")], file),
        "from-env"
    );
    assert_eq!(
        name(
            &["--service-name", "cli"],
            &[attrs, ("OTEL_SERVICE_NAME", "from-env")],
            file
        ),
        "cli"
    );
    let c = ok(&[], &[attrs], file);
    assert!(c
        .resource
        .attributes
        .iter()
        .all(|(k, _)| k != "service.name"));
    assert!(err(&["--service-name", ""], &[], "").contains("--service-name"));
}

#[test]
fn resource_attributes_merge_env_over_file() {
    let c = ok(
        &[],
        &[("OTEL_RESOURCE_ATTRIBUTES", "b=env,c=env")],
        "[resource]\nattributes = { a = \"file\", b = \"file\" }\n",
    );
    assert_eq!(
        c.resource.attributes,
        vec![
            ("a".into(), "file".into()),
            ("b".into(), "env".into()),
            ("c".into(), "env".into()),
        ]
    );
}

// --- headers ---

#[test]
fn headers_percent_decoded_and_lowercased() {
    let c = ok(
        &["--endpoint", "http://x"],
        &[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20abc%3D%3D, x-tenant = t1",
        )],
        "",
    );
    assert_eq!(
        export(&c).headers,
        vec![
            ("authorization".into(), "Bearer abc==".into()),
            ("x-tenant".into(), "t1".into()),
        ]
    );
}

#[test]
fn metrics_headers_replace_generic_and_file() {
    let c = ok(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "b=2"),
        ],
        &format!("{FILE_EP}headers = {{ c = \"3\" }}\n"),
    );
    assert_eq!(export(&c).headers, vec![("b".into(), "2".into())]);
    let c = ok(
        &[],
        &[],
        &format!("{FILE_EP}headers = {{ \"X-Api-Key\" = \"s\" }}\n"),
    );
    assert_eq!(export(&c).headers, vec![("x-api-key".into(), "s".into())]);
}

#[test]
fn bad_headers_name_the_key_not_the_secret() {
    let e = err(
        &[],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "token-without-equals")],
        "",
    );
    assert!(
        e.contains("OTEL_EXPORTER_OTLP_HEADERS") && !e.contains("token-without-equals"),
        "{e}"
    );
    let e = err(
        &[],
        &[("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "bad name=x")],
        "",
    );
    assert!(
        e.contains("OTEL_EXPORTER_OTLP_METRICS_HEADERS: invalid header name"),
        "{e}"
    );
    let e = err(&[], &[("OTEL_EXPORTER_OTLP_HEADERS", "k=secret%0A")], "");
    assert!(
        e.contains("printable ASCII") && !e.contains("secret"),
        "{e}"
    );
    let e = err(&[], &[], "[export]\nheaders = { \"a b\" = \"x\" }\n");
    assert!(e.contains("export.headers"), "{e}");
}

#[test]
fn debug_and_print_redact_header_values() {
    let c = ok(
        &["--endpoint", "http://x"],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "k=hunter2")],
        "",
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!c.to_toml().contains("hunter2"));
    assert!(c.to_toml().contains("<redacted>"));
}

// --- environment rules ---

#[test]
fn empty_env_values_are_unset() {
    let c = ok(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", " "),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", ""),
        ],
        FILE_EP,
    );
    assert_eq!(export(&c).endpoint, "http://file:4317");
    assert_eq!(export(&c).protocol, Protocol::HttpProtobuf);
    assert_eq!(c.resource.service_name, "syscope");
}

#[test]
fn sdk_disabled() {
    let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x");
    for v in ["true", "TRUE", "True"] {
        let c = ok(
            &["--endpoint", "http://cli"],
            &[ep, ("OTEL_SDK_DISABLED", v)],
            "",
        );
        assert_eq!(c.export, None);
        assert!(!c.show_table, "disabled: no table either");
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }
    let c = ok(
        &[],
        &[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
        ],
        "",
    );
    assert_eq!(
        (c.export.is_none(), c.prometheus, c.show_table),
        (true, None, false)
    );
    let c = ok(&[], &[ep, ("OTEL_SDK_DISABLED", "false")], "");
    assert!(c.export.is_some() && c.warnings.is_empty());
    let c = ok(&[], &[ep, ("OTEL_SDK_DISABLED", "yes")], "");
    assert!(c.export.is_some());
    assert!(
        c.warnings[0].contains("OTEL_SDK_DISABLED"),
        "{:?}",
        c.warnings
    );
    assert!(ok(&[], &[("OTEL_SDK_DISABLED", "true")], "")
        .warnings
        .is_empty());
}

#[test]
fn export_settings_validated_without_endpoint() {
    assert!(err(&["--protocol", "udp"], &[], "").contains("--protocol"));
}

#[test]
fn log_precedence_and_errors() {
    assert_eq!(ok(&[], &[], "log = \"warn\"").log, "warn");
    assert_eq!(
        ok(&[], &[("RUST_LOG", "debug")], "log = \"warn\"").log,
        "debug"
    );
    assert_eq!(
        ok(
            &[],
            &[("RUST_LOG", "debug"), ("SYSCOPE_LOG", "syscope=trace")],
            ""
        )
        .log,
        "syscope=trace"
    );
    assert_eq!(
        ok(&["--log", "error"], &[("SYSCOPE_LOG", "trace")], "").log,
        "error"
    );
    let e = err(&["--log", "syscope=loud"], &[], "");
    assert!(e.contains("--log: invalid log filter"), "{e}");
    assert!(err(&[], &[("RUST_LOG", "a=b=c")], "").contains("RUST_LOG"));
}

#[test]
fn process_env_reads_std_env() {
    // PATH is set in any test environment; nothing is mutated.
    assert_eq!(ProcessEnv.get("PATH"), std::env::var("PATH").ok());
    assert_eq!(ProcessEnv.get("SYSCOPE_SURELY_UNSET_VARIABLE"), None);
}

// --- example, print, help ---

#[test]
fn example_toml_parses() {
    let c = ok(&[], &[], EXAMPLE_TOML);
    let e = export(&c);
    assert_eq!(e.endpoint, "http://localhost:4317");
    assert_eq!(e.metrics_endpoint, None);
    assert_eq!(e.protocol, Protocol::Grpc);
    assert_eq!(e.headers, vec![("x-api-key".into(), "secret".into())]);
    assert_eq!(e.compression, Compression::Gzip);
    assert_eq!(e.buffer_intervals, 60);
    assert_eq!(c.interval, Duration::from_secs(60));
    assert_eq!(
        c.resource.attributes,
        vec![("deployment.environment.name".into(), "prod".into())]
    );
    assert_eq!(c.limits, LimitsConfig::default());
    // The commented-out key is valid too.
    let all = EXAMPLE_TOML.replace("# metrics_endpoint =", "metrics_endpoint =");
    let c = ok(&[], &[], &all);
    assert_eq!(export(&c).http_url(), "http://localhost:4318/v1/metrics");
}

#[test]
fn to_toml_round_trips() {
    let original = ok(
        &[
            "--interval",
            "1500ms",
            "--protocol",
            "http/protobuf",
            "--max-series",
            "77",
        ],
        &[
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://m:4318/v1/metrics",
            ),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=1,b=x%2Cy"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
        ],
        "shutdown_grace = \"0s\"\n",
    );
    let printed = original.to_toml();
    let reparsed = ok(&[], &[], &printed);
    assert_eq!(reparsed, original, "{printed}");
    let table = Config::default();
    let printed = table.to_toml();
    assert!(printed.starts_with("# no exporter"), "{printed}");
    assert_eq!(ok(&[], &[], &printed), table);
}

#[test]
fn export_settings_carry_interval() {
    let c = ok(&["--endpoint", "http://x", "--interval", "7s"], &[], "");
    let s = c.export.clone().unwrap();
    assert_eq!(s.endpoint, "http://x");
    assert_eq!(s.interval, Duration::from_secs(7));
    assert!(Config::default().export.is_none());
}

fn help(flag: &str) -> String {
    let e = Cli::try_parse_from(["syscope", flag]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    e.render().to_string()
}

#[test]
fn help_documents_everything() {
    let long = help("--help");
    assert_eq!(long, help("-h"), "-h shows the full text");
    for (var, _) in env::DOCS {
        assert!(long.contains(var), "{var} missing from --help");
    }
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
        "SYSCOPE_LOG",
        "RUST_LOG",
        "SYSCOPE_CONFIG",
    ] {
        assert!(long.contains(var), "{var} missing from --help");
    }
    for arg in Cli::command().get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(l) = arg.get_long() {
            assert!(long.contains(&format!("--{l}")), "--{l} missing");
        }
    }
    for key in [
        "max_series_per_metric",
        "[limits.kernel_maps]",
        "series_idle_intervals",
        "buffer_intervals",
        "[export]",
    ] {
        assert!(long.contains(key), "{key} missing");
    }
    assert!(long.contains("--version"));
}

#[test]
fn version_and_print_config_flags() {
    let e = Cli::try_parse_from(["syscope", "--version"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
    assert!(cli(&["--print-config"]).print_config);
    assert!(!cli(&[]).print_config);
    Cli::command().debug_assert();
}

#[test]
#[ignore = "prints --help; run with --ignored --nocapture"]
fn show_help() {
    println!("{}", help("--help"));
}

/// The example shipped in docs/ is the one `--help` prints: one source.
#[test]
fn shipped_example_matches_help() {
    assert_eq!(
        include_str!("../../../docs/syscope.example.toml"),
        EXAMPLE_TOML
    );
}

#[test]
fn probe_sets_precedence_and_errors() {
    assert_eq!(ok(&[], &[], "").probes, ProbeSets::default());
    let c = ok(&["--probes", "tcp"], &[("SYSCOPE_PROBES", "syscalls")], "");
    assert_eq!(
        c.probes,
        ProbeSets {
            syscalls: false,
            tcp: true
        }
    );
    let c = ok(&[], &[("SYSCOPE_PROBES", "syscalls")], "probes = [\"tcp\"]");
    assert!(c.probes.syscalls && !c.probes.tcp);
    let c = ok(&[], &[], "probes = [\"tcp\"]");
    assert!(!c.probes.syscalls && c.probes.tcp);
    assert!(err(&["--probes", "tcp,udp"], &[], "").contains("--probes: unknown probe set `udp`"));
    assert!(err(&[], &[("SYSCOPE_PROBES", ",")], "").contains("SYSCOPE_PROBES: at least one"));
    assert!(err(&[], &[], "probes = []").contains("probes: at least one"));
    let e = err(&[], &[], "[limits.kernel_maps]\nsockets = 0");
    assert!(
        e.contains("limits.kernel_maps.sockets: must be between 1 and 1048576, got 0"),
        "{e}"
    );
}

// --- health ---

#[test]
fn health_is_off_by_default_and_follows_precedence() {
    let c = ok(&[], &[], "");
    assert_eq!(c.health.address, None);
    // Three intervals unless set.
    assert_eq!(c.health.max_export_failure, Duration::from_secs(15));
    let c = ok(&["--endpoint", "http://x", "--interval", "10s"], &[], "");
    assert_eq!(c.health.max_export_failure, Duration::from_secs(30));
    assert_eq!(
        c.export.clone().unwrap().max_failure,
        Some(Duration::from_secs(30))
    );

    let file = "[health]\naddress = \"127.0.0.1:1111\"\nmax_export_failure = \"90s\"\n";
    let c = ok(&[], &[], file);
    assert_eq!(c.health.address, Some("127.0.0.1:1111".parse().unwrap()));
    assert_eq!(c.health.max_export_failure, Duration::from_secs(90));
    let c = ok(&[], &[("SYSCOPE_HEALTH_ADDRESS", "[::]:2222")], file);
    assert_eq!(c.health.address, Some("[::]:2222".parse().unwrap()));
    let c = ok(
        &["--health-address", "0.0.0.0:3333"],
        &[("SYSCOPE_HEALTH_ADDRESS", "[::]:2222")],
        file,
    );
    assert_eq!(c.health.address, Some("0.0.0.0:3333".parse().unwrap()));
    // A higher layer can switch a lower one's endpoint off.
    let c = ok(&["--health-address", "off"], &[], file);
    assert_eq!(c.health.address, None);
}

#[test]
fn invalid_health_values_name_the_key() {
    let e = err(&["--health-address", "localhost:9479"], &[], "");
    assert!(
        e.contains("--health-address") && e.contains("localhost:9479"),
        "{e}"
    );
    let e = err(&[], &[("SYSCOPE_HEALTH_ADDRESS", "9479")], "");
    assert!(e.contains("SYSCOPE_HEALTH_ADDRESS"), "{e}");
    let e = err(&[], &[], "[health]\naddress = \"1.2.3.4\"\n");
    assert!(e.contains("health.address"), "{e}");
    let e = err(&[], &[], "[health]\nmax_export_failure = \"soon\"\n");
    assert!(e.contains("health.max_export_failure"), "{e}");
    let e = err(&[], &[], "[health]\nadress = \"127.0.0.1:1\"\n");
    assert!(e.contains("adress"), "{e}");
}

#[test]
fn example_health_section_parses() {
    let c = ok(&[], &[], EXAMPLE_TOML);
    assert_eq!(c.health.address, Some("127.0.0.1:9479".parse().unwrap()));
    assert_eq!(c.health.max_export_failure, Duration::from_secs(180));
}

#[test]
fn health_round_trips_through_print_config() {
    let original = ok(
        &["--health-address", "[::1]:9479"],
        &[],
        "[health]\nmax_export_failure = \"45s\"\n",
    );
    assert_eq!(ok(&[], &[], &original.to_toml()), original);
    let off = ok(&[], &[], "");
    assert!(
        off.to_toml().contains("address = \"off\""),
        "{}",
        off.to_toml()
    );
    assert_eq!(ok(&[], &[], &off.to_toml()), off);
}

// --- ranges, the layering helper, unsupported variables ---

/// Flags, variables, file text, and what the error must contain.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);

fn assert_errors(cases: &[Case]) {
    for (args, vars, toml, want) in cases {
        let e = err(args, vars, toml);
        assert!(e.contains(want), "{args:?} {vars:?} {toml:?}: {e}");
    }
}

#[test]
fn ranges_hold_at_both_ends() {
    let c = ok(
        &[
            "--interval",
            "1h",
            "--buffer-intervals",
            "10000",
            "--table-rows",
            "10000",
            "--max-series",
            "1000000",
            "--endpoint",
            "http://x",
        ],
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "600000")],
        "shutdown_grace = \"10m\"\n[export]\nmax_backoff = \"1h\"\n\
         [limits]\nseries_idle_intervals = 1000000\n[health]\nmax_export_failure = \"1day\"\n",
    );
    let e = export(&c);
    assert_eq!(c.interval, Duration::from_secs(3600));
    assert_eq!((e.buffer_intervals, c.table.rows), (10_000, 10_000));
    assert_eq!(c.limits.max_series_per_metric, 1_000_000);
    assert_eq!(c.limits.series_idle_intervals, 1_000_000);
    assert_eq!(e.timeout, Duration::from_secs(600));
    assert_eq!(e.max_backoff, Duration::from_secs(3600));
    assert_eq!(c.shutdown_grace, Duration::from_secs(600));
    assert_eq!(c.health.max_export_failure, Duration::from_secs(86_400));
    assert_eq!(ok(&[], &[], &c.to_toml()), c, "the maxima round-trip");

    let cases: &[Case] = &[
        (
            &["--interval", "61m"],
            &[],
            "",
            "--interval: must be between 100ms and 1h, got 1h 1m",
        ),
        (
            &["--buffer-intervals", "10001"],
            &[],
            "",
            "--buffer-intervals: must be between 1 and 10000, got 10001",
        ),
        (
            &["--table-rows", "10001"],
            &[],
            "",
            "--table-rows: must be between 1 and 10000, got 10001",
        ),
        (
            &["--max-series", "1000001"],
            &[],
            "",
            "--max-series: must be between 2 and 1000000, got 1000001",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "600001")],
            "",
            "OTEL_EXPORTER_OTLP_TIMEOUT: must be between 1 and 600000 milliseconds, got 600001",
        ),
        (
            &[],
            &[],
            "[export]\ntimeout = \"11m\"",
            "export.timeout: must be between 1ms and 10m, got 11m",
        ),
        (
            &[],
            &[],
            "shutdown_grace = \"601s\"",
            "shutdown_grace: must be between 0s and 10m, got 10m 1s",
        ),
        (
            &[],
            &[],
            "[health]\nmax_export_failure = \"25h\"",
            "health.max_export_failure: must be between 1ms and 1day, got 1day 1h",
        ),
        (
            &[],
            &[],
            "[limits]\nseries_idle_intervals = 1000001",
            "limits.series_idle_intervals: must be between 1 and 1000000, got 1000001",
        ),
    ];
    assert_errors(cases);
}

/// Defect 4: values that once overflowed `Instant + d`, a preallocation or
/// a cast are refused, naming where they came from.
#[test]
fn huge_values_are_refused_naming_their_source() {
    let cases: &[Case] = &[
        (
            &["--interval", "18446744073709551615s"],
            &[],
            "",
            "--interval: must be between",
        ),
        (
            &["--interval", "99999999999999999999999h"],
            &[],
            "",
            "--interval: expected a duration",
        ),
        (
            &["--buffer-intervals", "18446744073709551615"],
            &[],
            "",
            "--buffer-intervals: must be between 1 and 10000, got 18446744073709551615",
        ),
        (
            &["--buffer-intervals", "1000000000000"],
            &[],
            "",
            "--buffer-intervals: must be between",
        ),
        (
            &["--table-rows", "9223372036854775809"],
            &[],
            "",
            "--table-rows: must be between",
        ),
        (
            &["--max-series", "99999999999999999999999"],
            &[],
            "",
            "--max-series: must be between 2 and 1000000, got 99999999999999999999999",
        ),
        (
            &[],
            &[("OTEL_METRIC_EXPORT_INTERVAL", "18446744073709551615")],
            "",
            "OTEL_METRIC_EXPORT_INTERVAL: must be between",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "99999999999999999999999")],
            "",
            "OTEL_EXPORTER_OTLP_TIMEOUT: must be between",
        ),
        (
            &[],
            &[],
            "shutdown_grace = \"18446744073709551615s\"",
            "shutdown_grace: must be between",
        ),
        (
            &[],
            &[],
            "[export]\nmax_backoff = \"18446744073709551615s\"",
            "export.max_backoff: must be between",
        ),
        (
            &[],
            &[],
            "[health]\nmax_export_failure = \"5000000000000h\"",
            "health.max_export_failure:",
        ),
        (
            &[],
            &[],
            "table_rows = 9223372036854775807",
            "table_rows: must be between",
        ),
        (
            &[],
            &[],
            "[limits]\nseries_idle_intervals = 4294967296",
            "limits.series_idle_intervals: must be between",
        ),
        (
            &[],
            &[],
            "[limits.kernel_maps]\nthreads = 9223372036854775807",
            "limits.kernel_maps.threads: must be between",
        ),
    ];
    assert_errors(cases);
}

#[test]
fn endpoints_need_a_valid_authority() {
    let e = err(&["--endpoint", "http://[::1"], &[], "");
    assert!(e.contains("--endpoint") && e.contains("http://[::1"), "{e}");
    let e = err(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:99999")],
        "",
    );
    assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
    let e = err(
        &[],
        &[],
        "[export]\nmetrics_endpoint = \"http://[::1/v1/metrics\"\n",
    );
    assert!(e.contains("export.metrics_endpoint"), "{e}");
    let e = err(&["--endpoint", "http://a b"], &[], "");
    assert!(e.contains("--endpoint"), "{e}");
    for good in ["http://[::1]:4317", "http://10.0.0.1:4318/otlp", "http://c"] {
        assert_eq!(export(&ok(&["--endpoint", good], &[], "")).endpoint, good);
    }
}

#[test]
fn the_layering_helper_takes_the_highest_layer_only() {
    let vars = env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "bad")]);
    let vars = Vars(&vars);
    let s = settings::TIMEOUT;
    let g = s.pick(None, &vars, Some("2s")).unwrap();
    assert_eq!(
        (g.name, g.layer),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", Layer::Env)
    );
    // Only the winner is parsed: a bad lower layer is never looked at.
    let d = settings::INTERVAL.resolve(Some("3s"), &vars, Some("soon"));
    assert_eq!(d.unwrap(), Some(Duration::from_secs(3)));
    let g = settings::PROTOCOL
        .pick(None, &Vars(&env(&[])), Some("grpc"))
        .unwrap();
    assert_eq!((g.name, g.layer), ("export.protocol", Layer::File));
    assert!(settings::PROTOCOL
        .pick(None, &Vars(&env(&[])), None::<String>)
        .is_none());
    assert!(Layer::Flag < Layer::Env && Layer::Env < Layer::File);
}

#[test]
fn metric_export_timeout_is_the_lowest_timeout_variable() {
    let t = |vars: &[(&str, &str)]| export(&ok(&["--endpoint", "http://x"], vars, "")).timeout;
    assert_eq!(
        t(&[("OTEL_METRIC_EXPORT_TIMEOUT", "4000")]),
        Duration::from_secs(4)
    );
    assert_eq!(
        t(&[
            ("OTEL_METRIC_EXPORT_TIMEOUT", "4000"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000")
        ]),
        Duration::from_secs(3)
    );
    assert!(err(&[], &[("OTEL_METRIC_EXPORT_TIMEOUT", "0")], "")
        .contains("OTEL_METRIC_EXPORT_TIMEOUT: must be between"));
}

#[test]
fn exporters_choose_otlp_prometheus_none() {
    let c = ok(&[], &[("OTEL_METRICS_EXPORTER", "prometheus")], "");
    assert_eq!(c.export, None);
    assert!(!c.show_table);
    assert_eq!(
        c.prometheus.unwrap().address,
        "127.0.0.1:9464".parse().unwrap()
    );
    let c = ok(
        &[],
        &[
            ("OTEL_METRICS_EXPORTER", " otlp , prometheus "),
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "::1"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "9999"),
        ],
        "",
    );
    // otlp named without an endpoint: the spec's default.
    assert_eq!(export(&c).endpoint, "http://localhost:4317");
    assert_eq!(c.prometheus.unwrap().address, "[::1]:9999".parse().unwrap());
    assert_eq!(c.interval, Duration::from_secs(60));
    let c = ok(
        &["--exporters", "none"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x")],
        "",
    );
    assert_eq!(
        (c.export.is_none(), c.prometheus, c.show_table),
        (true, None, false)
    );
    assert!(
        c.warnings[0].contains("not exporting over OTLP"),
        "{:?}",
        c.warnings
    );
    // The file's list and section; the flag beats the variable.
    let c = ok(
        &["--prometheus-port", "9000"],
        &[("OTEL_EXPORTER_PROMETHEUS_PORT", "9001")],
        "exporters = [\"prometheus\"]\n[prometheus]\nhost = \"0.0.0.0\"\nport = 9002\n",
    );
    assert_eq!(
        c.prometheus.unwrap().address,
        "0.0.0.0:9000".parse().unwrap()
    );
    let printed = c.to_toml();
    assert_eq!(ok(&[], &[], &printed), c, "{printed}");
    let e = err(&[], &[], "exporters = [\"zipkin\"]\n");
    assert!(
        e.starts_with("invalid configuration: exporters: unknown"),
        "{e}"
    );
    let e = err(&["--prometheus-port", "x"], &[], "");
    assert!(e.contains("--prometheus-port"), "{e}");
}

#[test]
fn tls_files_are_checked_naming_variable_and_file() {
    let dir = std::env::temp_dir().join(format!("syscope-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let path = junk.to_str().unwrap();
    let e = err(&[], &[("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", path)], "");
    assert!(
        e.starts_with("invalid configuration: OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: ")
            && e.contains(path)
            && e.contains("not PEM"),
        "{e}"
    );
    // The signal-specific variable wins (it is the one read, and named).
    let e = err(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path),
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", path),
        ],
        "",
    );
    assert!(
        e.starts_with("invalid configuration: OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: "),
        "{e}"
    );
    let e = err(&[], &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", path)], "");
    assert!(
        e.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY") && e.contains("client certificate too"),
        "{e}"
    );
    let missing = dir.join("missing.pem");
    let e = err(&["--certificate", missing.to_str().unwrap()], &[], "");
    assert!(
        e.contains("--certificate: cannot read") && e.contains("missing.pem"),
        "{e}"
    );
    let e = err(
        &[],
        &[],
        &format!("[export]\nclient_certificate = \"{path}\"\nclient_key = \"{path}\"\n"),
    );
    assert!(
        e.contains("export.client_certificate") && e.contains("not PEM"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defect 8: variables a user expects to work are refused, not ignored.
#[test]
fn unsupported_otel_variables_are_refused_naming_them() {
    let refused = [
        ("OTEL_METRICS_EXPORTER", "console"),
        ("OTEL_METRICS_EXPORTER", "otlp,console"),
        ("OTEL_METRICS_EXPORTER", "none,otlp"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "1"),
        ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "no"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "0"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "65536"),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "no such host.invalid"),
        ("OTEL_METRICS_EXEMPLAR_FILTER", "always_on"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
            "explicit_bucket_histogram",
        ),
        ("OTEL_CONFIG_FILE", "/etc/otel.yaml"),
    ];
    for (var, v) in refused {
        let e = err(&[], &[(var, v)], "");
        assert!(
            e.starts_with(&format!("invalid configuration: {var}: ")),
            "{e}"
        );
    }
    // Values that are what syscope does anyway, and empty ones, pass.
    ok(
        &[],
        &[
            ("OTEL_METRICS_EXPORTER", "OTLP"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "False"),
            ("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                "base2_exponential_bucket_histogram",
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ""),
            // Trace and log settings do not apply and are ignored.
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/x.pem"),
        ],
        "",
    );
}

/// `--help` (flags and variables) and the shipped example state the range
/// of every setting that has one, in the unit each layer writes it in.
#[test]
fn help_and_example_state_every_range() {
    let cmd = Cli::command();
    let long = help("--help");
    for s in settings::all() {
        if let Some(flag) = s.flag() {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == flag.strip_prefix("--"))
                .unwrap_or_else(|| panic!("{flag} is not a flag"));
            let text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if let Some(range) = s.range_doc(false) {
                assert!(text.contains(&range), "{flag}: {text:?} lacks {range}");
            }
        }
        for var in s.env() {
            let (_, text) = env::DOCS
                .iter()
                .find(|(name, _)| name == var)
                .unwrap_or_else(|| panic!("{var} not in env::DOCS"));
            assert!(long.contains(var), "{var} missing from --help");
            if let Some(range) = s.range_doc(true) {
                assert!(text.contains(&range), "{var}: {text:?} lacks {range}");
            }
        }
        let field = s.key().rsplit('.').next().unwrap();
        let line = EXAMPLE_TOML
            .lines()
            .find(|l| {
                let l = l.trim_start_matches("# ");
                l.starts_with(&format!("{field} ="))
            })
            .unwrap_or_else(|| panic!("{} missing from the example", s.key()));
        if let Some(range) = s.range_doc(false) {
            assert!(line.contains(&range), "{}: {line:?} lacks {range}", s.key());
        }
    }
    for r in env::REFUSED {
        assert!(long.contains(r.name), "{} missing from --help", r.name);
    }
}

#[test]
fn identity_and_table_view_settings() {
    let c = ok(&[], &[], "");
    assert_eq!(c.identity, IdentityConfig::default());
    assert_eq!(
        c.identity.sources.pod_logs,
        std::path::PathBuf::from("/var/log/pods")
    );
    assert_eq!(c.table.sort, crate::table::SortBy::Rate);
    assert_eq!(c.table.not_failures, ["EAGAIN", "EINPROGRESS", "EINTR"]);
    let c = ok(
        &["--filter", "k8s.namespace.name=shop, systemd.unit=web.service", "--sort", "p99"],
        &[("SYSCOPE_SELF_ATTRIBUTES", "k8s.pod.name=a,k8s.pod.uid=b")],
        "not_failures = [\"EAGAIN\"]\n[identity]\npod_logs = \"/x/pods\"\nmax_cgroups = 100\nretention = \"30s\"\n",
    );
    assert_eq!(
        c.table.filter,
        [
            ("k8s.namespace.name".to_string(), "shop".to_string()),
            ("systemd.unit".to_string(), "web.service".to_string())
        ]
    );
    assert_eq!(c.table.sort, crate::table::SortBy::P99);
    assert_eq!(c.table.not_failures, ["EAGAIN"]);
    assert_eq!(
        c.identity.sources.pod_logs,
        std::path::PathBuf::from("/x/pods")
    );
    assert_eq!(c.identity.max_cgroups, 100);
    assert_eq!(c.identity.retention, std::time::Duration::from_secs(30));
    assert_eq!(
        c.identity.own,
        [
            ("k8s.pod.name".to_string(), "a".to_string()),
            ("k8s.pod.uid".to_string(), "b".to_string())
        ]
    );
    // What --print-config prints reads back the same.
    let again = ok(&[], &[], &c.to_toml());
    assert_eq!((again.table, again.identity), (c.table, c.identity));
}

#[test]
fn identity_and_table_view_errors_name_the_key() {
    for (args, toml, want) in [
        (
            &["--sort", "fast"][..],
            "",
            "--sort: expected one of rate, p50",
        ),
        (
            &["--filter", "pod=x"][..],
            "",
            "--filter: unknown attribute \"pod\"",
        ),
        (
            &["--filter", "k8s.pod.name"][..],
            "",
            "--filter: expected key=value",
        ),
        (
            &[][..],
            "table_sort = \"x\"\n",
            "table_sort: expected one of",
        ),
        (
            &[][..],
            "not_failures = [\"ENOPE\"]\n",
            "not_failures: unknown errno name \"ENOPE\"",
        ),
        (
            &[][..],
            "[identity]\npod_logs = \"var/log\"\n",
            "identity.pod_logs: expected an absolute path",
        ),
        (
            &[][..],
            "[identity]\nmax_cgroups = 1\n",
            "identity.max_cgroups: must be between 16 and 1000000",
        ),
        (
            &[][..],
            "[identity]\nretention = \"2days\"\n",
            "identity.retention: must be between",
        ),
        (
            &[][..],
            "[identity]\nsocket = \"/run/containerd.sock\"\n",
            "unknown field `socket`",
        ),
        (
            &[][..],
            "[resource]\nself_attributes = \"=x\"\n",
            "resource.self_attributes",
        ),
    ] {
        let e = err(args, &[], toml);
        assert!(e.contains(want), "{args:?} {toml:?}: {e}");
    }
}
