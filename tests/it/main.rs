//! The integration tests: one module per behaviour, all in one binary (one
//! link instead of one per file), sharing the kit in `tests/common`. The
//! tests of every module run in parallel in this one process, so a test
//! keeps its names (containers, folders, ports) to itself and leaves the
//! process's own state (environment, working folder, umask) alone.

#[path = "../common/mod.rs"]
mod common;

mod app_stack;
mod architecture;
mod backup_failures;
mod cli;
mod daemon_http;
mod daemon_lock;
mod daemon_schedule;
mod daemon_shutdown;
mod docker_control;
mod drill;
mod drill_daemon;
mod encryption;
mod fernet_interop;
mod healthcheck;
mod hooks;
mod http_limits;
mod image_end_to_end;
mod manifest_backup;
mod manifest_counts;
mod notifications;
mod notify_email;
mod notify_services;
mod offsite;
mod postgres_round_trip;
mod private_files;
mod restore_crash;
mod restore_docker;
mod restore_inputs;
mod restore_manifest;
mod restore_outage;
mod restore_postgres;
mod restore_s3_manifest;
mod restore_safety_folder;
mod restore_service;
mod restore_untrusted_sql;
mod restore_watch;
mod retention;
mod s3_store;
mod secrets;
mod sqlite_wal_snapshot;
mod verify;
