//! The KDL document model the configuration is read from, and the parsers that build it.
//!
//! [`parse`] runs the hand-written KDL v2 parser of [`parser`], which covers the whole grammar at
//! tens of MB/s. Whenever it rejects a text (a syntax error, or something it leaves to the `kdl`
//! crate, such as whitespace escapes inside multi-line strings), the text is parsed again with
//! `kdl::KdlDocument::parse_v2`: its diagnostics are the syntax errors users see, and if it accepts
//! the text after all, its tree is converted into this model. So the fast parser only has to be
//! exactly right on what it accepts: the same nodes, values, type annotations and spans as the
//! `kdl` crate, which `tests/kdl_parser.rs` checks differentially. This module is the only place
//! `kdl` types are used.
//!
//! Spans follow the `kdl` crate (6.7): a node's span runs from its type annotation or name to the
//! end of the whitespace after its last entry or child block (not the terminator); an entry's from
//! its property name, type annotation or value to the end of its value; a name's or type
//! annotation's covers the identifier as written, quotes included.

pub mod depth;
mod parser;

use miette::SourceSpan;

/// A list of nodes: a whole file or a child block.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KdlDocument {
    nodes: Vec<KdlNode>,
}

impl KdlDocument {
    pub fn nodes(&self) -> &[KdlNode] {
        &self.nodes
    }
}

/// A node name, property name or type annotation: its decoded value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct KdlIdent {
    value: String,
    span: SourceSpan,
}

impl KdlIdent {
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn span(&self) -> SourceSpan {
        self.span
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KdlNode {
    ty: Option<KdlIdent>,
    name: KdlIdent,
    entries: Vec<KdlEntry>,
    children: Option<KdlDocument>,
    span: SourceSpan,
}

impl KdlNode {
    pub fn name(&self) -> &KdlIdent {
        &self.name
    }

    /// The type annotation, `(ty)node`.
    pub fn ty(&self) -> Option<&KdlIdent> {
        self.ty.as_ref()
    }

    /// Arguments and properties, in source order.
    pub fn entries(&self) -> &[KdlEntry] {
        &self.entries
    }

    pub fn children(&self) -> Option<&KdlDocument> {
        self.children.as_ref()
    }

    pub fn span(&self) -> SourceSpan {
        self.span
    }
}

/// An argument (`value`) or a property (`name=value`).
#[derive(Debug, Clone, PartialEq)]
pub struct KdlEntry {
    name: Option<KdlIdent>,
    ty: Option<KdlIdent>,
    value: KdlValue,
    /// The number as written (`0o644`, `1_000`); numbers only.
    repr: Option<Box<str>>,
    span: SourceSpan,
}

impl KdlEntry {
    /// The property name; `None` for an argument.
    pub fn name(&self) -> Option<&KdlIdent> {
        self.name.as_ref()
    }

    pub fn ty(&self) -> Option<&KdlIdent> {
        self.ty.as_ref()
    }

    pub fn value(&self) -> &KdlValue {
        &self.value
    }

    /// How a number was written, e.g. `0o644` for the integer 420.
    pub fn number_repr(&self) -> Option<&str> {
        self.repr.as_deref()
    }

    pub fn span(&self) -> SourceSpan {
        self.span
    }
}

#[derive(Debug, Clone)]
pub enum KdlValue {
    String(String),
    Integer(i128),
    Float(f64),
    Bool(bool),
    Null,
}

impl PartialEq for KdlValue {
    /// Floats compare by bits (so NaN equals NaN and 0.0 differs from -0.0): trees are compared
    /// for identity, not arithmetic.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KdlValue::String(a), KdlValue::String(b)) => a == b,
            (KdlValue::Integer(a), KdlValue::Integer(b)) => a == b,
            (KdlValue::Float(a), KdlValue::Float(b)) => a.to_bits() == b.to_bits(),
            (KdlValue::Bool(a), KdlValue::Bool(b)) => a == b,
            (KdlValue::Null, KdlValue::Null) => true,
            _ => false,
        }
    }
}

/// One syntax error reported by the `kdl` crate.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: Option<String>,
    pub span: SourceSpan,
    pub label: Option<String>,
    pub help: Option<String>,
}

/// Parses `text` as a KDL v2 document: fast, falling back to the `kdl` crate (see the module
/// documentation). Errors are the `kdl` crate's.
pub fn parse(text: &str) -> Result<KdlDocument, Vec<SyntaxError>> {
    match parser::document_or_position(text) {
        Ok(doc) => Ok(doc),
        Err(at) => diagnose(text, at),
    }
}

/// The most text after the fast parser's stopping point that the `kdl` crate is handed at once.
/// Its error recovery recurses once per error, and each error consumes at least one character,
/// so this bounds its recursion; before the stopping point there is no error to recover from.
const KDL_WINDOW: usize = 128 * 1024;

/// The stack the `kdl` crate runs on: room for [`KDL_WINDOW`] levels of its recursion with a wide
/// margin (about 3.5 KiB a level in a debug build). Only the pages touched are ever allocated.
const KDL_STACK: usize = 1 << 30;

/// The `kdl` crate's diagnostics for a text the fast parser rejected at byte `at`, computed so that
/// no input can overflow the stack: on a thread of its own with [`KDL_STACK`], over at most
/// [`KDL_WINDOW`] bytes past `at`. Errors beyond the window are summed up in one diagnostic.
fn diagnose(text: &str, at: usize) -> Result<KdlDocument, Vec<SyntaxError>> {
    // After an error the crate may read a string's braces as blocks, and it recurses per block
    // (300 '{' in a broken string overflowed the stack): a text that deep counting every brace
    // is not handed to it.
    let max = depth::MAX_DEPTH;
    if let Some(deep) = depth::too_deep_raw(text, max) {
        return Err(vec![SyntaxError {
            message: Some(format!(
                "'{{' nested more than {max} levels deep counting those in strings, past a \
                 syntax error"
            )),
            span: SourceSpan::new(deep.into(), 1),
            label: Some("too deep to diagnose".into()),
            help: Some(
                "fix the syntax error before this point (often an unclosed string); \
                 configurations need a few levels of blocks"
                    .into(),
            ),
        }]);
    }
    let limit = at.saturating_add(KDL_WINDOW);
    // Cut after a newline (always a character boundary), so no token is split.
    let end = if limit >= text.len() {
        text.len()
    } else {
        text.as_bytes()[limit..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| limit + i + 1)
    };
    let window = &text[..end];
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("kdl-diagnostics".into())
            .stack_size(KDL_STACK)
            .spawn_scoped(scope, || parse_with_kdl(window))
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    let Ok(result) = result else {
        // No thread (address space limits): say where parsing stopped rather than risk the stack.
        return Err(vec![stopped_here(at, None)]);
    };
    if end == text.len() {
        return result;
    }
    // The cut leaves unclosed blocks and strings at the window's end: those errors are not the
    // file's. Keep the ones before the window's last line.
    let last_line = window[..end - 1].rfind('\n').map_or(0, |i| i + 1);
    let mut errors: Vec<SyntaxError> = result
        .err()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.span.offset() < last_line)
        .collect();
    errors.push(stopped_here(last_line, Some(text.len())));
    Err(errors)
}

/// The diagnostic for where detailed syntax checking stopped.
fn stopped_here(offset: usize, size: Option<usize>) -> SyntaxError {
    SyntaxError {
        message: Some(match size {
            Some(size) => format!(
                "KDL syntax not checked in detail past this point: nexus checks at most {1} KiB \
                 after the first problem, and this {0} KiB file has a syntax error",
                size / 1024,
                KDL_WINDOW / 1024
            ),
            None => "KDL syntax error here or after this point".to_string(),
        }),
        span: SourceSpan::new(offset.into(), 0),
        label: Some("checked up to here".into()),
        help: Some("fix the errors reported before this point, then validate again".into()),
    }
}

/// The fast parser rejected the text: a syntax error, nesting deeper than the loader allows, or a
/// construct it leaves to the `kdl` crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

/// The hand-written parser alone, without the fallback.
pub fn parse_fast(text: &str) -> Result<KdlDocument, Rejected> {
    parser::document(text)
}

/// The `kdl` crate alone, its tree converted into this model.
pub fn parse_with_kdl(text: &str) -> Result<KdlDocument, Vec<SyntaxError>> {
    match kdl::KdlDocument::parse_v2(text) {
        Ok(doc) => Ok(convert_document(&doc)),
        Err(e) => Err(e
            .diagnostics
            .into_iter()
            .map(|d| SyntaxError {
                message: d.message,
                span: d.span,
                label: d.label,
                help: d.help,
            })
            .collect()),
    }
}

fn convert_document(doc: &kdl::KdlDocument) -> KdlDocument {
    KdlDocument {
        nodes: doc.nodes().iter().map(convert_node).collect(),
    }
}

fn convert_ident(i: &kdl::KdlIdentifier) -> KdlIdent {
    KdlIdent {
        value: i.value().to_string(),
        span: i.span(),
    }
}

fn convert_node(n: &kdl::KdlNode) -> KdlNode {
    KdlNode {
        ty: n.ty().map(convert_ident),
        name: convert_ident(n.name()),
        entries: n.entries().iter().map(convert_entry).collect(),
        children: n.children().map(convert_document),
        span: n.span(),
    }
}

fn convert_entry(e: &kdl::KdlEntry) -> KdlEntry {
    let value = match e.value() {
        kdl::KdlValue::String(s) => KdlValue::String(s.clone()),
        kdl::KdlValue::Integer(i) => KdlValue::Integer(*i),
        kdl::KdlValue::Float(f) => KdlValue::Float(*f),
        kdl::KdlValue::Bool(b) => KdlValue::Bool(*b),
        kdl::KdlValue::Null => KdlValue::Null,
    };
    let repr = match value {
        KdlValue::Integer(_) | KdlValue::Float(_) => {
            e.format().map(|f| f.value_repr.clone().into_boxed_str())
        }
        _ => None,
    };
    KdlEntry {
        name: e.name().map(convert_ident),
        ty: e.ty().map(convert_ident),
        value,
        repr,
        span: e.span(),
    }
}
