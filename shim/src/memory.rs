//! Keeping the long-lived server's resident memory small.
//!
//! The shim runs once per pod, so its resident set is multiplied by the pods on a node. Beyond the
//! code's own allocations, glibc's per-thread malloc arenas dominate: a shim makes few, small
//! allocations from several threads, so one arena is enough (`M_ARENA_MAX = 1`).

/// Use a single malloc arena. Call before any thread is started.
pub fn single_arena() {
    // SAFETY: mallopt takes two integers and only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
