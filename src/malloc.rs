//! Allocator tuning for a daemon that holds whole streams in memory.
//!
//! glibc's malloc serves large blocks with mmap, but every time such a block
//! is freed it raises that threshold to the block's size (up to 32 MiB).
//! After one 16 MiB INSTREAM, later streams of up to 16 MiB come from the
//! per-thread heaps instead, and that memory stays resident after the scans:
//! in the benchmark (docs/benchmark.md) RSS after a 1 MiB + 16 MiB load was
//! 86 MiB instead of 50 MiB, while clamd stayed at 48 MiB. A fixed threshold
//! keeps large buffers on mmap, so freeing a stream returns it to the OS.
#![allow(unsafe_code)]

/// Allocations of at least this many bytes are mmapped (glibc's initial
/// default, now fixed instead of adaptive).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Fixes the mmap threshold; call once at start-up, before threads exist.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it takes no
    // pointers and is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}
