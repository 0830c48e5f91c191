use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = backupd::cli::Cli::parse();
    backupd::logging::init(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("backupd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(backupd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backupd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
