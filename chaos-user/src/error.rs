//! Errors that reach the user, and the exit code each one maps to.
//!
//! Every message names the thing that is wrong and, where there is one, the
//! fix. Exit codes are part of the interface (README, `chaos --help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: the attack ran to its end; `run`: the hypothesis held |
//! | 1 | `run`: the hypothesis was violated |
//! | 2 | aborted: by a signal, or by a safety condition (`run`: an abort condition, the maximum duration) — every fault was rolled back; `run` also when the steady state did not hold before injecting — nothing was injected |
//! | 3 | invalid input or environment: bad flags or file, missing target, not root, missing kernel capability — nothing was injected |
//! | 4 | the target is already under attack by another chaos process — nothing was injected |
//! | 5 | internal or kernel error while injecting — what had been injected was rolled back |

use std::{io, path::PathBuf};

/// Process exit codes; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    HypothesisViolated = 1,
    Aborted = 2,
    Invalid = 3,
    Busy = 4,
    Internal = 5,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        Self::from(code as u8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, values or files: the message says what to write instead.
    #[error("{0}")]
    Invalid(String),
    /// The machine cannot do what was asked (not root, kernel lacks a
    /// mechanism, cgroup v2 missing).
    #[error("{0}")]
    Environment(String),
    #[error("cgroup {path} does not exist (give a cgroup v2 directory, e.g. {example})")]
    NoSuchCgroup { path: PathBuf, example: String },
    #[error("no process with pid {0} (is it still running?)")]
    NoSuchPid(i32),
    #[error(
        "{target} is already under {fault} attack by chaos pid {pid}; wait for it to end, or stop it \
         (kill -TERM {pid})"
    )]
    Busy { target: String, fault: String, pid: i32 },
    /// A failure while injecting or cleaning up.
    #[error("{context}: {source}")]
    Kernel {
        context: String,
        #[source]
        source: anyhow::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Invalid(_) | Self::Environment(_) | Self::NoSuchCgroup { .. } | Self::NoSuchPid(_) => {
                ExitCode::Invalid
            }
            Self::Busy { .. } => ExitCode::Busy,
            Self::Kernel { .. } => ExitCode::Internal,
        }
    }

    pub fn kernel(context: impl Into<String>, source: impl Into<anyhow::Error>) -> Self {
        Self::Kernel { context: context.into(), source: source.into() }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    pub fn environment(msg: impl Into<String>) -> Self {
        Self::Environment(msg.into())
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Self::kernel("I/O error", err)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
