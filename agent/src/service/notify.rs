//! The sd_notify protocol, without libsystemd: one datagram per message to
//! the socket named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket), and the watchdog period from `WATCHDOG_USEC` / `WATCHDOG_PID`.
//! See sd_notify(3) and systemd.service(5) (Type=notify, WatchdogSec=).

use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::config::Env;

/// Where the service manager listens, from `NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    Path(std::path::PathBuf),
    /// The name without the leading `@` (a NUL byte on the wire).
    Abstract(Vec<u8>),
}

/// Why `NOTIFY_SOCKET` cannot be used; the agent then runs without notify.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={value:?}: {problem}")]
    Address {
        value: String,
        problem: &'static str,
    },
    #[error("NOTIFY_SOCKET: {0}")]
    Socket(#[source] io::Error),
}

/// Parses `NOTIFY_SOCKET`. Only the two forms systemd has always used;
/// `vsock:` (systemd 253+, for VMs) is refused rather than misread.
pub fn parse_addr(value: &str) -> Result<NotifyAddr, NotifyError> {
    let bad = |problem| NotifyError::Address {
        value: value.to_owned(),
        problem,
    };
    if let Some(name) = value.strip_prefix('@') {
        if name.is_empty() {
            return Err(bad("empty abstract socket name"));
        }
        return Ok(NotifyAddr::Abstract(name.as_bytes().to_vec()));
    }
    if value.starts_with('/') {
        return Ok(NotifyAddr::Path(value.into()));
    }
    Err(bad("expected an absolute path or @abstract-name"))
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// `None` when not started by a service manager (no `NOTIFY_SOCKET`).
    pub fn from_env(env: &dyn Env) -> Result<Option<Notifier>, NotifyError> {
        let Some(value) = env.get("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        Notifier::new(&parse_addr(&value)?).map(Some)
    }

    pub fn new(addr: &NotifyAddr) -> Result<Notifier, NotifyError> {
        let addr = match addr {
            NotifyAddr::Path(p) => SocketAddr::from_pathname(p),
            NotifyAddr::Abstract(name) => SocketAddr::from_abstract_name(name),
        }
        .map_err(NotifyError::Socket)?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        // Never block the runtime's only thread on a full manager queue: a
        // lost WATCHDOG=1 is retried at the next period anyway.
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Notifier { socket, addr })
    }

    /// Sends one message, e.g. `READY=1\nSTATUS=...`.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(drop)
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends, and only if `WATCHDOG_PID` is unset or names this process (a
/// child that inherited the variables must not ping for its parent).
pub fn watchdog_period(env: &dyn Env, own_pid: u32) -> Option<Duration> {
    let usec: u64 = env.get("WATCHDOG_USEC")?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = env.get("WATCHDOG_PID").filter(|p| !p.trim().is_empty()) {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_addr("/run/systemd/notify").unwrap(),
            NotifyAddr::Path("/run/systemd/notify".into())
        );
        assert_eq!(
            parse_addr("@sd-notify/1").unwrap(),
            NotifyAddr::Abstract(b"sd-notify/1".to_vec())
        );
        for bad in ["@", "relative/path", "vsock:2:1234", " /x"] {
            let e = parse_addr(bad).unwrap_err().to_string();
            assert!(e.contains("NOTIFY_SOCKET"), "{e}");
        }
    }

    #[test]
    fn watchdog_period_is_half_and_respects_pid() {
        let me = 4242;
        let p = |pairs: &[(&str, &str)]| watchdog_period(&env(pairs), me);
        assert_eq!(p(&[]), None);
        assert_eq!(
            p(&[("WATCHDOG_USEC", "30000000")]),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            p(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "4242")]),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "1")]),
            None
        );
        assert_eq!(p(&[("WATCHDOG_USEC", "0")]), None);
        assert_eq!(p(&[("WATCHDOG_USEC", "soon")]), None);
        assert_eq!(
            p(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "x")]),
            None
        );
    }

    #[test]
    fn no_socket_no_notifier() {
        assert!(Notifier::from_env(&env(&[])).unwrap().is_none());
        assert!(Notifier::from_env(&env(&[("NOTIFY_SOCKET", "")]))
            .unwrap()
            .is_none());
        assert!(Notifier::from_env(&env(&[("NOTIFY_SOCKET", "x")])).is_err());
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("syscope-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_env(&env(&[("NOTIFY_SOCKET", path.to_str().unwrap())]))
            .unwrap()
            .unwrap();
        n.send("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("syscope-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::from_env(&env(&[("NOTIFY_SOCKET", &format!("@{name}"))]))
            .unwrap()
            .unwrap();
        n.send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }
}
