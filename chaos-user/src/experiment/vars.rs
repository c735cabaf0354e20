//! Variables: `${name}` in any value of an experiment file, with a default
//! in the file's `variables:` section and an override from the command line
//! (`--set name=value`), so that one file serves many teams.
//!
//! Substitution is textual and happens before values are typed, so a
//! variable can stand for a number (`percent: ${loss}`), a duration, or
//! part of a string (`url: http://${host}:8080/health`). `$$` is a literal
//! `$`.

use std::collections::BTreeMap;

use super::{
    diag::{Diagnostic, Span, did_you_mean},
    yaml::{Kind, Node},
};

/// A variable's value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    pub value: String,
    /// True when `--set` gave the value.
    pub overridden: bool,
    /// Where the file declares it.
    pub span: Span,
}

pub type Vars = BTreeMap<String, Var>;

/// Parse one `--set name=value`.
pub fn parse_set(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("--set {arg}: write --set NAME=VALUE, e.g. --set loss=5"))?;
    let name = name.trim();
    if !valid_name(name) {
        return Err(format!(
            "--set {arg}: `{name}` is not a variable name (letters, digits, `_` and `-`, starting with a letter)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Read the `variables:` section (a mapping of names to scalar defaults)
/// and apply the overrides. `at` is where to report problems with
/// overrides, which have no place in the file.
pub fn collect(
    section: Option<&Node>,
    overrides: &[(String, String)],
    at: Span,
    problems: &mut Vec<Diagnostic>,
) -> Vars {
    let mut vars = Vars::new();
    if let Some(section) = section {
        match section.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let name = k.text().unwrap_or_default();
                    if !valid_name(name) {
                        problems.push(Diagnostic {
                            span: k.span,
                            message: format!("`{name}` is not a variable name"),
                            hint: Some("use letters, digits, `_` and `-`, starting with a letter".into()),
                        });
                        continue;
                    }
                    let value = match (&v.kind, v.is_null()) {
                        (Kind::Scalar(s), false) if !s.text.contains("${") => s.text.clone(),
                        (Kind::Scalar(_), false) => {
                            problems.push(Diagnostic {
                                span: v.span,
                                message: format!(
                                    "the default of variable `{name}` refers to another variable"
                                ),
                                hint: Some("defaults are literal values".into()),
                            });
                            continue;
                        }
                        (Kind::Scalar(_), true) => {
                            problems.push(Diagnostic {
                                span: k.span,
                                message: format!("variable `{name}` has no default"),
                                hint: Some(format!(
                                    "give it one (`{name}: <value>`), so the file runs as written; --set overrides it"
                                )),
                            });
                            continue;
                        }
                        _ => {
                            problems.push(Diagnostic {
                                span: v.span,
                                message: format!(
                                    "the default of variable `{name}` must be a single value, found {}",
                                    v.describe()
                                ),
                                hint: None,
                            });
                            continue;
                        }
                    };
                    vars.insert(name.to_owned(), Var { value, overridden: false, span: k.span });
                }
            }
            None if section.is_null() => {}
            None => problems.push(Diagnostic {
                span: section.span,
                message: format!(
                    "`variables` must be a mapping of names to defaults, found {}",
                    section.describe()
                ),
                hint: Some(
                    "write e.g.\n  variables:\n    loss: 5\n    target: /system.slice/app.service".into(),
                ),
            }),
        }
    }
    for (name, value) in overrides {
        match vars.get_mut(name) {
            Some(var) => {
                var.value = value.clone();
                var.overridden = true;
            }
            None => {
                let hint = match did_you_mean(name, vars.keys().map(String::as_str)) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None if vars.is_empty() => "this file declares no variables".into(),
                    None => format!("declared: {}", vars.keys().cloned().collect::<Vec<_>>().join(", ")),
                };
                problems.push(Diagnostic {
                    span: at,
                    message: format!("--set {name}=…: the experiment has no variable `{name}`"),
                    hint: Some(hint),
                });
            }
        }
    }
    vars
}

/// Substitute variables in every scalar value below `node` (keys are left
/// alone), skipping the top-level `variables` section.
pub fn substitute(node: &mut Node, vars: &Vars, problems: &mut Vec<Diagnostic>) {
    match &mut node.kind {
        Kind::Scalar(s) => {
            if !s.text.contains('$') {
                return;
            }
            match expand(&s.text, vars) {
                Ok((text, used)) => {
                    s.text = text;
                    s.substituted = used;
                }
                Err((message, hint)) => {
                    s.broken = true;
                    problems.push(Diagnostic { span: node.span, message, hint });
                }
            }
        }
        Kind::Seq(items) => items.iter_mut().for_each(|n| substitute(n, vars, problems)),
        Kind::Map(entries) => {
            for (_, v) in entries.iter_mut() {
                substitute(v, vars, problems);
            }
        }
    }
}

/// Expand `${name}` and `$$` in `text`.
/// The expanded text and the variables used; or a message and a hint.
type Expanded = Result<(String, Vec<(String, String)>), (String, Option<String>)>;

fn expand(text: &str, vars: &Vars) -> Expanded {
    let mut out = String::with_capacity(text.len());
    let mut used = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let Some(end) = r.find('}') else {
                return Err((
                    format!("unterminated `${{` in `{text}`"),
                    Some("write `${name}`, or `$$` for a literal `$`".into()),
                ));
            };
            let name = r[..end].trim();
            match vars.get(name) {
                Some(var) => {
                    out.push_str(&var.value);
                    used.push((name.to_owned(), var.value.clone()));
                }
                None => {
                    let hint = match did_you_mean(name, vars.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean `${{{close}}}`?"),
                        None => {
                            format!("declare it under `variables:` with a default, e.g. `{name}: <value>`")
                        }
                    };
                    return Err((format!("unknown variable `{name}`"), Some(hint)));
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok((out, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::yaml;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| {
                ((*k).to_owned(), Var { value: (*v).to_owned(), overridden: false, span: Span::default() })
            })
            .collect()
    }

    #[test]
    fn expands_whole_and_partial_values() {
        let v = vars(&[("host", "10.0.0.1"), ("loss", "5")]);
        assert_eq!(expand("${loss}", &v).unwrap().0, "5");
        assert_eq!(expand("http://${host}:80/", &v).unwrap().0, "http://10.0.0.1:80/");
        assert_eq!(expand("cost: $$5 ${ loss }$", &v).unwrap().0, "cost: $5 5$");
        let (msg, hint) = expand("${los}", &v).unwrap_err();
        assert!(msg.contains("unknown variable `los`"));
        assert_eq!(hint.unwrap(), "did you mean `${loss}`?");
        assert!(expand("${loss", &v).unwrap_err().0.contains("unterminated"));
    }

    #[test]
    fn set_arguments() {
        assert_eq!(parse_set("loss=5").unwrap(), ("loss".into(), "5".into()));
        assert_eq!(parse_set("url=http://x/?a=b").unwrap().1, "http://x/?a=b");
        assert!(parse_set("loss").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_set("1x=2").unwrap_err().contains("not a variable name"));
    }

    #[test]
    fn overrides_replace_defaults_and_unknown_ones_are_errors() {
        let (root, _) = yaml::parse("variables:\n  loss: 5\n  target: /a\n").unwrap();
        let section = &root.as_map().unwrap()[0].1;
        let mut problems = Vec::new();
        let v = collect(
            Some(section),
            &[("loss".into(), "20".into()), ("los".into(), "1".into())],
            Span::default(),
            &mut problems,
        );
        assert_eq!(v["loss"].value, "20");
        assert!(v["loss"].overridden);
        assert_eq!(v["target"].value, "/a");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].hint.as_deref(), Some("did you mean `loss`?"));
    }

    #[test]
    fn defaults_are_required_and_literal() {
        let (root, _) = yaml::parse("variables:\n  a:\n  b: ${a}\n  c: [1]\n").unwrap();
        let mut problems = Vec::new();
        let v = collect(Some(&root.as_map().unwrap()[0].1), &[], Span::default(), &mut problems);
        assert!(v.is_empty());
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
