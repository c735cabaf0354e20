//! `chaos attack io-error`: its flags (the subcommand's help text is on the
//! `IoError` variant in attack.rs).

use std::path::PathBuf;

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::{
    faults::{Errno, Fault, IoError, IoOp, PathsIn},
    units::Percent,
};

/// `io-error`'s parameters.
#[derive(Debug, Args)]
pub struct IoErrorParams {
    /// The error the calls fail with: a name (EIO, ENOSPC, EACCES, EROFS,
    /// EDQUOT, EMFILE, ...) or a number.
    #[arg(long, value_name = "ERRNO")]
    pub errno: Errno,

    /// Share of matching calls to fail, 0 to 100 (fractions allowed: 0.5).
    #[arg(long, value_name = "PERCENT")]
    pub percent: Percent,

    /// A directory (everything below it, itself included) or a file, as the
    /// kernel resolves it (see above). Repeatable, up to 8. Absolute, or
    /// with --paths-in host relative to chaos's working directory.
    #[arg(long = "path", value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,

    /// Where --path is looked up: in the root directory and mount namespace
    /// of the target's processes (a container's own /var/lib/mysql), or in
    /// chaos's.
    #[arg(long, value_enum, default_value_t = PathsIn::Target)]
    pub paths_in: PathsIn,

    /// Which operations fail, comma-separated: open, read, write, readdir
    /// (see above) [default: all of them].
    #[arg(long, value_name = "OPS", value_delimiter = ',', value_enum, hide_possible_values = true)]
    pub operations: Vec<IoOp>,

    /// Let the first N matching calls through untouched.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub after: u64,

    /// Only the first N matching calls (after --after) may fail; with
    /// --percent 100, exactly those fail.
    #[arg(long, value_name = "N")]
    pub first: Option<u64>,
}

impl FaultParams for IoErrorParams {
    fn build(&self, _kind: &str, source: Source) -> Result<Built, String> {
        // A file is not read from a known directory: only absolute paths
        // mean one thing.
        if source == Source::File
            && let Some(rel) = self.paths.iter().find(|p| p.is_relative())
        {
            return Err(format!(
                "--path {} is relative; give absolute paths, e.g. /var/lib/data",
                rel.display()
            ));
        }
        let fault = IoError::new(
            self.errno,
            self.percent,
            self.paths.clone(),
            self.paths_in,
            self.operations.clone(),
            self.after,
            self.first,
        )?;
        Ok(Built { fault: Fault::IoError(fault) })
    }
}
