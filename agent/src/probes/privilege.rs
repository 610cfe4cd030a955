//! Privileges: say exactly which capability is missing before the kernel
//! answers a bare EPERM.

use tracing::{debug, warn};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "missing capabilities: {missing} (effective set {have:#x}). syscope needs CAP_BPF (load \
         programs and maps) and CAP_PERFMON (tracing programs, reading kernel memory); run as root \
         or grant them, e.g. `setcap cap_bpf,cap_perfmon+ep syscope` or AmbientCapabilities= in \
         systemd"
    )]
    Missing { missing: String, have: u64 },
    #[error(
        "the kernel refused bpf() with EPERM although CAP_BPF and CAP_PERFMON are present: a \
         seccomp profile, an LSM, or kernel.unprivileged_bpf_disabled with a user namespace may \
         block it ({detail})"
    )]
    Refused { detail: String },
}

/// Effective capability set of this process, from /proc/self/status.
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Which required capabilities `caps` lacks. CAP_SYS_ADMIN covers both on
/// every kernel (and is what kernels before 5.8 require).
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return vec![];
    }
    let mut missing = vec![];
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

pub fn check() -> Result<(), PrivilegeError> {
    let Some(have) = effective_caps() else {
        debug!("cannot read /proc/self/status; skipping the capability pre-check");
        return Ok(());
    };
    let missing = missing_caps(have);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing {
            missing: missing.join(", "),
            have,
        })
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones to the
/// memory cgroup. Raising it may be refused (containers, some VMs): warn only.
pub fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        let error = std::io::Error::last_os_error();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if charges_bpf_to_memcg(&release) {
            // Nothing to fix: the limit is not consulted for BPF memory.
            tracing::debug!(%error, "could not raise RLIMIT_MEMLOCK (not needed on this kernel)");
        } else {
            warn!(
                %error,
                kernel = release.trim(),
                "could not raise RLIMIT_MEMLOCK; kernels before 5.11 count BPF maps against it: \
                 loading may fail (raise it, e.g. LimitMEMLOCK= in systemd)"
            );
        }
    }
}

/// Kernels from 5.11 charge BPF memory to the memory cgroup instead of
/// RLIMIT_MEMLOCK.
pub fn charges_bpf_to_memcg(release: &str) -> bool {
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 11)
}

/// Turn an EPERM from loading into a message about privileges.
pub fn explain_load_error(e: super::ProbeError) -> super::ProbeError {
    let chain = super::error_chain(&e);
    if chain.contains("Operation not permitted") || chain.contains("EPERM") {
        if let Some(have) = effective_caps() {
            let missing = missing_caps(have);
            if !missing.is_empty() {
                return PrivilegeError::Missing {
                    missing: missing.join(", "),
                    have,
                }
                .into();
            }
        }
        return PrivilegeError::Refused { detail: chain }.into();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_matters_only_before_5_11() {
        assert!(charges_bpf_to_memcg("6.18.0-1-cloud-amd64\n"));
        assert!(charges_bpf_to_memcg("5.11.0"));
        assert!(!charges_bpf_to_memcg("5.10.209-1"));
        assert!(!charges_bpf_to_memcg("4.19.0"));
        assert!(!charges_bpf_to_memcg(""));
    }

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(missing_caps(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_caps(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert_eq!(missing_caps(1 << CAP_PERFMON), vec!["CAP_BPF"]);
        assert!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_caps(1 << CAP_SYS_ADMIN).is_empty());
        let msg = PrivilegeError::Missing {
            missing: "CAP_PERFMON".into(),
            have: 0,
        }
        .to_string();
        assert!(msg.contains("CAP_PERFMON"), "{msg}");
    }

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }
}
