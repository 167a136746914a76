//! Typed access to KDL nodes (the document model of [`super::syntax`]).
//!
//! Each option may be written as a property (`mode="0644"`) or as a child node (`mode "0644"`);
//! lists take several arguments on a child node (`deps "build" "test"`). The keys a parser asks for
//! are the schema: whatever was not asked for is reported as unknown, with the closest valid name.

use std::collections::BTreeMap;
use std::time::Duration;

use super::kdl::{KdlEntry, KdlNode, KdlValue};

use super::diagnostic::{Diag, FileId, Span, Spanned, suggest};
use super::values::{self, BatchSize, Mode, Percent, ValueError};
use crate::plan::vocab::Value;

/// Collected diagnostics of one load.
#[derive(Default)]
pub struct Cx {
    pub diags: Vec<Diag>,
    /// Names compared so far by [`Cx::suggest_defined`].
    compared: usize,
}

/// Suggesting a defined name compares the word with each of them: thousands of undefined
/// references against thousands of names were quadratic. Past this many comparisons in one load,
/// the remaining references go without a suggestion.
const MAX_COMPARISONS: usize = 100_000;

impl Cx {
    /// The closest defined name to `word`, within the load's budget of comparisons.
    pub fn suggest_defined<'a>(
        &mut self,
        word: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        if self.compared >= MAX_COMPARISONS {
            return None;
        }
        let candidates: Vec<&str> = candidates.into_iter().collect();
        self.compared += candidates.len();
        suggest(word, candidates)
    }

    pub fn push(&mut self, d: Diag) {
        self.diags.push(d);
    }

    pub fn value_error(&mut self, span: Span, e: ValueError, code: &'static str) {
        self.push(Diag::new(code, e.message).at(span, "here").help(e.help));
    }
}

pub fn span_of(file: FileId, s: miette::SourceSpan) -> Span {
    Span::new(file, s.offset(), s.len())
}

fn kind_name(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// Where an option was found.
enum Found<'a> {
    Prop(&'a KdlEntry),
    Child(&'a KdlNode),
}

/// One node under inspection.
pub struct NodeR<'a> {
    pub node: &'a KdlNode,
    pub file: FileId,
    /// The node's role in messages, e.g. "task `deploy`".
    pub what: String,
    asked: Vec<&'static str>,
    used_children: Vec<bool>,
    /// Child nodes are this node's options only; for tasks they are resources too.
    container: bool,
}

impl<'a> NodeR<'a> {
    pub fn new(cx: &mut Cx, node: &'a KdlNode, file: FileId, what: String) -> NodeR<'a> {
        if let Some(ty) = node.ty() {
            cx.push(
                Diag::new(
                    "config::unexpected-annotation",
                    format!("type annotation ({}) is not allowed on a node", ty.value()),
                )
                .at(span_of(file, ty.span()), "remove this annotation")
                .help("(env) and (secret) annotate values, e.g. url=(env)\"SLACK_WEBHOOK_URL\""),
            );
        }
        let n = node.children().map_or(0, |c| c.nodes().len());
        NodeR {
            node,
            file,
            what,
            asked: Vec::new(),
            used_children: vec![false; n],
            container: false,
        }
    }

    pub fn span(&self) -> Span {
        span_of(self.file, self.node.span())
    }

    pub fn name_span(&self) -> Span {
        span_of(self.file, self.node.name().span())
    }

    pub fn entry_span(&self, e: &KdlEntry) -> Span {
        span_of(self.file, e.span())
    }

    /// Marks this node as holding resources among its children.
    pub fn container(&mut self) {
        self.container = true;
    }

    fn children(&self) -> &'a [KdlNode] {
        self.node.children().map_or(&[], |c| c.nodes())
    }

    pub fn args(&self) -> Vec<&'a KdlEntry> {
        self.node
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .collect()
    }

    /// Checks the number of positional arguments; `usage` shows the expected form.
    pub fn expect_args(&self, cx: &mut Cx, min: usize, max: usize, usage: &str) -> bool {
        let args = self.args();
        if args.len() < min {
            cx.push(
                Diag::new(
                    "config::missing-argument",
                    format!(
                        "{} needs {} argument{}, found {}",
                        self.what,
                        if min == max {
                            format!("{min}")
                        } else {
                            format!("at least {min}")
                        },
                        if min == 1 { "" } else { "s" },
                        args.len()
                    ),
                )
                .at(self.name_span(), "missing argument")
                .help(format!("usage: {usage}")),
            );
            return false;
        }
        if args.len() > max {
            let extra = args[max];
            // `deps="a" "b"`: the second value is a stray argument, not part of the property.
            let entries = self.node.entries();
            let prev = entries
                .iter()
                .position(|e| std::ptr::eq(e, extra))
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| entries[i].name());
            let help = match prev {
                Some(key) => format!(
                    "usage: {usage}\na property takes one value; for a list, write a child node inside the block: {} \"a\" \"b\"",
                    key.value()
                ),
                None => format!("usage: {usage}"),
            };
            cx.push(
                Diag::new(
                    "config::too-many-arguments",
                    format!(
                        "{} takes at most {max} argument{}, found {}",
                        self.what,
                        if max == 1 { "" } else { "s" },
                        args.len()
                    ),
                )
                .at(self.entry_span(extra), "unexpected argument")
                .help(help),
            );
            return false;
        }
        true
    }

    /// A positional argument as a plain string.
    pub fn arg_str(&self, cx: &mut Cx, i: usize) -> Option<Spanned<String>> {
        let e = *self.args().get(i)?;
        plain_string(cx, self.file, e, &self.what)
    }

    fn find(&mut self, cx: &mut Cx, key: &'static str) -> Option<Found<'a>> {
        self.asked.push(key);
        let mut found: Vec<(Found<'a>, Span)> = Vec::new();
        for e in self.node.entries() {
            if e.name().is_some_and(|n| n.value() == key) {
                found.push((Found::Prop(e), span_of(self.file, e.span())));
            }
        }
        for (i, c) in self.children().iter().enumerate() {
            if c.name().value() == key && !self.used_children[i] {
                self.used_children[i] = true;
                found.push((Found::Child(c), span_of(self.file, c.name().span())));
            }
        }
        let mut it = found.into_iter();
        let (first, first_span) = it.next()?;
        for (_, span) in it {
            cx.push(
                Diag::new(
                    "config::duplicate-option",
                    format!("`{key}` is set more than once on {}", self.what),
                )
                .at(span, "set again here")
                .also(first_span, "first set here")
                .help(format!("keep one `{key}`")),
            );
        }
        Some(first)
    }

    /// The single value of an option, wherever it was written.
    fn scalar(&mut self, cx: &mut Cx, key: &'static str) -> Option<&'a KdlEntry> {
        match self.find(cx, key)? {
            Found::Prop(e) => Some(e),
            Found::Child(n) => {
                let args: Vec<_> = n.entries().iter().filter(|e| e.name().is_none()).collect();
                let props = n.entries().iter().any(|e| e.name().is_some());
                if args.len() != 1 || props || n.children().is_some() {
                    cx.push(
                        Diag::new(
                            "config::wrong-argument-count",
                            format!("`{key}` takes exactly one value"),
                        )
                        .at(span_of(self.file, n.span()), "expected one value")
                        .help(format!("write it as `{key}=VALUE` or `{key} VALUE`")),
                    );
                    return None;
                }
                Some(args[0])
            }
        }
    }

    pub fn str(&mut self, cx: &mut Cx, key: &'static str) -> Option<Spanned<String>> {
        let e = self.scalar(cx, key)?;
        plain_string(cx, self.file, e, &format!("`{key}`"))
    }

    pub fn value(&mut self, cx: &mut Cx, key: &'static str) -> Option<Spanned<Value>> {
        let e = self.scalar(cx, key)?;
        annotated_value(cx, self.file, e, &format!("`{key}`"))
    }

    pub fn bool(&mut self, cx: &mut Cx, key: &'static str) -> Option<bool> {
        let e = self.scalar(cx, key)?;
        no_annotation(cx, self.file, e);
        match e.value() {
            KdlValue::Bool(b) => Some(*b),
            other => {
                let hint = match other {
                    KdlValue::String(s) if s == "true" || s == "false" => {
                        format!("KDL booleans are written without quotes: {key}=#{s}")
                    }
                    _ => format!("write {key}=#true or {key}=#false"),
                };
                cx.push(
                    Diag::new(
                        "config::wrong-type",
                        format!("`{key}` must be a boolean, found {}", kind_name(other)),
                    )
                    .at(self.entry_span(e), "expected #true or #false")
                    .help(hint),
                );
                None
            }
        }
    }

    pub fn int(&mut self, cx: &mut Cx, key: &'static str, min: i128, max: i128) -> Option<i128> {
        let e = self.scalar(cx, key)?;
        no_annotation(cx, self.file, e);
        match e.value() {
            KdlValue::Integer(v) if (min..=max).contains(v) => Some(*v),
            KdlValue::Integer(v) => {
                cx.push(
                    Diag::new(
                        "config::out-of-range",
                        format!("`{key}` must be from {min} to {max}, found {v}"),
                    )
                    .at(self.entry_span(e), "out of range")
                    .help(format!("use a whole number from {min} to {max}")),
                );
                None
            }
            other => {
                let help = match other {
                    KdlValue::String(s) if s.trim().parse::<i128>().is_ok() => {
                        format!("write the number without quotes: {key}={}", s.trim())
                    }
                    _ => format!(
                        "write a whole number without quotes, e.g. {key}={}",
                        min.max(1)
                    ),
                };
                cx.push(
                    Diag::new(
                        "config::wrong-type",
                        format!("`{key}` must be an integer, found {}", kind_name(other)),
                    )
                    .at(self.entry_span(e), "expected an integer")
                    .help(help),
                );
                None
            }
        }
    }

    pub fn u32(&mut self, cx: &mut Cx, key: &'static str) -> Option<u32> {
        self.int(cx, key, 0, u32::MAX as i128).map(|v| v as u32)
    }

    pub fn port(&mut self, cx: &mut Cx, key: &'static str) -> Option<u16> {
        self.int(cx, key, 1, 65535).map(|v| v as u16)
    }

    pub fn duration(&mut self, cx: &mut Cx, key: &'static str) -> Option<Duration> {
        let e = self.scalar(cx, key)?;
        if let KdlValue::Integer(_) | KdlValue::Float(_) = e.value() {
            cx.push(
                Diag::new("config::invalid-duration", format!("`{key}` needs a unit"))
                    .at(self.entry_span(e), "a bare number")
                    .help(format!(
                        "write a duration string with a unit, e.g. {key}=\"30s\" or {key}=\"5m\""
                    )),
            );
            return None;
        }
        let s = plain_string(cx, self.file, e, &format!("`{key}`"))?;
        match values::parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(err) => {
                cx.value_error(s.span, err, "config::invalid-duration");
                None
            }
        }
    }

    pub fn mode(&mut self, cx: &mut Cx, key: &'static str) -> Option<Mode> {
        let e = self.scalar(cx, key)?;
        no_annotation(cx, self.file, e);
        let res = match e.value() {
            KdlValue::String(s) => values::parse_mode(s),
            KdlValue::Integer(v) => {
                let repr = e
                    .number_repr()
                    .map_or_else(|| v.to_string(), str::to_string);
                values::mode_from_integer(*v, &repr)
            }
            other => Err(ValueError {
                message: format!("`{key}` must be a mode, found {}", kind_name(other)),
                help: "write the mode as an octal string such as \"0644\"".into(),
            }),
        };
        match res {
            Ok(m) => Some(m),
            Err(err) => {
                cx.value_error(self.entry_span(e), err, "config::invalid-mode");
                None
            }
        }
    }

    pub fn percent(&mut self, cx: &mut Cx, key: &'static str) -> Option<Percent> {
        let e = self.scalar(cx, key)?;
        if let KdlValue::Integer(v) = e.value() {
            cx.push(
                Diag::new(
                    "config::invalid-percentage",
                    format!("`{key}` must be a percentage"),
                )
                .at(self.entry_span(e), "a bare number")
                .help(format!("write it with a percent sign: {key}=\"{v}%\"")),
            );
            return None;
        }
        // Parse the entry found above: looking the key up again would miss a child node, which
        // `scalar` has already marked as used.
        let s = plain_string(cx, self.file, e, &format!("`{key}`"))?;
        match values::parse_percent(&s.value) {
            Ok(p) => Some(p),
            Err(err) => {
                cx.value_error(s.span, err, "config::invalid-percentage");
                None
            }
        }
    }

    /// One of a fixed set of words, returned as the matching candidate.
    pub fn choice(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        allowed: &[&'static str],
    ) -> Option<Spanned<&'static str>> {
        let s = self.str(cx, key)?;
        check_choice(cx, &s, key, allowed)
    }

    /// A list of strings: `key="a"` or a child node `key "a" "b"`.
    pub fn str_list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<Spanned<String>> {
        self.list(cx, key, |cx, file, e| {
            plain_string(cx, file, e, &format!("`{key}`"))
        })
    }

    /// Batch sizes: `batch=2`, `batch="25%"` or `batch 1 5 "20%"`.
    pub fn batch_list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<BatchSize> {
        self.list(cx, key, |cx, file, e| {
            no_annotation(cx, file, e);
            let res = match e.value() {
                KdlValue::Integer(v) => values::batch_from_integer(*v),
                KdlValue::String(s) => values::batch_from_str(s),
                other => Err(ValueError {
                    message: format!("a batch size cannot be {}", kind_name(other)),
                    help:
                        "a batch is a number of hosts (1 or more) or a percentage such as \"20%\""
                            .into(),
                }),
            };
            res.map_err(|err| cx.value_error(span_of(file, e.span()), err, "config::invalid-batch"))
                .ok()
                .map(|b| Spanned::new(b, span_of(file, e.span())))
        })
        .into_iter()
        .map(|s| s.value)
        .collect()
    }

    pub fn batch(&mut self, cx: &mut Cx, key: &'static str) -> Option<BatchSize> {
        let e = self.scalar(cx, key)?;
        no_annotation(cx, self.file, e);
        let res = match e.value() {
            KdlValue::Integer(v) => values::batch_from_integer(*v),
            KdlValue::String(s) => values::batch_from_str(s),
            other => Err(ValueError {
                message: format!("`{key}` cannot be {}", kind_name(other)),
                help: "a batch is a number of hosts (1 or more) or a percentage such as \"20%\""
                    .into(),
            }),
        };
        res.map_err(|err| cx.value_error(self.entry_span(e), err, "config::invalid-batch"))
            .ok()
    }

    fn list<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        item: impl Fn(&mut Cx, FileId, &'a KdlEntry) -> Option<Spanned<T>>,
    ) -> Vec<Spanned<T>> {
        let file = self.file;
        match self.find(cx, key) {
            None => Vec::new(),
            Some(Found::Prop(e)) => item(cx, file, e).into_iter().collect(),
            Some(Found::Child(n)) => {
                let mut out = Vec::new();
                for e in n.entries() {
                    if e.name().is_some() {
                        cx.push(
                            Diag::new(
                                "config::unknown-property",
                                format!("`{key}` is a list and takes no properties"),
                            )
                            .at(span_of(file, e.span()), "unexpected property")
                            .help(format!("write the items as arguments: {key} \"a\" \"b\"")),
                        );
                    } else if let Some(v) = item(cx, file, e) {
                        out.push(v);
                    }
                }
                if n.entries().is_empty() {
                    cx.push(
                        Diag::new("config::missing-argument", format!("`{key}` lists nothing"))
                            .at(span_of(file, n.span()), "empty list")
                            .help(format!("give at least one item: {key} \"a\" \"b\"")),
                    );
                }
                if n.children().is_some() {
                    cx.push(
                        Diag::new(
                            "config::unexpected-children",
                            format!("`{key}` takes no child block"),
                        )
                        .at(span_of(file, n.span()), "unexpected block"),
                    );
                }
                out
            }
        }
    }

    /// A map of names to values: `env FOO="1" BAR=(secret)"BAR"` or a block of `NAME "value"` nodes.
    pub fn map(&mut self, cx: &mut Cx, key: &'static str) -> BTreeMap<String, Value> {
        let file = self.file;
        match self.find(cx, key) {
            None => BTreeMap::new(),
            Some(Found::Prop(e)) => {
                cx.push(
                    Diag::new(
                        "config::wrong-type",
                        format!("`{key}` is a map, not a single value"),
                    )
                    .at(span_of(file, e.span()), "expected a child node")
                    .help(format!("write it as a child node: {key} NAME=\"value\"")),
                );
                BTreeMap::new()
            }
            Some(Found::Child(n)) => read_map(cx, file, n, key),
        }
    }

    /// Where `key` was written (as a property or a child node), whether or not its value was valid.
    /// Lets checks such as "needs X" stay quiet when X was given but already reported as invalid.
    pub fn option_span(&self, key: &str) -> Option<Span> {
        let prop = self
            .node
            .entries()
            .iter()
            .find(|e| e.name().is_some_and(|n| n.value() == key))
            .map(|e| span_of(self.file, e.span()));
        prop.or_else(|| {
            self.children()
                .iter()
                .find(|c| c.name().value() == key)
                .map(|c| span_of(self.file, c.name().span()))
        })
    }

    /// Children not consumed as options, with their index.
    pub fn remaining_children(&self) -> Vec<&'a KdlNode> {
        self.children()
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.used_children[*i])
            .map(|(_, c)| c)
            .collect()
    }

    /// Names asked for so far: the valid options of this node.
    pub fn known(&self) -> &[&'static str] {
        &self.asked
    }

    /// Reports every property and (for non-containers) child node that no parser asked for.
    pub fn finish(self, cx: &mut Cx) {
        let known = self.asked.clone();
        let list = || {
            if known.is_empty() {
                "it takes no options".to_string()
            } else {
                format!("valid options: {}", known.join(", "))
            }
        };
        for e in self.node.entries() {
            if let Some(name) = e.name()
                && !known.contains(&name.value())
            {
                let mut d = Diag::new(
                    "config::unknown-property",
                    format!("unknown property `{}` on {}", name.value(), self.what),
                )
                .at(span_of(self.file, name.span()), "unknown property");
                d = match suggest(name.value(), known.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`? {}", list())),
                    None => d.help(list()),
                };
                cx.push(d);
            }
        }
        if !self.container {
            for c in self.remaining_children() {
                let name = c.name().value();
                let mut d = Diag::new(
                    "config::unknown-node",
                    format!("unknown setting `{name}` in {}", self.what),
                )
                .at(span_of(self.file, c.name().span()), "unknown setting");
                d = match suggest(name, known.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`? {}", list())),
                    None => d.help(list()),
                };
                cx.push(d);
            }
        }
    }
}

pub fn check_choice(
    cx: &mut Cx,
    s: &Spanned<String>,
    key: &str,
    allowed: &[&'static str],
) -> Option<Spanned<&'static str>> {
    if let Some(hit) = allowed.iter().find(|a| **a == s.value) {
        return Some(Spanned::new(*hit, s.span));
    }
    let mut d = Diag::new(
        "config::invalid-choice",
        format!("invalid {key} {:?}", s.value),
    )
    .at(s.span, "not a valid choice");
    let options = allowed.join(", ");
    d = match suggest(&s.value, allowed.iter().copied()) {
        Some(best) => d.help(format!(
            "did you mean \"{best}\"? expected one of: {options}"
        )),
        None => d.help(format!("expected one of: {options}")),
    };
    cx.push(d);
    None
}

fn no_annotation(cx: &mut Cx, file: FileId, e: &KdlEntry) -> bool {
    if let Some(ty) = e.ty() {
        cx.push(
            Diag::new(
                "config::unexpected-annotation",
                format!("type annotation ({}) is not allowed here", ty.value()),
            )
            .at(span_of(file, ty.span()), "not allowed here")
            .help("(env) and (secret) are accepted on values such as command env, file content, webhook URLs and sudo passwords"),
        );
        return false;
    }
    true
}

fn plain_string(cx: &mut Cx, file: FileId, e: &KdlEntry, what: &str) -> Option<Spanned<String>> {
    if !no_annotation(cx, file, e) {
        return None;
    }
    match e.value() {
        KdlValue::String(s) => Some(Spanned::new(s.clone(), span_of(file, e.span()))),
        other => {
            cx.push(
                Diag::new(
                    "config::wrong-type",
                    format!("{what} must be a string, found {}", kind_name(other)),
                )
                .at(span_of(file, e.span()), "expected a string")
                .help("put the value in double quotes"),
            );
            None
        }
    }
}

fn annotated_value(cx: &mut Cx, file: FileId, e: &KdlEntry, what: &str) -> Option<Spanned<Value>> {
    let span = span_of(file, e.span());
    let KdlValue::String(s) = e.value() else {
        cx.push(
            Diag::new(
                "config::wrong-type",
                format!("{what} must be a string, found {}", kind_name(e.value())),
            )
            .at(span, "expected a string")
            .help("put the value in double quotes"),
        );
        return None;
    };
    let v = match e.ty().map(|t| t.value()) {
        None => Value::Literal(s.clone()),
        Some("env") => Value::Env(s.clone()),
        Some("secret") => Value::Secret(s.clone()),
        Some(other) => {
            let t = e.ty().expect("checked above");
            let mut d = Diag::new(
                "config::unknown-annotation",
                format!("unknown type annotation ({other})"),
            )
            .at(span_of(file, t.span()), "unknown annotation");
            d = match suggest(other, ["env", "secret"]) {
                Some(s) => d.help(format!(
                    "did you mean ({s})? values accept (env) and (secret)"
                )),
                None => d.help("values accept (env)\"VAR\" and (secret)\"NAME\""),
            };
            cx.push(d);
            return None;
        }
    };
    if let Value::Env(name) | Value::Secret(name) = &v
        && (name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
    {
        cx.push(
            Diag::new(
                "config::invalid-name",
                format!("invalid variable or secret name {name:?}"),
            )
            .at(span, "invalid name")
            .help("names use letters, digits, '_', '-' and '.'"),
        );
        return None;
    }
    Some(Spanned::new(v, span))
}

/// Reads a node whose properties and `NAME "value"` children form a map.
pub fn read_map(cx: &mut Cx, file: FileId, n: &KdlNode, key: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<String, Span> = BTreeMap::new();
    let mut add = |cx: &mut Cx, name: String, span: Span, v: Option<Spanned<Value>>| {
        if let Some(prev) = seen.get(&name) {
            cx.push(
                Diag::new(
                    "config::duplicate-option",
                    format!("`{name}` is set twice in `{key}`"),
                )
                .at(span, "set again here")
                .also(*prev, "first set here"),
            );
            return;
        }
        seen.insert(name.clone(), span);
        if let Some(v) = v {
            out.insert(name, v.value);
        }
    };
    for e in n.entries() {
        match e.name() {
            Some(name) => {
                let v = annotated_value(cx, file, e, &format!("`{}`", name.value()));
                add(cx, name.value().to_string(), span_of(file, e.span()), v);
            }
            None => cx.push(
                Diag::new(
                    "config::unexpected-argument",
                    format!("`{key}` takes NAME=VALUE pairs"),
                )
                .at(span_of(file, e.span()), "a bare value")
                .help(format!("write {key} NAME=\"value\"")),
            ),
        }
    }
    for c in n.children().map_or(&[][..], |c| c.nodes()) {
        let args: Vec<_> = c.entries().iter().filter(|e| e.name().is_none()).collect();
        let span = span_of(file, c.name().span());
        if args.len() != 1 || args.len() != c.entries().len() || c.children().is_some() {
            cx.push(
                Diag::new(
                    "config::wrong-argument-count",
                    format!("`{}` in `{key}` takes exactly one value", c.name().value()),
                )
                .at(span_of(file, c.span()), "expected NAME \"value\""),
            );
            continue;
        }
        let v = annotated_value(cx, file, args[0], &format!("`{}`", c.name().value()));
        add(cx, c.name().value().to_string(), span, v);
    }
    out
}
