//! A hand-written, backtracking recursive-descent parser for KDL v2 over the bytes of a `&str`.
//!
//! It follows the `kdl` crate's parser (6.7) decision for decision rather than the grammar in the
//! specification, because the two differ in corners (`/-node;` is an error there, `node #true/-x`
//! is not) and the fast parser must never accept a text that the `kdl` crate rejects. Every
//! function returns `Err(Rejected)` where the `kdl` crate reports an error, and `Ok(None)`/`false`
//! (with the position restored by the caller) where it backtracks to try something else.
//!
//! Left to the fallback, on purpose: whitespace escapes (`\` followed by spaces or newlines)
//! inside multi-line strings, and multi-line raw-string lines made only of spaces and
//! backslashes; the `kdl` crate's handling of both is intricate and neither occurs in real
//! configurations. Nesting deeper than the loader's limit also falls back, so recursion here is
//! bounded.

use miette::SourceSpan;

use super::{KdlDocument, KdlEntry, KdlIdent, KdlNode, KdlValue, Rejected};

type R<T> = Result<T, Rejected>;

/// A value with its type annotation and, for numbers, its spelling.
type Annotated = (Option<KdlIdent>, KdlValue, Option<Box<str>>);

/// The lines of a multi-line string: each (start, end before the newline), the closing line's
/// indentation (start, end) and the offset after the closing quotes.
struct Lines {
    lines: Vec<(usize, usize)>,
    indent: (usize, usize),
    end: usize,
}

/// Child blocks and nested slashdashed entries deeper than this are left to the fallback.
const MAX_NESTING: usize = super::depth::MAX_DEPTH;

pub(super) fn document(text: &str) -> R<KdlDocument> {
    document_or_position(text).map_err(|_| Rejected)
}

/// [`document`], or the byte offset the parser had reached when it gave up: the first error is
/// there or after it (a construct it leaves to the `kdl` crate may have started before).
pub(super) fn document_or_position(text: &str) -> Result<KdlDocument, usize> {
    let mut p = P {
        s: text,
        b: text.as_bytes(),
        pos: 0,
        depth: 0,
        sd_depth: 0,
    };
    if text.starts_with('\u{FEFF}') {
        p.pos = '\u{FEFF}'.len_utf8();
    }
    let Ok(nodes) = p.nodes() else {
        return Err(p.pos);
    };
    if p.pos != p.b.len() {
        return Err(p.pos);
    }
    Ok(KdlDocument { nodes })
}

fn span(start: usize, end: usize) -> SourceSpan {
    SourceSpan::new(start.into(), end - start)
}

fn is_unicode_space(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

fn is_newline(c: char) -> bool {
    matches!(
        c,
        '\r' | '\n' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Code points the `kdl` crate refuses in strings and identifiers (it allows U+007F).
fn is_disallowed(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}'
        | '\u{E}'..='\u{1F}'
        | '\u{200E}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

fn is_ident_char(c: char) -> bool {
    !(is_unicode_space(c)
        || is_newline(c)
        || is_disallowed(c)
        || matches!(
            c,
            '\\' | '/' | '(' | ')' | '{' | '}' | '[' | ']' | ';' | '"' | '#' | '='
        ))
}

/// Length in bytes of the UTF-8 sequence that starts with `lead`.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0..0x80 => 1,
        0x80..0xE0 => 2,
        0xE0..0xF0 => 3,
        _ => 4,
    }
}

fn digit_value(c: u8, radix: u32) -> Option<u32> {
    (c as char).to_digit(radix)
}

struct P<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    /// Open child blocks.
    depth: usize,
    /// Nested slashdashed entries (`/- /- a b`).
    sd_depth: usize,
}

impl P<'_> {
    // ---- characters -------------------------------------------------------------------------

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn peek_at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    fn at(&self, lit: &[u8]) -> bool {
        self.b[self.pos..].starts_with(lit)
    }

    fn eof(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// The character at byte offset `i` (a character boundary).
    fn char_at(&self, i: usize) -> Option<char> {
        let b = *self.b.get(i)?;
        if b < 0x80 {
            Some(b as char)
        } else {
            self.s[i..].chars().next()
        }
    }

    /// Length of the character at `i` if it is not ASCII and `pred` holds for it, else 0.
    fn wide_len(&self, i: usize, pred: fn(char) -> bool) -> usize {
        match self.char_at(i) {
            Some(c) if !c.is_ascii() && pred(c) => c.len_utf8(),
            _ => 0,
        }
    }

    /// Length of the unicode space at `i`, or 0.
    fn space_len(&self, i: usize) -> usize {
        match self.b.get(i) {
            Some(b' ' | b'\t') => 1,
            Some(&x) if x >= 0x80 => self.wide_len(i, is_unicode_space),
            _ => 0,
        }
    }

    /// Length of the newline at `i` (CRLF counts as one), or 0.
    fn newline_len(&self, i: usize) -> usize {
        match self.b.get(i) {
            Some(b'\r') if self.b.get(i + 1) == Some(&b'\n') => 2,
            Some(b'\r' | b'\n' | 0x0B | 0x0C) => 1,
            Some(&x) if x >= 0x80 => self.wide_len(i, is_newline),
            _ => 0,
        }
    }

    fn ident_char_len(&self, i: usize) -> usize {
        match self.b.get(i) {
            Some(&x) if x < 0x80 => {
                let ok = x > b' '
                    && !matches!(
                        x,
                        b'\\'
                            | b'/'
                            | b'('
                            | b')'
                            | b'{'
                            | b'}'
                            | b'['
                            | b']'
                            | b';'
                            | b'"'
                            | b'#'
                            | b'='
                    );
                usize::from(ok)
            }
            Some(_) => self.wide_len(i, is_ident_char),
            None => 0,
        }
    }

    // ---- whitespace and comments ------------------------------------------------------------

    /// `ws := unicode-space | multi-line-comment`, one of them.
    fn ws(&mut self) -> R<bool> {
        let n = self.space_len(self.pos);
        if n > 0 {
            self.pos += n;
            return Ok(true);
        }
        if self.at(b"/*") {
            self.block_comment()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `/* ... */`, nesting; unterminated is an error.
    fn block_comment(&mut self) -> R<()> {
        self.pos += 2;
        let mut depth = 1usize;
        while depth > 0 {
            match self.b.get(self.pos) {
                None => return Err(Rejected),
                Some(b'*') if self.peek_at(self.pos + 1) == Some(b'/') => {
                    depth -= 1;
                    self.pos += 2;
                }
                Some(b'/') if self.peek_at(self.pos + 1) == Some(b'*') => {
                    depth += 1;
                    self.pos += 2;
                }
                Some(_) => self.pos += 1,
            }
        }
        Ok(())
    }

    /// `// ...` up to and including the newline, or to the end of the text.
    fn line_comment(&mut self) {
        self.pos += 2;
        while let Some(&x) = self.b.get(self.pos) {
            let n = self.newline_len(self.pos);
            if n > 0 {
                self.pos += n;
                return;
            }
            self.pos += utf8_len(x);
        }
    }

    /// `escline := '\' ws* (single-line-comment | newline | eof) ws*`; the position is restored
    /// when there is none.
    fn escline(&mut self) -> R<bool> {
        let start = self.pos;
        self.pos += 1;
        while self.ws()? {}
        if self.at(b"//") {
            self.line_comment();
        } else {
            let n = self.newline_len(self.pos);
            if n > 0 {
                self.pos += n;
            } else if !self.eof() {
                self.pos = start;
                return Ok(false);
            }
        }
        while self.ws()? {}
        Ok(true)
    }

    /// `node-space*`: whitespace, block comments and line continuations. True if any.
    fn node_space(&mut self) -> R<bool> {
        let start = self.pos;
        loop {
            if self.ws()? {
                continue;
            }
            if self.peek() == Some(b'\\') && self.escline()? {
                continue;
            }
            break;
        }
        Ok(self.pos > start)
    }

    /// `line-space := node-space | newline | single-line-comment`, as many as there are.
    fn line_space(&mut self) -> R<bool> {
        let start = self.pos;
        loop {
            if self.node_space()? {
                continue;
            }
            let n = self.newline_len(self.pos);
            if n > 0 {
                self.pos += n;
                continue;
            }
            if self.at(b"//") {
                self.line_comment();
                continue;
            }
            break;
        }
        Ok(self.pos > start)
    }

    /// `node-terminator := ';' | newline | single-line-comment` (end of text is handled by callers).
    fn terminator(&mut self) -> bool {
        if self.peek() == Some(b';') {
            self.pos += 1;
            return true;
        }
        let n = self.newline_len(self.pos);
        if n > 0 {
            self.pos += n;
            return true;
        }
        if self.at(b"//") {
            self.line_comment();
            return true;
        }
        false
    }

    /// `slashdash := '/-' line-space*`, at `/-`.
    fn slashdash(&mut self) -> R<()> {
        self.pos += 2;
        self.line_space()?;
        Ok(())
    }

    /// Whether a value may end here: end of text, `=`, `)`, `{`, `}`, node space or a terminator.
    fn at_value_terminator(&mut self) -> R<bool> {
        let Some(x) = self.peek() else {
            return Ok(true);
        };
        Ok(match x {
            b'=' | b')' | b'{' | b'}' | b';' => true,
            b'/' => match self.peek_at(self.pos + 1) {
                Some(b'/') => true,
                Some(b'*') => {
                    let save = self.pos;
                    self.block_comment()?;
                    self.pos = save;
                    true
                }
                _ => false,
            },
            b'\\' => {
                let save = self.pos;
                let ok = self.escline()?;
                self.pos = save;
                ok
            }
            _ => self.space_len(self.pos) > 0 || self.newline_len(self.pos) > 0,
        })
    }

    // ---- nodes ------------------------------------------------------------------------------

    /// `nodes`: up to the end of the text or a `}`, which the caller checks.
    fn nodes(&mut self) -> R<Vec<KdlNode>> {
        let mut out = Vec::new();
        loop {
            self.skip_line_space()?;
            if self.eof() || self.peek() == Some(b'}') {
                break;
            }
            out.push(self.base_node()?);
            if !self.terminator() {
                self.skip_line_space()?;
                break;
            }
        }
        Ok(out)
    }

    /// Space, newlines, comments and slashdashed nodes between nodes.
    fn skip_line_space(&mut self) -> R<()> {
        loop {
            if self.line_space()? {
                continue;
            }
            if self.at(b"/-") {
                self.slashdash()?;
                if self.eof() || self.peek() == Some(b'}') {
                    return Err(Rejected);
                }
                self.base_node()?;
                continue;
            }
            return Ok(());
        }
    }

    /// A node without its terminator; its span ends after the space that follows it.
    fn base_node(&mut self) -> R<KdlNode> {
        let start = self.pos;
        if self.peek() == Some(b'{') {
            return Err(Rejected);
        }
        let ty = if self.peek() == Some(b'(') {
            Some(self.ty()?)
        } else {
            None
        };
        self.node_space()?;
        let name = self.string()?.ok_or(Rejected)?;
        let mut entries = Vec::new();
        loop {
            let p = self.pos;
            if !self.node_space()? {
                break;
            }
            match self.node_entry()? {
                Some(e) => entries.push(e),
                None => {
                    self.pos = p;
                    break;
                }
            }
        }
        self.before_children()?;
        let children = if self.peek() == Some(b'{') {
            let c = self.children_block()?;
            let q = self.pos;
            if !self.slashdashed_children()? {
                self.pos = q;
            }
            Some(c)
        } else {
            None
        };
        self.node_space()?;
        Ok(KdlNode {
            ty,
            name,
            entries,
            children,
            span: span(start, self.pos),
        })
    }

    /// Slashdashed entries and child blocks between the last entry and the children.
    fn before_children(&mut self) -> R<()> {
        if self.node_space()? {
            let q = self.pos;
            if self.at(b"/-") && self.slashdashed_entries()? {
                let r = self.pos;
                if !(self.node_space()? && self.slashdashed_children()?) {
                    self.pos = r;
                }
            } else {
                self.pos = q;
                if !self.slashdashed_children()? {
                    self.pos = q;
                }
            }
        }
        self.node_space()?;
        Ok(())
    }

    /// `{ nodes }`, at `{`.
    fn children_block(&mut self) -> R<KdlDocument> {
        self.pos += 1;
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(Rejected);
        }
        let nodes = self.nodes()?;
        if self.peek() != Some(b'}') {
            return Err(Rejected);
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(KdlDocument { nodes })
    }

    /// `node-space* ('/-' '{' ... '}')` separated by node space; false (position unspecified)
    /// if there is none.
    fn slashdashed_children(&mut self) -> R<bool> {
        self.node_space()?;
        self.slashdashed(|p| {
            if p.peek() != Some(b'{') {
                return Ok(false);
            }
            p.children_block()?;
            Ok(true)
        })
    }

    /// `'/-' item`, one or more separated by node space; false (position restored) if not even
    /// one. `item` says whether it found one (the position is restored when it did not).
    fn slashdashed(&mut self, mut item: impl FnMut(&mut Self) -> R<bool>) -> R<bool> {
        let start = self.pos;
        let mut any = false;
        loop {
            let p = self.pos;
            if any && !self.node_space()? {
                break;
            }
            if !self.at(b"/-") {
                self.pos = p;
                break;
            }
            self.slashdash()?;
            if !item(self)? {
                self.pos = p;
                break;
            }
            any = true;
        }
        if !any {
            self.pos = start;
        }
        Ok(any)
    }

    // ---- entries ----------------------------------------------------------------------------

    /// Space, slashdashed entries, then an argument or property; `None` if no entry is here.
    fn node_entry(&mut self) -> R<Option<KdlEntry>> {
        self.node_space()?;
        if self.at(b"/-") {
            let q = self.pos;
            if !(self.slashdashed_entries()? && self.node_space()?) {
                self.pos = q;
            }
        }
        self.entry()
    }

    /// One or more `/- entry` separated by node space, at `/-`; false if the first is not one.
    fn slashdashed_entries(&mut self) -> R<bool> {
        self.sd_depth += 1;
        if self.sd_depth > MAX_NESTING {
            return Err(Rejected);
        }
        let any = self.slashdashed(|p| Ok(p.node_entry()?.is_some()))?;
        self.sd_depth -= 1;
        Ok(any)
    }

    /// `prop := string node-space* '=' node-space* value`, or a value.
    fn entry(&mut self) -> R<Option<KdlEntry>> {
        let start = self.pos;
        if let Some(key) = self.string()? {
            let after = self.pos;
            self.node_space()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                self.node_space()?;
                let (ty, value, repr) = self.value()?.ok_or(Rejected)?;
                return Ok(Some(KdlEntry {
                    name: Some(key),
                    ty,
                    value,
                    repr,
                    span: span(start, self.pos),
                }));
            }
            self.pos = after;
            return Ok(Some(KdlEntry {
                name: None,
                ty: None,
                value: KdlValue::String(key.value),
                repr: None,
                span: span(start, after),
            }));
        }
        Ok(self.value()?.map(|(ty, value, repr)| KdlEntry {
            name: None,
            ty,
            value,
            repr,
            span: span(start, self.pos),
        }))
    }

    /// `value := type? node-space* (keyword | number | string)`.
    fn value(&mut self) -> R<Option<Annotated>> {
        let ty = if self.peek() == Some(b'(') {
            let t = self.ty()?;
            self.node_space()?;
            Some(t)
        } else {
            None
        };
        let start = self.pos;
        let signed_digit = |p: &Self| {
            matches!(p.peek(), Some(b'+' | b'-'))
                && p.peek_at(p.pos + 1).is_some_and(|d| d.is_ascii_digit())
        };
        let value = match self.peek() {
            Some(b'#') if !matches!(self.peek_at(self.pos + 1), Some(b'#' | b'"')) => {
                let v = self.keyword()?;
                if let KdlValue::Float(_) = v {
                    let repr = self.s[start..self.pos].into();
                    return Ok(Some((ty, v, Some(repr))));
                }
                v
            }
            Some(d) if d.is_ascii_digit() || signed_digit(self) => {
                let v = self.number()?;
                let repr = self.s[start..self.pos].into();
                return Ok(Some((ty, v, Some(repr))));
            }
            _ => match self.string()? {
                Some(s) => KdlValue::String(s.value),
                None if ty.is_some() => return Err(Rejected),
                None => return Ok(None),
            },
        };
        Ok(Some((ty, value, None)))
    }

    /// `type := '(' node-space* string node-space* ')'`, at `(`.
    fn ty(&mut self) -> R<KdlIdent> {
        self.pos += 1;
        self.node_space()?;
        let id = self.string()?.ok_or(Rejected)?;
        self.node_space()?;
        if self.peek() != Some(b')') {
            return Err(Rejected);
        }
        self.pos += 1;
        Ok(id)
    }

    /// `#true`, `#false`, `#null`, `#inf`, `#-inf`, `#nan`, at `#`.
    fn keyword(&mut self) -> R<KdlValue> {
        let rest = &self.b[self.pos + 1..];
        let (len, v) = if rest.starts_with(b"true") {
            (4, KdlValue::Bool(true))
        } else if rest.starts_with(b"false") {
            (5, KdlValue::Bool(false))
        } else if rest.starts_with(b"null") {
            (4, KdlValue::Null)
        } else if rest.starts_with(b"nan") {
            (3, KdlValue::Float(f64::NAN))
        } else if rest.starts_with(b"inf") {
            (3, KdlValue::Float(f64::INFINITY))
        } else if rest.starts_with(b"-inf") {
            (4, KdlValue::Float(f64::NEG_INFINITY))
        } else {
            return Err(Rejected);
        };
        self.pos += 1 + len;
        Ok(v)
    }

    // ---- numbers ----------------------------------------------------------------------------

    /// A number, at a digit or a sign followed by a digit.
    fn number(&mut self) -> R<KdlValue> {
        let start = self.pos;
        let negative = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        let radix = match (self.peek(), self.peek_at(self.pos + 1)) {
            (Some(b'0'), Some(b'x' | b'X')) => 16,
            (Some(b'0'), Some(b'o' | b'O')) => 8,
            (Some(b'0'), Some(b'b' | b'B')) => 2,
            _ => 10,
        };
        let value = if radix != 10 {
            self.pos += 2;
            let m = self.digits(radix)?;
            KdlValue::Integer(if negative { -m } else { m })
        } else {
            let m = self.digits(10)?;
            let mut float = false;
            if self.peek() == Some(b'.') {
                self.pos += 1;
                self.digits(10)?;
                float = true;
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.pos += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                self.digits(10)?;
                float = true;
            }
            if float {
                let text = &self.s[start..self.pos];
                let parsed = if text.contains('_') {
                    text.replace('_', "").parse::<f64>()
                } else {
                    text.parse::<f64>()
                };
                KdlValue::Float(parsed.map_err(|_| Rejected)?)
            } else {
                KdlValue::Integer(if negative { -m } else { m })
            }
        };
        if !self.at_value_terminator()? {
            return Err(Rejected);
        }
        Ok(value)
    }

    /// `digit (digit | '_')*` in `radix`, as an i128 (larger is an error, as in the `kdl` crate).
    fn digits(&mut self, radix: u32) -> R<i128> {
        let first = self.peek().ok_or(Rejected)?;
        digit_value(first, radix).ok_or(Rejected)?;
        let mut v: i128 = 0;
        while let Some(c) = self.peek() {
            if c == b'_' {
                self.pos += 1;
                continue;
            }
            let Some(d) = digit_value(c, radix) else {
                break;
            };
            v = v
                .checked_mul(radix as i128)
                .and_then(|v| v.checked_add(d as i128))
                .ok_or(Rejected)?;
            self.pos += 1;
        }
        Ok(v)
    }

    // ---- strings ----------------------------------------------------------------------------

    /// `string := identifier-string | quoted-string | raw-string`, which must be followed by a
    /// value terminator; `None` if no string starts here.
    fn string(&mut self) -> R<Option<KdlIdent>> {
        let start = self.pos;
        let value = match self.peek() {
            Some(b'"') => self.quoted()?,
            Some(b'#') => {
                let mut i = self.pos;
                while self.peek_at(i) == Some(b'#') {
                    i += 1;
                }
                if self.peek_at(i) != Some(b'"') {
                    return Ok(None);
                }
                self.raw(i - self.pos)?
            }
            _ => match self.bare()? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        if !self.at_value_terminator()? {
            return Err(Rejected);
        }
        Ok(Some(KdlIdent {
            value,
            span: span(start, self.pos),
        }))
    }

    /// `identifier-string`; `None` if none starts here.
    fn bare(&mut self) -> R<Option<String>> {
        let start = self.pos;
        let digit_at = |p: &Self, i: usize| p.peek_at(i).is_some_and(|d| d.is_ascii_digit());
        let mut reserved_check = false;
        match self.peek() {
            None => return Ok(None),
            Some(b'0'..=b'9') => return Ok(None),
            Some(b'+' | b'-') => {
                if digit_at(self, self.pos + 1) {
                    return Ok(None);
                }
                if self.peek_at(self.pos + 1) == Some(b'.') {
                    if digit_at(self, self.pos + 2) {
                        return Ok(None);
                    }
                    self.pos += 2;
                } else {
                    self.pos += 1;
                }
            }
            Some(b'.') => {
                if digit_at(self, self.pos + 1) {
                    return Ok(None);
                }
                self.pos += 1;
            }
            Some(_) => {
                if self.ident_char_len(self.pos) == 0 {
                    return Ok(None);
                }
                reserved_check = true;
            }
        }
        loop {
            let n = self.ident_char_len(self.pos);
            if n == 0 {
                break;
            }
            self.pos += n;
        }
        let s = &self.s[start..self.pos];
        if reserved_check && matches!(s, "true" | "false" | "null" | "inf" | "nan") {
            return Err(Rejected);
        }
        Ok(Some(s.to_string()))
    }

    /// A quoted string, single- or multi-line, at `"`.
    fn quoted(&mut self) -> R<String> {
        if self.at(b"\"\"\"") {
            let n = self.newline_len(self.pos + 3);
            if n == 0 {
                return Err(Rejected);
            }
            return self.multiline_quoted(self.pos + 3 + n);
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let run = self.pos;
            while let Some(&c) = self.b.get(self.pos) {
                if c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c) {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.s[run..self.pos]);
            match self.peek() {
                None => return Err(Rejected),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let end = self.b.len();
                    self.escape(end, &mut out, true)?;
                }
                Some(b'\t') => {
                    out.push('\t');
                    self.pos += 1;
                }
                Some(c) if c < 0x80 => return Err(Rejected),
                Some(_) => {
                    let c = self.char_at(self.pos).ok_or(Rejected)?;
                    if is_newline(c) || is_disallowed(c) {
                        return Err(Rejected);
                    }
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// An escape at `\`, before `end`. Whitespace escapes are only taken when `ws_escape` is set
    /// (single-line strings); otherwise they reject the text.
    fn escape(&mut self, end: usize, out: &mut String, ws_escape: bool) -> R<()> {
        let i = self.pos + 1;
        if i >= end {
            return Err(Rejected);
        }
        if self.space_len(i) > 0 || self.newline_len(i) > 0 {
            if !ws_escape {
                return Err(Rejected);
            }
            self.pos = i;
            loop {
                let n = self.space_len(self.pos).max(self.newline_len(self.pos));
                if n == 0 {
                    return Ok(());
                }
                self.pos += n;
            }
        }
        let c = match self.b[i] {
            b'\\' => '\\',
            b'"' => '"',
            b'b' => '\u{8}',
            b'f' => '\u{C}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b's' => ' ',
            b'u' => {
                if self.peek_at(i + 1) != Some(b'{') {
                    return Err(Rejected);
                }
                let digits = i + 2;
                let mut j = digits;
                while j < end && j - digits < 6 && self.b[j].is_ascii_hexdigit() {
                    j += 1;
                }
                if j == digits || j >= end || self.b[j] != b'}' {
                    return Err(Rejected);
                }
                let code = u32::from_str_radix(&self.s[digits..j], 16).map_err(|_| Rejected)?;
                let c = char::from_u32(code).ok_or(Rejected)?;
                out.push(c);
                self.pos = j + 1;
                return Ok(());
            }
            _ => return Err(Rejected),
        };
        out.push(c);
        self.pos = i + 1;
        Ok(())
    }

    /// Splits a multi-line string body starting at `body` into lines up to the closing line, a
    /// line of unicode spaces followed by `close`. `check` vets each content line.
    fn multiline_lines(
        &self,
        body: usize,
        close: &[u8],
        mut check: impl FnMut(&Self, usize, usize) -> R<()>,
    ) -> R<Lines> {
        let mut lines = Vec::new();
        let mut i = body;
        loop {
            let mut j = i;
            loop {
                let n = self.space_len(j);
                if n == 0 {
                    break;
                }
                j += n;
            }
            if self.b[j..].starts_with(close) {
                return Ok(Lines {
                    lines,
                    indent: (i, j),
                    end: j + close.len(),
                });
            }
            let mut k = i;
            loop {
                let Some(&x) = self.b.get(k) else {
                    return Err(Rejected);
                };
                if self.newline_len(k) > 0 {
                    break;
                }
                k += utf8_len(x);
            }
            check(self, i, k)?;
            lines.push((i, k));
            i = k + self.newline_len(k);
        }
    }

    fn all_space(&self, mut i: usize, end: usize) -> bool {
        while i < end {
            let n = self.space_len(i);
            if n == 0 {
                return false;
            }
            i += n;
        }
        true
    }

    /// The lines of a multi-line string after dedenting: `Some(start)` where a line's content
    /// begins after the common indentation, `None` for a line of only spaces (empty in the value).
    fn dedent(&self, lines: &[(usize, usize)], (ps, pe): (usize, usize)) -> R<Vec<Option<usize>>> {
        let prefix = &self.b[ps..pe];
        lines
            .iter()
            .map(|&(s, e)| {
                if self.b[s..e].starts_with(prefix) {
                    let rest = s + prefix.len();
                    Ok((!self.all_space(rest, e)).then_some(rest))
                } else if self.all_space(s, e) {
                    Ok(None)
                } else {
                    Err(Rejected)
                }
            })
            .collect()
    }

    /// The body of `"""` ... `"""`, starting after the opening newline.
    fn multiline_quoted(&mut self, body: usize) -> R<String> {
        let Lines { lines, indent, end } =
            self.multiline_lines(body, b"\"\"\"", |_, _, _| Ok(()))?;
        let starts = self.dedent(&lines, indent)?;
        let mut out = String::new();
        for (n, (&(_, e), start)) in lines.iter().zip(starts).enumerate() {
            if n > 0 {
                out.push('\n');
            }
            let Some(start) = start else { continue };
            self.pos = start;
            while self.pos < e {
                match self.b[self.pos] {
                    b'"' if self.b[self.pos + 1..e].starts_with(b"\"\"") => return Err(Rejected),
                    b'\\' => self.escape(e, &mut out, false)?,
                    x if x < 0x80 => {
                        if x < 0x20 && x != b'\t' {
                            return Err(Rejected);
                        }
                        out.push(x as char);
                        self.pos += 1;
                    }
                    _ => {
                        let c = self.char_at(self.pos).ok_or(Rejected)?;
                        if is_disallowed(c) {
                            return Err(Rejected);
                        }
                        out.push(c);
                        self.pos += c.len_utf8();
                    }
                }
            }
        }
        self.pos = end;
        Ok(out)
    }

    /// A raw string with `hashes` leading `#`, at the first `#`.
    fn raw(&mut self, hashes: usize) -> R<String> {
        let quote = self.pos + hashes;
        let mut close = Vec::with_capacity(hashes + 3);
        if self.b[quote..].starts_with(b"\"\"\"") {
            let n = self.newline_len(quote + 3);
            if n > 0 {
                close.extend_from_slice(b"\"\"\"");
                close.resize(3 + hashes, b'#');
                return self.multiline_raw(quote + 3 + n, &close);
            }
        }
        close.push(b'"');
        close.resize(1 + hashes, b'#');
        let body = quote + 1;
        let mut j = body;
        loop {
            if j >= self.b.len() {
                return Err(Rejected);
            }
            if self.b[j..].starts_with(&close) {
                break;
            }
            let c = self.char_at(j).ok_or(Rejected)?;
            if is_newline(c) || is_disallowed(c) {
                return Err(Rejected);
            }
            j += c.len_utf8();
        }
        let value = &self.s[body..j];
        if value == "\"" {
            return Err(Rejected);
        }
        self.pos = j + close.len();
        Ok(value.to_string())
    }

    /// The body of `#"""` ... `"""#`, starting after the opening newline.
    fn multiline_raw(&mut self, body: usize, close: &[u8]) -> R<String> {
        let Lines { lines, indent, end } = self.multiline_lines(body, close, |p, s, e| {
            let mut i = s;
            while i < e {
                if p.b[i..e].starts_with(close) {
                    return Err(Rejected);
                }
                let c = p.char_at(i).ok_or(Rejected)?;
                if is_disallowed(c) {
                    return Err(Rejected);
                }
                i += c.len_utf8();
            }
            // A line of only spaces and backslashes could be a whitespace escape to the `kdl`
            // crate: left to it.
            let only_ws_and_backslash = p.b[s..e]
                .iter()
                .all(|&x| x == b'\\' || x == b' ' || x == b'\t' || x >= 0x80);
            if only_ws_and_backslash && p.b[s..e].contains(&b'\\') {
                return Err(Rejected);
            }
            Ok(())
        })?;
        let starts = self.dedent(&lines, indent)?;
        let mut out = String::new();
        for (n, (&(_, e), start)) in lines.iter().zip(starts).enumerate() {
            if n > 0 {
                out.push('\n');
            }
            if let Some(start) = start {
                out.push_str(&self.s[start..e]);
            }
        }
        self.pos = end;
        Ok(out)
    }
}
