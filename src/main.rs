//! The `cxpulse` binary; everything lives in the library.

// jemalloc for Rust and, exported as `malloc`/`free`, for librdkafka's C
// allocations too: glibc's malloc was half of the CPU profile. Records are
// allocated on one thread and freed on another (pipeline -> commit thread,
// librdkafka's headers -> delivery reports); jemalloc's thread caches take
// those frees cheaply, where mimalloc's cross-thread frees cost 10-15% more
// CPU per event on the peer benchmark (600k events, alternating runs).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages: the heap turns over output buffers and
    // librdkafka's fetch and batch buffers continuously, and zeroing fresh 2 MiB
    // pages was a fifth of the CPU profile (off: ~15% less CPU per event and a
    // smaller resident set). Linux only; elsewhere, or if refused, nothing changes.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    cxpulse::cli::main()
}
