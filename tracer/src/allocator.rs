//! How pkttrace's allocator (mimalloc) is tuned: lean while start-up's
//! threads parse BTF and load programs, fast while events stream in.

/// mimalloc's option numbers (`mi_option_t`, stable across its versions;
/// the Rust bindings do not name them).
const MI_OPTION_ARENA_EAGER_COMMIT: i32 = 4;
const MI_OPTION_PURGE_DELAY: i32 = 15;
/// How long freed pages wait before going back once events stream (ms).
/// mimalloc's default, 10 ms, still gave back pages the next stories
/// needed: the kernel, faulting them in again, took 14% of pkttrace's CPU
/// time (perf); with a second, under 4%, and the same peak.
const STREAMING_PURGE_DELAY_MS: i64 = 1000;

/// Start-up: memory is committed as the heap grows and freed pages go back
/// at once. With the defaults, start-up's threads kept twice glibc's peak.
pub fn lean_for_startup() {
    // SAFETY: setting options, before the allocator has much to manage.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// Start-up is over: what it freed goes back now, and from here freed pages
/// wait before going back (`STREAMING_PURGE_DELAY_MS`): returned at once,
/// a stream's events and stories faulted them in again (18% of the CPU
/// time, perf).
pub fn fast_for_events() {
    // SAFETY: plain calls; `force` also takes over exited threads' memory.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, STREAMING_PURGE_DELAY_MS);
    }
}
