//! KDL configuration: loading (with imports), parsing into the typed model, and validation.
//!
//! `load` either returns a fully validated [`Config`] or every problem found, each with its file,
//! line, column, snippet and hint. The language itself (KDL, the node reader, value checks) is
//! `crate::syntax`; each resource type reads its own node in `crate::resources`.

mod inputs;
mod model;
mod parse;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::syntax::diagnostic::{
    ConfigErrors, Diag, FileId, RenderOptions, SourceFile, Sources, Span, Spanned,
    suggest as suggest_name,
};
pub use model::*;
pub use parse::{TOP_LEVEL, strategy_name};

use crate::syntax::fields::{FileCtx, display_path};
use crate::syntax::kdl::depth::{MAX_DEPTH, too_deep};
use crate::syntax::reader::{Cx, NodeR, span_of};
use crate::syntax::{expr, files, kdl as syntax};
use parse::Builder;

/// A loaded configuration together with the files it came from (for the inputs manifest).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub sources: Sources,
}

/// Loads and validates `path`, reading environment variables from the process.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

/// Like [`load`], with an explicit environment (used by tests and for hermetic runs).
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let mut l = Loader {
        cx: Cx::default(),
        sources: Sources::default(),
        builder: Builder::default(),
        env,
        env_used: BTreeMap::new(),
    };
    let root = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) => {
            let d = Diag::new(
                "config::not-found",
                format!(
                    "cannot read config file {}: {}",
                    path.display(),
                    files::io_reason(&e)
                ),
            )
            .help("pass another file with -c FILE, or create one with `nexus init`");
            return Err(ConfigErrors {
                sources: l.sources,
                diags: vec![d],
            });
        }
    };
    let display = path.display().to_string();
    l.load_file(&root, display, &mut Vec::new(), None);
    l.finish(root.parent().unwrap_or(Path::new("/")).to_path_buf())
}

/// Parses configuration text that is not on disk (fuzzing, tests). Imports resolve against `dir`.
pub fn load_str(text: &str, display: &str, dir: &Path) -> Result<Loaded, ConfigErrors> {
    let mut l = Loader {
        cx: Cx::default(),
        sources: Sources::default(),
        builder: Builder::default(),
        env: &|_| None,
        env_used: BTreeMap::new(),
    };
    let id = l
        .sources
        .add(display.to_string(), dir.join(display), text.to_string());
    l.parse_text(id, dir, &mut vec![id]);
    l.finish(dir.to_path_buf())
}

/// Label and hint for a KDL syntax error. The parser's own labels ("not integer", "not quoted
/// string") read backwards, and a few common mistakes deserve a precise hint.
fn syntax_hint(
    message: &str,
    found: &str,
    label: Option<String>,
    help: Option<String>,
) -> (String, String) {
    let generic = "see https://kdl.dev for KDL v2 syntax: strings in double quotes, #true/#false, children in { }";
    match (message, found) {
        (_, "true" | "false" | "null") => (
            "bare keyword".into(),
            format!(
                "KDL v2 writes booleans and null with a leading '#': #{found} (a bare {found} is KDL v1 syntax)"
            ),
        ),
        (UNCLOSED_BLOCK, _) => (
            "this '{' is never closed".into(),
            "add the missing '}'; blocks close in the reverse order they open".into(),
        ),
        ("Expected end of document", "}") => (
            "unmatched '}'".into(),
            "this '}' has no matching '{': remove it, or add the missing '{'".into(),
        ),
        ("Unexpected newline in single-line quoted string", _) => (
            "string not closed on this line".into(),
            "close the string with '\"'; multi-line strings are written between '\"\"\"' lines"
                .into(),
        ),
        _ => {
            let label = match label {
                Some(l) => match l.strip_prefix("not ") {
                    Some(what) => format!("expected {what}"),
                    None => l,
                },
                None => "here".into(),
            };
            (label, help.unwrap_or_else(|| generic.into()))
        }
    }
}

/// Messages of the `kdl` parser that the loader treats specially (see `parse_text`).
const UNCLOSED_BLOCK: &str = "No closing '}' for child block";
const CLOSING_NOT_FOUND: &str = "Closing '}' was not found after nodes";

struct Loader<'e> {
    cx: Cx,
    sources: Sources,
    builder: Builder,
    env: &'e dyn Fn(&str) -> Option<String>,
    env_used: BTreeMap<String, Option<String>>,
}

impl Loader<'_> {
    /// Reads one file; `stack` holds the chain of importing files for cycle detection.
    fn load_file(
        &mut self,
        path: &Path,
        display: String,
        stack: &mut Vec<FileId>,
        import_span: Option<Span>,
    ) {
        let text = match files::read_regular(path, Some(files::MAX_TEXT_BYTES)) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    let d = Diag::new("config::not-utf8", format!("{display} is not valid UTF-8"))
                        .help("KDL files must be UTF-8 text");
                    self.cx.push(match import_span {
                        Some(s) => d.at(s, "imported here"),
                        None => d,
                    });
                    return;
                }
            },
            Err(e) => {
                let help = match &e {
                    files::ReadError::Io(_) => "import paths are relative to the importing file",
                    files::ReadError::NotRegular(_) => {
                        "configuration files must be regular files (not FIFOs, devices or directories)"
                    }
                    files::ReadError::TooLarge { .. } => {
                        "split the configuration into files that import each other"
                    }
                };
                let d = Diag::new(e.code(), e.about(&display));
                self.cx.push(match (import_span, &e) {
                    (Some(s), _) => d.at(s, "imported here").help(help),
                    (None, files::ReadError::Io(_)) => d,
                    (None, _) => d.help(help),
                });
                return;
            }
        };
        let id = self.sources.add(display, path.to_path_buf(), text);
        stack.push(id);
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.parse_text(id, &dir, stack);
        stack.pop();
    }

    fn parse_text(&mut self, id: FileId, dir: &Path, stack: &mut Vec<FileId>) {
        let text = self.sources.get(id).text.clone();
        // The KDL parsers recurse per block; refuse absurd nesting before it can exhaust the stack.
        // (The fast parser also stops at this depth by itself, but it falls back to the `kdl`
        // crate, which does not.)
        if let Some(at) = too_deep(&text, MAX_DEPTH) {
            self.cx.push(
                Diag::new("config::too-deep", format!("blocks are nested more than {MAX_DEPTH} levels deep"))
                    .at(Span::new(id, at, 1), "too deep")
                    .help("configurations need a few levels (task, resource, options); flatten this structure"),
            );
            return;
        }
        // The fast parser, else the `kdl` crate's diagnostics, bounded so that no text can
        // exhaust the stack (syntax::parse).
        let parsed = syntax::parse(&text);
        let doc = match parsed {
            Ok(doc) => doc,
            Err(errors) => {
                let unclosed = errors
                    .iter()
                    .any(|d| d.message.as_deref() == Some(UNCLOSED_BLOCK));
                for d in errors {
                    let message = d.message.unwrap_or_else(|| "invalid KDL".into());
                    // The parser reports an unclosed block twice; the second, spanning the whole
                    // block, adds nothing.
                    if unclosed && message == CLOSING_NOT_FOUND {
                        continue;
                    }
                    let span = span_of(id, d.span);
                    let found = text
                        .get(d.span.offset()..d.span.offset() + d.span.len())
                        .unwrap_or("");
                    let (label, help) = syntax_hint(&message, found, d.label, d.help);
                    self.cx.push(
                        Diag::new("config::syntax", format!("KDL syntax error: {message}"))
                            .at(span, label)
                            .help(help),
                    );
                }
                return;
            }
        };
        let fc = FileCtx { file: id, dir };
        for node in doc.nodes() {
            if node.name().value() == "import" {
                self.import(&fc, node, stack);
            } else {
                self.builder.top_level(&mut self.cx, &fc, node);
            }
        }
    }

    fn import(&mut self, fc: &FileCtx<'_>, node: &syntax::KdlNode, stack: &mut Vec<FileId>) {
        let mut r = NodeR::new(&mut self.cx, node, fc.file, "`import`".into());
        r.expect_args(
            &mut self.cx,
            1,
            usize::MAX,
            "import \"path/to/file.kdl\"... [when=\"env.NEXUS_ENV == 'production'\"]",
        );
        let paths: Vec<_> = (0..r.args().len())
            .filter_map(|i| r.arg_str(&mut self.cx, i))
            .collect();
        let when = r.str(&mut self.cx, "when");
        r.finish(&mut self.cx);
        if let Some(w) = when {
            match self.eval_import_when(&w) {
                Some(true) => {}
                _ => return,
            }
        }
        for p in paths {
            let joined = fc.dir.join(&p.value);
            let canonical = std::fs::canonicalize(&joined).unwrap_or(joined.clone());
            if let Some(existing) = self.sources.find(&canonical) {
                let chain: Vec<&str> = stack
                    .iter()
                    .map(|f| self.sources.get(*f).display.as_str())
                    .collect();
                if stack.contains(&existing) {
                    let start = stack.iter().position(|f| *f == existing).unwrap_or(0);
                    let mut cycle: Vec<&str> = chain[start..].to_vec();
                    cycle.push(self.sources.get(existing).display.as_str());
                    let msg = format!("import cycle: {}", cycle.join(" → "));
                    self.cx.push(
                        Diag::new("config::import-cycle", msg)
                            .at(p.span, "imports a file that is already being loaded")
                            .help("remove one of these imports; shared definitions belong in a file that imports nothing back"),
                    );
                } else {
                    let msg = format!(
                        "{} is imported more than once",
                        self.sources.get(existing).display
                    );
                    self.cx.push(
                        Diag::new("config::duplicate-import", msg)
                            .at(p.span, "imported again here")
                            .help("import each file once; its definitions would otherwise be duplicated"),
                    );
                }
                continue;
            }
            let display = display_path(&joined);
            self.load_file(&canonical, display, stack, Some(p.span));
        }
    }

    /// Evaluates an import's `when` against the environment; the values read are recorded so the
    /// plan can pin them.
    fn eval_import_when(&mut self, w: &Spanned<String>) -> Option<bool> {
        if !parse::check_expression(&mut self.cx, w) {
            return None;
        }
        let env = expr::environment();
        let expr = env.compile_expression(&w.value).ok()?;
        let mut vars = BTreeMap::new();
        for name in expr.undeclared_variables(true) {
            if let Some(var) = name.strip_prefix("env.") {
                let value = (self.env)(var);
                self.env_used.insert(var.to_string(), value.clone());
                if let Some(v) = value {
                    vars.insert(var.to_string(), v);
                }
            } else if name != "env" {
                self.cx.push(
                    Diag::new("config::invalid-expression", format!("import conditions can only read env, not `{name}`"))
                        .at(w.span, "unknown variable")
                        .help("imports are decided before any host is contacted: use env.NAME, e.g. when=\"env.NEXUS_ENV == 'production'\""),
                );
                return None;
            }
        }
        match expr.eval(minijinja::context! { env => vars }) {
            Ok(v) => Some(v.is_true()),
            Err(e) => {
                self.cx.push(
                    Diag::new(
                        "config::invalid-expression",
                        format!("cannot evaluate import condition: {e}"),
                    )
                    .at(w.span, "evaluation failed"),
                );
                None
            }
        }
    }

    fn finish(mut self, base_dir: PathBuf) -> Result<Loaded, ConfigErrors> {
        validate::check(&mut self.cx, &self.builder);
        if !self.cx.diags.is_empty() {
            let mut diags = self.cx.diags;
            // Stable order: by file, then position, so goldens and users see errors top to bottom.
            diags.sort_by_key(|d| d.primary.as_ref().map(|(s, _)| (s.file, s.offset)));
            return Err(ConfigErrors {
                sources: self.sources,
                diags,
            });
        }
        let mut b = self.builder;
        if let Some(s) = b.defaults.as_ref().and_then(|d| d.0.strategy) {
            for (t, explicit) in b.tasks.iter_mut().zip(&b.explicit_strategy) {
                if !explicit {
                    t.strategy = s;
                }
            }
        }
        let config = Config {
            base_dir,
            defaults: b.defaults.map(|d| d.0).unwrap_or_default(),
            vars: b.vars,
            hosts: b.hosts,
            groups: b.groups,
            tailscale: b.tailscale,
            notifiers: b.notifiers,
            tasks: b.tasks,
            handlers: b.handlers,
            vault: b.vault.map(|v| v.0),
            state: b.state.map(|v| v.0),
            trust: b.trust.map(|v| v.0),
            env_used: self.env_used,
        };
        Ok(Loaded {
            config,
            sources: self.sources,
        })
    }
}
