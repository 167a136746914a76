//! Configuration diagnostics: every problem found in a config, with its file, span and a hint.
//!
//! Diagnostics are collected rather than returned one at a time so that `nexus validate` can report
//! every error in a single run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

/// Index of a loaded source file in [`Sources`].
pub type FileId = u32;

/// A byte range inside one loaded configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Span {
    pub file: FileId,
    pub offset: u32,
    pub len: u32,
}

impl Span {
    pub fn new(file: FileId, offset: usize, len: usize) -> Span {
        Span {
            file,
            offset: offset as u32,
            len: len as u32,
        }
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Spanned<T> {
    pub value: T,
    #[serde(skip)]
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// One configuration file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as the user sees it (relative to the working directory when possible).
    pub display: String,
    /// The canonical absolute path, used for import cycle detection and relative imports.
    pub path: PathBuf,
    pub text: Arc<String>,
    /// Byte offsets where lines start, built on first use: planning asks for the location of
    /// every resource on every host, and counting newlines from the top each time was quadratic.
    line_starts: Arc<std::sync::OnceLock<Vec<usize>>>,
}

impl SourceFile {
    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        })
    }
}

/// Every file that took part in loading a configuration, in load order.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, display: String, path: PathBuf, text: String) -> FileId {
        self.files.push(SourceFile {
            display,
            path,
            text: Arc::new(text),
            line_starts: Arc::default(),
        });
        (self.files.len() - 1) as FileId
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id as usize]
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path == path)
            .map(|i| i as FileId)
    }

    /// 1-based line and column of a span, for messages that are not rendered with a snippet.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let file = self.get(span.file);
        let offset = (span.offset as usize).min(file.text.len());
        let starts = file.line_starts();
        let line = starts.partition_point(|&start| start <= offset);
        let col = file.text[starts[line - 1]..offset].chars().count() + 1;
        (line, col)
    }

    /// Whether the span starts or ends on a line longer than `max` bytes.
    pub fn on_long_line(&self, span: Span, max: usize) -> bool {
        let file = self.get(span.file);
        let starts = file.line_starts();
        let line_len = |offset: usize| {
            let offset = offset.min(file.text.len());
            let line = starts.partition_point(|&start| start <= offset);
            let end = starts.get(line).copied().unwrap_or(file.text.len());
            end - starts[line - 1]
        };
        let start = span.offset as usize;
        line_len(start) > max || line_len(start + span.len as usize) > max
    }

    /// `file:line:col` for a span.
    pub fn location(&self, span: Span) -> String {
        let (line, col) = self.line_col(span);
        format!("{}:{}:{}", self.get(span.file).display, line, col)
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone)]
pub struct Diag {
    /// Stable machine-readable code, e.g. `config::unknown-property` (documented in docs/configuration.md).
    pub code: &'static str,
    pub message: String,
    /// Primary span and label; `None` for problems that have no place in a file (e.g. a missing root file).
    pub primary: Option<(Span, String)>,
    /// Secondary labels in the same file as the primary span.
    pub secondary: Vec<(Span, String)>,
    pub help: Option<String>,
}

impl Diag {
    pub fn new(code: &'static str, message: impl Into<String>) -> Diag {
        Diag {
            code,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diag {
        self.primary = Some((span, label.into()));
        self
    }

    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diag {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }
}

/// The diagnostics of a configuration that failed to load.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub sources: Sources,
    pub diags: Vec<Diag>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diags.len();
        write!(
            f,
            "configuration is invalid: {n} error{}",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// Adapter so that miette can render one [`Diag`] with its source file.
struct Rendered<'a> {
    diag: &'a Diag,
    source: Option<NamedSource<Arc<String>>>,
    /// The message and help, already wrapped (see [`fill`]).
    message: String,
    help: Option<String>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Wraps `text` at spaces so that no line is longer than `width` characters, keeping existing line
/// breaks. miette's own wrapping also breaks at hyphens, which splits option names such as
/// `become-user` across lines; it is turned off and this is used instead.
fn fill(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut col = 0;
        for word in line.split(' ') {
            let len = word.chars().count();
            if col > 0 && col + 1 + len > width {
                out.push('\n');
                col = 0;
            } else if col > 0 {
                out.push(' ');
                col += 1;
            }
            out.push_str(word);
            col += len;
        }
    }
    out
}

/// `first defined here` → `first defined at FILE:LINE:COL`, for a label that cannot be drawn
/// because it points into another file than the snippet shown.
fn note(label: &str, location: &str) -> String {
    match label.strip_suffix(" here") {
        Some(l) => format!("{l} at {location}"),
        None => format!("{label} (at {location})"),
    }
}

impl std::error::Error for Rendered<'_> {}

impl Diagnostic for Rendered<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diag.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let (primary, label) = self.diag.primary.as_ref()?;
        let mut spans = vec![LabeledSpan::new_primary_with_span(
            Some(label.clone()),
            (primary.offset as usize, primary.len as usize),
        )];
        for (span, label) in &self.diag.secondary {
            if span.file == primary.file {
                spans.push(LabeledSpan::new_with_span(
                    Some(label.clone()),
                    (span.offset as usize, span.len as usize),
                ));
            }
        }
        Some(Box::new(spans.into_iter()))
    }
}

/// Lines longer than this (in bytes) are not drawn in snippets.
const MAX_SNIPPET_LINE: usize = 1_000;

/// Diagnostics drawn in full by [`ConfigErrors::render`]; past these, a count.
pub const SHOWN_IN_FULL: usize = 50;

/// How diagnostics are drawn.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    pub color: bool,
    pub width: usize,
}

impl ConfigErrors {
    /// Renders the first [`SHOWN_IN_FULL`] diagnostics with their snippet, caret and hint, then how
    /// many more there are, then the count. miette scans a snippet's file from its start for every
    /// diagnostic, so drawing all of 20,000 errors took minutes; JSON output has them all.
    pub fn render(&self, opts: RenderOptions) -> String {
        let theme = if opts.color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(opts.width)
            .with_wrap_lines(false)
            .with_links(false);
        // miette indents the message by 4 columns ("  × ") and the help by 8 ("  help: "), within
        // the width less 2.
        let text_width = opts.width.saturating_sub(2);
        let mut out = String::new();
        for diag in self.diags.iter().take(SHOWN_IN_FULL) {
            // A snippet of a very long line is unreadable, and miette panics on a label past
            // column 65,535: such a diagnostic is written with locations instead.
            let drawn = diag.primary.as_ref().filter(|(primary, _)| {
                std::iter::once(primary)
                    .chain(diag.secondary.iter().map(|(s, _)| s))
                    .filter(|s| s.file == primary.file)
                    .all(|s| !self.sources.on_long_line(*s, MAX_SNIPPET_LINE))
            });
            let source = drawn.map(|(span, _)| {
                let file = self.sources.get(span.file);
                NamedSource::new(file.display.clone(), file.text.clone()).with_language("kdl")
            });
            // Labels that cannot be drawn (in another file than the snippet, or no snippet)
            // become notes.
            let drawn_file = drawn.map(|(s, _)| s.file);
            let undrawn_primary = diag.primary.as_ref().filter(|_| drawn.is_none());
            let notes: Vec<String> = undrawn_primary
                .into_iter()
                .chain(&diag.secondary)
                .filter(|(s, _)| Some(s.file) != drawn_file)
                .map(|(s, l)| note(l, &self.sources.location(*s)))
                .collect();
            let help = match (&diag.help, notes.is_empty()) {
                (Some(h), true) => Some(h.clone()),
                (Some(h), false) => Some(format!("{h}\n{}", notes.join("\n"))),
                (None, false) => Some(notes.join("\n")),
                (None, true) => None,
            };
            let rendered = Rendered {
                diag,
                source,
                message: fill(&diag.message, text_width.saturating_sub(4)),
                help: help.map(|h| fill(&h, text_width.saturating_sub(8))),
            };
            // Writing into a String cannot fail.
            let _ = handler.render_report(&mut out, &rendered);
            out.push('\n');
        }
        if let Some(more) = self
            .diags
            .len()
            .checked_sub(SHOWN_IN_FULL)
            .filter(|&n| n > 0)
        {
            out.push_str(&format!(
                "… and {more} more error{} (all of them: nexus validate --format json)\n",
                if more == 1 { "" } else { "s" }
            ));
        }
        out.push_str(&format!("error: {self}\n"));
        out
    }

    /// A JSON array of diagnostics with file:line:col, for `--format json`.
    pub fn to_json(&self) -> serde_json::Value {
        let items: Vec<_> = self
            .diags
            .iter()
            .map(|d| {
                let (file, line, column) = match &d.primary {
                    Some((span, _)) => {
                        let (l, c) = self.sources.line_col(*span);
                        (Some(self.sources.get(span.file).display.clone()), l, c)
                    }
                    None => (None, 0, 0),
                };
                serde_json::json!({
                    "code": d.code,
                    "message": d.message,
                    "file": file,
                    "line": line,
                    "column": column,
                    "label": d.primary.as_ref().map(|(_, l)| l.clone()),
                    "help": d.help,
                })
            })
            .collect();
        serde_json::json!({ "valid": false, "errors": items })
    }
}

/// The closest candidate to `word`, if one is close enough to be a plausible typo.
///
/// Candidates within a small edit distance (counting a swap of two adjacent letters as one edit)
/// win first, closest first: Jaro-Winkler alone ranks `web2` above `web` for `wbe`. Otherwise the
/// most similar candidate by Jaro-Winkler, if similar enough. Ties go to the earlier candidate.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().filter(|c| *c != word).collect();
    let max_edits = (word.chars().count() / 3).max(1);
    let mut best: Option<(usize, f64, &str)> = None;
    for c in &candidates {
        let d = strsim::osa_distance(word, c);
        let jw = strsim::jaro_winkler(word, c);
        if d <= max_edits && best.is_none_or(|(bd, bjw, _)| d < bd || (d == bd && jw > bjw)) {
            best = Some((d, jw, c));
        }
    }
    if let Some((_, _, c)) = best {
        return Some(c);
    }
    let mut best: Option<(f64, &str)> = None;
    for c in &candidates {
        let jw = strsim::jaro_winkler(word, c);
        if jw > 0.8 && best.is_none_or(|(b, _)| jw > b) {
            best = Some((jw, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("pakage", ["package", "service"]), Some("package"));
        assert_eq!(suggest("zzz", ["package", "service"]), None);
        assert_eq!(
            suggest("wbe", ["local", "web1", "web2", "web"]),
            Some("web")
        );
        assert_eq!(suggest("web3", ["web1", "web2"]), Some("web1"));
    }

    #[test]
    fn wraps_at_spaces_only() {
        assert_eq!(fill("aa bb-cc dd", 8), "aa bb-cc\ndd");
        assert_eq!(fill("a\nb c", 80), "a\nb c");
    }

    #[test]
    fn line_col_counts_chars() {
        let mut s = Sources::default();
        let id = s.add("a.kdl".into(), "/a.kdl".into(), "ab\ncdé f".into());
        assert_eq!(s.line_col(Span::new(id, 0, 1)), (1, 1));
        // 'f' is at byte 8 (é is two bytes) and column 5.
        assert_eq!(s.line_col(Span::new(id, 8, 1)), (2, 5));
        // The newline belongs to its line; the next byte starts the next one.
        assert_eq!(s.line_col(Span::new(id, 2, 1)), (1, 3));
        assert_eq!(s.line_col(Span::new(id, 3, 1)), (2, 1));
        // Past the end is clamped to the end.
        assert_eq!(s.line_col(Span::new(id, 99, 0)), (2, 6));
        let id = s.add("b.kdl".into(), "/b.kdl".into(), "a\n\n".into());
        assert_eq!(s.line_col(Span::new(id, 2, 0)), (2, 1));
        assert_eq!(s.line_col(Span::new(id, 3, 0)), (3, 1));
    }
}
