//! The fault kinds an experiment file may name, and how a step's fields
//! become a [`crate::faults::Fault`]: through the kind's parameter schema,
//! which is `chaos attack <kind>`'s own flags (see [`crate::cli::schema`]).
//! A new fault kind needs nothing here.

use clap::{
    ArgAction,
    error::{ContextKind, ContextValue, ErrorKind},
};

use super::{Conv, Fields, origin};
use crate::{
    cli::schema::{self, Built, Kind, Source},
    experiment::{diag::did_you_mean, yaml::Node},
};

/// Fault kinds on the roadmap: named in messages so that a file written for
/// a later chaos says what is missing rather than "unknown".
pub(super) const PLANNED: &[&str] = &["net-blackhole"];

/// Fields of every attack step.
pub(super) const STEP_FIELDS: &[&str] = &["name", "fault", "target", "duration", "start-after"];

/// The kind named `name`.
pub(super) fn find(name: &str) -> Option<&'static Kind> {
    schema::find(name)
}

/// The fields a step of `kind` may have besides [`STEP_FIELDS`].
pub(super) fn params(kind: &'static Kind) -> impl Iterator<Item = &'static str> {
    kind.fields().map(|(field, _)| field)
}

/// Every kind's fields.
pub(super) fn all_params() -> impl Iterator<Item = &'static str> {
    schema::kinds().iter().flat_map(params)
}

pub(super) fn kinds() -> String {
    fault_kinds().collect::<Vec<_>>().join(", ")
}

/// Every fault kind name an experiment file accepts.
pub fn fault_kinds() -> impl Iterator<Item = &'static str> {
    schema::kinds().iter().map(|k| k.name.as_str())
}

impl Conv {
    /// A step's fault: each field checked by its flag's value parser (every
    /// problem at its own position), then the whole parsed and validated as
    /// the command line is.
    pub(super) fn fault(&mut self, kind: &'static Kind, f: &Fields<'_>) -> Option<Built> {
        let mut argv = Vec::new();
        let mut ok = true;
        for (field, arg) in kind.fields() {
            let Some(node) = f.get(field) else {
                if arg.is_required_set() {
                    self.missing(kind, f, field, arg);
                    ok = false;
                }
                continue;
            };
            // A repeatable flag is a list field (one value is a list of one).
            let items: Vec<&Node> = match node.as_seq() {
                Some(seq) if matches!(arg.get_action(), ArgAction::Append) => seq.iter().collect(),
                _ => vec![node],
            };
            for item in items {
                let Some(text) = self.text(item, field) else {
                    ok = false;
                    continue;
                };
                let values: Vec<&str> = match arg.get_value_delimiter() {
                    Some(d) => text.split(d).collect(),
                    None => vec![text],
                };
                for value in values {
                    if let Err(e) = kind.check(arg, value) {
                        self.value_error(item, field, value, &e);
                        ok = false;
                    }
                }
                let Some(long) = arg.get_long() else { unreachable!("fault parameters are long flags") };
                // `--x=v`: a value may start with `-` (offset: -5m).
                argv.push(format!("--{long}={text}"));
            }
        }
        if !ok {
            return None;
        }
        match kind.parse(argv, Source::File) {
            Ok(built) => Some(built),
            Err(message) => {
                let (message, first) = schema::as_fields(kind, &message);
                let at = first.and_then(|field| f.key_span(field)).unwrap_or(f.at);
                self.err(at, format!("{}: {message}", kind.name), None);
                None
            }
        }
    }

    fn missing(&mut self, kind: &Kind, f: &Fields<'_>, field: &str, arg: &clap::Arg) {
        let value = arg.get_value_names().and_then(|v| v.first()).map_or("...".to_owned(), |v| v.to_string());
        let help = arg.get_help().map(|h| format!(": {h}")).unwrap_or_default();
        let hint = Some(format!("add `{field}: {value}`{help}"));
        match f.key_span(field) {
            Some(at) => {
                let from = f.raw(field).map(origin).unwrap_or_default();
                self.err(at, format!("`{field}` in {} has no value{from}", f.what), hint);
            }
            None => self.err(f.at, format!("missing field `{field}` in a {} step", kind.name), hint),
        }
    }

    /// A value its flag's parser refused, worded as the other fields' are.
    fn value_error(&mut self, node: &Node, field: &str, value: &str, e: &clap::Error) {
        let from = origin(node);
        if e.kind() == ErrorKind::InvalidValue
            && let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue)
        {
            let hint = match did_you_mean(value, valid.iter().map(String::as_str)) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("one of: {}", valid.join(", ")),
            };
            self.err(
                node.span,
                format!("`{field}`: `{value}` is not one of {}{from}", valid.join(", ")),
                Some(hint),
            );
            return;
        }
        let why = std::error::Error::source(e).map_or_else(|| schema::clap_message(e), ToString::to_string);
        self.err(node.span, format!("`{field}`: {why}{from}"), None);
    }
}
