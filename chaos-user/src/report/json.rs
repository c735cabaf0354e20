//! The JSON report: [`super::Report`] as one pretty-printed document.

use std::path::Path;

use super::Report;
use crate::error::{Error, Result};

/// Write `report` to `path` (through a new temporary file renamed over it,
/// so that a reader never sees half a report, and a symlink planted at
/// `path` is replaced rather than followed: see [`crate::safe_fs`]).
pub fn write(path: &Path, report: &Report) -> Result<()> {
    let text = serde_json::to_string_pretty(report).expect("reports serialize") + "\n";
    write_atomic(path, text.as_bytes())
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| Error::invalid(format!("cannot write {}: {e}", path.display()));
    crate::safe_fs::write_atomic(path, bytes).map_err(fail)
}
