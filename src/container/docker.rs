//! Docker Engine control through bollard (being written).
