//! The benchmark's floor: programs on the syscall hooks that do nothing, so
//! the cost of the hook itself can be told apart from syscope's work.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "sys_enter")]
pub fn floor_enter_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn floor_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}
