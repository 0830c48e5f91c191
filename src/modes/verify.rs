//! `backupd verify FILE`.

use std::path::Path;

use crate::error::Result;
use crate::verify::{self, ChecksumCheck};

pub fn run(file: &Path) -> Result<()> {
    let report = verify::verify(file)?;
    let checksum = match report.checksum {
        ChecksumCheck::Matched => "checksum matches its .sha256",
        ChecksumCheck::NoSidecar => "no .sha256 sidecar to compare",
    };
    println!(
        "{}: OK ({}, {} bytes compressed, {} bytes of data, {checksum})",
        file.display(),
        report.kind,
        report.compressed_bytes,
        report.raw_bytes
    );
    Ok(())
}
