//! rfake's entry point: parse, run, exit with the documented status.

fn main() -> std::process::ExitCode {
    // Started by the Slurm SPANK plugin: its arguments are in the
    // environment (src/spank.rs); first, while there is one thread.
    let args = match rfake::spank::take_plugin_args(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rfake[{}]: error: {e}", std::process::id());
            return std::process::ExitCode::from(rfake::exit::ExitKind::Internal.code());
        }
    };
    std::process::ExitCode::from(rfake::main_with_args(args))
}
