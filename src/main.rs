//! The `cxpulse` binary; everything lives in the library.

// mimalloc for Rust and, through its `override` feature, for librdkafka's C
// allocations too: glibc's malloc was half of the CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cxpulse::cli::main()
}
