//! The `cxpulse` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    cxpulse::cli::main()
}
