//! One module per subcommand; each turns parsed arguments into work.

pub mod list;
pub mod once;
pub mod status;
pub mod verify;
