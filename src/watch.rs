//! Finding complete backup files in the restore folder (being written).
