//! The integration tests' kit: real parts to test against and the checks
//! an operator would make, one module per subject. Everything is
//! re-exported here (`use common::*;`) except the heavy servers, which a
//! test names: [`docker`], [`s3`] and [`smtp`].
//!
//! - [`prereq`]: missing prerequisites: a loud skip, a failure under `CI=true`
//! - [`host`]: users, free ports, child processes, polling
//! - [`files`]: temporary folders, listings, hashes, gzip
//! - [`backups`]: backup names, sidecars, `gunzip -t` / `sha256sum -c`, dump edits
//! - [`status`]: the status file
//! - [`binary`]: the built binary run to completion ([`Backupd`], [`RunResult`])
//! - [`daemon`]: backupd in the background ([`Daemon`])
//! - [`cluster`]: throwaway PostgreSQL clusters ([`PgCluster`])
//! - [`sqlite`]: SQLite fixtures and content comparisons
//! - [`http`]: a plain HTTP/1.1 client
//! - [`metrics`]: an OpenMetrics text parser
//! - [`receiver`]: a loopback HTTP/1.1 receiver standing in for web services
//!   (records each request; answers with a status, late, or never; named:
//!   `common::receiver::Receiver`)
//! - [`docker`]: the busybox test image, test containers, a cuttable engine link
//! - [`s3`]: an S3-protocol server on loopback
//! - [`smtp`]: an SMTP server on loopback (aiosmtpd: plain, STARTTLS, TLS; AUTH)

pub mod backups;
pub mod binary;
pub mod cluster;
pub mod daemon;
pub mod docker;
pub mod files;
pub mod host;
pub mod http;
pub mod manifests;
pub mod metrics;
pub mod prereq;
pub mod receiver;
pub mod s3;
pub mod smtp;
pub mod sqlite;
pub mod status;

pub use backups::*;
pub use binary::*;
pub use cluster::*;
pub use daemon::*;
pub use files::*;
pub use host::*;
pub use http::*;
pub use manifests::*;
pub use metrics::*;
pub use prereq::*;
pub use sqlite::*;
pub use status::*;
