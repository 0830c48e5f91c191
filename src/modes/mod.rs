//! One module per subcommand; each turns parsed arguments into work.

pub mod daemon;
pub mod drill;
pub mod healthcheck;
pub mod keygen;
pub mod list;
pub mod notify_test;
pub mod once;
pub mod restore;
pub mod status;
pub mod verify;
