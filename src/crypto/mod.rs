//! Encryption of backup files.
//!
//! [`fernet`] implements the Fernet token format (compatible with Python's
//! `cryptography.fernet`) with streaming encryption and a two-pass,
//! verify-before-decrypt streaming decryption, both in constant memory;
//! [`keys`] finds the keys (environment, secret file, key files).

pub mod fernet;
pub mod keys;
