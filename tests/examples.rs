//! The example configurations under `examples/` and every KDL block of `docs/configuration.md` are
//! checked against the real loader, so that neither can rot as the language changes.
//!
//! - every top-level `examples/**/*.kdl` validates, with each environment its imports choose between;
//! - files under `examples/environments/` are only imported, and each is imported by some example;
//! - every ```` ```kdl ```` block of the reference validates; every ```` ```kdl,invalid ```` block fails
//!   with each code named in its `// error: config::...` comments;
//! - the reference documents every error code, top-level node and resource the loader knows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod harness;

use harness::project::Project;
use nexus::config::{self, ConfigErrors, Loaded, RenderOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn render(e: &ConfigErrors) -> String {
    e.render(RenderOptions {
        color: false,
        width: 100,
    })
}

/// Directories whose files are only ever imported by other examples.
const IMPORT_ONLY_DIRS: &[&str] = &["environments"];

/// The examples the README and the docs point at.
const REQUIRED_EXAMPLES: &[&str] = &[
    "quick-start.kdl",
    "phoenix.kdl",
    "tailscale-secrets.kdl",
    "docker-compose.kdl",
    "multi-environment.kdl",
    "rolling-canary.kdl",
    "local.kdl",
];

/// The environments an example is loaded with: what `NEXUS_ENV` says (unset, staging, production).
const ENVIRONMENTS: &[Option<&str>] = &[None, Some("staging"), Some("production")];

fn kdl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            kdl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "kdl") {
            out.push(p);
        }
    }
}

fn is_import_only(examples: &Path, p: &Path) -> bool {
    p.strip_prefix(examples)
        .expect("under examples/")
        .components()
        .any(|c| IMPORT_ONLY_DIRS.iter().any(|d| c.as_os_str() == *d))
}

/// Top-level examples and import-only files under `examples/`.
fn examples() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dir = root().join("examples");
    let mut all = Vec::new();
    kdl_files(&dir, &mut all);
    all.into_iter().partition(|p| !is_import_only(&dir, p))
}

fn load_in_env(path: &Path, nexus_env: Option<&str>) -> Loaded {
    let env = |k: &str| match k {
        "NEXUS_ENV" => nexus_env.map(str::to_string),
        _ => None,
    };
    config::load_with_env(path, &env).unwrap_or_else(|e| {
        panic!(
            "{} (NEXUS_ENV={nexus_env:?}) does not validate:\n{}",
            path.display(),
            render(&e)
        )
    })
}

#[test]
fn examples_directory_has_the_documented_examples() {
    let dir = root().join("examples");
    for name in REQUIRED_EXAMPLES {
        assert!(
            dir.join(name).is_file(),
            "examples/{name} is missing; the docs and README refer to it"
        );
    }
    let (top, _) = examples();
    assert!(top.len() >= REQUIRED_EXAMPLES.len());
}

#[test]
fn every_example_validates_in_every_environment() {
    let (top, import_only) = examples();
    let mut imported = BTreeSet::new();
    for path in &top {
        for env in ENVIRONMENTS {
            let loaded = load_in_env(path, *env);
            // The root file is the first source; the rest were imported.
            for f in loaded.sources.files().iter().skip(1) {
                imported.insert(f.path.clone());
            }
        }
    }
    for p in &import_only {
        let p = std::fs::canonicalize(p).expect("canonical path");
        assert!(
            imported.contains(&p),
            "{} is under an import-only directory but no example imports it",
            p.display()
        );
    }
}

#[test]
fn multi_environment_example_picks_the_environment_from_nexus_env() {
    let path = root().join("examples/multi-environment.kdl");
    let addresses = |env: Option<&str>| -> Vec<String> {
        let cfg = load_in_env(&path, env).config;
        assert!(
            cfg.env_used.contains_key("NEXUS_ENV"),
            "the import condition's input is recorded for the plan"
        );
        cfg.hosts.iter().map(|h| h.address.clone()).collect()
    };
    assert_eq!(
        addresses(Some("production")),
        ["prod-web1.example.com", "prod-web2.example.com"]
    );
    assert_eq!(addresses(Some("staging")), ["staging.example.com"]);
    assert_eq!(addresses(None), ["staging.example.com"]);
    let prod = load_in_env(&path, Some("production")).config;
    assert!(prod.notifiers.iter().any(|n| *n.name == "pagerduty"));
    let staging = load_in_env(&path, None).config;
    assert!(staging.notifiers.is_empty());
}

/// Hosts in the examples use documentation addresses only (RFC 5737, RFC 3849, example.com), so
/// that copying an example never points nexus at someone's real machine.
#[test]
fn examples_use_documentation_addresses_only() {
    let documentation = |a: &str| {
        ["192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:"]
            .iter()
            .any(|p| a.starts_with(p))
            || a == "example.com"
            || a.ends_with(".example.com")
    };
    let (top, _) = examples();
    for path in &top {
        for env in ENVIRONMENTS {
            let cfg = load_in_env(path, *env).config;
            for h in &cfg.hosts {
                assert!(
                    documentation(&h.address),
                    "{}: host `{}` has address {:?}; use 192.0.2.x, 198.51.100.x or *.example.com",
                    path.display(),
                    *h.name,
                    h.address
                );
            }
        }
    }
}

/// `examples/local.kdl` is what the README runs: it must stay on this machine, under /tmp, and work
/// without root.
#[test]
fn local_example_is_harmless() {
    use nexus::resources::ResourceKind as R;
    let path = root().join("examples/local.kdl");
    let loaded = load_in_env(&path, None);
    let cfg = &loaded.config;
    assert_eq!(
        loaded.sources.files().len(),
        1,
        "local.kdl is self-contained"
    );
    assert!(cfg.hosts.is_empty() && cfg.groups.is_empty() && cfg.tailscale.is_empty());
    assert!(cfg.notifiers.is_empty(), "local.kdl sends no webhooks");
    assert!(cfg.vault.is_none());
    assert_ne!(cfg.defaults.become_, Some(true), "local.kdl needs no sudo");
    assert!(!cfg.tasks.is_empty());
    let under_tmp = |p: &str| p == "/tmp/nexus-example" || p.starts_with("/tmp/nexus-example/");
    let resources = cfg
        .tasks
        .iter()
        .flat_map(|t| t.resources.iter().chain(&t.health_check))
        .chain(cfg.handlers.iter().flat_map(|h| h.resources.iter()));
    let mut kinds = BTreeSet::new();
    for task in &cfg.tasks {
        assert!(
            task.on.iter().all(|t| t.value == config::LOCAL_HOST),
            "task `{}` must run locally",
            *task.name
        );
    }
    for r in resources {
        kinds.insert(r.kind.type_name());
        assert_ne!(r.common.sudo, Some(true), "local.kdl needs no sudo");
        match &r.kind {
            R::File(f) => {
                assert!(under_tmp(&f.path), "{}", f.path);
                assert!(f.owner.is_none() && f.group.is_none(), "chown needs root");
            }
            R::Directory(d) => {
                assert!(under_tmp(&d.path), "{}", d.path);
                assert!(d.owner.is_none() && d.group.is_none(), "chown needs root");
            }
            R::Command(c) => {
                let creates = c.creates.as_deref().unwrap_or("");
                let text = &c.command;
                assert!(
                    under_tmp(creates) || text.contains("/tmp/nexus-example/"),
                    "command {text:?} should only touch /tmp/nexus-example"
                );
                assert!(c.user.is_none(), "switching users needs root");
            }
            other => panic!(
                "local.kdl must only use file, directory and command resources, found {}",
                other.type_name()
            ),
        }
    }
    for kind in ["directory", "file", "command"] {
        assert!(kinds.contains(kind), "local.kdl shows a `{kind}` resource");
    }
    let template = cfg.tasks.iter().flat_map(|t| &t.resources).any(|r| {
        matches!(
            &r.kind,
            R::File(nexus::resources::file::Spec {
                content: Some(nexus::resources::file::FileContent::Template { .. }),
                ..
            })
        )
    });
    assert!(template, "local.kdl shows a file rendered from a template");
}

#[test]
fn local_example_validates_with_the_binary() {
    let r = Project::at(&root())
        .config_arg(root().join("examples/local.kdl"))
        .env_remove("NEXUS_ENV")
        .nexus(&["validate"]);
    assert!(r.success(), "nexus validate failed:\n{r:?}");
    assert!(r.stdout.contains("Configuration valid"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// docs/configuration.md

const DOC: &str = "docs/configuration.md";

/// A fenced code block of the reference.
struct Block {
    info: String,
    /// 1-based line of the opening fence.
    line: usize,
    text: String,
}

fn doc_text() -> String {
    std::fs::read_to_string(root().join(DOC)).expect("docs/configuration.md exists")
}

/// Fenced blocks (```` ``` ```` at the start of a line) with their info strings.
fn fenced_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match open.take() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some(Block {
                        info: info.trim().to_string(),
                        line: i + 1,
                        text: String::new(),
                    });
                }
            }
            Some(mut b) => {
                if line.trim_end() == "```" {
                    blocks.push(b);
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                    open = Some(b);
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "{DOC}: a code block is never closed (opened at line {})",
        open.map_or(0, |b| b.line)
    );
    blocks
}

/// Local files a block refers to (imports, `source`, `template`, upload sources), so that the test
/// can create them next to the block: the reference shows configurations, not their companion files.
fn referenced_local_files(text: &str) -> Vec<String> {
    let Ok(doc) = kdl::KdlDocument::parse_v2(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect_refs(doc.nodes(), &mut out);
    out
}

fn collect_refs(nodes: &[kdl::KdlNode], out: &mut Vec<String>) {
    let strings = |n: &kdl::KdlNode| -> Vec<String> {
        n.entries()
            .iter()
            .filter(|e| e.name().is_none())
            .filter_map(|e| e.value().as_string().map(str::to_string))
            .collect()
    };
    for n in nodes {
        match n.name().value() {
            "import" | "source" | "template" => out.extend(strings(n)),
            "upload" => out.extend(strings(n).into_iter().take(1)),
            _ => {}
        }
        for e in n.entries() {
            if let Some(name) = e.name()
                && matches!(name.value(), "source" | "template")
                && let Some(s) = e.value().as_string()
            {
                out.push(s.to_string());
            }
        }
        if let Some(children) = n.children() {
            collect_refs(children.nodes(), out);
        }
    }
}

/// Writes a block as `nexus.kdl` in a fresh directory, with empty stand-ins for the local files it
/// names, and loads it with an empty environment.
fn load_block(b: &Block) -> (tempfile::TempDir, Result<Loaded, ConfigErrors>) {
    let dir = tempfile::tempdir().expect("temp dir");
    for rel in referenced_local_files(&b.text) {
        let p = dir.path().join(&rel);
        assert!(
            p.starts_with(dir.path()),
            "{DOC}:{}: example refers to {rel:?}; use a relative path in examples",
            b.line
        );
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        if !p.exists() {
            std::fs::write(&p, "").expect("write stand-in file");
        }
    }
    let path = dir.path().join("nexus.kdl");
    std::fs::write(&path, &b.text).expect("write block");
    let res = config::load_with_env(&path, &|_| None);
    (dir, res)
}

/// Codes named by `// error: config::...` comments in an invalid block.
fn expected_codes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("// error:"))
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn every_kdl_block_in_the_reference_validates() {
    let blocks = fenced_blocks(&doc_text());
    let mut valid = 0;
    let mut invalid = 0;
    let mut failures = Vec::new();
    for b in &blocks {
        match b.info.as_str() {
            "kdl" => {
                valid += 1;
                let (_dir, res) = load_block(b);
                if let Err(e) = res {
                    failures.push(format!(
                        "{DOC}:{}: block does not validate:\n{}\n{}",
                        b.line,
                        b.text,
                        render(&e)
                    ));
                }
            }
            "kdl,invalid" => {
                invalid += 1;
                let codes = expected_codes(&b.text);
                if codes.is_empty() {
                    failures.push(format!(
                        "{DOC}:{}: an invalid block names the error it shows with `// error: config::CODE`",
                        b.line
                    ));
                }
                let (_dir, res) = load_block(b);
                match res {
                    Ok(_) => failures.push(format!(
                        "{DOC}:{}: block marked kdl,invalid validates:\n{}",
                        b.line, b.text
                    )),
                    Err(e) => {
                        let got: Vec<&str> = e.diags.iter().map(|d| d.code).collect();
                        for c in &codes {
                            if !got.contains(&c.as_str()) {
                                failures.push(format!(
                                    "{DOC}:{}: expected {c}, got {got:?}:\n{}",
                                    b.line,
                                    render(&e)
                                ));
                            }
                        }
                    }
                }
            }
            other if other.starts_with("kdl") => failures.push(format!(
                "{DOC}:{}: unknown block kind ```{other}; use ```kdl or ```kdl,invalid",
                b.line
            )),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(valid >= 30, "only {valid} kdl blocks found in {DOC}");
    assert!(
        invalid >= 3,
        "only {invalid} kdl,invalid blocks found in {DOC}"
    );
}

/// Every `config::` code the loader can emit has a row in the reference's table, and the table
/// lists no code that no longer exists.
#[test]
fn reference_documents_every_error_code() {
    let mut in_source = BTreeSet::new();
    // The loader's codes come from the model (config), the language (syntax) and each resource
    // type's own node (resources).
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("source directory") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["src/config", "src/syntax", "src/resources"] {
        rust_files(&root().join(dir), &mut files);
    }
    for p in files {
        let text = std::fs::read_to_string(&p).expect("read source");
        in_source.extend(config_codes(&text, "\"config::", '"'));
    }
    assert!(in_source.len() > 40, "found only {in_source:?}");
    let doc = doc_text();
    let table: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `config::"))
        .flat_map(|l| config_codes(l, "`config::", '`'))
        .collect();
    let undocumented: Vec<_> = in_source.difference(&table).collect();
    let stale: Vec<_> = table.difference(&in_source).collect();
    assert!(
        undocumented.is_empty(),
        "error codes missing from the table in {DOC}: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "{DOC} documents codes the loader never emits: {stale:?}"
    );
}

/// `config::NAME` occurrences between `open` (which ends with `config::`) and `close`.
fn config_codes(text: &str, open: &str, close: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if !name.is_empty() && after[name.len()..].starts_with(close) {
            out.push(format!("config::{name}"));
        }
        rest = after;
    }
    out
}

/// Every top-level node and resource has its own section.
#[test]
fn reference_has_a_section_per_node() {
    let doc = doc_text();
    let headings: Vec<&str> = doc.lines().filter(|l| l.starts_with("### ")).collect();
    for name in config::TOP_LEVEL
        .iter()
        .chain(nexus::resources::kind::NAMES)
    {
        assert!(
            headings.iter().any(|h| h.contains(&format!("`{name}`"))),
            "{DOC} has no section for `{name}`"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The reference's central promise: any option can be a property or a child node.

/// The model as JSON without source positions, for comparing two spellings of one configuration.
fn model_json(text: &str) -> serde_json::Value {
    fn strip_spans(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("span");
                m.values_mut().for_each(strip_spans);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip_spans),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.kdl");
    std::fs::write(&path, text).expect("write config");
    let loaded = config::load_with_env(&path, &|_| None)
        .unwrap_or_else(|e| panic!("does not validate:\n{text}\n{}", render(&e)));
    // Local paths resolve against the (temporary) directory: compare them relative to it.
    let json = serde_json::to_string(&loaded.config).expect("model serializes");
    let dir_json = serde_json::to_string(&dir.path().display().to_string()).expect("path");
    let json = json.replace(dir_json.trim_matches('"'), "<dir>");
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("json");
    strip_spans(&mut v);
    v
}

const AS_PROPERTIES: &str = r#"
defaults user="deploy" port=2222 become=#true connect-timeout="5s" parallel=4 strategy="serial" retries=1 retry-delay="1s" host-key-checking="accept-new"
vault path="secrets.vault" key-env="VAULT_KEY"
host "web1" "192.0.2.10" become=#false connect-timeout="3s" tags="web"
host "web2" address="192.0.2.11" user="ops" port=22 jump="web1"
group "web" members="web1"
tailscale "ts" tag="web" user="deploy" online-only=#false binary="/usr/bin/tailscale"
notify "ops" url=(env)"HOOK" template="generic" on="drift" timeout="5s" retries=1
handler "h" { command "true" sudo=#false; }
task "build" description="b" { command "make"; }
task "deploy" on="web" deps="build" strategy="canary" canary="10%" batch="50%" parallel=2 timeout="10m" retries=2 retry-delay="3s" tags="d" when="vars.x == '1'" continue-on-error=#true {
    package "nginx" state="latest" manager="apt" update-cache=#true label="nginx" when="facts.os == 'linux'" notify="h" sudo=#true timeout="5m" retries=3 retry-delay="2s"
    service "nginx" state="running" enabled=#true manager="systemd"
    file "/etc/motd" content=(secret)"MOTD" owner="root" group="0" mode="0644" backup=#true
    directory "/opt/app" owner="deploy" group="deploy" mode=0o755 recursive=#true
    user "app" uid=1001 group="app" groups="adm" append=#true home="/home/app" shell="/bin/sh" comment="App" system=#true create-home=#true
    group "app" gid=1001 system=#true state="present"
    command "make install" creates="/opt/app/bin" removes="/tmp/x" unless="false" onlyif="true" user="app" cwd="/opt/app"
    download "/var/log/app.log" "logs/{host}.log"
    wait-for http="http://localhost/" status=204 interval="1s" timeout="30s"
    health-check {
        wait-for tcp="127.0.0.1:80" timeout="10s"
    }
}
"#;

const AS_CHILDREN: &str = r#"
defaults {
    user "deploy"
    port 2222
    become #true
    connect-timeout "5s"
    parallel 4
    strategy "serial"
    retries 1
    retry-delay "1s"
    host-key-checking "accept-new"
}
vault {
    path "secrets.vault"
    key-env "VAULT_KEY"
}
host "web1" "192.0.2.10" {
    become #false
    connect-timeout "3s"
    tags "web"
}
host "web2" {
    address "192.0.2.11"
    user "ops"
    port 22
    jump "web1"
}
group "web" {
    members "web1"
}
tailscale "ts" {
    tag "web"
    user "deploy"
    online-only #false
    binary "/usr/bin/tailscale"
}
notify "ops" {
    url (env)"HOOK"
    template "generic"
    on "drift"
    timeout "5s"
    retries 1
}
handler "h" {
    command "true" {
        sudo #false
    }
}
task "build" {
    description "b"
    command "make"
}
task "deploy" {
    on "web"
    deps "build"
    strategy "canary"
    canary "10%"
    batch "50%"
    parallel 2
    timeout "10m"
    retries 2
    retry-delay "3s"
    tags "d"
    when "vars.x == '1'"
    continue-on-error #true
    package "nginx" {
        state "latest"
        manager "apt"
        update-cache #true
        label "nginx"
        when "facts.os == 'linux'"
        notify "h"
        sudo #true
        timeout "5m"
        retries 3
        retry-delay "2s"
    }
    service "nginx" {
        state "running"
        enabled #true
        manager "systemd"
    }
    file "/etc/motd" {
        content (secret)"MOTD"
        owner "root"
        group "0"
        mode "0644"
        backup #true
    }
    directory "/opt/app" {
        owner "deploy"
        group "deploy"
        mode 0o755
        recursive #true
    }
    user "app" {
        uid 1001
        group "app"
        groups "adm"
        append #true
        home "/home/app"
        shell "/bin/sh"
        comment "App"
        system #true
        create-home #true
    }
    group "app" {
        gid 1001
        system #true
        state "present"
    }
    command "make install" {
        creates "/opt/app/bin"
        removes "/tmp/x"
        unless "false"
        onlyif "true"
        user "app"
        cwd "/opt/app"
    }
    download "/var/log/app.log" "logs/{host}.log"
    wait-for {
        http "http://localhost/"
        status 204
        interval "1s"
        timeout "30s"
    }
    health-check {
        wait-for {
            tcp "127.0.0.1:80"
            timeout "10s"
        }
    }
}
"#;

#[test]
fn options_read_the_same_as_properties_and_as_child_nodes() {
    assert_eq!(model_json(AS_PROPERTIES), model_json(AS_CHILDREN));
}

/// `max-fail` written as a child node is read twice (`NodeR::percent` looks the option up, then
/// `NodeR::parsed` looks it up again and finds the child already consumed), so it is dropped.
#[test]
fn max_fail_reads_the_same_as_property_and_as_child_node() {
    let prop = model_json(r#"task "t" max-fail="10%" { command "true"; }"#);
    let child = model_json("task \"t\" {\n    max-fail \"10%\"\n    command \"true\"\n}\n");
    assert_eq!(prop["tasks"][0]["max_fail"], 10);
    assert_eq!(prop, child);
}
