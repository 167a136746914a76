//! Limits on minijinja expressions (`when`) and templates, checked before minijinja sees them.
//!
//! minijinja parses a chain of binary operators (`a + a + …`, `x or x or …`, `s ~ s ~ …`), filters
//! (`v|f|f…`) or postfixes (`a.b.c…`, `a[0][0]…`) in a loop, but compiles, evaluates and drops the
//! resulting left-deep tree recursively: some 30,000 terms overflow the main thread's stack and far
//! fewer a 2 MiB worker's. Its parser bounds bracket nesting (150) itself but not chains, so the
//! operators of each expression are counted here, without building anything, and an expression
//! with too many is refused. The count is per expression (a `when`, or one `{{ }}` / `{% %}` tag of
//! a template): the tree's depth is at most its operators plus the nesting minijinja allows.
//!
//! Every minijinja environment of nexus comes from [`environment`], so that the runtime recursion
//! limit (macros calling themselves) is one fact too.

use std::fmt;

/// Operators (and postfixes) allowed in one expression; real conditions have a handful.
pub const MAX_OPERATORS: usize = 256;

/// Longest `when` expression, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// Runtime recursion minijinja allows (its own default is 500, which a debug build's 2 MiB thread
/// cannot hold for a macro calling itself).
const MAX_RECURSION: usize = 100;

/// Instructions one render or evaluation may execute. Templates of real configurations (a loop
/// over ten thousand hosts included) use a few hundred thousand; a loop over a loop of ranges
/// would otherwise run for hours and fill memory with its output.
pub const MAX_FUEL: u64 = 5_000_000;

/// An environment with nexus's limits; callers add their own settings.
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_recursion_limit(MAX_RECURSION);
    env.set_fuel(Some(MAX_FUEL));
    env
}

/// What to say about a minijinja error: its kind and detail, with running out of fuel put in
/// terms of the limit.
pub fn describe(e: &minijinja::Error) -> String {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!(
            "it does more than {MAX_FUEL} steps of work, the limit for one template or expression \
             (a loop over a loop?)"
        );
    }
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Why an expression or template was refused, and where (a byte offset into the text checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    pub offset: usize,
    pub message: String,
    /// A size limit (false: text minijinja cannot take as an expression at all).
    pub too_large: bool,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LimitError {}

/// Checks a standalone expression (a `when`) against the limits.
pub fn check_expression(text: &str) -> Result<(), LimitError> {
    if text.len() > MAX_EXPRESSION_LEN {
        return Err(LimitError {
            offset: 0,
            message: format!(
                "expression is {} bytes long, more than the limit of {MAX_EXPRESSION_LEN}",
                text.len()
            ),
            too_large: true,
        });
    }
    if let Some(at) = tag_close(text.as_bytes()) {
        // minijinja 2.24 panics ("empty lexer stack") on `a }} b` as a standalone expression.
        return Err(LimitError {
            offset: at,
            message: "expression contains `}}`, which ends a template tag (write `} }` to close nested maps)"
                .into(),
            too_large: false,
        });
    }
    let (_, ops) = scan_expression(text.as_bytes(), 0, None);
    too_many(ops, 0)
}

/// The offset of the first `}}` outside a string.
fn tag_close(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Checks every tag of a template against the limits; the offset is that of the tag refused.
pub fn check_template(text: &str) -> Result<(), LimitError> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = find(b, i, b"{") {
        let close: &[u8] = match b.get(at + 1) {
            Some(b'{') => b"}}",
            Some(b'%') => b"%}",
            Some(b'#') => {
                i = find(b, at + 2, b"#}").map_or(b.len(), |e| e + 2);
                continue;
            }
            _ => {
                i = at + 1;
                continue;
            }
        };
        let (end, ops) = scan_expression(b, at + 2, Some(close));
        too_many(ops, at)?;
        i = end;
        if close == b"%}" && tag_word(&b[at + 2..end.min(b.len())]) == Some(b"raw".as_slice()) {
            // `{% raw %}` content is text, whatever it looks like, up to `{% endraw %}`.
            i = find(b, i, b"endraw").map_or(b.len(), |e| e + 6);
        }
    }
    Ok(())
}

fn too_many(ops: usize, offset: usize) -> Result<(), LimitError> {
    if ops > MAX_OPERATORS {
        return Err(LimitError {
            offset,
            message: format!(
                "expression has {ops} operators, more than the limit of {MAX_OPERATORS}"
            ),
            too_large: true,
        });
    }
    Ok(())
}

/// The first word of a tag's content (`raw` in `{%- raw -%}`).
fn tag_word(tag: &[u8]) -> Option<&[u8]> {
    let start = tag
        .iter()
        .position(|c| !c.is_ascii_whitespace() && !matches!(c, b'-' | b'+'))?;
    let len = tag[start..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    Some(&tag[start..start + len])
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Counts the operators of the expression starting at `start`, up to `close` (past it in the
/// returned offset) or the end. Strings are skipped, so a `}}` inside one does not end the tag.
/// Brackets and keyword operators count too: each can deepen the tree by one.
fn scan_expression(b: &[u8], start: usize, close: Option<&[u8]>) -> (usize, usize) {
    let (mut i, mut ops) = (start, 0);
    while i < b.len() {
        if let Some(c) = close
            && b[i..].starts_with(c)
        {
            return (i + c.len(), ops);
        }
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let len = b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                if matches!(
                    &b[i..i + len],
                    b"and" | b"or" | b"not" | b"in" | b"is" | b"if" | b"else"
                ) {
                    ops += 1;
                }
                i += len;
            }
            c if c.is_ascii_whitespace() || matches!(c, b')' | b']' | b'}' | b',' | b':') => i += 1,
            _ => {
                ops += 1;
                i += 1;
            }
        }
    }
    (i, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, n: usize) -> String {
        vec!["x"; n].join(op)
    }

    #[test]
    fn counts_operators_outside_strings() {
        assert_eq!(scan_expression(b"a + b or not c", 0, None).1, 3);
        assert_eq!(scan_expression(b"'a+b' ~ \"}}\"", 0, None).1, 1);
        assert_eq!(
            scan_expression(b"facts.os_family == 'debian'", 0, None).1,
            3
        );
        assert!(check_expression("facts.os_family == 'debian' and vars.x").is_ok());
        assert_eq!(check_expression("a }} b").unwrap_err().offset, 2);
        assert!(check_expression("'}}' ~ \"}}\"").is_ok());
        assert!(check_expression("{'a': {'b': 1} }").is_ok());
    }

    #[test]
    fn long_chains_are_refused() {
        for op in [" + ", " or ", " ~ ", "|", ".", " == "] {
            let e = check_expression(&chain(op, 300)).unwrap_err();
            assert!(e.message.contains("limit of 256"), "{op}: {e}");
        }
        let e = check_expression(&"x".repeat(5000)).unwrap_err();
        assert!(e.message.contains("5000 bytes"), "{e}");
    }

    #[test]
    fn template_tags_are_checked_one_by_one() {
        let ok = format!(
            "{}\n{{{{ {} }}}}\n",
            "{{ a + b }}".repeat(1000),
            chain("~", 200)
        );
        assert!(check_template(&ok).is_ok());
        let bad = format!("text\n{{%- if {} %}}x{{% endif %}}", chain(" or ", 300));
        assert_eq!(check_template(&bad).unwrap_err().offset, 5);
        // Raw blocks and comments are text.
        let raw = format!("{{% raw %}}{{{{ {} }}}}{{% endraw %}}", chain("+", 300));
        assert!(check_template(&raw).is_ok());
        let comment = format!("{{# {} #}}", chain("+", 300));
        assert!(check_template(&comment).is_ok());
        // An unclosed tag is minijinja's error to report; the count still applies.
        assert!(check_template(&format!("{{{{ {}", chain("+", 300))).is_err());
    }

    #[test]
    fn a_loop_over_a_loop_runs_out_of_fuel() {
        let env = environment();
        let t = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
        let err = env.render_str(t, ()).unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::OutOfFuel);
        assert!(
            describe(&err).contains("steps of work"),
            "{}",
            describe(&err)
        );
        // A loop over ten thousand items, as a template over a fleet does, is well within it.
        let fleet = "{% for h in range(10000) %}{{ h }} {{ h ~ '.example' }}\n{% endfor %}";
        assert!(env.render_str(fleet, ()).is_ok());
    }

    /// What the limits allow must compile, evaluate and drop on a 2 MiB thread (a tokio worker's
    /// stack) in a debug build, where frames are largest.
    #[test]
    fn the_largest_allowed_input_fits_a_small_stack() {
        let worst = [
            chain(" + ", MAX_OPERATORS + 1),
            chain(" or ", MAX_OPERATORS + 1),
            chain(" ~ ", MAX_OPERATORS + 1),
            format!("x{}", "|string".repeat(MAX_OPERATORS)),
            format!("x{}", ".y".repeat(MAX_OPERATORS)),
            format!("{}x{}", "not ".repeat(MAX_OPERATORS), ""),
            format!("{}x{}", "(".repeat(100), ")".repeat(100)),
        ];
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let env = environment();
                for src in &worst {
                    assert!(check_expression(src).is_ok(), "{src:.40}");
                    // Unary chains past minijinja's own nesting limit are its syntax error.
                    if let Ok(e) = env.compile_expression(src) {
                        let _ = e.eval(minijinja::context! { x => 1 });
                    }
                    let t = format!("{{{{ {src} }}}}");
                    assert!(check_template(&t).is_ok());
                    let _ = env.render_str(&t, minijinja::context! { x => 1 });
                }
                let recursive = "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}";
                let e = env.render_str(recursive, ()).unwrap_err();
                assert!(e.to_string().contains("recursion"), "{e}");
            })
            .unwrap();
        handle.join().expect("overflowed or panicked");
    }
}
