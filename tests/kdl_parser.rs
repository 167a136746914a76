//! Differential tests of the hand-written KDL parser (`nexus::syntax::kdl::parse_fast`) against
//! the `kdl` crate (`parse_with_kdl`, its tree converted into the same model).
//!
//! The property, for every input: if the fast parser accepts it, the `kdl` crate accepts it too
//! and both trees are equal (names, values, type annotations, number spellings, order and every
//! span); if the `kdl` crate rejects it, so does the fast parser. Inputs the fast parser rejects
//! but the `kdl` crate accepts are allowed (the loader falls back to the `kdl` crate for them) and
//! counted; for real configurations there must be none, since each costs the slow parse.
//!
//! Inputs:
//! 1. the corpus: every `.kdl` file under examples/ and golden/ (valid and broken), every ```kdl
//!    block of docs/configuration.md, the benchmark's generated 1 MB configuration, the official
//!    KDL v2 test suite (tests/fixtures/kdl-test-suite, as shipped with the pinned `kdl` release),
//!    and, when `KDL_TEST_SUITE=DIR` is set, every `.kdl` file in DIR;
//! 2. hand-written snippets for every grammar feature, valid and invalid, each also tried inside
//!    a child block, after a slashdash and with CRLF newlines;
//! 3. proptest: KDL-ish token soup, a grammar-aware node generator, and mutations of the corpus.
//!    Cases: `PROPTEST_CASES` (default 256 per property), e.g. `PROPTEST_CASES=20000 cargo test
//!    --release --test kdl_parser`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nexus::syntax::kdl::{self as syntax, KdlDocument, KdlNode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[allow(dead_code)]
#[path = "bench/config_compile.rs"]
mod config_compile;

/// How one input came out.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Both accept, with equal trees.
    Same,
    /// Both reject.
    BothReject,
    /// The fast parser rejects, the `kdl` crate accepts: the loader falls back.
    Fallback,
}

/// Runs both parsers; `Err` describes a violation of the property.
fn differ(text: &str) -> Result<Outcome, String> {
    let fast = syntax::parse_fast(text);
    let slow = syntax::parse_with_kdl(text);
    match (fast, slow) {
        (Ok(f), Ok(k)) if f == k => Ok(Outcome::Same),
        (Ok(f), Ok(k)) => Err(format!("trees differ: {}", first_difference(&f, &k))),
        (Ok(_), Err(e)) => Err(format!(
            "the fast parser accepts a text the kdl crate rejects: {:?}",
            e.iter().map(|d| &d.message).collect::<Vec<_>>()
        )),
        (Err(_), Ok(_)) => Ok(Outcome::Fallback),
        (Err(_), Err(_)) => Ok(Outcome::BothReject),
    }
}

/// The first node (by path) whose fields differ, shown from both parsers.
fn first_difference(fast: &KdlDocument, kdl: &KdlDocument) -> String {
    fn walk(a: &[KdlNode], b: &[KdlNode], path: &str) -> Option<String> {
        if a.len() != b.len() {
            return Some(format!(
                "{path}: {} nodes (fast) vs {} (kdl)\nfast: {:?}\nkdl:  {:?}",
                a.len(),
                b.len(),
                a.iter().map(|n| n.name().value()).collect::<Vec<_>>(),
                b.iter().map(|n| n.name().value()).collect::<Vec<_>>()
            ));
        }
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let here = format!("{path}/{i}:{}", x.name().value());
            if x.name() != y.name()
                || x.ty() != y.ty()
                || x.entries() != y.entries()
                || x.span() != y.span()
                || x.children().is_some() != y.children().is_some()
            {
                return Some(format!(
                    "{here}\nfast: {:?} {:?} {:?} {:?}\nkdl:  {:?} {:?} {:?} {:?}",
                    x.name(),
                    x.ty(),
                    x.span(),
                    x.entries(),
                    y.name(),
                    y.ty(),
                    y.span(),
                    y.entries()
                ));
            }
            if let (Some(c), Some(d)) = (x.children(), y.children())
                && let Some(m) = walk(c.nodes(), d.nodes(), &here)
            {
                return Some(m);
            }
        }
        None
    }
    walk(fast.nodes(), kdl.nodes(), "").unwrap_or_else(|| "(no difference found)".into())
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kdl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            kdl_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "kdl") {
            out.push(p);
        }
    }
}

/// The ```kdl blocks of a markdown file.
fn kdl_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```kdl") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(current.take());
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    blocks
}

/// (name, text) of every corpus input; see the module documentation.
fn corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut files = Vec::new();
        kdl_files(&root().join("examples"), &mut files);
        kdl_files(&root().join("golden"), &mut files);
        kdl_files(&suite().join("input"), &mut files);
        if let Some(dir) = std::env::var_os("KDL_TEST_SUITE") {
            kdl_files(Path::new(&dir), &mut files);
        }
        let mut out: Vec<(String, String)> = files
            .iter()
            .filter_map(|p| {
                let text = String::from_utf8(std::fs::read(p).ok()?).ok()?;
                Some((p.display().to_string(), text))
            })
            .collect();
        let docs = std::fs::read_to_string(root().join("docs/configuration.md"))
            .expect("docs/configuration.md");
        for (i, b) in kdl_blocks(&docs).into_iter().enumerate() {
            out.push((format!("docs/configuration.md block {i}"), b));
        }
        out.push((
            "generated benchmark config".into(),
            config_compile::generate(config_compile::FULL),
        ));
        out
    })
}

/// Snippets for every grammar feature; many are invalid on purpose.
const SNIPPETS: &[&str] = &[
    // nodes, terminators, spans with trailing space
    "a",
    "a;b;;c",
    "a; b; c;",
    "a;\n;b",
    "a b;c d",
    "next  ;other",
    "a\r\nb\rc\u{85}d\u{2028}e\u{2029}f\u{0B}g\u{0C}h",
    "\u{FEFF}a 1",
    "a\u{FEFF}",
    "a  // comment\nb",
    "a /* x */ b /* y */ ;",
    "a /* /* nested */ */ b",
    "a /* unterminated",
    "a /*/ b",
    "a \\\n  b",
    "a \\ // comment\n  b",
    "a \\",
    "a \\ b",
    "a\\\nb",
    "a \\ \n\n b",
    "a \\ /* c */ \n b",
    "a \"b\"\\\n c",
    "a\u{3000}b\u{A0}c\u{1680}d\u{2000}e\u{200A}f\u{202F}g\u{205F}h",
    // identifiers and reserved words
    "-inf",
    "a -inf +inf .inf",
    "a true",
    "a null=1",
    "nan",
    "a -",
    "a +",
    "a -.",
    "a .",
    "a .a",
    "a ..",
    "a +.a",
    "a -a",
    "a --",
    "a _1",
    "a .5",
    "a -.5",
    "a +.5",
    "a b\"",
    "a [b]",
    "a b]",
    "a\u{7F} \u{7F}",
    "a \u{1}",
    "a b\u{200E}",
    "a é ü=ñ",
    "a(t)",
    "a=1",
    "a =1",
    "\"quoted node\" -1 +2",
    "\"\" \"\"=1",
    "#\"raw\"# r=#\"x\"#",
    // quoted strings and escapes
    "a \"\\u{1F600}\\s\\b\\f\\n\\r\\t\\\\\\\"\"",
    "a \"\\u{10FFFF}\\u{0}\"",
    "a \"\\u{D800}\"",
    "a \"\\u{110000}\"",
    "a \"\\u{1234567}\"",
    "a \"\\u{}\"",
    "a \"\\u41\"",
    "a \"\\/\"",
    "a \"\\x\"",
    "a \"x\\  \n   y\"",
    "a \"x\\\n\\\ty\"",
    "a \"\t\"",
    "a \"\u{0B}\"",
    "a \"\u{1}\"",
    "a \"\u{2028}\"",
    "a \"\u{202A}\"",
    "a \"\u{7F}\"",
    "a \"unterminated",
    "a \"x\"y",
    "a \"x\"\"y\"",
    "a \"x\"/-y",
    "a \"x\"/*c*/y",
    // multi-line strings
    "a \"\"\"\n  hi\n    there\n  \"\"\"",
    "a \"\"\"\n\thi\n\"\"\"",
    "a \"\"\"\n  hi\n\n  x\n  \"\"\"",
    "a \"\"\"\n  hi\n \n  x\n  \"\"\"",
    "a \"\"\"\n  hi\n     \n  x\n  \"\"\"",
    "a \"\"\"\n  \"\"\"",
    "a \"\"\"\n\"\"\"",
    "a \"\"\"\n  x\n \"\"\"",
    "a \"\"\"\n x\n  \"\"\"",
    "a \"\"\"\r\n  x\r\n  \"\"\"",
    "a \"\"\"\n  a\"\"\n  \"\"\"",
    "a \"\"\"\n  a\"\"b\n  \"\"\"",
    "a \"\"\"\n  a\"\"\"b\n  \"\"\"",
    "a \"\"\"\n  a\\\"\"\"\n  \"\"\"",
    "a \"\"\"\n  \\u{41}\\n\n  \"\"\"",
    "a \"\"\"\n  a \\\n  b\n  \"\"\"",
    "a \"\"\"\n  a \\  b\n  \"\"\"",
    "a \"\"\" \n  x\n  \"\"\"",
    "a \"\"\"x\"\"\"",
    "a \"\"\"\n  x\n  \"\"\" ",
    "a \"\"\"\n  x\n  \"\"\"y",
    "a \"\"\"\n  x\n  \"\"\" y",
    "a \"\"\"\n  x\n",
    "a \"\"\"\n  x\u{1}\n  \"\"\"",
    "a \"\"\"\n\u{3000}x\n\u{3000}\"\"\"",
    "\"\"\"\n  multi-line node name\n  \"\"\" 1",
    // raw strings
    "a #\"\"#",
    "a #\"\"\"#",
    "a #\"\"\"\"#",
    "a ##\"a\"#b\"##",
    "a #\"a\"##",
    "a #\"a\"#b",
    "a #\"\t\"#",
    "a #\"\n\"#",
    "a #\"unterminated",
    "a #\"\"\"\n  a\"\"\"b\n  \"\"\"#",
    "a #\"\"\"\n  x\n  \"\"\"#",
    "a #\"\"\"\n  x\n  \"\"\"##",
    "a #\"\"\"\n x\n  \"\"\"#",
    "a #\"\"\"\n  x\n\n  \"\"\"#",
    "a #\"\"\"\n  \\ \n  \"\"\"#",
    "a #\"\"\"\n  a\\nb\n  \"\"\"#",
    "a ##\"\"\"\n  \"\"\"#\n  \"\"\"##",
    "a #\"\"\"\n  \"\"\"#x\n  \"\"\"#",
    // numbers
    "a 170141183460469231731687303715884105727",
    "a 170141183460469231731687303715884105728",
    "a -170141183460469231731687303715884105727",
    "a -170141183460469231731687303715884105728",
    "a 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
    "a 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
    "a 1e10 1E+2 1.5 -0.0 1_000",
    "a 1_e5 1.5_e3 1.5e3_ 0x1e5",
    "a 1e400 -1e400 1e-400",
    "a 1.0e999999999999999999999999999999999999999",
    "a 0.00000000000000000000000000000000000000000001",
    "a 1.100000000000000000000000000000000000000000001",
    "a 0b1_0 0o7_7 -0o7 +0x_F",
    "a 0X1 0O1 0B1 -0xff +0b1",
    "a 00012 -0 +0",
    "a 1_ 1__2",
    "a 0b102",
    "a 0o8",
    "a 0x",
    "a 0xg",
    "a 1.",
    "a 1._5",
    "a 1.e5",
    "a 1.0.0",
    "a 1e1.0",
    "a 1e",
    "a 1e+",
    "a 1e_1",
    "a 1e-1_0",
    "a -1a",
    "a 1a",
    "a 1\"b\"",
    "a 1/-b",
    "a 1{}",
    "a port=0o644 mode=420",
    // keywords
    "a #true #false #null #inf #-inf #nan",
    "a #True",
    "a #-nan",
    "a #+inf",
    "a ##",
    "a #",
    "a #\"",
    "a #truex",
    "a #true/-b",
    "a #true/-b c",
    "a #true{}",
    "a #true{}/-b",
    "a #true(t)",
    "a #true\"x\"",
    "a #true\\\n  b",
    // type annotations
    "(t)a",
    "(t) a",
    "( t )a",
    "(\"t\")a",
    "(#\"t\"#)a",
    "(t )a",
    "(t)(u)a",
    "(t){}",
    "()a",
    "(t",
    "(true)a",
    "(t/* c */)a",
    "a (t)\"s\"",
    "a (t) /* c */ 1",
    "a b=(t) c",
    "a (t)b=1",
    "a b=(t)1",
    "a b= (t) 1",
    "a (t) b",
    "a (t)#true",
    "a (t)(u)1",
    "a ()1",
    "a (\"\")1",
    "a (t)",
    "a (t){}",
    "a (t)\n",
    // properties
    "a b=c",
    "a b =c d= e",
    "a b=c=d",
    "a \"k\"=\"v\"\"w\"",
    "a k=#\"x\"#z",
    "a b=",
    "a b= ",
    "a b=\n1",
    "a b=\\\n1",
    "a 1=2",
    "a b=#true c=#null",
    // slashdash
    "/-a b {c}\nd",
    "/-a;b",
    "/-a\nb",
    "/- a\nb",
    "/-\na\nb",
    "/- /- a",
    "/-",
    "a\n/-",
    "a\n/-\nb\nc",
    "a;/-b;c",
    "a\n/-b;",
    "a\n  /-b",
    "a /-b",
    "a /- b c",
    "a /-\n b",
    "a /- // c\n b c",
    "a /-b=1 c",
    "a /- /-b c d",
    "a /- /- b c",
    "a b /-",
    "a b /- ",
    "a /-{x}",
    "a /- {x}",
    "a /-{x} /-y",
    "a /-{b}/-{c}",
    "a /-{b} /-{c}",
    "a {b}/-{c}",
    "a {b} /-{c} /-{d}",
    "a /-{b} {c}",
    "a /-{b} {c} /- {d}",
    "a /-b /-{c} {d} /-{e}",
    "a b /-c /-{d} {e}",
    "a {x} /- {z} w",
    "a{}/-b",
    "a{} /-b c",
    "a{} /-b;c",
    "node /-child { }",
    "a /-(t)b c",
    "a /-k=(t)1 c",
    "/-(t)a b\nc",
    "a {\n  /-b\n  c\n}",
    "a {\n  b\n  /-c\n}",
    "a {\n  /-c {\n    d\n  }\n}",
    // children
    "a{b}",
    "a {b}c",
    "a{b}c",
    "a \"x\"{}",
    "a {}{}",
    "a { } ;",
    "a {\n}",
    "a{\n}",
    "a { b ; c }",
    "a { b ; }",
    "a { ; }",
    "a {",
    "a }",
    "{x}",
    "a /*x*/{}",
    "a\t{ }\t;",
    "a \\\n{b}",
    "a\\{b}",
    "a {b {c {d}}}",
    "a { b { c } d }",
    "a {\n  b 1 {\n    c\n  }\n}\n",
];

/// `text` as given, inside a child block, after a slashdash, and with CRLF newlines.
fn variants(text: &str) -> Vec<String> {
    vec![
        text.to_string(),
        format!("parent {{\n{text}\n}}"),
        format!("p{{{text}}}"),
        format!("/-{text}\nafter"),
        format!("{text}\n"),
        text.replace('\n', "\r\n"),
    ]
}

#[test]
fn corpus_is_parsed_like_the_kdl_crate() {
    let mut failures = Vec::new();
    let (mut same, mut both_reject, mut fallback) = (0, 0, Vec::new());
    for (name, text) in corpus() {
        match differ(text) {
            Ok(Outcome::Same) => same += 1,
            Ok(Outcome::BothReject) => both_reject += 1,
            Ok(Outcome::Fallback) => fallback.push(name.as_str()),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "corpus: {} inputs: {same} parsed alike, {both_reject} rejected by both, {} accepted by kdl only (fallback): {fallback:?}",
        corpus().len(),
        fallback.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(same > 100, "too few valid inputs in the corpus: {same}");
}

/// Inputs where the pinned `kdl` release, and so the fast parser that copies its decisions,
/// differs from the suite's verdict. The test fails when one of them stops differing, so the list
/// stays exact.
const SUITE_DEVIATIONS: &[(&str, &str)] = &[
    // The suite upstream lists it as valid; the kdl crate's copy dropped its expected output
    // because the crate cannot reprint a hex literal above i64::MAX as written. Accepting is right.
    (
        "hex.kdl",
        "valid upstream; the crate's copy has no expected output",
    ),
    // A `"""` string must start with a newline; kdl 6.7.1 takes the one-line form.
    (
        "multiline_raw_string_single_line_err_fail.kdl",
        "kdl 6.7.1 accepts a one-line raw \"\"\" string",
    ),
    // U+007F may not appear in an identifier; kdl 6.7.1 takes it.
    (
        "unicode_delete_fail.kdl",
        "kdl 6.7.1 accepts U+007F in an identifier",
    ),
];

/// The official KDL v2 test suite, vendored: `input/NAME.kdl` must parse exactly when
/// `expected_kdl/NAME.kdl` exists.
fn suite() -> PathBuf {
    root().join("tests/fixtures/kdl-test-suite")
}

#[test]
fn official_kdl_test_suite_is_accepted_and_rejected_as_specified() {
    let mut inputs = Vec::new();
    kdl_files(&suite().join("input"), &mut inputs);
    assert!(
        inputs.len() > 300,
        "the vendored suite is incomplete: {} inputs",
        inputs.len()
    );
    let mut failures = Vec::new();
    let (mut valid, mut invalid, mut fallback) = (0, 0, Vec::new());
    for path in &inputs {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(path).expect("read suite input");
        let valid_per_spec = suite().join("expected_kdl").join(&name).is_file();
        let Ok(text) = String::from_utf8(bytes) else {
            // A configuration is read as UTF-8 first: invalid UTF-8 is refused before parsing.
            if valid_per_spec {
                failures.push(format!("{name}: valid per the suite but not UTF-8"));
            }
            continue;
        };
        // What the loader decides (the fast parser, else the kdl crate).
        let loaded = syntax::parse(&text).is_ok();
        let deviation = SUITE_DEVIATIONS.iter().any(|(n, _)| *n == name);
        if deviation && loaded == valid_per_spec {
            failures.push(format!(
                "{name}: no longer deviates: remove it from SUITE_DEVIATIONS"
            ));
        }
        if loaded != valid_per_spec && !deviation {
            failures.push(format!(
                "{name}: the suite says {}, the loader {}",
                if valid_per_spec { "valid" } else { "invalid" },
                if loaded { "accepts it" } else { "rejects it" }
            ));
        }
        match differ(&text) {
            Ok(Outcome::Fallback) => fallback.push(name.clone()),
            Ok(_) => {}
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        if valid_per_spec {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    println!(
        "KDL test suite: {valid} valid and {invalid} invalid inputs; {} valid ones taken by the kdl crate fallback: {fallback:?}",
        fallback.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_configurations_never_need_the_fallback() {
    // Every configuration that loads today (examples, the docs, the benchmark) must be accepted
    // by the fast parser, or loading it would cost the slow parse.
    for (name, text) in corpus() {
        let real =
            name.contains("examples") || name.starts_with("docs/") || name.starts_with("generated");
        if real && syntax::parse_with_kdl(text).is_ok() {
            assert!(
                syntax::parse_fast(text).is_ok(),
                "{name}: valid KDL that the fast parser rejects"
            );
        }
    }
}

#[test]
fn snippets_are_parsed_like_the_kdl_crate() {
    let mut failures = Vec::new();
    let (mut same, mut both_reject, mut fallback) = (0, 0, Vec::new());
    for s in SNIPPETS {
        for v in variants(s) {
            match differ(&v) {
                Ok(Outcome::Same) => same += 1,
                Ok(Outcome::BothReject) => both_reject += 1,
                Ok(Outcome::Fallback) => fallback.push(v),
                Err(e) => failures.push(format!("{v:?}: {e}")),
            }
        }
    }
    println!(
        "snippets: {same} parsed alike, {both_reject} rejected by both, {} accepted by kdl only (fallback): {fallback:?}",
        fallback.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        same > 200 && both_reject > 200,
        "{same} alike, {both_reject} rejected"
    );
}

#[test]
fn spans_match_the_documented_rules() {
    // A few spans spelled out, so a change in either parser shows here in plain words.
    let t = "(t)node  1 (u)\"x\"  k = 2 /- z=3 {\n  child; c2 ;\n}  // hi\nnext  ;";
    let doc = syntax::parse_fast(t).expect("valid");
    let at = |s: miette::SourceSpan| &t[s.offset()..s.offset() + s.len()];
    let node = &doc.nodes()[0];
    assert_eq!(
        at(node.span()),
        "(t)node  1 (u)\"x\"  k = 2 /- z=3 {\n  child; c2 ;\n}  "
    );
    assert_eq!(at(node.name().span()), "node");
    assert_eq!(at(node.ty().expect("annotated").span()), "t");
    let e = node.entries();
    assert_eq!(e.len(), 3);
    assert_eq!(at(e[1].span()), "(u)\"x\"");
    assert_eq!(at(e[1].ty().expect("annotated").span()), "u");
    assert_eq!(at(e[2].span()), "k = 2");
    assert_eq!(at(e[2].name().expect("property").span()), "k");
    let children = node.children().expect("children").nodes();
    assert_eq!(at(children[1].span()), "c2 ");
    assert_eq!(at(doc.nodes()[1].span()), "next  ");
}

#[test]
fn fallback_keeps_kdl_diagnostics_and_trees() {
    // Invalid: the errors are the kdl crate's.
    let e = syntax::parse("a {").expect_err("unclosed");
    assert_eq!(
        e[0].message.as_deref(),
        Some("No closing '}' for child block")
    );
    // Valid but left to the fallback (a whitespace escape in a multi-line string): same tree.
    let t = "a \"\"\"\n  x \\\n  y\n  \"\"\"";
    assert!(syntax::parse_fast(t).is_err());
    let tree = syntax::parse(t).ok();
    assert!(tree.is_some());
    assert_eq!(tree, syntax::parse_with_kdl(t).ok());
}

// ---- properties -------------------------------------------------------------------------------

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const TOKENS: &[&str] = &[
    "a",
    "node",
    "-",
    "+x",
    ".a",
    "-inf",
    "true",
    "k",
    "é",
    "\u{7F}",
    "\"x\"",
    "\"\"",
    "\"a\\nb\"",
    "\"\\u{41}\"",
    "\"\\ \n x\"",
    "\"\\q\"",
    "#\"r\"#",
    "##\"a\"#b\"##",
    "#\"\"\"#",
    "\"\"\"\n  m\n  \"\"\"",
    "\"\"\"\n  m\n \"\"\"",
    "#\"\"\"\n  r\n  \"\"\"#",
    "1",
    "-1",
    "+2",
    "1_000",
    "0x1F",
    "0o7",
    "0b1",
    "1.5",
    "1e5",
    "1.5E-3",
    "1.",
    "0x",
    "1e",
    "99999999999999999999999999999999999999999",
    "#nope",
    "#",
    "(t)",
    "( t )",
    "(\"t\")",
    "(",
    ")",
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    "\r\n",
    ";",
    "{",
    "}",
    "{",
    "}",
    "=",
    "=",
    "/-",
    "/-",
    "/* c */",
    "/* /* n */ */",
    "/*",
    "// c\n",
    "\\\n",
    "\\ // c\n",
    "\\",
    "\u{A0}",
    "\u{2028}",
    "\u{FEFF}",
    "\u{200E}",
    "\u{0}",
    "\"",
    "#\"",
    "[",
    "]",
];

/// Short strings over the characters that matter to the grammar: every corner, by brute force.
fn alphabet_soup() -> impl Strategy<Value = String> {
    const CHARS: &[char] = &[
        'a', 'a', 'a', 'b', ' ', ' ', ' ', '\n', '"', '"', '#', '#', '=', '(', ')', '{', '}', ';',
        '/', '/', '-', '-', '*', '\\', '.', '+', '0', '1', '1', 'e', 'x', '_', 'u', 'n', '\t',
        '\r', '\u{A0}', '\u{85}', '\u{FEFF}', '\u{7F}', '\u{1}',
    ];
    prop::collection::vec(prop::sample::select(CHARS), 0..24).prop_map(String::from_iter)
}

/// Lines of a node name followed by tokens, most of them valid in that place, some odd.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => scalar(),
        1 => prop::sample::select(TOKENS).prop_map(str::to_string),
        1 => (name(), scalar()).prop_map(|(k, v)| format!("{k}={v}")),
    ];
    let line = (
        name(),
        prop::collection::vec(
            (
                token,
                prop::sample::select(&[" ", " ", " ", "", "\\\n "][..]),
            ),
            0..6,
        ),
        prop::sample::select(&["\n", "\n", ";", " {", "}\n", " // c\n"][..]),
    )
        .prop_map(|(n, tokens, end)| {
            let mut s = n;
            for (t, sep) in tokens {
                s.push_str(sep);
                s.push_str(&t);
            }
            s.push_str(end);
            s
        });
    prop::collection::vec(line, 1..6).prop_map(|ls| ls.concat())
}

const NAMES: &[&str] = &[
    "a",
    "node",
    "host",
    "\"quoted name\"",
    "#\"raw\"#",
    "-",
    "+x",
    ".b",
    "é",
    "k-1",
];

const SCALARS: &[&str] = &[
    "1",
    "-7",
    "0x1F",
    "0o644",
    "0b101",
    "1_000",
    "1.5",
    "-2.5e3",
    "1E5",
    "#true",
    "#false",
    "#null",
    "#inf",
    "#-inf",
    "#nan",
    "\"s\"",
    "\"a\\tb\"",
    "\"\\u{1F600}\"",
    "bare",
    "#\"r\\n\"#",
    "\"\"\"\n  ml\n    x\n  \"\"\"",
    "#\"\"\"\n  raw ml\n  \"\"\"#",
    "\"\"",
];

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES).prop_map(str::to_string)
}

fn scalar() -> impl Strategy<Value = String> {
    prop::sample::select(SCALARS).prop_map(str::to_string)
}

fn entry() -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.4, name()),
        prop::option::weighted(0.2, prop::sample::select(&["(t)", "(env)", "( u )"][..])),
        scalar(),
        prop::sample::select(&["", "", "", "/-", "/- "][..]),
        prop::sample::select(&["", "", " ", "\\\n "][..]),
    )
        .prop_map(|(key, ty, v, sd, around_eq)| {
            let key = key
                .map(|k| format!("{k}{around_eq}={around_eq}"))
                .unwrap_or_default();
            format!("{sd}{key}{}{v}", ty.unwrap_or(""))
        })
}

fn nodes(depth: u32) -> BoxedStrategy<String> {
    let leaf = (
        prop::option::weighted(0.15, prop::sample::select(&["(t)", "( t ) "][..])),
        name(),
        prop::collection::vec(entry(), 0..4),
        prop::sample::select(&[" ", " ", "  ", "\t", " /* c */ ", " \\\n  "][..]),
        prop::sample::select(&["\n", "\n", ";", "; ", " // c\n", "\r\n", "\n\n"][..]),
        prop::sample::select(&["", "", "", "/-", "/- "][..]),
    );
    let node = if depth == 0 {
        leaf.prop_map(|(ty, n, es, sep, term, sd)| {
            let mut s = format!("{sd}{}{n}", ty.unwrap_or(""));
            for e in es {
                s.push_str(sep);
                s.push_str(&e);
            }
            s.push_str(term);
            s
        })
        .boxed()
    } else {
        (
            leaf,
            prop::option::weighted(0.4, nodes(depth - 1)),
            prop::sample::select(&["", "", " /-{ x }", " /-{}"][..]),
        )
            .prop_map(|((ty, n, es, sep, term, sd), children, sd_children)| {
                let mut s = format!("{sd}{}{n}", ty.unwrap_or(""));
                for e in es {
                    s.push_str(sep);
                    s.push_str(&e);
                }
                if let Some(c) = children {
                    s.push_str(sd_children);
                    s.push_str(" {\n");
                    s.push_str(&c);
                    s.push('}');
                }
                s.push_str(term);
                s
            })
            .boxed()
    };
    prop::collection::vec(node, 1..4)
        .prop_map(|ns| ns.concat())
        .boxed()
}

/// A corpus file with a few edits: byte-level ones and token insertions.
fn mutated_corpus() -> impl Strategy<Value = String> {
    let n = corpus().len() - 1; // not the 1 MB generated config: too slow per case
    (
        0..n,
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                0u8..4,
                prop_oneof![prop::sample::select(TOKENS), prop::sample::select(SCALARS)],
            ),
            1..6,
        ),
    )
        .prop_map(|(i, edits)| {
            let mut b = corpus()[i].1.clone().into_bytes();
            for (at, kind, token) in edits {
                let at = at.index(b.len() + 1);
                match kind {
                    0 => {
                        b.splice(at..at, token.bytes());
                    }
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    2 if at < b.len() => b[at] = token.as_bytes().first().copied().unwrap_or(b' '),
                    _ => b.truncate(at),
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        })
}

/// The differential property, for proptest.
fn holds(text: &str) -> Result<(), TestCaseError> {
    differ(text)
        .map(|_| ())
        .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn alphabet_soup_is_parsed_like_the_kdl_crate(text in alphabet_soup()) {
        holds(&text)?;
    }

    #[test]
    fn token_soup_is_parsed_like_the_kdl_crate(text in token_soup()) {
        holds(&text)?;
    }

    #[test]
    fn generated_documents_are_parsed_like_the_kdl_crate(text in nodes(3)) {
        holds(&text)?;
    }

    #[test]
    fn mutated_corpus_is_parsed_like_the_kdl_crate(text in mutated_corpus()) {
        holds(&text)?;
    }
}

#[test]
fn generators_reach_valid_and_invalid_inputs() {
    // The properties above are only worth something if their inputs get past the parsers often
    // enough: count the outcomes of a sample from each generator.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let generators: [(&str, BoxedStrategy<String>); 4] = [
        ("alphabet soup", alphabet_soup().boxed()),
        ("token soup", token_soup().boxed()),
        ("generated documents", nodes(3)),
        ("mutated corpus", mutated_corpus().boxed()),
    ];
    for (what, strategy) in generators {
        let (mut same, mut reject, mut fallback) = (0, 0, 0);
        for _ in 0..300 {
            let text = strategy.new_tree(&mut runner).expect("value").current();
            match differ(&text) {
                Ok(Outcome::Same) => same += 1,
                Ok(Outcome::BothReject) => reject += 1,
                Ok(Outcome::Fallback) => fallback += 1,
                Err(e) => panic!("{text:?}: {e}"),
            }
        }
        println!("{what}: {same} parsed alike, {reject} rejected by both, {fallback} fallback");
        assert!(
            same >= 30 && reject >= 30,
            "{what}: {same} alike, {reject} rejected"
        );
    }
}
