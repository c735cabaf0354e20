//! The JSON report: [`super::Report`] as one pretty-printed document.

use std::path::Path;

use super::Report;
use crate::error::{Error, Result};

/// Write `report` to `path` (through a temporary file, so that a reader
/// never sees half a report).
pub fn write(path: &Path, report: &Report) -> Result<()> {
    let text = serde_json::to_string_pretty(report).expect("reports serialize") + "\n";
    write_atomic(path, text.as_bytes())
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| Error::invalid(format!("cannot write {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
