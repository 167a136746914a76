//! The hostile fuzz cases (tests/bench/hostile) at a small N, in process, on every CI run: no
//! target may panic or overflow its stack (an overflow aborts this test binary, which fails the
//! run). The bench runs the same cases at scale, each batch in a child process, and counts.
//! `NEXUS_FUZZ_CASES=N` raises the count.

#[path = "bench/hostile/cases.rs"]
mod cases;

use std::path::Path;

#[test]
fn hostile_cases_never_panic_or_overflow() {
    let n: u64 = std::env::var("NEXUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in cases::TARGETS {
        let corpus = cases::corpus(root);
        let worker = std::thread::Builder::new()
            .stack_size(cases::stack_size(target))
            .spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let mut refused = 0;
                for case in 0..n {
                    let text = cases::input(target, 14, case, &corpus);
                    if cases::run(target, &text, dir.path()) == cases::Outcome::Refused {
                        refused += 1;
                    }
                }
                refused
            })
            .unwrap();
        let refused = worker
            .join()
            .unwrap_or_else(|_| panic!("{target}: a case panicked"));
        // The generators aim at the limits: some of their inputs must be refused.
        assert!(refused > 0, "{target}: nothing refused in {n} cases");
    }
}
