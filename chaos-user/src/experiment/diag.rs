//! Diagnostics for experiment files: every problem with its place in the
//! file (line and column, 1-based, in characters) and, where there is one,
//! what to write instead. Rendered like a compiler's:
//!
//! ```text
//! experiments/x.yaml:12:5: error: unknown field `duraton` in a method step
//!    |
//! 12 |     duraton: 30s
//!    |     ^^^^^^^
//!    = hint: did you mean `duration`?
//! ```

use std::fmt;

/// A place in a file: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A range in a file; `end` is exclusive and may be on a later line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    pub fn at(start: Pos) -> Self {
        Self { start, end: start }
    }
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

/// Every problem found in one file, with what is needed to show them.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The file as the user named it.
    pub file: String,
    source: String,
    pub list: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &str, source: &str, mut list: Vec<Diagnostic>) -> Self {
        list.sort_by_key(|d| d.span.start);
        list.dedup();
        Self { file: file.to_owned(), source: source.to_owned(), list }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// `file:line:col: message` lines only, without source excerpts.
    pub fn short(&self) -> String {
        self.list
            .iter()
            .map(|d| {
                let hint = d.hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default();
                format!("{}:{}:{}: {}{hint}", self.file, d.span.start.line, d.span.start.col, d.message)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = source_lines(&self.source);
        for (i, d) in self.list.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let Pos { line, col } = d.span.start;
            writeln!(f, "{}:{line}:{col}: error: {}", self.file, d.message)?;
            if let Some(text) = line.checked_sub(1).and_then(|l| lines.get(l)) {
                let gutter = line.to_string().len();
                let width = if d.span.end.line == line && d.span.end.col > col {
                    d.span.end.col - col
                } else {
                    // A node spanning lines, or an empty one: underline to
                    // the end of the word.
                    text.chars().skip(col.saturating_sub(1)).take_while(|c| !c.is_whitespace()).count().max(1)
                };
                let text: String = text.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{line} | {text}")?;
                writeln!(f, "{:gutter$} | {}{}", "", " ".repeat(col.saturating_sub(1)), "^".repeat(width))?;
            }
            if let Some(hint) = &d.hint {
                writeln!(f, "  = hint: {hint}")?;
            }
        }
        Ok(())
    }
}

/// The file's lines as the YAML parser numbers them: `\r\n`, `\r` and `\n`
/// each end a line (YAML 1.2, 5.4 "Line Break Characters"); `str::lines`
/// does not split at a lone `\r`, and would quote the wrong line after one.
pub fn source_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        // Both are ASCII: slicing at them stays on char boundaries.
        if bytes[i] == b'\n' || bytes[i] == b'\r' {
            out.push(&text[start..i]);
            if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_l = word.to_lowercase().replace('_', "-");
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word_l, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance (Levenshtein plus adjacent swaps).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let fields = ["duration", "delay", "target", "fault"];
        assert_eq!(did_you_mean("duraton", fields), Some("duration"));
        assert_eq!(did_you_mean("taregt", fields), Some("target"));
        assert_eq!(did_you_mean("Fault", fields), Some("fault"));
        assert_eq!(did_you_mean("colour", fields), None);
        assert_eq!(did_you_mean("x", ["y"]), Some("y"));
    }

    #[test]
    fn renders_with_excerpt_and_caret() {
        let src = "name: x\nmethod:\n  - duraton: 30s\n";
        let d = Diagnostic {
            span: Span { start: Pos { line: 3, col: 5 }, end: Pos { line: 3, col: 12 } },
            message: "unknown field `duraton` in a method step".into(),
            hint: Some("did you mean `duration`?".into()),
        };
        let text = Diagnostics::new("x.yaml", src, vec![d]).to_string();
        assert!(text.starts_with("x.yaml:3:5: error: unknown field `duraton`"), "{text}");
        assert!(text.contains("3 |   - duraton: 30s\n  |     ^^^^^^^\n"), "{text}");
        assert!(text.contains("= hint: did you mean `duration`?"), "{text}");
    }

    #[test]
    fn positions_past_the_end_render_without_excerpt() {
        let d = Diagnostic { span: Span::at(Pos { line: 9, col: 1 }), message: "m".into(), hint: None };
        assert_eq!(Diagnostics::new("f", "a\n", vec![d]).to_string(), "f:9:1: error: m\n");
    }
}
