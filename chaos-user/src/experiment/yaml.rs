//! YAML text to a tree whose every node knows where it is in the file.
//!
//! Built from `saphyr-parser`'s event stream rather than a typed
//! deserializer: the converter (`parse.rs`) needs the position of every key
//! and value, the original text of every scalar (variables are substituted
//! into it before it is typed), and must go on after the first problem to
//! report them all.

use std::{borrow::Cow, collections::BTreeMap};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

use super::diag::{Diagnostic, Pos, Span};

/// Deeper nesting than this is refused: no experiment needs it, and it
/// bounds every recursion over the tree.
const MAX_DEPTH: usize = 64;
/// Aliases may copy nodes; this bounds what a small file can expand to.
const MAX_NODES: usize = 100_000;

#[derive(Clone, Debug)]
pub struct Node {
    pub span: Span,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys in file order; duplicates are rejected while building.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub struct Scalar {
    pub text: String,
    /// Quoted, block or `!!str`: always a string, never a number or null.
    pub quoted: bool,
    /// Set when variables were substituted into this scalar: `(name,
    /// value)` pairs, for error messages.
    pub substituted: Vec<(String, String)>,
    /// Substitution failed (already reported): the value is not checked
    /// any further.
    pub broken: bool,
}

impl Node {
    pub fn scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar; `None` for lists and mappings.
    pub fn text(&self) -> Option<&str> {
        self.scalar().map(|s| s.text.as_str())
    }

    pub fn is_null(&self) -> bool {
        self.scalar()
            .is_some_and(|s| !s.quoted && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// As JSON, typed as YAML 1.2's core schema types a plain scalar
    /// (null, booleans, numbers; anything else a string); a quoted scalar
    /// is always a string.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries.iter().map(|(k, v)| (k.text().unwrap_or_default().to_owned(), v.to_json())).collect(),
            ),
            Kind::Scalar(s) if s.quoted => Value::String(s.text.clone()),
            Kind::Scalar(_) if self.is_null() => Value::Null,
            Kind::Scalar(s) => match s.text.as_str() {
                "true" | "True" | "TRUE" => Value::Bool(true),
                "false" | "False" | "FALSE" => Value::Bool(false),
                t => t
                    .parse::<i64>()
                    .map(Value::from)
                    .ok()
                    .or_else(|| t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from))
                    .unwrap_or_else(|| Value::String(t.to_owned())),
            },
        }
    }

    /// What the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
            Kind::Scalar(s) if self.is_null() => {
                if s.text.is_empty() {
                    "nothing".into()
                } else {
                    format!("null (`{}`)", s.text)
                }
            }
            Kind::Scalar(s)
                if !s.quoted && matches!(s.text.as_str(), "true" | "false" | "True" | "False") =>
            {
                format!("a boolean `{}`", s.text)
            }
            Kind::Scalar(s) if !s.quoted && s.text.parse::<f64>().is_ok() => format!("a number `{}`", s.text),
            Kind::Scalar(s) => {
                let short: String = s.text.chars().take(40).collect();
                let more = if s.text.chars().count() > 40 { "…" } else { "" };
                format!("a string `{short}{more}`")
            }
        }
    }
}

fn pos(m: &Marker) -> Pos {
    Pos { line: m.line(), col: m.col() + 1 }
}

fn span(s: &saphyr_parser::Span) -> Span {
    Span { start: pos(&s.start), end: pos(&s.end) }
}

/// A container being built.
enum Open {
    Seq { start: Span, anchor: usize, items: Vec<Node> },
    Map { start: Span, anchor: usize, entries: Vec<(Node, Node)>, key: Option<Node> },
}

/// Parse `text` (one YAML document). On a syntax error there is nothing to
/// convert, so the error is the only diagnostic; duplicate keys and the
/// like are collected and returned with the tree.
pub fn parse(text: &str) -> Result<(Node, Vec<Diagnostic>), Diagnostic> {
    let mut builder = Builder::default();
    // saphyr-parser is not known to panic, but a panic here would take the
    // whole run with it for what is only a bad file: turn it into an error.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for event in Parser::new_from_str(text) {
            let (event, s) = event.map_err(|e| Diagnostic {
                span: Span::at(pos(e.marker())),
                message: format!("this is not valid YAML: {}", e.info()),
                hint: None,
            })?;
            builder.event(event, span(&s))?;
            if builder.done {
                break;
            }
        }
        Ok::<_, Diagnostic>(())
    }));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(d)) => return Err(d),
        Err(_) => {
            return Err(Diagnostic {
                span: Span::at(Pos { line: 1, col: 1 }),
                message: "the YAML parser failed on this file".into(),
                hint: Some("simplify the file; please report this as a bug in chaos".into()),
            });
        }
    }
    let root = builder.root.take().unwrap_or(Node {
        span: Span::at(Pos { line: 1, col: 1 }),
        kind: Kind::Scalar(Scalar {
            text: String::new(),
            quoted: false,
            substituted: Vec::new(),
            broken: false,
        }),
    });
    Ok((root, builder.problems))
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: BTreeMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
    problems: Vec<Diagnostic>,
    done: bool,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, s: Span) -> Result<(), Diagnostic> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    self.problems.push(Diagnostic {
                        span: s,
                        message: "a second YAML document; an experiment file holds exactly one".into(),
                        hint: Some("put each experiment in a file of its own".into()),
                    });
                    self.done = true;
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let quoted = style != ScalarStyle::Plain || self.string_tag(tag.as_deref(), s);
                let node = Node {
                    span: s,
                    kind: Kind::Scalar(Scalar {
                        text: value.into_owned(),
                        quoted,
                        substituted: Vec::new(),
                        broken: false,
                    }),
                };
                self.push(node, anchor)?;
            }
            Event::SequenceStart(anchor, tag) => {
                self.container_tag(tag, s);
                self.open(Open::Seq { start: s, anchor, items: Vec::new() })?;
            }
            Event::MappingStart(anchor, tag) => {
                self.container_tag(tag, s);
                self.open(Open::Map { start: s, anchor, entries: Vec::new(), key: None })?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Seq { start, anchor, items }) => (
                        Node { span: Span { start: start.start, end: s.end }, kind: Kind::Seq(items) },
                        anchor,
                    ),
                    Some(Open::Map { start, anchor, entries, .. }) => (
                        Node { span: Span { start: start.start, end: s.end }, kind: Kind::Map(entries) },
                        anchor,
                    ),
                    None => return Ok(()),
                };
                self.push(node.0, node.1)?;
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(Diagnostic {
                        span: s,
                        message: "alias to an unknown anchor".into(),
                        hint: None,
                    });
                };
                self.nodes += count(&node);
                if self.nodes > MAX_NODES {
                    return Err(Diagnostic {
                        span: s,
                        message: format!("aliases expand this file past {MAX_NODES} nodes"),
                        hint: Some("write the values out instead of nesting aliases".into()),
                    });
                }
                let node = Node { span: s, kind: node.kind };
                self.push(node, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn string_tag(&mut self, tag: Option<&Tag>, s: Span) -> bool {
        match tag {
            None => false,
            Some(t) if t.is_yaml_core_schema() && t.suffix == "str" => true,
            Some(t) => {
                self.problems.push(Diagnostic {
                    span: s,
                    message: format!("YAML tag `{t}` is not supported in experiment files"),
                    hint: Some("remove the tag; quote the value to make it a string".into()),
                });
                false
            }
        }
    }

    fn container_tag(&mut self, tag: Option<Cow<'_, Tag>>, s: Span) {
        if let Some(t) = tag {
            self.problems.push(Diagnostic {
                span: s,
                message: format!("YAML tag `{t}` is not supported in experiment files"),
                hint: Some("remove the tag".into()),
            });
        }
    }

    fn open(&mut self, open: Open) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            let start = match &open {
                Open::Seq { start, .. } | Open::Map { start, .. } => *start,
            };
            return Err(Diagnostic {
                span: start,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
                hint: Some("an experiment file needs only a few levels".into()),
            });
        }
        self.stack.push(open);
        Ok(())
    }

    /// Add a finished node to its parent (or make it the document).
    fn push(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic {
                span: node.span,
                message: format!("more than {MAX_NODES} nodes"),
                hint: Some("an experiment file is small; is this the right file?".into()),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map { entries, key, .. }) => match key.take() {
                None => {
                    if node.scalar().is_none() {
                        self.problems.push(Diagnostic {
                            span: node.span,
                            message: format!("a key must be a plain name, found {}", node.describe()),
                            hint: None,
                        });
                    }
                    *key = Some(node);
                }
                Some(k) => {
                    let name = k.text().unwrap_or_default();
                    if let Some((first, _)) =
                        entries.iter().find(|(e, _)| e.scalar().is_some() && e.text() == Some(name))
                    {
                        self.problems.push(Diagnostic {
                            span: k.span,
                            message: format!(
                                "duplicate field `{name}` (first given on line {})",
                                first.span.start.line
                            ),
                            hint: Some("keep one of them".into()),
                        });
                    } else {
                        entries.push((k, node));
                    }
                }
            },
        }
        Ok(())
    }
}

fn count(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar(_) => 1,
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map(entries) => 1 + entries.iter().map(|(k, v)| count(k) + count(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_json_types_plain_scalars_and_keeps_quoted_ones_strings() {
        let (node, _) =
            parse("a: 5\nb: 2.5\nc: '5'\nd: true\ne: ~\nf: 50ms\ng: [1, x]\nh: {i: no}\n").unwrap();
        assert_eq!(
            node.to_json(),
            serde_json::json!({"a": 5, "b": 2.5, "c": "5", "d": true, "e": null, "f": "50ms", "g": [1, "x"], "h": {"i": "no"}})
        );
    }

    fn map_keys(n: &Node) -> Vec<(String, Pos)> {
        n.as_map().unwrap().iter().map(|(k, _)| (k.text().unwrap().to_owned(), k.span.start)).collect()
    }

    #[test]
    fn keys_and_values_know_their_place() {
        let (root, problems) = parse("name: x\nmethod:\n  - fault: net-loss\n    percent: 5\n").unwrap();
        assert!(problems.is_empty());
        assert_eq!(
            map_keys(&root),
            vec![("name".into(), Pos { line: 1, col: 1 }), ("method".into(), Pos { line: 2, col: 1 })]
        );
        let method = &root.as_map().unwrap()[1].1;
        let step = &method.as_seq().unwrap()[0];
        let (k, v) = &step.as_map().unwrap()[1];
        assert_eq!(k.span.start, Pos { line: 4, col: 5 });
        assert_eq!(v.span.start, Pos { line: 4, col: 14 });
        assert_eq!(v.text(), Some("5"));
        assert!(!v.scalar().unwrap().quoted);
    }

    #[test]
    fn quoted_and_tagged_scalars_are_strings() {
        let (root, _) = parse("a: '5'\nb: !!str 5\nc: 5\nd:\n").unwrap();
        let m = root.as_map().unwrap();
        assert!(m[0].1.scalar().unwrap().quoted);
        assert!(m[1].1.scalar().unwrap().quoted);
        assert!(!m[2].1.scalar().unwrap().quoted);
        assert!(m[3].1.is_null());
        assert_eq!(m[2].1.describe(), "a number `5`");
    }

    #[test]
    fn duplicates_and_second_documents_are_reported() {
        let (_, problems) = parse("a: 1\nb: 2\na: 3\n---\nc: 4\n").unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].message.contains("duplicate field `a` (first given on line 1)"));
        assert_eq!(problems[0].span.start, Pos { line: 3, col: 1 });
        assert!(problems[1].message.contains("second YAML document"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.contains("not valid YAML"), "{err:?}");
        assert!(err.span.start.line >= 1);
    }

    #[test]
    fn aliases_copy_and_are_bounded() {
        let (root, _) = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(map_keys(&root.as_map().unwrap()[1].1)[0].0, "k");
        // A billion laughs.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text += &format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", "));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("past"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(10_000);
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nesting") || err.message.contains("YAML"), "{err:?}");
    }
}
