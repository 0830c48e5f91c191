//! Restoring a backup into the live database without ever losing it.

pub mod check;
pub mod failed;
pub mod input;
pub mod kind;
pub mod postgres;
pub mod sqlite;
pub mod state;
