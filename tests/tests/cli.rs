//! The agent binary's behaviour on bad input: invalid configuration (and
//! bad usage) exits 2 before anything is loaded, naming the flag, variable
//! or key, never panicking or hanging; missing privileges name the
//! capability.

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Far longer than validation takes; a run that lasts longer hangs.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the agent (OTEL_* from the test's environment removed) and returns
/// its exit status and stderr; fails the test if it does not end within
/// [`TIMEOUT`] (it is SIGKILLed then).
fn syscope(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(common::agent_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("run syscope");
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(TIMEOUT) else {
        // SAFETY: our own child, not yet reaped (the waiting thread is blocked on it).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("syscope {args:?} {env:?} still running after {TIMEOUT:?}: it hangs");
    };
    let out = out.expect("wait for syscope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file for one test, removed on drop.
struct TempConfig(std::path::PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("syscope-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("syscope.toml");
        std::fs::write(&path, text).unwrap();
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Exits 2 before anything is loaded, naming `name`, without a panic
/// (101, or 134 for an abort) or a hang. `--print-config` is added so
/// that a value that wrongly passes prints and exits 0 instead of loading
/// programs.
fn assert_refused(args: &[&str], env: &[(&str, &str)], name: &str) {
    let args: Vec<&str> = args.iter().copied().chain(["--print-config"]).collect();
    let (code, err) = syscope(&args, env);
    assert_eq!(code, 2, "{args:?} {env:?}: {err}");
    assert!(
        err.contains(name),
        "{args:?} {env:?}: {name} not named: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} {env:?}: {err}");
}

/// Defect 4: each value that once panicked, hung or failed after attaching.
#[test]
fn huge_flag_values_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--interval", "18446744073709551615s"),
        ("--buffer-intervals", "18446744073709551615"),
        ("--buffer-intervals", "1000000000000"),
        ("--table-rows", "9223372036854775809"),
        ("--max-series", "9223372036854775809"),
    ] {
        assert_refused(&[flag, value], &[], flag);
    }
}

#[test]
fn huge_file_values_exit_2_naming_the_key() {
    for (name, text, key) in [
        (
            "grace",
            "shutdown_grace = \"18446744073709551615s\"\n",
            "shutdown_grace",
        ),
        (
            "maps",
            "[limits.kernel_maps]\nsyscall_errors = 4294967295\n",
            "limits.kernel_maps.syscall_errors",
        ),
        (
            "failure",
            "[health]\nmax_export_failure = \"100000000000h\"\n",
            "health.max_export_failure",
        ),
    ] {
        let file = TempConfig::new(name, text);
        assert_refused(&["--config", file.path()], &[], key);
    }
}

#[test]
fn huge_env_values_exit_2_naming_the_variable() {
    for var in ["OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_OTLP_TIMEOUT"] {
        assert_refused(&[], &[(var, "18446744073709551615")], var);
    }
}

#[test]
fn malformed_endpoint_exits_2_before_loading() {
    assert_refused(&["--endpoint", "http://[::1"], &[], "--endpoint");
    assert_refused(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1")],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    );
    let file = TempConfig::new("endpoint", "[export]\nendpoint = \"http://[::1\"\n");
    assert_refused(&["--config", file.path()], &[], "export.endpoint");
}

/// clap's own usage errors exit 2 too, naming the flag.
#[test]
fn usage_errors_exit_2_naming_the_flag() {
    assert_refused(&["--intervall", "5s"], &[], "--intervall");
    assert_refused(&["--hook", "kprobe"], &[], "--hook");
}

/// TLS files that cannot be used, and exporters that cannot be honoured,
/// exit 2 naming the variable (issue 11; tls.rs covers each problem).
#[test]
fn tls_variables_exit_2_naming_the_variable() {
    for var in [
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
    ] {
        assert_refused(&[], &[(var, "/nonexistent/collector.pem")], var);
    }
    assert_refused(
        &[],
        &[("OTEL_METRICS_EXPORTER", "console")],
        "OTEL_METRICS_EXPORTER",
    );
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
    let file = TempConfig::new("unknown", "[export]\nendpiont = \"http://x:4317\"\n");
    assert_refused(&["--config", file.path()], &[], "endpiont");
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
    // The first line is the package description: both probe sets.
    let about = text.lines().next().unwrap_or_default();
    assert!(
        about.contains("syscall") && about.contains("TCP"),
        "{about}"
    );
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
