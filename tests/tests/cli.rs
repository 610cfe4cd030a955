//! The agent binary's behaviour on bad input: invalid configuration exits 2
//! and names the key; missing privileges name the capability.

mod common;

use std::process::Command;

fn syscope(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(common::agent_bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run syscope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_flag_value_exits_2_naming_the_flag() {
    let (code, err) = syscope(&["--protocol", "carrier-pigeon"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--protocol") && err.contains("carrier-pigeon"),
        "{err}"
    );
}

#[test]
fn invalid_env_value_exits_2_naming_the_variable() {
    let (code, err) = syscope(&[], &[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("OTEL_METRIC_EXPORT_INTERVAL"), "{err}");
}

#[test]
fn unknown_file_key_exits_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("syscope-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[export]\nendpiont = \"http://x:4317\"\n").unwrap();
    let (code, err) = syscope(&["--config", path.to_str().unwrap()], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("endpiont"), "{err}");
}

#[test]
fn help_documents_the_environment() {
    let out = Command::new(common::agent_bin())
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_SERVICE_NAME",
    ] {
        assert!(text.contains(var), "--help lacks {var}");
    }
}

/// Without CAP_BPF and CAP_PERFMON (dropped from the bounding set, so even
/// root lacks them after exec) the agent exits non-zero naming them.
#[test]
fn missing_capabilities_are_named() {
    if !common::require_root() {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-bpf,-perfmon,-sys_admin", "--"])
        .arg(common::agent_bin())
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-perfmon,-sys_admin", "--"])
        .arg(common::agent_bin())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("missing capabilities: CAP_PERFMON"), "{err}");
}
