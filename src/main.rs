use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, secret_flags) = backupd::cli::Cli::parse_checked();
    backupd::logging::init(&cli.log);
    backupd::cli::warn_about_secret_flags(&secret_flags);
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
