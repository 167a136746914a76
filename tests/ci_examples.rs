//! The CI examples under docs/ci/ (linked from docs/ci.md) stay valid YAML, and their jobs use
//! the documented workflow: the plan job signs (`--sign`), the apply job verifies
//! (`--allowed-signers` or NEXUS_ALLOWED_SIGNERS), both use the PostgreSQL state URL, and every
//! flag they pass to nexus is one the real binary has.

mod harness;

use harness::project::Project;

use yaml_rust2::{Yaml, YamlLoader};

fn load(name: &str) -> Yaml {
    let path = format!("{}/docs/ci/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("read the example");
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

/// Every string in `y` (scripts, run steps, variables), depth first.
fn strings(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Yaml::Hash(h) => h.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        _ => {}
    }
}

/// The `nexus SUBCOMMAND ...` command lines in `y`.
fn nexus_commands(y: &Yaml) -> Vec<String> {
    let mut all = Vec::new();
    strings(y, &mut all);
    all.iter()
        .flat_map(|s| {
            s.lines()
                .map(str::trim)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.starts_with("nexus "))
        .collect()
}

fn text(y: &Yaml) -> String {
    let mut all = Vec::new();
    strings(y, &mut all);
    all.join("\n")
}

/// Every `--flag` of `line` is in `nexus SUBCOMMAND --help`.
fn assert_flags_exist(line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let sub = words[1];
    let r = Project::new().no_config_arg().nexus(&[sub, "--help"]);
    assert!(r.success(), "nexus {sub} --help: {r:?}");
    let help = r.stdout;
    for w in words.iter().filter(|w| w.starts_with("--")) {
        let flag = w.split('=').next().unwrap();
        assert!(help.contains(flag), "`{line}`: nexus {sub} has no {flag}");
    }
}

/// The first job with a command line starting with `command`, and that line.
fn job_running<'a>(
    name: &str,
    jobs: &[(&'a str, &'a Yaml)],
    command: &str,
) -> ((&'a str, &'a Yaml), String) {
    jobs.iter()
        .find_map(|&job| {
            nexus_commands(job.1)
                .into_iter()
                .find(|c| c.starts_with(command))
                .map(|line| (job, line))
        })
        .unwrap_or_else(|| panic!("{name}: no job runs {command}"))
}

/// Checks the jobs of an example: `jobs` maps job names to job bodies; `global` is what every
/// job inherits (workflow-level variables).
fn check(name: &str, jobs: &[(&str, &Yaml)], global: &str) {
    let (plan, plan_line) = job_running(name, jobs, "nexus plan");
    assert!(
        plan_line.contains(" -o plan.lock") && plan_line.contains(" --sign "),
        "{name}: job {} must sign its plan: {plan_line}",
        plan.0
    );
    assert!(
        text(plan.1).contains("plan.lock.sig"),
        "{name}: job {} must keep plan.lock.sig with the plan",
        plan.0
    );
    let (apply, apply_line) = job_running(name, jobs, "nexus apply");
    let apply_text = text(apply.1);
    assert!(
        apply_line.contains(" --allowed-signers ") || apply_text.contains("NEXUS_ALLOWED_SIGNERS"),
        "{name}: job {} must verify signatures: {apply_line}",
        apply.0
    );
    for (job, body) in [plan, apply] {
        assert!(
            text(body).contains("NEXUS_STATE_URL") || global.contains("NEXUS_STATE_URL"),
            "{name}: job {job} does not set NEXUS_STATE_URL"
        );
        for line in nexus_commands(body) {
            assert_flags_exist(&line);
        }
    }
}

#[test]
fn the_github_actions_example_signs_verifies_and_shares_state() {
    let doc = load("github-actions.yml");
    let jobs = doc["jobs"].as_hash().expect("jobs");
    let jobs: Vec<(&str, &Yaml)> = jobs
        .iter()
        .map(|(k, v)| (k.as_str().expect("job name"), v))
        .collect();
    check("github-actions.yml", &jobs, &text(&doc["env"]));
}

#[test]
fn the_gitlab_example_signs_verifies_and_shares_state() {
    let doc = load("gitlab-ci.yml");
    // Top-level keys that are not jobs, as GitLab defines them.
    let reserved = [
        "stages",
        "variables",
        "default",
        "include",
        "workflow",
        "image",
    ];
    let jobs: Vec<(&str, &Yaml)> = doc
        .as_hash()
        .expect("top level")
        .iter()
        .map(|(k, v)| (k.as_str().expect("key"), v))
        .filter(|(k, v)| !reserved.contains(k) && !v["script"].is_badvalue())
        .collect();
    assert_eq!(jobs.len(), 2, "plan and apply");
    check("gitlab-ci.yml", &jobs, &text(&doc["variables"]));
}
