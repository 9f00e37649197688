//! The `cxpulse` binary; everything lives in the library.

// mimalloc for Rust and, through its `override` feature, for librdkafka's C
// allocations too: glibc's malloc was half of the CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
