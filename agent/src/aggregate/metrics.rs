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
    ContainerName,
    K8sNamespace,
    K8sPodName,
    K8sPodUid,
    K8sContainerName,
    SystemdUnit,
    SystemdSlice,
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
            Attr::ContainerName => "container.name",
            Attr::K8sNamespace => "k8s.namespace.name",
            Attr::K8sPodName => "k8s.pod.name",
            Attr::K8sPodUid => "k8s.pod.uid",
            Attr::K8sContainerName => "k8s.container.name",
            Attr::SystemdUnit => "systemd.unit",
            Attr::SystemdSlice => "systemd.slice",
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
    /// socket older than the agent, the port of a reset without a socket,
    /// identity attributes a workload's cgroup does not have.
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

/// Whose a series is, from its cgroup (see `enrich::identity`): one set,
/// carried or dropped together.
pub const IDENTITY: [Attr; 8] = [
    ContainerId,
    ContainerName,
    K8sNamespace,
    K8sPodName,
    K8sPodUid,
    K8sContainerName,
    SystemdUnit,
    SystemdSlice,
];

const fn workload(exe: Presence) -> [(Attr, Presence); 9] {
    let mut out = [(ExecutableName, exe); 9];
    let mut i = 0;
    while i < IDENTITY.len() {
        out[i + 1] = (IDENTITY[i], WhenKnown);
        i += 1;
    }
    out
}

const WORKLOAD: [(Attr, Presence); 9] = workload(Always);
const SOCKET_OWNER: [(Attr, Presence); 9] = workload(WhenKnown);

/// `first`, then `mid`, then `last`, as one attribute list.
const fn cat<const N: usize>(
    first: &[(Attr, Presence)],
    mid: &[(Attr, Presence); 9],
    last: &[(Attr, Presence)],
) -> [(Attr, Presence); N] {
    let mut out = [(SyscallName, Always); N];
    let mut i = 0;
    while i < first.len() {
        out[i] = first[i];
        i += 1;
    }
    let mut j = 0;
    while j < mid.len() {
        out[i + j] = mid[j];
        j += 1;
    }
    let mut k = 0;
    while k < last.len() {
        out[i + j + k] = last[k];
        k += 1;
    }
    assert!(i + j + k == N);
    out
}

// Attribute lists, in export order (a const, so `spec` can return them
// by reference).
const A_SYSCALL_DURATION: [(Attr, Presence); 10] =
    cat::<10>(&[(SyscallName, Always)], &WORKLOAD, &[]);
const A_SYSCALL_ERRORS: [(Attr, Presence); 11] =
    cat::<11>(&[(SyscallName, Always)], &WORKLOAD, &[(ErrorType, Always)]);
const A_TCP_CONNECT_DURATION: [(Attr, Presence); 11] = cat::<11>(
    &[(ServerAddress, Always), (ServerPort, Always)],
    &WORKLOAD,
    &[],
);
const A_TCP_SERVER_REQUEST: [(Attr, Presence); 10] =
    cat::<10>(&[(ServerPort, Always)], &WORKLOAD, &[]);
const A_TCP_CLIENT_REQUEST: [(Attr, Presence); 11] = cat::<11>(
    &[(ServerAddress, Always), (ServerPort, Always)],
    &WORKLOAD,
    &[],
);
const A_TCP_RTT: [(Attr, Presence); 10] = cat::<10>(&[(ServerPort, Always)], &WORKLOAD, &[]);
const A_TCP_CONNECT_ERRORS: [(Attr, Presence); 12] = cat::<12>(
    &[(ServerAddress, Always), (ServerPort, Always)],
    &WORKLOAD,
    &[(ErrorType, Always)],
);
const A_TCP_RETRANSMITS: [(Attr, Presence); 10] =
    cat::<10>(&[(ServerPort, WhenKnown)], &SOCKET_OWNER, &[]);
const A_TCP_RESETS: [(Attr, Presence); 11] = cat::<11>(
    &[(ServerPort, WhenKnown)],
    &SOCKET_OWNER,
    &[(IoDirection, Always)],
);
// A listener older than the agent has no known owner.
const A_TCP_LISTEN_DROPS: [(Attr, Presence); 10] =
    cat::<10>(&[(ServerPort, Always)], &SOCKET_OWNER, &[]);

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
                attrs: &A_SYSCALL_DURATION,
            },
            Metric::SyscallErrors => &MetricSpec {
                name: "syscall.errors",
                unit: "{error}",
                instrument: Instrument::Counter,
                description: "System calls that returned an error, by errno.",
                attrs: &A_SYSCALL_ERRORS,
            },
            Metric::TcpConnectDuration => &MetricSpec {
                name: "tcp.connect.duration",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Time from SYN sent to connection established, per workload and server.",
                attrs: &A_TCP_CONNECT_DURATION,
            },
            Metric::TcpServerRequestDuration => &MetricSpec {
                name: "tcp.server.request.duration",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Server sockets: first byte of a request read to first byte of the response written.",
                attrs: &A_TCP_SERVER_REQUEST,
            },
            Metric::TcpClientRequestDuration => &MetricSpec {
                name: "tcp.client.request.duration",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Client sockets: first byte of a request written to first byte of the response read.",
                attrs: &A_TCP_CLIENT_REQUEST,
            },
            Metric::TcpRtt => &MetricSpec {
                name: "tcp.rtt",
                unit: "s",
                instrument: Instrument::Histogram,
                description: "Smoothed round-trip time of connections, sampled at most once per second per socket.",
                attrs: &A_TCP_RTT,
            },
            Metric::TcpConnectErrors => &MetricSpec {
                name: "tcp.connect.errors",
                unit: "{error}",
                instrument: Instrument::Counter,
                description: "Connects that failed, by cause (errno, or cancelled).",
                attrs: &A_TCP_CONNECT_ERRORS,
            },
            Metric::TcpRetransmits => &MetricSpec {
                name: "tcp.retransmits",
                unit: "{segment}",
                instrument: Instrument::Counter,
                description: "Retransmitted TCP segments.",
                // A socket the agent does not track (older than the agent,
                // or its own) has no known role, so no server port.
                attrs: &A_TCP_RETRANSMITS,
            },
            Metric::TcpResets => &MetricSpec {
                name: "tcp.resets",
                unit: "{reset}",
                instrument: Instrument::Counter,
                description: "TCP resets sent and received.",
                attrs: &A_TCP_RESETS,
            },
            Metric::TcpListenDrops => &MetricSpec {
                name: "tcp.listen.drops",
                unit: "{connection}",
                instrument: Instrument::Counter,
                description: "Connections dropped by a listener (accept queue full), per port.",
                attrs: &A_TCP_LISTEN_DROPS,
            },
            Metric::TcpServerMultiplexed => &MetricSpec {
                name: "tcp.server.multiplexed",
                unit: "{connection}",
                instrument: Instrument::Counter,
                description: "Server connections whose requests overlapped (pipelining, HTTP/2): \
                              from then on not in tcp.server.request.duration.",
                attrs: &A_TCP_SERVER_REQUEST,
            },
            Metric::TcpClientMultiplexed => &MetricSpec {
                name: "tcp.client.multiplexed",
                unit: "{connection}",
                instrument: Instrument::Counter,
                description: "Client connections whose requests overlapped (pipelining, HTTP/2): \
                              from then on not in tcp.client.request.duration.",
                attrs: &A_TCP_CLIENT_REQUEST,
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
    table(false)
}

/// The README's shorter table: the identity set as one entry.
pub fn readme_table() -> String {
    table(true)
}

fn table(identity_as_one: bool) -> String {
    let mut out = String::from(
        "| metric | instrument | unit | attributes (* only when known) |\n|---|---|---|---|\n",
    );
    for m in Metric::all() {
        let s = m.spec();
        let mut attrs: Vec<String> = vec![];
        for (a, p) in s.attrs {
            if identity_as_one && IDENTITY.contains(a) {
                if *a == IDENTITY[0] {
                    attrs.push("the identity attributes*".into());
                }
                continue;
            }
            attrs.push(match p {
                Always => format!("`{}`", a.key()),
                WhenKnown => format!("`{}`*", a.key()),
            });
        }
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

    /// The README's metric table, from the same catalogue.
    #[test]
    fn readme_table_matches_readme() {
        crate::docgen::check_section_in("README.md", "metrics", &readme_table());
    }
}
