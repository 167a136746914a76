//! Golden tests: the real `nexus` binary against pinned outputs in `golden/`.
//!
//! After an intended change to a message or an output, regenerate every expected file with
//!
//! ```text
//! NEXUS_BLESS=1 cargo test --test golden
//! ```
//!
//! and review the result with `git diff golden/` before committing: the point of the corpus is
//! that every rendered diagnostic has been read by a person.
//!
//! - `golden/errors/`: broken configurations, one error class per case (see golden/README.md). A
//!   case is either `NAME.kdl` (expected output `NAME.stderr`) or a directory `NAME/` holding
//!   `nexus.kdl`, the files it imports and `expected.stderr`. Each runs
//!   `nexus validate --no-color -c FILE` with the case's directory as working directory; the
//!   expected file holds `exit: N` on its first line, then exactly what was printed on stderr.
//!   Every case must exit 3 (invalid configuration) and print nothing on stdout, even when
//!   blessing, so that a case that accidentally validates is caught.
//! - `golden/cli/`: a fixture `nexus.kdl` and, for each `NAME.args` (the arguments, on one line),
//!   `NAME.out`: `exit: N`, then stdout, then `--- stderr` and stderr when there is any.

mod harness;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use harness::project::{Project, Run};

/// Shown under output mismatches (not under failures that blessing cannot fix).
fn bless_hint(failures: &[String]) -> &'static str {
    if failures.iter().any(|f| f.contains(" differs:")) {
        "\n\nif the new output is intended, regenerate with `NEXUS_BLESS=1 cargo test --test golden` and review `git diff golden/`"
    } else {
        ""
    }
}

/// The error corpus may grow but must not silently shrink below this.
const MIN_ERROR_CASES: usize = 30;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn blessing() -> bool {
    std::env::var_os("NEXUS_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs the binary in `dir` (without `-c` unless `args` has it) with a clean, deterministic
/// environment.
fn nexus(dir: &Path, args: &[&str]) -> Run {
    Project::at(dir)
        .no_config_arg()
        .env("COLUMNS", "100")
        .nexus(args)
}

/// A minimal line diff (longest common subsequence) with a few lines of context around changes.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..ops.len()).filter(|k| ops[*k].0 != ' ').collect();
    let mut out = String::from("--- expected\n+++ actual\n");
    let mut last_shown: Option<usize> = None;
    for (k, (tag, line)) in ops.iter().enumerate() {
        let near = changed
            .iter()
            .any(|c| k + CONTEXT >= *c && k <= *c + CONTEXT);
        if !near {
            continue;
        }
        if last_shown.is_some_and(|l| k > l + 1) || (last_shown.is_none() && k > 0) {
            out.push_str("@@\n");
        }
        let _ = writeln!(out, "{tag}{line}");
        last_shown = Some(k);
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the files differ in their final newline)\n");
    }
    out
}

/// Compares `actual` with the file at `expected`, or writes it when blessing. Returns a failure
/// description on mismatch.
fn check(expected: &Path, actual: &str) -> Option<String> {
    if blessing() {
        std::fs::write(expected, actual).expect("write expected output");
        return None;
    }
    let name = expected
        .strip_prefix(golden_dir())
        .unwrap_or(expected)
        .display();
    match std::fs::read_to_string(expected) {
        Ok(want) if want == actual => None,
        Ok(want) => Some(format!("golden/{name} differs:\n{}", diff(&want, actual))),
        Err(_) => Some(format!(
            "golden/{name} is missing; create it with NEXUS_BLESS=1 cargo test --test golden\nactual output:\n{actual}"
        )),
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).expect("UTF-8 name")
}

/// One broken configuration: where to run, which file to pass, where its expected output lives.
struct ErrorCase {
    name: String,
    dir: PathBuf,
    config: String,
    expected: PathBuf,
}

fn error_cases(root: &Path) -> (Vec<ErrorCase>, Vec<String>) {
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for p in sorted_entries(root) {
        let name = file_name(&p).to_string();
        if p.is_dir() {
            if !p.join("nexus.kdl").is_file() {
                problems.push(format!("golden/errors/{name}/ has no nexus.kdl"));
                continue;
            }
            cases.push(ErrorCase {
                name: format!("{name}/"),
                dir: p.clone(),
                config: "nexus.kdl".into(),
                expected: p.join("expected.stderr"),
            });
        } else if let Some(stem) = name.strip_suffix(".kdl") {
            cases.push(ErrorCase {
                name: name.clone(),
                dir: root.to_path_buf(),
                config: name.clone(),
                expected: root.join(format!("{stem}.stderr")),
            });
        } else if let Some(stem) = name.strip_suffix(".stderr") {
            if !root.join(format!("{stem}.kdl")).is_file() {
                if blessing() {
                    std::fs::remove_file(&p).expect("remove stale expected output");
                } else {
                    problems.push(format!(
                        "golden/errors/{name} has no {stem}.kdl (stale; NEXUS_BLESS=1 removes it)"
                    ));
                }
            }
        } else {
            problems.push(format!(
                "golden/errors/{name}: unexpected file (cases are NAME.kdl or NAME/nexus.kdl)"
            ));
        }
    }
    (cases, problems)
}

#[test]
fn error_corpus() {
    let root = golden_dir().join("errors");
    let (cases, mut failures) = error_cases(&root);
    assert!(
        cases.len() >= MIN_ERROR_CASES,
        "golden/errors has {} cases; it must keep at least {MIN_ERROR_CASES}",
        cases.len()
    );
    for case in &cases {
        let run = nexus(&case.dir, &["validate", "--no-color", "-c", &case.config]);
        if run.code != 3 {
            failures.push(format!(
                "golden/errors/{}: exit {} instead of 3 (invalid configuration); a broken config must not validate\nstdout:\n{}stderr:\n{}",
                case.name, run.code, run.stdout, run.stderr
            ));
            continue;
        }
        if !run.stdout.is_empty() {
            failures.push(format!(
                "golden/errors/{}: printed on stdout:\n{}",
                case.name, run.stdout
            ));
        }
        if run.stderr.contains('\u{1b}') {
            failures.push(format!(
                "golden/errors/{}: ANSI escapes despite --no-color",
                case.name
            ));
        }
        let actual = format!("exit: {}\n{}", run.code, run.stderr);
        failures.extend(check(&case.expected, &actual));
    }
    assert!(
        failures.is_empty(),
        "{} of {} error cases failed:\n\n{}{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n"),
        bless_hint(&failures)
    );
}

#[test]
fn cli_outputs() {
    let root = golden_dir().join("cli");
    let mut failures = Vec::new();
    let mut count = 0;
    for p in sorted_entries(&root) {
        let name = file_name(&p).to_string();
        if let Some(stem) = name.strip_suffix(".out")
            && !root.join(format!("{stem}.args")).is_file()
        {
            if blessing() {
                std::fs::remove_file(&p).expect("remove stale expected output");
            } else {
                failures.push(format!(
                    "golden/cli/{name} has no {stem}.args (stale; NEXUS_BLESS=1 removes it)"
                ));
            }
        }
        let Some(stem) = name.strip_suffix(".args") else {
            continue;
        };
        count += 1;
        let line = std::fs::read_to_string(&p).expect("read args");
        let args: Vec<&str> = line.split_whitespace().collect();
        let run = nexus(&root, &args);
        let mut actual = format!("exit: {}\n{}", run.code, run.stdout);
        if !run.stderr.is_empty() {
            actual.push_str("--- stderr\n");
            actual.push_str(&run.stderr);
        }
        failures.extend(check(&root.join(format!("{stem}.out")), &actual));
    }
    assert!(count >= 8, "golden/cli has only {count} commands");
    assert!(
        failures.is_empty(),
        "{} CLI outputs differ:\n\n{}{}",
        failures.len(),
        failures.join("\n\n"),
        bless_hint(&failures)
    );
}

#[test]
fn diff_shows_changed_lines() {
    let d = diff("a\nb\nc\n", "a\nx\nc\n");
    assert!(d.contains("-b\n") && d.contains("+x\n"), "{d}");
    assert!(d.contains(" a\n") && d.contains(" c\n"), "{d}");
}
