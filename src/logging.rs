//! Logs go to stderr (stdout carries results), as text or JSON lines.
//!
//! `LOG_LEVEL` (and the bare levels in `RUST_LOG`) apply to backupd's own
//! targets only; every dependency stays at `warn` unless `RUST_LOG` names
//! it. At `debug` bollard logs whole `docker inspect` answers (the
//! containers' `Env`: the app's secrets, our own key), and at `trace` the AWS
//! SDK logs request headers (replayable `Authorization` signatures,
//! `x-amz-security-token`); turning up backupd's verbosity must not do that.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogArgs;
use crate::values::LogFormat;

/// Our own targets: the crate's module paths and the `backupd::…` targets
/// set by hand.
const OWN_TARGET: &str = "backupd";

/// Dependencies log at this level unless `RUST_LOG` names them.
const DEPENDENCY_LEVEL: &str = "warn";

const DEFAULT_LEVEL: &str = "info";

pub fn init(args: &LogArgs) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = filter_directives(&args.log_level, rust_log.as_deref());
    let (filter, refused) = match EnvFilter::try_new(&directives) {
        Ok(filter) => (filter, None),
        Err(e) => (
            EnvFilter::new(filter_directives(DEFAULT_LEVEL, None)),
            Some(e.to_string()),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let _ = match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Some(error) = refused {
        tracing::warn!(
            filter = %directives,
            error = %error,
            "cannot use the log filter from RUST_LOG/LOG_LEVEL; logging at info"
        );
    }
}

/// The `EnvFilter` directives for `LOG_LEVEL` and `RUST_LOG` (which wins
/// when set): dependencies at `warn`; a directive without a target (`debug`,
/// `[span]=trace`) applies to backupd only; one naming a target applies as
/// written (`RUST_LOG=debug,bollard=debug` also shows bollard).
pub fn filter_directives(log_level: &str, rust_log: Option<&str>) -> String {
    let source = rust_log
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(log_level);
    let mut own_level = false;
    let mut directives = vec![DEPENDENCY_LEVEL.to_string()];
    for directive in source.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.parse::<LevelFilter>().is_ok() {
            own_level = true;
            directives.push(format!("{OWN_TARGET}={}", directive.to_ascii_lowercase()));
        } else if directive.starts_with('[') {
            directives.push(format!("{OWN_TARGET}{directive}"));
        } else {
            directives.push(directive.to_string());
        }
    }
    if !own_level {
        // Keep backupd's own level before anything more specific.
        directives.insert(1, format!("{OWN_TARGET}={DEFAULT_LEVEL}"));
    }
    directives.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_applies_to_backupd_only() {
        assert_eq!(filter_directives("debug", None), "warn,backupd=debug");
        assert_eq!(filter_directives("TRACE", None), "warn,backupd=trace");
        assert_eq!(filter_directives("", None), "warn,backupd=info");
        assert_eq!(filter_directives("info", Some("  ")), "warn,backupd=info");
    }

    #[test]
    fn rust_log_names_dependencies_explicitly() {
        assert_eq!(
            filter_directives("info", Some("trace")),
            "warn,backupd=trace"
        );
        assert_eq!(
            filter_directives("info", Some("debug,bollard=debug,aws_smithy_runtime=trace")),
            "warn,backupd=debug,bollard=debug,aws_smithy_runtime=trace"
        );
        assert_eq!(
            filter_directives("debug", Some("hyper=info")),
            "warn,backupd=info,hyper=info"
        );
        assert_eq!(
            filter_directives("info", Some("[restore]=debug")),
            "warn,backupd=info,backupd[restore]=debug"
        );
        assert_eq!(
            filter_directives("info", Some("backupd::restore=trace")),
            "warn,backupd=info,backupd::restore=trace"
        );
        for directives in [
            filter_directives("debug", None),
            filter_directives("info", Some("debug,bollard=debug")),
        ] {
            EnvFilter::try_new(&directives).unwrap();
        }
    }
}
