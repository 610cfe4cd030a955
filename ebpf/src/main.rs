//! syscope's kernel programs.
//!
//! Measurements never go through a ring buffer: the programs aggregate in
//! maps (histograms in OTLP's exponential layout, see `syscope_common::hist`,
//! and counters) and userspace reads the aggregates once per interval. Only
//! cgroup births (rare) are sent as events, so identity is resolved at once.
//!
//! - `maps`: the maps and load-time constants (the contract with the loader);
//! - `helpers`: counters, atomic adds, kernel reads, histogram updates;
//! - `syscalls`: syscall latency and errors, thread exit, renames, exec;
//! - `cgroup`: cgroup births, for identity;
//! - `tcp`: socket SLIs and the listener poll;
//! - `sockio`: TCP request boundaries from the syscall layer (before 6.3);
//! - `seed`: sockets older than the agent (a BPF iterator, run once);
//! - `slots`: series kept in array slots, resolved once per thread;
//! - `floor`: the benchmark's do-nothing programs.
//!
//! Every program is a thin entry (the hook and its arguments) calling a body
//! that cannot panic; the verifier bounds every memory access.
#![no_std]
#![no_main]
// Inline BPF assembly for atomic adds: core has no atomic RMW on this target.
#![feature(asm_experimental_arch)]

mod cgroup;
mod floor;
mod helpers;
mod maps;
mod seed;
mod slots;
mod sockio;
mod syscalls;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the bodies have no panicking paths. Were one left, the
    // verifier would reject this endless loop at load, not run it.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
