//! Process-wide settings the engine holder makes before it forks, so that
//! every worker has them: fatal signals kill, and freed stream buffers
//! leave the process.
#![allow(unsafe_code)]

/// Rust's runtime catches SIGSEGV and SIGBUS to report stack overflows, and
/// survives one sent with kill(2). A worker must die on any of them, at once,
/// so that the supervisor replaces it: restore the default disposition.
pub fn fatal_signals_kill() -> Result<(), String> {
    // libc: rustix has no sigaction (signal dispositions belong to the C
    // library and the Rust runtime).
    for (sig, name) in [(libc::SIGSEGV, "SIGSEGV"), (libc::SIGBUS, "SIGBUS")] {
        // SAFETY: all-zero is a valid `sigaction` (empty mask, no flags),
        // and SIG_DFL (0) is its handler: installing it runs no handler
        // code; nothing else in this single-threaded process relies on the
        // previous disposition.
        let default: libc::sigaction = unsafe { std::mem::zeroed() };
        debug_assert_eq!(default.sa_sigaction, libc::SIG_DFL);
        // SAFETY: `default` is a valid `sigaction`; the old one is not asked for.
        if unsafe { libc::sigaction(sig, &default, std::ptr::null_mut()) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("sigaction({name}): {e}"));
        }
    }
    Ok(())
}

/// glibc's malloc raises its mmap threshold after each large free, so after
/// one 16 MiB INSTREAM later streams come from the heap and stay resident.
/// A fixed threshold keeps stream buffers on mmap: freeing a stream returns
/// its memory (measured in docs/benchmark.md: RSS after a 1 MiB + 16 MiB load
/// 86 MiB without, 50 MiB with; clamd 48 MiB).
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // libc: an allocator setting, not a system call.
    // SAFETY: mallopt only changes allocator parameters; it takes no
    // pointers, and this process is still single-threaded.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
