//! errno values to names.
//!
//! The numbers are the same on x86_64 and aarch64: both use
//! `include/uapi/asm-generic/errno-base.h` and `errno.h`. Where the headers
//! define an alias (EWOULDBLOCK, EDEADLOCK) the table holds the primary name,
//! the one strace prints. 41 and 58 were never assigned.

/// Indexed by errno, 0..=133; "" marks a number with no name.
static USER: [&str; 134] = [
    "",                // 0
    "EPERM",           // 1
    "ENOENT",          // 2
    "ESRCH",           // 3
    "EINTR",           // 4
    "EIO",             // 5
    "ENXIO",           // 6
    "E2BIG",           // 7
    "ENOEXEC",         // 8
    "EBADF",           // 9
    "ECHILD",          // 10
    "EAGAIN",          // 11
    "ENOMEM",          // 12
    "EACCES",          // 13
    "EFAULT",          // 14
    "ENOTBLK",         // 15
    "EBUSY",           // 16
    "EEXIST",          // 17
    "EXDEV",           // 18
    "ENODEV",          // 19
    "ENOTDIR",         // 20
    "EISDIR",          // 21
    "EINVAL",          // 22
    "ENFILE",          // 23
    "EMFILE",          // 24
    "ENOTTY",          // 25
    "ETXTBSY",         // 26
    "EFBIG",           // 27
    "ENOSPC",          // 28
    "ESPIPE",          // 29
    "EROFS",           // 30
    "EMLINK",          // 31
    "EPIPE",           // 32
    "EDOM",            // 33
    "ERANGE",          // 34
    "EDEADLK",         // 35
    "ENAMETOOLONG",    // 36
    "ENOLCK",          // 37
    "ENOSYS",          // 38
    "ENOTEMPTY",       // 39
    "ELOOP",           // 40
    "",                // 41
    "ENOMSG",          // 42
    "EIDRM",           // 43
    "ECHRNG",          // 44
    "EL2NSYNC",        // 45
    "EL3HLT",          // 46
    "EL3RST",          // 47
    "ELNRNG",          // 48
    "EUNATCH",         // 49
    "ENOCSI",          // 50
    "EL2HLT",          // 51
    "EBADE",           // 52
    "EBADR",           // 53
    "EXFULL",          // 54
    "ENOANO",          // 55
    "EBADRQC",         // 56
    "EBADSLT",         // 57
    "",                // 58
    "EBFONT",          // 59
    "ENOSTR",          // 60
    "ENODATA",         // 61
    "ETIME",           // 62
    "ENOSR",           // 63
    "ENONET",          // 64
    "ENOPKG",          // 65
    "EREMOTE",         // 66
    "ENOLINK",         // 67
    "EADV",            // 68
    "ESRMNT",          // 69
    "ECOMM",           // 70
    "EPROTO",          // 71
    "EMULTIHOP",       // 72
    "EDOTDOT",         // 73
    "EBADMSG",         // 74
    "EOVERFLOW",       // 75
    "ENOTUNIQ",        // 76
    "EBADFD",          // 77
    "EREMCHG",         // 78
    "ELIBACC",         // 79
    "ELIBBAD",         // 80
    "ELIBSCN",         // 81
    "ELIBMAX",         // 82
    "ELIBEXEC",        // 83
    "EILSEQ",          // 84
    "ERESTART",        // 85
    "ESTRPIPE",        // 86
    "EUSERS",          // 87
    "ENOTSOCK",        // 88
    "EDESTADDRREQ",    // 89
    "EMSGSIZE",        // 90
    "EPROTOTYPE",      // 91
    "ENOPROTOOPT",     // 92
    "EPROTONOSUPPORT", // 93
    "ESOCKTNOSUPPORT", // 94
    "EOPNOTSUPP",      // 95
    "EPFNOSUPPORT",    // 96
    "EAFNOSUPPORT",    // 97
    "EADDRINUSE",      // 98
    "EADDRNOTAVAIL",   // 99
    "ENETDOWN",        // 100
    "ENETUNREACH",     // 101
    "ENETRESET",       // 102
    "ECONNABORTED",    // 103
    "ECONNRESET",      // 104
    "ENOBUFS",         // 105
    "EISCONN",         // 106
    "ENOTCONN",        // 107
    "ESHUTDOWN",       // 108
    "ETOOMANYREFS",    // 109
    "ETIMEDOUT",       // 110
    "ECONNREFUSED",    // 111
    "EHOSTDOWN",       // 112
    "EHOSTUNREACH",    // 113
    "EALREADY",        // 114
    "EINPROGRESS",     // 115
    "ESTALE",          // 116
    "EUCLEAN",         // 117
    "ENOTNAM",         // 118
    "ENAVAIL",         // 119
    "EISNAM",          // 120
    "EREMOTEIO",       // 121
    "EDQUOT",          // 122
    "ENOMEDIUM",       // 123
    "EMEDIUMTYPE",     // 124
    "ECANCELED",       // 125
    "ENOKEY",          // 126
    "EKEYEXPIRED",     // 127
    "EKEYREVOKED",     // 128
    "EKEYREJECTED",    // 129
    "EOWNERDEAD",      // 130
    "ENOTRECOVERABLE", // 131
    "ERFKILL",         // 132
    "EHWPOISON",       // 133
];

/// Kernel-internal codes (`include/linux/errno.h`), 512..=530. User space
/// should never see them, but a tracepoint at syscall exit does: a syscall
/// interrupted by a signal exits with ERESTARTSYS before the kernel restarts
/// it or turns it into EINTR. 520 is unassigned.
static INTERNAL: [&str; 19] = [
    "ERESTARTSYS",           // 512
    "ERESTARTNOINTR",        // 513
    "ERESTARTNOHAND",        // 514
    "ENOIOCTLCMD",           // 515
    "ERESTART_RESTARTBLOCK", // 516
    "EPROBE_DEFER",          // 517
    "EOPENSTALE",            // 518
    "ENOPARAM",              // 519
    "",                      // 520
    "EBADHANDLE",            // 521
    "ENOTSYNC",              // 522
    "EBADCOOKIE",            // 523
    "ENOTSUPP",              // 524
    "ETOOSMALL",             // 525
    "ESERVERFAULT",          // 526
    "EBADTYPE",              // 527
    "EJUKEBOX",              // 528
    "EIOCBQUEUED",           // 529
    "ERECALLCONFLICT",       // 530
];

/// The symbolic name of a (positive) errno value, or `None` if Linux defines
/// no name for it.
pub fn errno_name(errno: u32) -> Option<&'static str> {
    let name = match errno {
        0..=133 => USER[errno as usize],
        512..=530 => INTERNAL[(errno - 512) as usize],
        _ => return None,
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_values() {
        let known = [
            (1, "EPERM"),
            (2, "ENOENT"),
            (4, "EINTR"),
            (9, "EBADF"),
            (11, "EAGAIN"),
            (12, "ENOMEM"),
            (13, "EACCES"),
            (17, "EEXIST"),
            (22, "EINVAL"),
            (28, "ENOSPC"),
            (32, "EPIPE"),
            (35, "EDEADLK"),
            (38, "ENOSYS"),
            (95, "EOPNOTSUPP"),
            (104, "ECONNRESET"),
            (110, "ETIMEDOUT"),
            (111, "ECONNREFUSED"),
            (115, "EINPROGRESS"),
            (125, "ECANCELED"),
            (133, "EHWPOISON"),
            (512, "ERESTARTSYS"),
            (516, "ERESTART_RESTARTBLOCK"),
            (524, "ENOTSUPP"),
            (530, "ERECALLCONFLICT"),
        ];
        for (errno, name) in known {
            assert_eq!(errno_name(errno), Some(name), "errno {errno}");
        }
    }

    #[test]
    fn matches_libc_constants() {
        // libc takes these from the same kernel headers: a cross-check of the
        // hand-written table.
        let known = [
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::EDEADLK, "EDEADLK"),
            (libc::ENAMETOOLONG, "ENAMETOOLONG"),
            (libc::ELOOP, "ELOOP"),
            (libc::ENOMSG, "ENOMSG"),
            (libc::EMULTIHOP, "EMULTIHOP"),
            (libc::EOVERFLOW, "EOVERFLOW"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            (libc::EADDRINUSE, "EADDRINUSE"),
            (libc::ESTALE, "ESTALE"),
            (libc::EDQUOT, "EDQUOT"),
            (libc::EOWNERDEAD, "EOWNERDEAD"),
            (libc::ERFKILL, "ERFKILL"),
            (libc::EHWPOISON, "EHWPOISON"),
        ];
        for (errno, name) in known {
            assert_eq!(errno_name(errno as u32), Some(name), "errno {errno}");
        }
    }

    #[test]
    fn unnamed_values() {
        for errno in [0, 41, 58, 134, 200, 511, 520, 531, 4095, u32::MAX] {
            assert_eq!(errno_name(errno), None, "errno {errno}");
        }
        let named = (0..=600).filter(|&e| errno_name(e).is_some()).count();
        assert_eq!(named, 131 + 18);
    }
}
