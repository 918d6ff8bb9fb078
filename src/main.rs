//! rfake's entry point: parse, run, exit with the documented status.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(rfake::main_with_args(std::env::args_os().collect()))
}
