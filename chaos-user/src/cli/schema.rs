//! One parameter schema per fault kind.
//!
//! A kind's parameters are declared once, as the clap flags of
//! `chaos attack <kind>`: the doc comment is the help text, `default_value`
//! the default, the value parser the units and the range. An experiment
//! step's fields are read through that same declaration (see
//! `experiment::parse::fault_kinds`):
//! - a field is the flag's id in kebab-case: `percent` for `--percent`,
//!   `paths-in` for `--paths-in`; a repeatable flag is a list named in the
//!   plural (`interfaces` for `--interface`, `paths` for `--path`);
//! - its value is checked by the flag's own parser;
//! - the kind's required flags are the step's required fields, and what
//!   the subcommand adds to them (`net-delay` requires `--delay`) holds in
//!   files too, because the schema is taken from the subcommand itself.
//!
//! So a flag and a field cannot drift apart: there is nothing to keep in
//! step.

use std::sync::OnceLock;

use clap::{Arg, ArgMatches, Args, Command, CommandFactory, FromArgMatches};

use super::{
    attack::NetLossParams, attack_block::IoThrottleParams, attack_clock::ClockSkewParams,
    attack_conn::NetRefuseParams, attack_cpu::CpuStarveParams, attack_dns::DnsErrorParams,
    attack_io::IoErrorParams, attack_kill::KillParams, attack_memory::MemoryPressureParams,
    attack_net::NetEffectParams, attack_partition::NetPartitionParams, attack_pause::PauseParams,
    attack_reset::NetResetParams,
};
use crate::faults::Fault;

/// Where parameters come from: some checks differ (a file has no working
/// directory to resolve a relative path against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    File,
}

/// What a kind's parameters build: the fault.
#[derive(Debug)]
pub struct Built {
    pub fault: Fault,
}

/// A fault kind's parameters, as `chaos attack <kind>` declares them.
pub trait FaultParams: Args + FromArgMatches {
    /// The validated fault. Messages name flags (`--delay`); a file's
    /// diagnostics rewrite them as fields.
    fn build(&self, kind: &str, source: Source) -> Result<Built, String>;
}

/// A fault kind: its name and its parameters' schema.
pub struct Kind {
    pub name: String,
    /// The kind's own flags (not the target's, not the duration), exactly
    /// as `chaos attack <name>` declares them, with their field names.
    fields: Vec<(String, Arg)>,
    command: Command,
    /// The same with nothing required: checks one value at a time.
    lenient: Command,
    build: fn(&str, &ArgMatches, Source) -> Result<Built, String>,
}

impl Kind {
    /// Each parameter: its field name in experiment files, and its flag.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Arg)> {
        self.fields.iter().map(|(name, arg)| (name.as_str(), arg))
    }

    /// Check one value of `arg` with its flag's own parser; the error is
    /// clap's (its kind and context tell what was wrong).
    pub fn check(&self, arg: &Arg, value: &str) -> Result<(), clap::Error> {
        let Some(long) = arg.get_long() else { unreachable!("fault parameters are long flags") };
        self.lenient.clone().try_get_matches_from([format!("--{long}={value}")]).map(drop)
    }

    /// Parse `--flag=value` arguments (already checked one by one) and
    /// build the fault.
    pub fn parse(&self, argv: Vec<String>, source: Source) -> Result<Built, String> {
        let matches = self.command.clone().try_get_matches_from(argv).map_err(|e| clap_message(&e))?;
        (self.build)(&self.name, &matches, source)
    }
}

/// The field name of a flag: its id in kebab-case.
fn field_name(arg: &Arg) -> String {
    arg.get_id().as_str().replace('_', "-")
}

fn build_with<P: FaultParams>(kind: &str, matches: &ArgMatches, source: Source) -> Result<Built, String> {
    P::from_arg_matches(matches).map_err(|e| clap_message(&e))?.build(kind, source)
}

/// The first line of a clap error, without its `error: ` prefix.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// `sub`'s flags that belong to `P`. Taken from the subcommand, not from
/// `P` alone: what the variant adds (a required primary flag, another
/// default) belongs to the schema too.
fn kind<P: FaultParams>(sub: &Command) -> Kind {
    let name = sub.get_name().to_owned();
    let own = P::augment_args(Command::new("params"));
    let ids: Vec<&clap::Id> = own.get_arguments().map(Arg::get_id).collect();
    // In declaration order (`mut_arg` moves an argument to the end).
    let args: Vec<Arg> =
        ids.iter().filter_map(|id| sub.get_arguments().find(|a| a.get_id() == *id)).cloned().collect();
    let fields = args.iter().map(|a| (field_name(a), a.clone())).collect();
    let lenient = Command::new("fault")
        .no_binary_name(true)
        .disable_help_flag(true)
        .args(args.iter().map(|a| a.clone().required(false)));
    let command = Command::new("fault").no_binary_name(true).disable_help_flag(true).args(args);
    Kind { name, fields, command, lenient, build: build_with::<P> }
}

/// Every fault kind, in the order `chaos attack --help` lists them.
pub fn kinds() -> &'static [Kind] {
    static KINDS: OnceLock<Vec<Kind>> = OnceLock::new();
    KINDS.get_or_init(|| {
        let cli = super::Cli::command();
        let Some(attack) = cli.find_subcommand("attack") else { unreachable!("`chaos attack` exists") };
        attack
            .get_subcommands()
            .map(|sub| {
                // The one place that pairs a subcommand with its parameters.
                let make = match sub.get_name() {
                    "net-loss" => kind::<NetLossParams>,
                    "io-error" => kind::<IoErrorParams>,
                    "clock-skew" => kind::<ClockSkewParams>,
                    "net-refuse" => kind::<NetRefuseParams>,
                    "net-partition" => kind::<NetPartitionParams>,
                    "net-reset" => kind::<NetResetParams>,
                    "dns-error" => kind::<DnsErrorParams>,
                    "pause" => kind::<PauseParams>,
                    "cpu-starve" => kind::<CpuStarveParams>,
                    "kill" => kind::<KillParams>,
                    "memory-pressure" => kind::<MemoryPressureParams>,
                    "io-throttle" => kind::<IoThrottleParams>,
                    "net-delay" | "net-rate" | "net-duplicate" | "net-corrupt" | "net-reorder" => {
                        kind::<NetEffectParams>
                    }
                    other => unreachable!("`chaos attack {other}` has no schema entry (unit-tested)"),
                };
                make(sub)
            })
            .collect()
    })
}

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static Kind> {
    kinds().iter().find(|k| k.name == name)
}

/// `message` with each of `kind`'s flags (`--interface`) written as its
/// field (`` `interfaces` ``), and the first field it names.
pub fn as_fields<'k>(kind: &'k Kind, message: &str) -> (String, Option<&'k str>) {
    let mut flags: Vec<(String, &str)> = kind
        .fields()
        .filter_map(|(field, arg)| arg.get_long().map(|long| (format!("--{long}"), field)))
        .collect();
    // Longest first: `--paths-in` before `--path`.
    flags.sort_by_key(|(flag, _)| std::cmp::Reverse(flag.len()));
    let first = flags
        .iter()
        .filter_map(|(flag, field)| message.find(flag.as_str()).map(|at| (at, *field)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, field)| field);
    let mut out = message.to_owned();
    for (flag, field) in &flags {
        out = replace_flag(&out, flag, field);
    }
    (out, first)
}

/// Replace whole occurrences of `flag` (not `--path` inside `--paths-in`).
fn replace_flag(text: &str, flag: &str, field: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(flag) {
        let after = &rest[at + flag.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-') {
            out.push_str(flag);
        } else {
            out.push('`');
            out.push_str(field);
            out.push('`');
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_subcommand_has_a_schema() {
        let cli = super::super::Cli::command();
        let attack = cli.find_subcommand("attack").unwrap();
        let names: Vec<&str> = attack.get_subcommands().map(Command::get_name).collect();
        let kinds: Vec<&str> = kinds().iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, kinds);
        // The fault kinds faults::Fault knows, each with a schema.
        for k in kinds {
            assert!(find(k).is_some());
        }
    }

    #[test]
    fn fields_are_the_flags_without_target_or_duration() {
        let fields: Vec<&str> = find("net-loss").unwrap().fields().map(|(f, _)| f).collect();
        assert_eq!(fields, ["percent", "burst", "direction", "cidr", "port", "protocol", "interfaces"]);
        let io: Vec<&str> = find("io-error").unwrap().fields().map(|(f, _)| f).collect();
        assert_eq!(io, ["errno", "percent", "paths", "paths-in", "operations", "after", "first"]);
        for k in kinds() {
            for (field, _) in k.fields() {
                assert!(!["cgroup", "pid", "allow-host", "duration"].contains(&field), "{}: {field}", k.name);
            }
        }
    }

    #[test]
    fn subcommand_requirements_hold_in_the_schema() {
        let required = |kind: &str| -> Vec<String> {
            find(kind)
                .unwrap()
                .fields()
                .filter(|(_, a)| a.is_required_set())
                .map(|(f, _)| f.to_owned())
                .collect()
        };
        assert_eq!(required("net-delay"), ["delay"]);
        assert_eq!(required("net-partition"), ["cidr"]);
        assert_eq!(required("net-reorder"), ["delay", "reorder"]);
        assert_eq!(required("io-error"), ["errno", "percent", "paths"]);
        let direction = find("net-delay").unwrap().fields().find(|(f, _)| *f == "direction").unwrap().1;
        assert_eq!(direction.get_default_values(), ["egress"]);
    }

    #[test]
    fn flags_become_fields_in_messages() {
        let io = find("io-error").unwrap();
        let (text, first) = as_fields(io, "--paths-in target needs an absolute --path; --path x");
        assert_eq!(text, "`paths-in` target needs an absolute `paths`; `paths` x");
        assert_eq!(first, Some("paths-in"));
        let loss = find("net-loss").unwrap();
        let (text, first) = as_fields(loss, "--interface applies to egress; use --direction egress");
        assert_eq!(text, "`interfaces` applies to egress; use `direction` egress");
        assert_eq!(first, Some("interfaces"));
    }

    #[test]
    fn parse_builds_the_fault_as_the_command_line_does() {
        let delay = find("net-delay").unwrap();
        let built =
            delay.parse(vec!["--delay=50ms".into(), "--interface=eth0".into()], Source::File).unwrap();
        assert_eq!(built.fault.kind(), "net-delay");
        let crate::faults::Fault::NetDelay(fault) = &built.fault else { panic!("{built:?}") };
        assert_eq!(fault.interfaces, ["eth0"]);
        let e = find("net-rate")
            .unwrap()
            .parse(vec!["--rate=10mbit".into(), "--jitter=5ms".into()], Source::File)
            .unwrap_err();
        assert!(e.contains("--jitter needs --delay"), "{e}");
    }
}
