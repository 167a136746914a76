//! Integration tests of the `nexus` binary: commands, flags, formats and exit codes, each run in a
//! fresh temporary directory. Pinned outputs of `list`, `graph` and `validate` are in
//! tests/golden.rs; these check behaviour.

mod harness;

use harness::project::Project;

/// Exit codes from src/exit.rs (documented in docs/cli.md).
const OK: i32 = 0;
const FAILED: i32 = 1;
const INVALID_CONFIG: i32 = 3;
const USAGE: i32 = 64;

/// An empty project where nexus runs without `-c` and without `NO_COLOR`, as a user would.
fn tmp() -> Project {
    Project::new().no_config_arg().env_remove("NO_COLOR")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

const VALID: &str = r#"
host "web1" "deploy@192.0.2.10"
host "web2" "deploy@192.0.2.11"
group "web" "web1" "web2"

task "build" description="Build the release" {
    command "make release"
}

task "deploy" on="web" deps="build" strategy="serial" {
    command "./deploy.sh"
}

task "smoke" on="web" deps="deploy" {
    command "curl -fsS http://localhost/health"
}
"#;

/// Two errors on two lines, so that "every error at once" is visible.
const INVALID: &str = r#"host "web1" "192.0.2.10" port="22"
task "deploy" on="webb" {
    command "./deploy.sh"
}
"#;

fn valid_dir() -> Project {
    let d = tmp();
    d.write("nexus.kdl", VALID);
    d
}

#[test]
fn version_and_help() {
    let d = tmp();
    let r = d.nexus(&["--version"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert_eq!(
        r.stdout.trim(),
        format!("nexus {}", env!("CARGO_PKG_VERSION")),
        "{r:?}"
    );
    let r = d.nexus(&["--help"]);
    assert_eq!(r.code, OK, "{r:?}");
    for cmd in ["init", "validate", "list", "graph", "completions"] {
        assert!(r.stdout.contains(cmd), "help lists {cmd}: {r:?}");
    }
}

#[test]
fn init_writes_a_config_that_validates() {
    let d = tmp();
    let r = d.nexus(&["init"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(r.stdout.contains("Created nexus.kdl"), "{r:?}");
    assert!(d.path("nexus.kdl").is_file());
    assert!(
        !d.path("nexus.kdl.tmp").exists(),
        "no temporary file is left behind"
    );

    let r = d.nexus(&["validate"]);
    assert_eq!(r.code, OK, "the starter config validates: {r:?}");
    assert!(
        r.stdout.starts_with("Configuration valid: nexus.kdl\n"),
        "{r:?}"
    );
    // The starter's task is listed and graphed too.
    let r = d.nexus(&["list"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(r.stdout.contains("Tasks (1):"), "{r:?}");
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let d = tmp();
    let path = d.path("nexus.kdl");
    let mine = "// my own config\ntask \"mine\" {\n    command \"true\"\n}\n";
    d.write("nexus.kdl", mine);

    let r = d.nexus(&["init"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("already exists"), "{r:?}");
    assert!(
        r.stderr.contains("--force"),
        "the error names the way out: {r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        mine,
        "file unchanged"
    );

    let r = d.nexus(&["init", "--force"]);
    assert_eq!(r.code, OK, "{r:?}");
    let written = std::fs::read_to_string(&path).unwrap();
    assert_ne!(written, mine, "--force overwrites");
    assert_eq!(d.nexus(&["validate"]).code, OK);
}

#[test]
fn init_honours_config_path_and_quiet() {
    let d = tmp();
    let r = d.nexus(&["-q", "init", "-c", "deploy/site.kdl"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert_eq!(r.stdout, "", "-q prints nothing: {r:?}");
    assert!(
        d.path("deploy/site.kdl").is_file(),
        "parent directories are created"
    );
    let r = d.nexus(&["validate", "-c", "deploy/site.kdl"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(
        r.stdout.contains("Configuration valid: deploy/site.kdl"),
        "{r:?}"
    );
}

#[test]
fn validate_prints_file_and_summary() {
    let d = valid_dir();
    let r = d.nexus(&["validate"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert_eq!(
        r.stdout,
        "Configuration valid: nexus.kdl\nSummary: Tasks: 3, Hosts: 2, Groups: 1, Handlers: 0, Resources: 3\n"
    );
    assert_eq!(r.stderr, "", "{r:?}");
}

#[test]
fn config_comes_from_flag_or_environment() {
    let d = tmp();
    d.write("conf/site.kdl", VALID);
    let r = d.nexus(&["validate", "--config", "conf/site.kdl"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(
        r.stdout.contains("Configuration valid: conf/site.kdl"),
        "{r:?}"
    );

    let r = d.nexus_with(&["validate"], "", &[("NEXUS_CONFIG", "conf/site.kdl")]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(
        r.stdout.contains("Configuration valid: conf/site.kdl"),
        "{r:?}"
    );
}

#[test]
fn quiet_suppresses_validate_output() {
    let d = valid_dir();
    let r = d.nexus(&["-q", "validate"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
    // Errors are still reported under -q.
    d.write("bad.kdl", INVALID);
    let r = d.nexus(&["validate", "-q", "-c", "bad.kdl"]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    assert!(r.stderr.contains("configuration is invalid"), "{r:?}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let d = tmp();
    let r = d.nexus(&["validate", "--no-color"]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(
        r.stderr
            .contains("cannot read config file nexus.kdl: no such file"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("nexus init"),
        "the hint names init: {r:?}"
    );

    for cmd in ["list", "graph"] {
        let r = d.nexus(&[cmd, "-c", "nope.kdl"]);
        assert_eq!(r.code, INVALID_CONFIG, "{cmd}: {r:?}");
        assert!(r.stderr.contains("nope.kdl"), "{cmd}: {r:?}");
    }
}

#[test]
fn invalid_config_reports_every_error_with_location() {
    let d = tmp();
    d.write("nexus.kdl", INVALID);
    let r = d.nexus(&["validate", "--no-color"]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(r.stderr.contains("nexus.kdl:1:26"), "{r:?}");
    assert!(r.stderr.contains("nexus.kdl:2:15"), "{r:?}");
    assert!(r.stderr.contains("did you mean `web1`?"), "{r:?}");
    assert!(
        r.stderr
            .trim_end()
            .ends_with("configuration is invalid: 2 errors"),
        "{r:?}"
    );
    // list and graph refuse an invalid config the same way.
    for cmd in ["list", "graph"] {
        let r = d.nexus(&[cmd]);
        assert_eq!(r.code, INVALID_CONFIG, "{cmd}: {r:?}");
        assert!(r.stderr.contains("2 errors"), "{cmd}: {r:?}");
    }
}

#[test]
fn validate_json_on_a_valid_config() {
    let d = valid_dir();
    let r = d.nexus(&["validate", "--format", "json"]);
    assert_eq!(r.code, OK, "{r:?}");
    let v = json(&r.stdout);
    assert_eq!(v["valid"], true);
    assert_eq!(v["file"], "nexus.kdl");
    assert_eq!(v["tasks"], 3);
    assert_eq!(v["hosts"], 2);
    assert_eq!(v["groups"], 1);
    assert_eq!(v["files"], serde_json::json!(["nexus.kdl"]));
}

#[test]
fn validate_json_on_an_invalid_config() {
    let d = tmp();
    d.write("nexus.kdl", INVALID);
    let r = d.nexus(&["validate", "--format", "json"]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    assert_eq!(r.stderr, "", "JSON mode keeps stderr clean: {r:?}");
    let v = json(&r.stdout);
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 2, "{v:#}");
    assert_eq!(errors[0]["file"], "nexus.kdl");
    assert_eq!(errors[0]["line"], 1);
    assert_eq!(errors[0]["column"], 26);
    assert_eq!(errors[0]["code"], "config::wrong-type");
    assert_eq!(errors[1]["line"], 2);
    assert_eq!(errors[1]["column"], 15);
    assert_eq!(errors[1]["code"], "config::undefined-reference");
    for e in errors {
        assert!(e["message"].is_string() && e["help"].is_string(), "{e:#}");
    }

    // A missing file is JSON too, without a location.
    let r = d.nexus(&["validate", "--format", "json", "-c", "nope.kdl"]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    let v = json(&r.stdout);
    assert_eq!(v["errors"][0]["code"], "config::not-found");
    assert_eq!(v["errors"][0]["file"], serde_json::Value::Null);
}

#[test]
fn unsupported_format_is_a_usage_error() {
    let d = valid_dir();
    let r = d.nexus(&["validate", "--format", "markdown"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(r.stderr.contains("--format markdown"), "{r:?}");
    assert!(
        r.stderr.contains("text, json"),
        "names the supported formats: {r:?}"
    );

    let r = d.nexus(&["list", "--format", "dot"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    let r = d.nexus(&["graph", "--format", "yaml"]);
    assert_eq!(r.code, USAGE, "unknown format value: {r:?}");
}

#[test]
fn unknown_flag_or_command_is_a_usage_error() {
    let d = valid_dir();
    let r = d.nexus(&["validate", "--bogus"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    assert!(r.stderr.contains("--bogus"), "{r:?}");
    let r = d.nexus(&["frobnicate"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    let r = d.nexus(&[]);
    assert_eq!(r.code, USAGE, "no command: {r:?}");
    let r = d.nexus(&["-q", "-v", "validate"]);
    assert_eq!(r.code, USAGE, "-q and -v conflict: {r:?}");
}

#[test]
fn list_text_and_json() {
    let d = valid_dir();
    let r = d.nexus(&["list"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(r.stdout.starts_with("Tasks (3):\n"), "{r:?}");
    assert!(
        r.stdout
            .contains("deploy  on web (web1, web2)  deps: build  strategy: serial"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("Build the release"),
        "descriptions are listed: {r:?}"
    );
    assert!(r.stdout.contains("Hosts (2):"), "{r:?}");
    assert!(r.stdout.contains("Groups (1):"), "{r:?}");

    let r = d.nexus(&["list", "--format", "json"]);
    assert_eq!(r.code, OK, "{r:?}");
    let v = json(&r.stdout);
    let names: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "deploy", "smoke"]);
    assert_eq!(v["tasks"][1]["hosts"], serde_json::json!(["web1", "web2"]));
    assert_eq!(v["tasks"][1]["strategy"], "serial");
    assert_eq!(v["hosts"][0]["user"], "deploy");
    assert_eq!(
        v["groups"][0]["members"],
        serde_json::json!(["web1", "web2"])
    );
}

#[test]
fn graph_dot_text_json_and_subset() {
    let d = valid_dir();
    let r = d.nexus(&["graph"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(
        r.stdout.starts_with("digraph nexus {"),
        "DOT by default: {r:?}"
    );
    assert!(r.stdout.contains("\"build\" -> \"deploy\";"), "{r:?}");
    assert!(r.stdout.contains("\"deploy\" -> \"smoke\";"), "{r:?}");
    assert!(r.stdout.trim_end().ends_with('}'), "{r:?}");

    let r = d.nexus(&["graph", "--format", "text"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert_eq!(
        r.stdout,
        "Phase 1: build\nPhase 2: deploy\nPhase 3: smoke\n"
    );

    let r = d.nexus(&["graph", "--format", "json"]);
    assert_eq!(r.code, OK, "{r:?}");
    let v = json(&r.stdout);
    assert_eq!(
        v["phases"],
        serde_json::json!([["build"], ["deploy"], ["smoke"]])
    );

    // A subset: the named tasks and what they depend on, nothing downstream.
    let r = d.nexus(&["graph", "--format", "text", "deploy"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert_eq!(r.stdout, "Phase 1: build\nPhase 2: deploy\n");
    let r = d.nexus(&["graph", "deploy"]);
    assert!(!r.stdout.contains("smoke"), "{r:?}");
}

#[test]
fn graph_unknown_task_is_a_usage_error_with_suggestion() {
    let d = valid_dir();
    let r = d.nexus(&["graph", "deplyo"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(r.stderr.contains("unknown task `deplyo`"), "{r:?}");
    assert!(r.stderr.contains("did you mean `deploy`?"), "{r:?}");

    let r = d.nexus(&["graph", "nosuchtask"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    assert!(
        r.stderr.contains("build, deploy, smoke"),
        "without a close match, the tasks are listed: {r:?}"
    );
}

#[test]
fn completions_print_a_script() {
    let d = tmp();
    let r = d.nexus(&["completions", "bash"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert!(r.stdout.contains("_nexus()"), "{r:?}");
    assert!(r.stdout.contains("complete -F _nexus"), "{r:?}");
    for shell in ["zsh", "fish"] {
        let r = d.nexus(&["completions", shell]);
        assert_eq!(r.code, OK, "{shell}: {r:?}");
        assert!(r.stdout.contains("nexus"), "{shell}: {r:?}");
    }
    let r = d.nexus(&["completions", "cmd.exe"]);
    assert_eq!(r.code, USAGE, "{r:?}");
}

#[test]
fn no_color_output_has_no_ansi_escapes() {
    let d = tmp();
    d.write("nexus.kdl", INVALID);
    let r = d.nexus(&["validate", "--no-color"]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    assert!(!r.stderr.contains('\u{1b}'), "--no-color: {r:?}");

    let r = d.nexus_with(&["validate"], "", &[("NO_COLOR", "1")]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    assert!(!r.stderr.contains('\u{1b}'), "NO_COLOR: {r:?}");
    // The same diagnostics either way.
    assert!(r.stderr.contains("nexus.kdl:1:26"), "{r:?}");

    let r = d.nexus_with(&["validate", "--bogus"], "", &[("NO_COLOR", "1")]);
    assert!(!r.stderr.contains('\u{1b}'), "usage errors too: {r:?}");
}

#[test]
fn imports_are_validated_and_reported_in_their_own_file() {
    let d = tmp();
    d.write(
        "nexus.kdl",
        "import \"hosts/web.kdl\"\ntask \"deploy\" on=\"web\" {\n    command \"./deploy.sh\"\n}\n",
    );
    d.write(
        "hosts/web.kdl",
        "host \"web1\" \"192.0.2.10\"\ngroup \"web\" \"web1\" \"web2\"\n",
    );
    let r = d.nexus(&["validate", "--no-color"]);
    assert_eq!(r.code, INVALID_CONFIG, "{r:?}");
    assert!(r.stderr.contains("hosts/web.kdl:2:20"), "{r:?}");
    assert!(r.stderr.contains("unknown member `web2`"), "{r:?}");

    d.write("hosts/web.kdl",
        "host \"web1\" \"192.0.2.10\"\nhost \"web2\" \"192.0.2.11\"\ngroup \"web\" \"web1\" \"web2\"\n",
    );
    let r = d.nexus(&["validate", "--format", "json"]);
    assert_eq!(r.code, OK, "{r:?}");
    assert_eq!(
        json(&r.stdout)["files"],
        serde_json::json!(["nexus.kdl", "hosts/web.kdl"])
    );
}
