//! Running under a supervisor: the health endpoint for Kubernetes probes
//! (`health`, `http`) and the systemd notification protocol (`notify`).
//! `app` calls [`Service`] at the three moments that matter: programs
//! attached, every watchdog period, and shutdown.

pub mod health;
pub mod http;
pub mod notify;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{Env, HealthConfig};
use crate::export::ExportHealth;
use health::HealthState;
use http::ConnectionStats;
use notify::Notifier;

/// Starting the health endpoint failed (the address is taken, say).
#[derive(Debug, thiserror::Error)]
#[error("health endpoint: cannot listen on {address} (health.address)")]
pub struct ListenError {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The supervisor-facing side of the daemon. Dropping it stops the server.
pub struct Service {
    state: Arc<HealthState>,
    connections: Arc<ConnectionStats>,
    server: Option<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    notifier: Option<Notifier>,
    watchdog: Option<tokio::time::Interval>,
}

impl Service {
    /// Binds the health endpoint (before the programs load, so liveness
    /// answers during a slow load and readiness says "starting") and reads
    /// the systemd notification variables. A bad `NOTIFY_SOCKET` is logged,
    /// not fatal: the agent still works, only the manager is not told.
    pub async fn start(cfg: &HealthConfig, env: &dyn Env) -> Result<Service, ListenError> {
        let state = Arc::new(HealthState::default());
        let connections = Arc::new(ConnectionStats::default());
        let (server, local_addr) = match cfg.address {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|source| ListenError { address, source })?;
                let local = listener.local_addr().unwrap_or(address);
                info!(address = %local, "health endpoint listening: /healthz, /readyz");
                let server = tokio::spawn(http::serve(
                    listener,
                    Arc::clone(&state),
                    Arc::clone(&connections),
                ));
                (Some(server), Some(local))
            }
            None => (None, None),
        };
        let notifier = Notifier::from_env(env).unwrap_or_else(|e| {
            warn!(error = %e, "not notifying the service manager");
            None
        });
        let watchdog = notifier
            .as_ref()
            .and_then(|_| notify::watchdog_period(env, std::process::id()))
            .map(|period| {
                info!(?period, "systemd watchdog enabled");
                let mut t = tokio::time::interval(period);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
        Ok(Service {
            state,
            connections,
            server,
            local_addr,
            notifier,
            watchdog,
        })
    }

    /// The bound health address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    pub fn state(&self) -> &Arc<HealthState> {
        &self.state
    }

    /// What the health endpoint's connections did (accepted, closed at the
    /// connection limit, timed out), for the agent's own metrics.
    pub fn connections(&self) -> &Arc<ConnectionStats> {
        &self.connections
    }

    /// Programs attached: readiness may turn true, and systemd learns the
    /// service is up (Type=notify).
    /// `signals`: which hook serves each signal, as JSON (`Signals::json`).
    pub fn attached(&self, hook: &'static str, signals: String, export: Option<ExportHealth>) {
        self.state.attached(hook, signals, export);
        self.notify(&format!("READY=1\nSTATUS=probes attached ({hook})"));
    }

    /// Resolves at each watchdog period and pings; never resolves without
    /// a watchdog. Polled from the collect loop, so a stuck loop stops the
    /// pings and systemd restarts the agent.
    pub async fn watchdog(&mut self) {
        match &mut self.watchdog {
            Some(t) => {
                t.tick().await;
                self.notify("WATCHDOG=1");
            }
            None => std::future::pending().await,
        }
    }

    /// Shutdown began: not ready any more, and systemd is told.
    pub fn stopping(&self) {
        self.state.stopping();
        self.notify("STOPPING=1\nSTATUS=shutting down: final collection and export");
    }

    fn notify(&self, message: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.send(message) {
                warn!(error = %e, "sd_notify failed");
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::transport::server::TcpIncoming;

    use crate::export::{self, Settings};
    use crate::telemetry::SelfStats;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
    }

    fn cfg() -> HealthConfig {
        HealthConfig {
            address: Some("127.0.0.1:0".parse().unwrap()),
            max_export_failure: Duration::from_millis(200),
        }
    }

    /// Readiness follows the exporter: ready while exports fail for less
    /// than the limit, not ready past it, ready again after a success.
    #[tokio::test]
    async fn readiness_follows_export_health() {
        let env: HashMap<String, String> = HashMap::new();
        let svc = Service::start(&cfg(), &env).await.unwrap();
        let addr = svc.local_addr().unwrap();
        assert_eq!(get(addr, "/readyz").await.0, 503);
        assert_eq!(get(addr, "/healthz").await.0, 200);

        // An exporter pointed at a port nobody listens on.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let settings = Settings {
            endpoint: format!("http://{dead_addr}"),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            max_failure: Some(cfg().max_export_failure),
            ..Settings::default()
        };
        let ex = export::spawn(settings, Arc::new(SelfStats::default())).unwrap();
        svc.attached("tp_btf", "{}".into(), Some(ex.health()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"last_success_age_seconds\":null"), "{body}");

        ex.submit(Default::default());
        let started = tokio::time::Instant::now();
        let body = loop {
            let (code, body) = get(addr, "/readyz").await;
            if code == 503 {
                break body;
            }
            assert!(body.contains("\"status\":\"ready\""), "{body}");
            assert!(started.elapsed() < Duration::from_secs(10), "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(started.elapsed() >= cfg().max_export_failure, "{body}");
        assert!(body.contains("\"status\":\"export_failing\""), "{body}");
        assert!(body.contains("\"attached\":true"), "{body}");
        assert!(body.contains("\"buffered_intervals\":1"), "{body}");
        assert!(body.contains("\"max_failure_seconds\":0.200"), "{body}");
        assert!(
            !body.contains("127.0.0.1"),
            "no endpoint in the body: {body}"
        );

        // The collector comes back on the same port: ready again.
        let back = TcpListener::bind(dead_addr).await.unwrap();
        let collector = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(MetricsServiceServer::new(Accept), TcpIncoming::from(back))
                .await;
        });
        let started = tokio::time::Instant::now();
        loop {
            let (code, body) = get(addr, "/readyz").await;
            if code == 200 {
                assert!(body.contains("\"failing_for_seconds\":null"), "{body}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        svc.stopping();
        assert_eq!(get(addr, "/readyz").await.0, 503);
        collector.abort();
        drop(ex);
    }

    struct Accept;

    /// A collector that accepts everything.
    #[tonic::async_trait]
    impl MetricsService for Accept {
        async fn export(
            &self,
            _: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    #[tokio::test]
    async fn taken_address_names_the_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = HealthConfig {
            address: Some(taken.local_addr().unwrap()),
            ..cfg()
        };
        let env: HashMap<String, String> = HashMap::new();
        let e = Service::start(&cfg, &env).await.err().unwrap().to_string();
        assert!(e.contains("health.address"), "{e}");
    }
}
