//! The catalogue of exported SLI metrics: name, unit, instrument,
//! description and attribute set, defined once. Aggregation keys series by
//! exactly these attributes, the OTLP encoder and the live table read them
//! from here, and `docs/metrics.md`'s table is checked against it (a test
//! renders the table from this catalogue).

use syscope_common::tcp::{CountKind, HistKind};

/// A data point attribute the SLI metrics can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attr {
    SyscallName,
    ExecutableName,
    ContainerId,
    ServerAddress,
    ServerPort,
    ErrorType,
    IoDirection,
}

impl Attr {
    /// The OpenTelemetry attribute key.
    pub const fn key(self) -> &'static str {
        match self {
            Attr::SyscallName => "syscall.name",
            Attr::ExecutableName => "process.executable.name",
            Attr::ContainerId => "container.id",
            Attr::ServerAddress => "server.address",
            Attr::ServerPort => "server.port",
            Attr::ErrorType => "error.type",
            Attr::IoDirection => "network.io.direction",
        }
    }
}

/// Whether a metric's points always carry an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Always,
    /// Only when known: `container.id` outside containers, the owner of a
    /// socket older than the agent, the port of a reset without a socket.
    WhenKnown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instrument {
    /// Exponential histogram, unit `s`, scale `hist::SCALE`.
    Histogram,
    /// Monotonic sum.
    Counter,
}

pub struct MetricSpec {
    pub name: &'static str,
    pub unit: &'static str,
    pub instrument: Instrument,
    pub description: &'static str,
    pub attrs: &'static [(Attr, Presence)],
}

/// Every SLI metric syscope exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    SyscallDuration,
    SyscallErrors,
    TcpConnectDuration,
    TcpConnectErrors,
    TcpServerRequestDuration,
    TcpClientRequestDuration,
    TcpRtt,
    TcpRetransmits,
    TcpResets,
    TcpListenDrops,
    TcpServerMultiplexed,
    TcpClientMultiplexed,
}

use Attr::*;
use Presence::*;

const WORKLOAD: [(Attr, Presence); 2] = [(ExecutableName, Always), (ContainerId, WhenKnown)];
const SOCKET_OWNER: [(Attr, Presence); 2] = [(ExecutableName, WhenKnown), (ContainerId, WhenKnown)];

impl Metric {
    /// Histograms, in slot order (see [`Metric::slot`]).
    pub const HISTOGRAMS: [Metric; 5] = [
        Metric::SyscallDuration,
        Metric::TcpConnectDuration,
        Metric::TcpServerRequestDuration,
        Metric::TcpClientRequestDuration,
        Metric::TcpRtt,
    ];
    /// Counters, in slot order.
    pub const COUNTERS: [Metric; 7] = [
        Metric::SyscallErrors,
        Metric::TcpConnectErrors,
        Metric::TcpRetransmits,
        Metric::TcpResets,
        Metric::TcpListenDrops,
        Metric::TcpServerMultiplexed,
        Metric::TcpClientMultiplexed,
    ];

    pub const COUNT: usize = 12;
    /// Every metric, in export (and documentation) order.
    pub const ALL: [Metric; Self::COUNT] = [
        Metric::SyscallDuration,
        Metric::SyscallErrors,
        Metric::TcpConnectDuration,
        Metric::TcpConnectErrors,
        Metric::TcpServerRequestDuration,
        Metric::TcpClientRequestDuration,
        Metric::TcpRtt,
        Metric::TcpRetransmits,
        Metric::TcpResets,
        Metric::TcpListenDrops,
        Metric::TcpServerMultiplexed,
        Metric::TcpClientMultiplexed,
    ];

    /// Position in [`Metric::ALL`] (for per-metric arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn all() -> impl Iterator<Item = Metric> {
        Self::ALL.into_iter()
    }

    /// Index among the metrics of the same instrument.
    pub fn slot(self) -> usize {
        let list: &[Metric] = match self.spec().instrument {
            Instrument::Histogram => &Self::HISTOGRAMS,
            Instrument::Counter => &Self::COUNTERS,
        };
        list.iter().position(|m| *m == self).unwrap_or(0)
    }

    /// The metric a TCP histogram kind feeds.
    pub fn of_hist(k: HistKind) -> Metric {
        match k {
            HistKind::Connect => Metric::TcpConnectDuration,
            HistKind::ServerRequest => Metric::TcpServerRequestDuration,
            HistKind::ClientRequest => Metric::TcpClientRequestDuration,
            HistKind::Rtt => Metric::TcpRtt,
        }
    }

    /// The metric a TCP counter kind feeds (resets both ways are one
    /// metric, told apart by `network.io.direction`).
    pub fn of_count(k: CountKind) -> Metric {
        match k {
            CountKind::ConnectError => Metric::TcpConnectErrors,
            CountKind::Retransmit => Metric::TcpRetransmits,
            CountKind::ResetSent | CountKind::ResetReceived => Metric::TcpResets,
            CountKind::ListenDrop => Metric::TcpListenDrops,
            CountKind::MultiplexedServer => Metric::TcpServerMultiplexed,
            CountKind::MultiplexedClient => Metric::TcpClientMultiplexed,
        }
    }

    pub fn spec(self) -> &'static MetricSpec {
        match self {
            Metric::SyscallDuration => &MetricSpec {
                name: "syscall.duration",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Duration of system calls, per workload and syscall.",
                attrs: &[
                    (SyscallName, Always),
                    WORKLOAD[0],
                    WORKLOAD[1],
                ],
            },
            Metric::SyscallErrors => &MetricSpec {
                name: "syscall.errors",
                unit: "{error}",
                instrument: Instrument::Counter,
                description: "System calls that returned an error, by errno.",
                attrs: &[
                    (SyscallName, Always),
                    WORKLOAD[0],
                    WORKLOAD[1],
                    (ErrorType, Always),
                ],
            },
            Metric::TcpConnectDuration => &MetricSpec {
                name: "tcp.connect.duration",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Time from SYN sent to connection established, per workload and server.",
                attrs: &[
                    (ServerAddress, Always),
                    (ServerPort, Always),
                    WORKLOAD[0],
                    WORKLOAD[1],
                ],
            },
            Metric::TcpServerRequestDuration => &MetricSpec {
                name: "tcp.server.request.duration",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Server sockets: first byte of a request read to first byte of the response written.",
                attrs: &[(ServerPort, Always), WORKLOAD[0], WORKLOAD[1]],
            },
            Metric::TcpClientRequestDuration => &MetricSpec {
                name: "tcp.client.request.duration",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Client sockets: first byte of a request written to first byte of the response read.",
                attrs: &[
                    (ServerAddress, Always),
                    (ServerPort, Always),
                    WORKLOAD[0],
                    WORKLOAD[1],
                ],
            },
            Metric::TcpRtt => &MetricSpec {
                name: "tcp.rtt",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Smoothed round-trip time of connections, sampled at most once per second per socket.",
                attrs: &[(ServerPort, Always), WORKLOAD[0], WORKLOAD[1]],
            },
            Metric::TcpConnectErrors => &MetricSpec {
                name: "tcp.connect.errors",
                unit: "{error}",
                instrument: Instrument::Counter,
                description: "Connects that failed, by cause (errno, or cancelled).",
                attrs: &[
                    (ServerAddress, Always),
                    (ServerPort, Always),
                    WORKLOAD[0],
                    WORKLOAD[1],
                    (ErrorType, Always),
                ],
            },
            Metric::TcpRetransmits => &MetricSpec {
                name: "tcp.retransmits",
                unit: "{segment}",
                instrument: Instrument::Counter,
                description: "Retransmitted TCP segments.",
                // A socket the agent does not track (older than the agent,
                // or its own) has no known role, so no server port.
                attrs: &[(ServerPort, WhenKnown), SOCKET_OWNER[0], SOCKET_OWNER[1]],
            },
            Metric::TcpResets => &MetricSpec {
                name: "tcp.resets",
                unit: "{reset}",
                instrument: Instrument::Counter,
                description: "TCP resets sent and received.",
                attrs: &[
                    (ServerPort, WhenKnown),
                    SOCKET_OWNER[0],
                    SOCKET_OWNER[1],
                    (IoDirection, Always),
                ],
            },
            Metric::TcpListenDrops => &MetricSpec {
                name: "tcp.listen.drops",
                unit: "{connection}",
                instrument: Instrument::Counter,
                description: "Connections dropped by a listener (accept queue full), per port.",
                // A listener older than the agent has no known owner.
                attrs: &[(ServerPort, Always), SOCKET_OWNER[0], SOCKET_OWNER[1]],
            },
            Metric::TcpServerMultiplexed => &MetricSpec {
                name: "tcp.server.multiplexed",
                unit: "{connection}",
                instrument: Instrument::Counter,
                description: "Server connections whose requests overlapped (pipelining, HTTP/2): \
                              from then on not in tcp.server.request.duration.",
                attrs: &[(ServerPort, Always), WORKLOAD[0], WORKLOAD[1]],
            },
            Metric::TcpClientMultiplexed => &MetricSpec {
                name: "tcp.client.multiplexed",
                unit: "{connection}",
                instrument: Instrument::Counter,
                description: "Client connections whose requests overlapped (pipelining, HTTP/2): \
                              from then on not in tcp.client.request.duration.",
                attrs: &[
                    (ServerAddress, Always),
                    (ServerPort, Always),
                    WORKLOAD[0],
                    WORKLOAD[1],
                ],
            },
        }
    }

    /// Whether points of this metric carry `a`.
    pub fn has(self, a: Attr) -> bool {
        self.spec().attrs.iter().any(|(x, _)| *x == a)
    }
}

/// The metric table of docs/metrics.md, rendered from the catalogue.
pub fn doc_table() -> String {
    let mut out = String::from(
        "| metric | instrument | unit | attributes (* only when known) |\n|---|---|---|---|\n",
    );
    for m in Metric::all() {
        let s = m.spec();
        let attrs: Vec<String> = s
            .attrs
            .iter()
            .map(|(a, p)| match p {
                Always => format!("`{}`", a.key()),
                WhenKnown => format!("`{}`*", a.key()),
            })
            .collect();
        let instrument = match s.instrument {
            Instrument::Histogram => "exponential histogram",
            Instrument::Counter => "monotonic sum",
        };
        out.push_str(&format!(
            "| `{}` | {instrument} | `{}` | {} |\n",
            s.name,
            s.unit,
            attrs.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_kinds_agree() {
        for (i, m) in Metric::all().enumerate() {
            assert_eq!(m.index(), i);
        }
        assert_eq!(Metric::all().count(), Metric::COUNT);
        for (i, m) in Metric::HISTOGRAMS.iter().enumerate() {
            assert_eq!(m.spec().instrument, Instrument::Histogram);
            assert_eq!(m.slot(), i);
        }
        for (i, m) in Metric::COUNTERS.iter().enumerate() {
            assert_eq!(m.spec().instrument, Instrument::Counter);
            assert_eq!(m.slot(), i);
        }
        for k in HistKind::ALL {
            assert_eq!(Metric::of_hist(k).spec().instrument, Instrument::Histogram);
        }
        for k in CountKind::ALL {
            assert_eq!(Metric::of_count(k).spec().instrument, Instrument::Counter);
        }
    }

    /// docs/metrics.md carries the table this catalogue renders; regenerate
    /// with `SYSCOPE_BLESS=1 cargo test -p syscope doc_table`.
    #[test]
    fn doc_table_matches_docs() {
        crate::docgen::check_section("metrics", &doc_table());
    }
}
