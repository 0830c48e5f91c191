//! Container control seam.

pub mod docker;
