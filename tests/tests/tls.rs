//! OTLP over TLS end to end: certificates made with openssl in a temp dir,
//! Debian's nginx terminating TLS (gRPC over HTTP/2 with ALPN, and HTTP) or
//! stunnel (requiring a client certificate) in front of the real receiver, the real agent on the real kernel. A private
//! CA, mutual TLS, and the three bad cases (unknown CA, client certificate
//! required, expired server certificate): clear errors, retries, no crash,
//! and once fixed (a rotated CA file) the buffered intervals arrive with
//! exact counts.
//!
//! Needs root, nginx, stunnel4 and openssl (`cargo xtask setup` installs them).

mod common;

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{require_root, skip, Agent};
use syscope_tests::{
    run_named, select,
    tls::{nginx_path, Listener, Nginx, Pki, Stunnel},
    unique_name, MetricPoint, Receiver,
};

const WAIT: Duration = Duration::from_secs(30);

fn have_tools() -> bool {
    if !nginx_path().exists() {
        skip("no nginx (apt package nginx; cargo xtask setup installs it)");
        return false;
    }
    if Command::new("stunnel4").arg("-version").output().is_err() {
        skip("no stunnel4 (apt package stunnel4; cargo xtask setup installs it)");
        return false;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        skip("no openssl command (apt package openssl)");
        return false;
    }
    true
}

fn errors_of(points: &[MetricPoint], name: &str) -> Option<f64> {
    select(
        points,
        "syscall.errors",
        &[
            ("process.executable.name", name),
            ("syscall.name", "openat"),
            ("error.type", "ENOENT"),
        ],
    )
    .filter_map(|p| p.number())
    .last()
}

fn agent(env: &[(&str, &str)]) -> Agent {
    Agent::start(&["--interval", "1s"], env)
}

/// Waits until the agent's log contains `text`.
fn wait_log(agent: &Agent, text: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = agent.stderr();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {text:?} in:\n{log}");
        thread::sleep(Duration::from_millis(100));
    }
}

const GRPC: Listener = Listener {
    cert: "server",
    mtls: false,
    grpc: true,
};

/// An https collector with a private CA receives exact counts, over gRPC
/// (by name: the certificate's DNS name) and over HTTP/protobuf (by IP).
#[test]
fn private_ca_grpc_and_http_count_exactly() {
    if !require_root() || !have_tools() {
        return;
    }
    let pki = Pki::new();
    let rx = Receiver::start();
    let http = Listener {
        grpc: false,
        ..GRPC
    };
    let nginx = Nginx::start(&pki, rx.grpc_port(), rx.http_port(), &[GRPC, http]);
    let ca = pki.file("ca.crt");
    for (i, protocol) in ["grpc", "http/protobuf"].into_iter().enumerate() {
        let endpoint = match protocol {
            "grpc" => format!("https://localhost:{}", nginx.ports[0]),
            _ => format!("https://127.0.0.1:{}", nginx.ports[1]),
        };
        let a = agent(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", &ca),
        ]);
        let name = unique_name(&format!("tls{i}"));
        let n = 23 + i as u64;
        run_named(&name, &["fail-open", &n.to_string()]);
        rx.wait_for(WAIT, |p| errors_of(p, &name) == Some(n as f64));
        eprintln!("{protocol} over TLS via {endpoint}: {n} errors received");
        assert!(!a.stderr().contains("OTLP export failed"), "{}", a.stderr());
    }
}

/// The server requires a client certificate (stunnel: the handshake fails
/// without one): the error says so, the export is retried and buffered,
/// the agent keeps running. With one (mTLS) the counts arrive exactly, over
/// gRPC through stunnel and over HTTP/protobuf through nginx.
#[test]
fn mutual_tls_required_and_given() {
    if !require_root() || !have_tools() {
        return;
    }
    let pki = Pki::new();
    let rx = Receiver::start();
    let stunnel = Stunnel::start(&pki, rx.grpc_port());
    let endpoint = format!("https://localhost:{}", stunnel.port);
    let ca = pki.file("ca.crt");
    let without = agent(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
    ]);
    let name = unique_name("nocert");
    run_named(&name, &["fail-open", "5"]);
    // With TLS 1.3 the server judges the client's certificate after the
    // client has finished its side of the handshake: an attempt may see the
    // server's alert (named) or, when the close wins the race, only a
    // closed connection. The attempts repeat; one must name the cause.
    let log = wait_log(&without, "requires a client certificate");
    let line = last_line(&log, "requires a client certificate");
    eprintln!("without a client certificate: {line}");
    // "OTLP export failed" or, once it keeps failing, "still failing".
    assert!(line.contains("OTLP export"), "{line}");
    wait_log(&without, "OTLP export still failing");
    assert!(without.is_running());
    assert_eq!(errors_of(&rx.points(), &name), None);
    drop(without);

    let client = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            &pki.file("client.crt"),
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &pki.file("client.key")),
    ];
    let mut env = client.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint));
    let with = agent(&env);
    let name = unique_name("mtls");
    run_named(&name, &["fail-open", "31"]);
    rx.wait_for(WAIT, |p| errors_of(p, &name) == Some(31.0));
    assert!(
        !with.stderr().contains("OTLP export failed"),
        "{}",
        with.stderr()
    );
    drop(with);

    let mtls = Listener {
        mtls: true,
        grpc: false,
        ..GRPC
    };
    let nginx = Nginx::start(&pki, rx.grpc_port(), rx.http_port(), &[mtls]);
    let endpoint = format!("https://127.0.0.1:{}", nginx.ports[0]);
    let mut env = client.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint));
    env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"));
    let with = agent(&env);
    let name = unique_name("mtlshttp");
    run_named(&name, &["fail-open", "37"]);
    rx.wait_for(WAIT, |p| errors_of(p, &name) == Some(37.0));
    assert!(
        !with.stderr().contains("OTLP export failed"),
        "{}",
        with.stderr()
    );
}

fn last_line<'a>(log: &'a str, text: &str) -> &'a str {
    log.lines().rfind(|l| l.contains(text)).unwrap_or("")
}

/// A CA that did not sign the server's certificate: "unknown issuer",
/// retried and buffered; then the CA file is replaced with the right one
/// (rotation, no restart) and the buffered intervals arrive, exact.
#[test]
fn unknown_ca_is_retried_and_a_rotated_ca_file_is_picked_up() {
    if !require_root() || !have_tools() {
        return;
    }
    let pki = Pki::new();
    let rx = Receiver::start();
    let nginx = Nginx::start(&pki, rx.grpc_port(), rx.http_port(), &[GRPC]);
    let ca_file = pki.path("rotating-ca.crt");
    std::fs::copy(pki.path("other-ca.crt"), &ca_file).unwrap();
    let endpoint = format!("localhost:{}", nginx.ports[0]); // no scheme: gRPC with TLS
    let a = agent(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
    ]);
    let name = unique_name("rotate");
    run_named(&name, &["fail-open", "13"]);
    let log = wait_log(&a, "OTLP export failed; buffering intervals and retrying");
    let line = last_line(&log, "OTLP export failed");
    eprintln!("wrong CA: {line}");
    assert!(
        line.contains("UnknownIssuer")
            && line.contains("not signed by a trusted CA")
            && line.contains(&format!("trusted CA: {}", ca_file.display())),
        "{line}"
    );
    thread::sleep(Duration::from_secs(3));
    assert!(a.is_running());
    assert_eq!(errors_of(&rx.points(), &name), None, "nothing got through");
    replace(&ca_file, &pki.path("ca.crt"));
    wait_log(&a, "TLS files changed: reloaded the certificates");
    rx.wait_for(WAIT, |p| errors_of(p, &name) == Some(13.0));
    assert!(a.is_running());
}

/// Atomically, as a secret mount or cert-manager does: a new file renamed
/// over the old one.
fn replace(target: &Path, source: &Path) {
    let tmp = target.with_extension("new");
    std::fs::copy(source, &tmp).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

/// The server's certificate names another host: "not valid for name",
/// retried, the agent keeps running.
#[test]
fn name_mismatch_is_named_and_retried() {
    if !require_root() || !have_tools() {
        return;
    }
    let pki = Pki::new();
    let rx = Receiver::start();
    let elsewhere = Listener {
        cert: "elsewhere",
        ..GRPC
    };
    let nginx = Nginx::start(&pki, rx.grpc_port(), rx.http_port(), &[elsewhere]);
    let a = agent(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("https://localhost:{}", nginx.ports[0]),
        ),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.file("ca.crt")),
    ]);
    let log = wait_log(&a, "OTLP export failed; buffering intervals and retrying");
    let line = last_line(&log, "OTLP export failed");
    eprintln!("name mismatch: {line}");
    assert!(line.contains("does not name the endpoint's host"), "{line}");
    wait_log(&a, "OTLP export still failing");
    assert!(a.is_running());
}

/// The server's certificate expired: the error says so, the export is
/// retried, the agent keeps running.
#[test]
fn expired_server_certificate_is_named_and_retried() {
    if !require_root() || !have_tools() {
        return;
    }
    let pki = Pki::new();
    let rx = Receiver::start();
    let expired = Listener {
        cert: "expired",
        ..GRPC
    };
    let nginx = Nginx::start(&pki, rx.grpc_port(), rx.http_port(), &[expired]);
    let mut a = agent(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("https://localhost:{}", nginx.ports[0]),
        ),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.file("ca.crt")),
    ]);
    let log = wait_log(&a, "OTLP export failed; buffering intervals and retrying");
    let line = last_line(&log, "OTLP export failed");
    eprintln!("expired: {line}");
    assert!(line.contains("expired"), "{line}");
    // Still failing, still retrying, still alive.
    wait_log(&a, "OTLP export still failing");
    assert!(a.is_running());
    assert!(a.terminate().success());
}

/// Bad TLS files exit 2 before anything loads, naming the variable and
/// the file and the problem: unreadable, not PEM, a key without a
/// certificate, an expired client certificate.
#[test]
fn bad_tls_files_exit_2_naming_them() {
    if !have_tools() {
        return;
    }
    let pki = Pki::new();
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let junk = junk.display().to_string();
    let missing = pki.file("missing.pem");
    let (expired_crt, expired_key) = (pki.file("expired.crt"), pki.file("expired.key"));
    // (environment, the variable the error names, the problem it states)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing)],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "cannot read",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", &junk)],
            "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            "is not PEM",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", &expired_key)],
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            "needs a client certificate",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &expired_crt),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &expired_key),
            ],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "certificate expired at 2020-01-02T00:00:00Z",
        ),
    ];
    for (env, var, problem) in cases {
        let mut cmd = Command::new(common::agent_bin());
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert!(
            err.contains(&format!("invalid configuration: {var}: ")) && err.contains(problem),
            "{env:?}: {err}"
        );
        eprintln!("{}", err.trim());
    }
}
