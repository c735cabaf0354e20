//! The `chaos` binary: parse, dispatch, map errors to exit codes.

use chaos::{
    cli::Cli,
    error::{Error, ExitCode},
};
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // Every argument is text to chaos (flags, cgroup and file paths are
    // echoed in messages, events and the state file's owner record): one
    // that is not UTF-8 is refused here, once, rather than met by a panic
    // wherever it is first read as a string.
    if let Some(bad) = std::env::args_os().skip(1).find(|a| a.to_str().is_none()) {
        eprintln!(
            "chaos: error: argument {} is not valid UTF-8; chaos takes UTF-8 arguments only \
             (paths included: rename the file or cgroup)",
            bad.to_string_lossy()
        );
        return ExitCode::Invalid.into();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; usage errors are invalid
            // input (exit code 3, not clap's 2, which means "aborted" here).
            return if e.use_stderr() { ExitCode::Invalid } else { ExitCode::Ok }.into();
        }
    };
    init_tracing(&cli.log);
    match cli.command.run() {
        Ok(code) => code.into(),
        Err(e) => {
            report(&e);
            e.exit_code().into()
        }
    }
}

fn report(e: &Error) {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !msg.contains(&s_text) {
            msg = format!("{msg}: {s_text}");
        }
        source = s.source();
    }
    eprintln!("chaos: error: {msg}");
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
