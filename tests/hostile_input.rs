//! Hostile input (issue 14): the real binary against configurations, imports and templates built
//! to crash it, exhaust its memory, block it or slip shell words past validation. Each must end in
//! a clean error with the documented exit code (3 for an invalid configuration), never a signal.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::project::{Project, Run};

/// `nexus validate` must stop by itself; a run still going after this long is blocked (on a FIFO,
/// or reading without end) and is killed so the test reports it instead of hanging.
const BLOCKED: Duration = Duration::from_secs(120);

fn run_guarded(p: &Project, args: &[&str]) -> Run {
    let child = p
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nexus");
    let pid = child.id();
    // Output is drained while waiting: a child blocked on a full pipe is not a blocked nexus.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(BLOCKED) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("nexus {args:?} was still running after {BLOCKED:?}");
        }
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// Exit 3 (invalid configuration) with `needle` on stderr.
fn assert_invalid(r: &Run, needle: &str) {
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(needle), "expected {needle:?} in {r:?}");
}

fn chain(op: &str, n: usize) -> String {
    vec!["env.A"; n].join(op)
}

// --- 3. stack overflow ---------------------------------------------------------------------------

#[test]
fn when_with_30000_terms_is_an_error_not_a_crash() {
    for op in [" + ", " or ", " ~ "] {
        let p = Project::new();
        p.config(&format!(
            "host \"web\" \"10.0.0.1\"\ntask \"t\" on=\"web\" when=\"{}\" {{\n    package \"nginx\"\n}}\n",
            chain(op, 30_000)
        ));
        let r = p.nexus(&["validate"]);
        assert_invalid(&r, "config::expression-too-large");
        assert!(r.stderr.contains("nexus.kdl:2:"), "{r:?}");
    }
}

#[test]
fn import_when_with_30000_terms_is_an_error_not_a_crash() {
    let p = Project::new();
    p.write("other.kdl", "");
    p.config(&format!(
        "import \"other.kdl\" when=\"{}\"\n",
        chain(" or ", 30_000)
    ));
    let r = p.nexus(&["validate"]);
    assert_invalid(&r, "config::expression-too-large");
    assert!(r.stderr.contains("nexus.kdl:1:"), "{r:?}");
}

#[test]
fn template_with_40000_terms_is_an_error_not_a_crash() {
    let p = Project::new();
    let terms = vec!["\"a\""; 40_000].join(" ~ ");
    p.write("big.j2", &format!("line one\n{{{{ {terms} }}}}\n"));
    p.config(
        "task \"t\" {\n    file \"/tmp/nexus-hostile-never-written\" template=\"big.j2\"\n}\n",
    );
    let r = p.nexus(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("template big.j2 line 2")
            && r.stderr.contains("more than the limit of 256"),
        "{r:?}"
    );
}

/// A template's work is bounded (minijinja fuel): a loop over a loop of ranges would otherwise run
/// for hours and fill memory with its output.
#[test]
fn template_with_a_loop_over_a_loop_is_an_error_not_a_hang() {
    let p = Project::new();
    p.write(
        "loops.j2",
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}\n",
    );
    p.config(
        "task \"t\" {\n    file \"/tmp/nexus-hostile-never-written\" template=\"loops.j2\"\n}\n",
    );
    let r = run_guarded(&p, &["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("template loops.j2") && r.stderr.contains("steps of work"),
        "{r:?}"
    );
    assert!(!std::path::Path::new("/tmp/nexus-hostile-never-written").exists());
}

// --- 4. unbounded reads --------------------------------------------------------------------------

#[test]
fn config_from_dev_zero_or_a_directory_is_refused_at_once() {
    let p = Project::new().no_config_arg();
    std::fs::create_dir(p.path("dir")).unwrap();
    for (c, what) in [("/dev/zero", "a device"), ("dir", "a directory")] {
        let r = run_guarded(&p, &["-c", c, "validate"]);
        assert_invalid(&r, &format!("{c} is {what}, not a regular file"));
    }
}

#[test]
fn import_of_a_fifo_dev_zero_or_directory_is_refused_at_once() {
    let p = Project::new();
    let fifo = p.path("pipe.kdl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::create_dir(p.path("dir")).unwrap();
    p.config("import \"pipe.kdl\"\nimport \"/dev/zero\"\nimport \"dir\"\n");
    let r = run_guarded(&p, &["validate"]);
    assert_invalid(&r, "pipe.kdl is a FIFO, not a regular file");
    assert!(r.stderr.contains("/dev/zero is a device"), "{r:?}");
    assert!(r.stderr.contains("dir is a directory"), "{r:?}");
    assert!(r.stderr.contains("nexus.kdl:1:8"), "{r:?}");
    assert!(r.stderr.contains("3 errors"), "{r:?}");
}

#[test]
fn config_larger_than_the_limit_is_refused_without_reading_it() {
    let p = Project::new();
    // Sparse: 64 MiB + 1 byte on disk costs nothing.
    let f = std::fs::File::create(p.path("huge.kdl")).unwrap();
    f.set_len(64 * 1024 * 1024 + 1).unwrap();
    p.config("import \"huge.kdl\"\n");
    let r = run_guarded(&p, &["validate"]);
    assert_invalid(&r, "larger than the limit of 64 MiB");
    let root = Project::at(p.dir()).no_config_arg();
    let r = run_guarded(&root, &["-c", "huge.kdl", "validate"]);
    assert_invalid(&r, "larger than the limit of 64 MiB");
}

#[test]
fn template_or_source_that_is_not_a_regular_file_is_refused() {
    let p = Project::new();
    let made = std::process::Command::new("mkfifo")
        .arg(p.path("t.j2"))
        .status()
        .unwrap();
    assert!(made.success());
    p.config(
        "task \"t\" {\n    file \"/tmp/a\" template=\"t.j2\"\n    file \"/tmp/b\" source=\"/dev/zero\"\n}\n",
    );
    let r = run_guarded(&p, &["validate"]);
    assert_invalid(&r, "template \"t.j2\" is a FIFO, not a regular file");
    assert!(
        r.stderr
            .contains("source \"/dev/zero\" is a device, not a regular file"),
        "{r:?}"
    );
}
// --- 5. many errors ------------------------------------------------------------------------------

#[test]
fn twenty_thousand_errors_print_the_first_in_full_then_a_count() {
    let p = Project::new();
    let text: String = (0..20_000)
        .map(|i| format!("task \"t{i}\" {{\n    package \"x\" bogus=1\n}}\n"))
        .collect();
    p.config(&text);
    let r = run_guarded(&p, &["validate"]);
    assert_eq!(r.code, 3, "{r:?}");
    let shown = r.stderr.matches("config::unknown-property").count();
    assert_eq!(shown, 50, "{}", &r.stderr[r.stderr.len() - 300..]);
    assert!(
        r.stderr.ends_with(
            "… and 19950 more errors (all of them: nexus validate --format json)\nerror: configuration is invalid: 20000 errors\n"
        ),
        "{}",
        &r.stderr[r.stderr.len() - 300..]
    );
    let r = run_guarded(&p, &["validate", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["errors"].as_array().unwrap().len(), 20_000);
}

#[test]
fn undefined_references_name_a_few_definitions_not_all() {
    let p = Project::new();
    let text: String = (0..400)
        .map(|i| format!("task \"t{i}\" deps=\"missing-{i}\" {{\n    package \"x\"\n}}\n"))
        .collect();
    p.config(&text);
    let r = run_guarded(&p, &["validate", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 400);
    let help = errors[399]["help"].as_str().unwrap();
    assert!(help.ends_with("t8, t9, … (400 in all)"), "{help}");
}

/// Found by the hostile fuzz bench: minijinja 2.24 panics ("empty lexer stack") on a `}}` in the
/// middle of a standalone expression.
#[test]
fn when_with_a_tag_close_is_an_error_not_a_panic() {
    let p = Project::new();
    p.config("host \"web\" \"10.0.0.1\"\ntask \"t\" on=\"web\" when=\"a }} b\" {\n    package \"x\"\n}\n");
    let r = p.nexus(&["validate"]);
    assert_invalid(&r, "expression contains `}}`");
    assert!(r.stderr.contains("config::invalid-expression"), "{r:?}");
}

/// Found by the hostile fuzz bench (config case 90 of seed 14): the fast parser rejects the broken
/// string, and the `kdl` crate, asked for the diagnostics, read the braces after it as 300 nested
/// blocks and overflowed the stack (SIGABRT).
#[test]
fn broken_string_before_many_braces_is_an_error_not_a_crash() {
    let p = Project::new();
    p.config("host \"web1\" \"deploy@192.0.2.10\" become=#true sudo-password=\"hunter on=\"web1\" { comma{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{ntask \"e\"task \"x\" deps=\"nope\" { package \"p\" bogus=1; }\n { package \"x\" nope=1; }\ntask \"e\" { package \"x\" nope=1; }\ntask \"e\" { package \"x\" nope=1; }\nd \"true\" }\n");
    let r = p.nexus(&["validate"]);
    assert_invalid(&r, "too deep to diagnose");
}

/// Found by the hostile fuzz bench (config cases 2647, 2926, 4374): after the fast parser
/// rejects a file, the `kdl` crate's error recovery recurses once per syntax error, and thousands
/// of errors overflowed the stack (SIGABRT). Here every `}` is an error of its own: 100,000 of
/// them fit the diagnostics window and are all reported (as a count); 2,000,000 do not, and the
/// report stops where checking stopped.
#[test]
fn a_hundred_thousand_syntax_errors_are_reported_not_a_crash() {
    let p = Project::new();
    p.config(&format!(
        "host \"web\" \"10.0.0.1\"\n{}\n",
        "}".repeat(100_000)
    ));
    let r = run_guarded(&p, &["validate"]);
    assert_invalid(&r, "nexus.kdl:2:1");
    assert!(!r.stderr.contains("not checked in detail"), "{r:?}");

    p.config(&format!(
        "host \"web\" \"10.0.0.1\"\n{}\n",
        "}}}}}}}} x=\"\n".repeat(250_000)
    ));
    let r = run_guarded(&p, &["validate"]);
    assert_invalid(&r, "nexus.kdl:2:1");
    // The last diagnostic, past the ones printed in full: where detailed checking stopped.
    let r = run_guarded(&p, &["validate", "--format", "json"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("not checked in detail past this point"),
        "{}",
        &all[all.len().saturating_sub(2000)..]
    );
}

/// Found by the hostile fuzz bench (config case 240 of seed 14): miette panics ("Formatting
/// argument out of range") drawing a label past column 65,535.
#[test]
fn error_past_column_65535_is_reported_not_a_panic() {
    let p = Project::new();
    p.config(&format!(
        "host \"h\" \"10.0.0.1\"{} bogus=1\n",
        " ".repeat(70_000)
    ));
    let r = p.nexus(&["validate"]);
    assert_invalid(&r, "config::unknown-property");
    assert!(r.stderr.contains("nexus.kdl:1:70021"), "{r:?}");
    assert!(r.stderr.len() < 2_000, "the 70,000-column line was printed");
}
