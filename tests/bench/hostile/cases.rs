//! Hostile inputs for the configuration loader, the `when` expression checker and evaluator, and
//! the template checker and renderer, generated from a seed and a case number so that any finding
//! can be regenerated alone. Shared by the `hostile_fuzz` bench (large N, each batch in a child
//! process so that a stack overflow is counted, not fatal) and `tests/hostile_fuzz.rs` (small N,
//! in process, in CI).

use std::path::Path;

use nexus::config::{self, RenderOptions};
use nexus::syntax::expr;

/// The three targets.
pub const TARGETS: [&str; 3] = ["config", "expression", "template"];

/// What one execution gave. Panics are caught by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
}

/// A small xorshift generator: deterministic from (seed, case), no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, case: u64) -> Rng {
        let mut x = seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        Rng(x | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Mostly small, sometimes huge: the sizes that found the holes of issue 14.
    pub fn size(&mut self) -> usize {
        match self.below(10) {
            0 => 1_000 + self.below(60_000),
            1 | 2 => 50 + self.below(400),
            _ => 1 + self.below(20),
        }
    }
}

const ATOMS: &[&str] = &[
    "facts.os_family",
    "facts.cpu_count",
    "vars.app",
    "host.tags",
    "env.A",
    "x",
    "1",
    "2.5",
    "'debian'",
    "\"q\\\"uote\"",
    "none",
    "true",
    "[1, 2]",
    "{'a': 1}",
    "range(3)",
    "'}}'",
    "'%}'",
];

const BINARY: &[&str] = &[
    " + ", " - ", " * ", " / ", " // ", " % ", " ** ", " ~ ", " == ", " != ", " < ", " >= ",
    " and ", " or ", " in ", " not in ", " is ", "|", ".", " if ",
];

const PREFIX: &[&str] = &["not ", "-", "(", "[", "{"];

const NOISE: &[&str] = &[
    "(", ")", "[", "]", "{", "}", "'", "\"", "\\", ",", ":", "|", ".", "~", "{{", "}}", "{%", "%}",
    "{#", "#}", " else ", "é", "\u{0}", "\n",
];

/// A `when`-like expression: chains, nests and noise, sometimes tens of thousands of terms.
pub fn expression(rng: &mut Rng) -> String {
    let mut out = String::new();
    let n = rng.size();
    let mode = rng.below(4);
    for i in 0..n {
        match mode {
            // A chain of one operator: the shape that overflowed.
            0 => {
                if i > 0 {
                    out.push_str(BINARY[n % BINARY.len()]);
                }
                out.push_str(rng.pick(ATOMS));
            }
            // Nesting: prefixes then atoms.
            1 => out.push_str(rng.pick(PREFIX)),
            // Mixed valid-ish.
            2 => {
                if i > 0 {
                    out.push_str(rng.pick(BINARY));
                }
                if rng.below(4) == 0 {
                    out.push_str(rng.pick(PREFIX));
                }
                out.push_str(rng.pick(ATOMS));
            }
            _ => out.push_str(rng.pick(NOISE)),
        }
    }
    if mode == 1 {
        out.push_str(rng.pick(ATOMS));
        for _ in 0..n {
            out.push_str(rng.pick(&[")", "]", "}"]));
        }
    }
    out
}

/// A template: text and tags, nested blocks, recursive macros, raw blocks, broken tags.
pub fn template(rng: &mut Rng) -> String {
    let mut out = String::new();
    let n = rng.size().min(5_000);
    let mut open: Vec<&str> = Vec::new();
    for _ in 0..n {
        match rng.below(9) {
            0 => out.push_str("text\n"),
            1 => out.push_str(&format!("{{{{ {} }}}}", expression(rng))),
            2 => {
                out.push_str(&format!("{{% if {} %}}", expression(rng)));
                open.push("{% endif %}");
            }
            // Nested loops multiply: a few levels only, or every case is a timeout (templates
            // have no bound on work; see the report in docs/reliability.md).
            3 if open.iter().filter(|c| c.contains("endfor")).count() < 6 => {
                out.push_str("{% for i in range(3) %}");
                open.push("{% endfor %}");
            }
            4 => {
                if let Some(close) = open.pop() {
                    out.push_str(close);
                }
            }
            5 => out.push_str("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}"),
            6 => out.push_str("{% raw %}{{ {% endraw %}"),
            7 => out.push_str(rng.pick(NOISE)),
            _ => out.push_str("{# c #}"),
        }
    }
    while rng.below(2) == 0 {
        if let Some(close) = open.pop() {
            out.push_str(close);
        }
    }
    out
}

const CONFIG_INSERTS: &[&str] = &[
    "{",
    "}",
    "\"",
    "host \"h\" \"u@[::1;id]:22\"\n",
    "host \"h2\" \"$(touch x)@host\" become-user=\"root;touch x\"\n",
    "task \"t\" { directory \"/tmp/..\" state=\"absent\"; }\n",
    "import \"/dev/zero\"\n",
    "import \".\"\n",
    "task \"x\" deps=\"nope\" { package \"p\" bogus=1; }\n",
];

/// A configuration: a corpus file mutated, with hostile snippets and sometimes a huge `when`.
pub fn config_text(rng: &mut Rng, corpus: &[String]) -> String {
    let mut text = if corpus.is_empty() {
        String::new()
    } else {
        corpus[rng.below(corpus.len())].clone()
    };
    for _ in 0..1 + rng.below(4) {
        let at = floor_char(&text, rng.below(text.len() + 1));
        match rng.below(5) {
            0 => text.insert_str(at, rng.pick(CONFIG_INSERTS)),
            1 => {
                let w = expression(rng).replace(['"', '\\'], "'");
                text.insert_str(
                    at,
                    &format!("\ntask \"w\" when=\"{w}\" {{ package \"p\"; }}\n"),
                );
            }
            2 => {
                let end = floor_char(&text, (at + rng.below(40)).min(text.len()));
                text.replace_range(at..end, "");
            }
            3 => {
                let block = "task \"e\" { package \"x\" nope=1; }\n".repeat(rng.size());
                text.insert_str(at, &block);
            }
            _ => text.insert_str(at, &"{".repeat(rng.size())),
        }
    }
    text
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The example and golden configurations, as text.
pub fn corpus(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["examples", "golden/errors"] {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "kdl") {
            out.push(p);
        }
    }
}

/// The input of one case.
pub fn input(target: &str, seed: u64, case: u64, corpus: &[String]) -> String {
    let mut rng = Rng::new(seed, case);
    match target {
        "config" => config_text(&mut rng, corpus),
        "expression" => expression(&mut rng),
        _ => template(&mut rng),
    }
}

/// Runs one input through its target the way nexus does: check first, then minijinja.
pub fn run(target: &str, text: &str, dir: &Path) -> Outcome {
    let ctx = minijinja::context! {
        facts => minijinja::context! { os_family => "debian", cpu_count => 2 },
        vars => minijinja::context! { app => "a" },
        host => minijinja::context! { tags => vec!["web"] },
        env => minijinja::context! { A => "1" },
        x => 1,
    };
    match target {
        "config" => match config::load_str(text, "nexus.kdl", dir) {
            Ok(_) => Outcome::Accepted,
            Err(e) => {
                let _ = e.render(RenderOptions {
                    color: false,
                    width: 80,
                });
                let _ = e.to_json();
                Outcome::Refused
            }
        },
        "expression" => {
            if expr::check_expression(text).is_err() {
                return Outcome::Refused;
            }
            let env = expr::environment();
            match env.compile_expression(text).map(|e| e.eval(ctx)) {
                Ok(Ok(_)) => Outcome::Accepted,
                _ => Outcome::Refused,
            }
        }
        _ => {
            if expr::check_template(text).is_err() {
                return Outcome::Refused;
            }
            let env = expr::environment();
            match env.render_str(text, ctx) {
                Ok(_) => Outcome::Accepted,
                Err(_) => Outcome::Refused,
            }
        }
    }
}

/// The stack a target runs on in nexus: the loader on the main thread (8 MiB), `when` and
/// templates while planning, on a runtime worker (2 MiB).
pub fn stack_size(target: &str) -> usize {
    if target == "config" { 8 << 20 } else { 2 << 20 }
}
