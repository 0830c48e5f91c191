//! `backupd keygen`: a new Fernet key on stdout, in the format of
//! `BACKUP_ENCRYPTION_KEY` and `.encryption_key` (Python's
//! `Fernet.generate_key()`).

use crate::crypto::fernet::Key;
use crate::error::Result;

pub fn run() -> Result<()> {
    println!("{}", Key::generate().to_base64());
    Ok(())
}
