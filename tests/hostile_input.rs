//! Hostile input (issue 14): the real binary against configurations, imports and templates built
//! to crash it, exhaust its memory, block it or slip shell words past validation. Each must end in
//! a clean error with the documented exit code (3 for an invalid configuration), never a signal.

mod harness;

use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::project::{Project, Run};

/// `nexus validate` must stop by itself; a run still going after this long is blocked (on a FIFO,
/// or reading without end) and is killed so the test reports it instead of hanging.
const BLOCKED: Duration = Duration::from_secs(120);

fn run_guarded(p: &Project, args: &[&str]) -> Run {
    let mut child = p
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nexus");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > BLOCKED {
            child.kill().expect("kill");
            let out = child.wait_with_output().expect("wait");
            panic!(
                "nexus {args:?} was still running after {BLOCKED:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("wait");
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
