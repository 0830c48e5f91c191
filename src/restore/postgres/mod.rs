//! Restoring a checked PostgreSQL dump into the live database.
//!
//! **Staging** (the default): the dump is loaded into a new database
//! `<db>_restore_<stamp>`; only when that load succeeded are the live
//! database and the new one swapped by two renames in one transaction, the
//! old one staying as `<db>_pre_restore_<stamp>`. A failed or cancelled load
//! drops the staging database, so the live one is never changed.
//!
//! **Inplace** (for roles without `CREATEDB`, or without room for a second
//! copy): the live database is dropped and created again (or, without
//! `CREATEDB`, emptied with `DROP OWNED BY CURRENT_USER`) and then loaded.
//! A failed load leaves it empty; the safety backup is the way back.
//!
//! Every child gets its connection settings as libpq environment variables
//! (the password never reaches an argv), and everything it prints passes
//! through [`PgTarget::mask`](crate::db::PgTarget::mask) before it is logged
//! or returned.
//!
//! The parts, each using only those listed before it:
//! - [`naming`]: database names and stamps, quoting (pure text);
//! - `error`: [`crate::Error::PgRestore`] and [`PsqlUnfit`];
//! - [`catalog`]: [`Server`], SQL through psql, oids, create/drop, the swap;
//! - [`load`]: streaming the checked input into psql (restricted) or
//!   pg_restore, and [`Server::load_into_new_database`];
//! - [`strategy`]: staging and inplace, [`restore`];
//! - [`recovery`]: [`recover`] after a crash.

pub mod catalog;
mod error;
pub mod load;
pub mod naming;
pub mod recovery;
pub mod strategy;

pub use catalog::{
    Server, SwapRecord, database_exists, drop_leftover_staging, live_tables_with_rows,
    superuser_role,
};
pub use error::PsqlUnfit;
pub use load::psql_knows_restrict;
pub use naming::{STAMP_FORMAT, is_stamp, previous_name, staging_name};
pub use recovery::recover;
pub use strategy::{
    Options, Report, Staged, Strategy, UnknownStrategy, prune_previous_of, restore,
    restore_recorded, stage, swap_in,
};
