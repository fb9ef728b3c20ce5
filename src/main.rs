//! The `ttp-agent` binary: everything lives in the library, see `ttp_agent::cli`.
fn main() -> std::process::ExitCode {
    ttp_agent::cli::main()
}
