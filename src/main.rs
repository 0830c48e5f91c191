use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything reads a secret, and before any child exists.
    let private = backupd::process::keep_own_proc_private();
    let (cli, secret_flags) = backupd::cli::Cli::parse_checked();
    backupd::logging::init(&cli.log);
    if let Err(e) = private {
        tracing::warn!(error = %e, "cannot make /proc/PID of backupd private (prctl PR_SET_DUMPABLE); a hook of the same uid could read its environment");
    }
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
