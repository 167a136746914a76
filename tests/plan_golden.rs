//! Golden plans: scenarios planned offline from recorded facts and observed states, with their
//! renderings and plan files pinned in `golden/plans/`. After an intended change, regenerate with
//!
//! ```text
//! NEXUS_BLESS=1 cargo test --test plan_golden
//! ```
//!
//! and read `git diff golden/plans/` before committing: every plan a user can see has been read.
//!
//! A scenario is a directory `golden/plans/NAME/` holding
//!
//! - `nexus.kdl` (a comment on top says what it shows) and the local files it names;
//! - `facts/HOST.json`: the facts of every host, as `nexus facts HOST --format json` prints them;
//! - `observed.txt`: probe output per resource, in blocks headed `[HOST KEY]` (`KEY` is the planned
//!   resource's key, `TASK#N`, `TASK#checkN` or `handler:NAME#N`; `*` as HOST applies to every
//!   host without its own block). Lines are `key=value` as the probe prints them; `#` starts a
//!   comment line; `@content PATH` stands for the `size`, `sha256` and `_old_b64` lines of the
//!   scenario-relative file PATH (the current content of a remote file);
//! - optionally `args.json` (`{"tasks": [], "tags": [], "skip_tags": [], "targets": []}`) and
//!   `env.json` (`{"NAME": "value"}`; anything not listed is unset);
//! - the pinned outputs: `plan.txt` (text, no color), `plan-verbose.txt` (text with `-v`: the
//!   commands each change runs, and unchanged resources), `plan.json` (JSON rendering, pretty),
//!   `plan.md` (pull-request comment) and `plan.lock` (the plan file); or, for a scenario whose
//!   planning fails, `error.txt` with the errors, one per line.
//!
//! A resource whose key has no block, and a block no resource reads, are errors of the scenario,
//! never blessed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use nexus::facts::Facts;
use nexus::plan::{Plan, Selection, lockfile};
use nexus::planner::plan_offline;
use nexus::render::{self, TextOptions};

/// The corpus may grow but must not silently shrink below this.
const MIN_SCENARIOS: usize = 20;

fn plans_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join("plans")
}

fn blessing() -> bool {
    std::env::var_os("NEXUS_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Args {
    tasks: Vec<String>,
    tags: Vec<String>,
    skip_tags: Vec<String>,
    targets: Vec<String>,
}

/// Recorded probe output: `(host or "*", key)` → text.
type Recorded = BTreeMap<(String, String), String>;

fn parse_observed(dir: &Path, text: &str) -> Result<Recorded, String> {
    let mut out = Recorded::new();
    let mut current: Option<(String, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("observed.txt:{}", n + 1);
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[') {
            let head = head
                .strip_suffix(']')
                .ok_or_else(|| format!("{}: unclosed block header", at()))?;
            let (host, key) = head
                .split_once(' ')
                .ok_or_else(|| format!("{}: a block header is [HOST KEY]", at()))?;
            let id = (host.to_string(), key.trim().to_string());
            if out.insert(id.clone(), String::new()).is_some() {
                return Err(format!("{}: block [{host} {}] appears twice", at(), id.1));
            }
            current = Some(id);
            continue;
        }
        let Some(id) = &current else {
            return Err(format!(
                "{}: a line before the first [HOST KEY] block",
                at()
            ));
        };
        let body = out.get_mut(id).expect("current block exists");
        if let Some(path) = line.strip_prefix("@content ") {
            let bytes = std::fs::read(dir.join(path.trim()))
                .map_err(|e| format!("{}: @content {path}: {e}", at()))?;
            body.push_str(&format!(
                "size={}\nsha256={}\n_old_b64={}\n",
                bytes.len(),
                nexus::resources::file::sha256_hex(&bytes),
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            ));
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    Ok(out)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Plans a scenario directory. `Err` is a broken scenario (not blessable); `Ok(Err(text))` is a
/// planning failure, pinned as `error.txt`.
fn plan_scenario(dir: &Path) -> Result<Result<Plan, String>, String> {
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text =
        std::fs::read_to_string(dir.join("nexus.kdl")).map_err(|e| format!("nexus.kdl: {e}"))?;
    // `load_str` names the file `nexus.kdl`, so every location in the plan is relative.
    let loaded = nexus::config::load_str(&text, "nexus.kdl", &dir).map_err(|e| {
        format!(
            "nexus.kdl is invalid:\n{}",
            e.render(nexus::config::RenderOptions {
                color: false,
                width: 100
            })
        )
    })?;
    let env: BTreeMap<String, Option<String>> =
        read_json(&dir.join("env.json"))?.unwrap_or_default();
    let inputs = nexus::app::inputs::collect(&loaded, &|k| env.get(k).cloned().flatten())
        .map_err(|e| e.to_string())?;
    let args: Args = read_json(&dir.join("args.json"))?.unwrap_or_default();
    let selection = Selection {
        tasks: args.tasks,
        targets: args.targets,
        tags: args.tags,
        skip_tags: args.skip_tags,
    };
    let mut facts = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("facts")) {
        for e in rd {
            let p = e.map_err(|e| e.to_string())?.path();
            let Some(host) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let f: Facts = read_json(&p)?.expect("listed file exists");
            facts.insert(host.to_string(), f);
        }
    }
    let observed_text = std::fs::read_to_string(dir.join("observed.txt")).unwrap_or_default();
    let recorded = parse_observed(&dir, &observed_text)?;
    let used: RefCell<BTreeSet<(String, String)>> = RefCell::default();
    let missing: RefCell<Vec<String>> = RefCell::default();
    let observed = |host: &str, key: &str| -> String {
        for id in [
            (host.to_string(), key.to_string()),
            ("*".to_string(), key.to_string()),
        ] {
            if let Some(t) = recorded.get(&id) {
                used.borrow_mut().insert(id);
                return t.clone();
            }
        }
        missing.borrow_mut().push(format!("[{host} {key}]"));
        String::new()
    };
    let result = plan_offline(&loaded, "nexus.kdl", selection, &inputs, &facts, &observed);
    let missing = missing.into_inner();
    if !missing.is_empty() {
        return Err(format!(
            "observed.txt has no block for {} (add the probe output for each)",
            missing.join(", ")
        ));
    }
    let used = used.into_inner();
    let unused: Vec<String> = recorded
        .keys()
        .filter(|id| !used.contains(*id))
        .map(|(h, k)| format!("[{h} {k}]"))
        .collect();
    // A failed plan stops probing at the first broken host, so stale blocks are only reported
    // for plans that succeed.
    if result.is_ok() && !unused.is_empty() {
        return Err(format!(
            "observed.txt blocks no resource reads: {}",
            unused.join(", ")
        ));
    }
    Ok(result.map_err(|errors| errors.iter().map(|e| format!("{e}\n")).collect()))
}

/// The pinned files of a successful plan.
fn renderings(plan: &Plan) -> Vec<(&'static str, Vec<u8>)> {
    let text = render::text::plan(
        plan,
        &TextOptions {
            color: false,
            width: 100,
            verbose: 0,
        },
    );
    let verbose = render::text::plan(
        plan,
        &TextOptions {
            color: false,
            width: 100,
            verbose: 1,
        },
    );
    let mut json = serde_json::to_string_pretty(&render::json::plan(plan, None)).expect("json");
    json.push('\n');
    vec![
        ("plan.txt", text.into_bytes()),
        ("plan-verbose.txt", verbose.into_bytes()),
        ("plan.json", json.into_bytes()),
        ("plan.md", render::markdown::plan(plan).into_bytes()),
        ("plan.lock", lockfile::encode(plan)),
    ]
}

const OUTPUTS: [&str; 6] = [
    "plan.txt",
    "plan-verbose.txt",
    "plan.json",
    "plan.md",
    "plan.lock",
    "error.txt",
];

/// First difference between two texts, with a little context.
fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let (e, a) = (
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(actual),
    );
    let (el, al): (Vec<&str>, Vec<&str>) = (e.lines().collect(), a.lines().collect());
    let i = el
        .iter()
        .zip(&al)
        .position(|(x, y)| x != y)
        .unwrap_or(el.len().min(al.len()));
    let show = |ls: &[&str]| {
        ls.iter()
            .skip(i.saturating_sub(2))
            .take(5)
            .map(|l| format!("    | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "  at line {}\n  expected:\n{}\n  actual:\n{}",
        i + 1,
        show(&el),
        show(&al)
    )
}

fn scenarios() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(plans_dir())
        .expect("golden/plans exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_plans() {
    let bless = blessing();
    let mut failures = Vec::new();
    let dirs = scenarios();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let outputs: Vec<(&str, Vec<u8>)> = match plan_scenario(dir) {
            Err(e) => {
                failures.push(format!("{name}: broken scenario: {e}"));
                continue;
            }
            Ok(Ok(plan)) => renderings(&plan),
            Ok(Err(errors)) => vec![("error.txt", errors.into_bytes())],
        };
        let produced: BTreeSet<&str> = outputs.iter().map(|(f, _)| *f).collect();
        for (file, actual) in &outputs {
            let path = dir.join(file);
            let expected = std::fs::read(&path).ok();
            if expected.as_deref() == Some(actual.as_slice()) {
                continue;
            }
            if bless {
                std::fs::write(&path, actual).expect("write golden file");
            } else {
                match expected {
                    None => failures.push(format!("{name}/{file} is missing")),
                    Some(e) => failures.push(format!(
                        "{name}/{file} differs:\n{}",
                        first_difference(&e, actual)
                    )),
                }
            }
        }
        for stale in OUTPUTS
            .iter()
            .filter(|f| !produced.contains(*f) && dir.join(f).exists())
        {
            if bless {
                std::fs::remove_file(dir.join(stale)).expect("remove stale golden file");
            } else {
                failures.push(format!(
                    "{name}/{stale} exists but the scenario no longer produces it"
                ));
            }
        }
    }
    if dirs.len() < MIN_SCENARIOS {
        failures.push(format!(
            "only {} scenarios in golden/plans (at least {MIN_SCENARIOS} expected)",
            dirs.len()
        ));
    }
    if !failures.is_empty() {
        let hint = if failures
            .iter()
            .any(|f| f.contains(" differs:") || f.contains("is missing"))
        {
            "\n\nif the new output is intended, regenerate with `NEXUS_BLESS=1 cargo test --test plan_golden` and review `git diff golden/plans/`"
        } else {
            ""
        };
        panic!(
            "{} golden plan failure(s):\n\n{}{hint}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

/// Each pinned plan file decodes to a plan whose renderings are the pinned ones: `nexus show`
/// of a saved plan prints what `nexus plan` printed.
#[test]
fn pinned_plan_files_render_as_pinned() {
    if blessing() {
        return;
    }
    for dir in scenarios() {
        let Ok(bytes) = std::fs::read(dir.join("plan.lock")) else {
            continue;
        };
        let plan = lockfile::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (file, actual) in renderings(&plan) {
            let expected = std::fs::read(dir.join(file)).unwrap();
            assert!(
                expected == actual,
                "{}/{file}: rendering the decoded plan differs",
                dir.display()
            );
        }
    }
}

// Determinism: the same inputs give the same bytes; any changed input changes the hash.

/// Copies a scenario to a temporary directory so a test can change one input.
fn copy_scenario(name: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    copy(&plans_dir().join(name), tmp.path());
    tmp
}

fn plan_of(dir: &Path) -> Plan {
    match plan_scenario(dir) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => panic!("{}: planning failed:\n{e}", dir.display()),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} does not contain {from:?}",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The scenario the determinism tests vary: a template with a variable and facts, a source file,
/// and several hosts.
const VARIED: &str = "determinism-inputs";

#[test]
fn planning_twice_gives_identical_bytes() {
    let dir = plans_dir().join(VARIED);
    let (a, b) = (plan_of(&dir), plan_of(&dir));
    assert_eq!(lockfile::encode(&a), lockfile::encode(&b));
    // And from another directory: nothing of the machine's paths leaks into the plan.
    let copy = copy_scenario(VARIED);
    assert_eq!(
        lockfile::encode(&plan_of(copy.path())),
        lockfile::encode(&a)
    );
    for (x, y) in renderings(&a)
        .into_iter()
        .zip(renderings(&plan_of(copy.path())))
    {
        assert_eq!(x, y);
    }
}

#[test]
fn every_input_changes_the_hash() {
    let base = plan_of(&plans_dir().join(VARIED));
    let hash = lockfile::hash(&base);
    let check = |what: &str, change: &dyn Fn(&Path), part: &dyn Fn(&Plan, &Plan) -> bool| {
        let tmp = copy_scenario(VARIED);
        change(tmp.path());
        let p = plan_of(tmp.path());
        assert_ne!(
            lockfile::hash(&p),
            hash,
            "changing {what} must change the plan hash"
        );
        assert!(
            part(&base, &p),
            "changing {what} must change the part of the plan it affects"
        );
    };
    check(
        "the config text",
        &|d| {
            edit(
                &d.join("nexus.kdl"),
                "// Varied by",
                "// (edited) Varied by",
            )
        },
        &|a, b| a.inputs.config != b.inputs.config,
    );
    check(
        "a source file's bytes",
        &|d| edit(&d.join("files/banner.txt"), "Authorized", "authorized"),
        &|a, b| a.inputs.files != b.inputs.files && a.blobs != b.blobs,
    );
    check(
        "a template variable",
        &|d| edit(&d.join("env.json"), "\"2.4.1\"", "\"2.4.2\""),
        &|a, b| a.blobs != b.blobs && a.hosts[0].resources != b.hosts[0].resources,
    );
    check(
        "a fact",
        &|d| {
            edit(
                &d.join("facts/web2.json"),
                "\"cpu_count\": 4",
                "\"cpu_count\": 8",
            )
        },
        &|a, b| a.hosts[1].facts_digest != b.hosts[1].facts_digest && a.blobs != b.blobs,
    );
    check(
        "an observed value",
        &|d| edit(&d.join("observed.txt"), "mode=0750", "mode=0755"),
        &|a, b| {
            a.hosts.iter().zip(&b.hosts).any(|(x, y)| {
                x.resources
                    .iter()
                    .zip(&y.resources)
                    .any(|(r, s)| r.fingerprint != s.fingerprint)
            })
        },
    );
}

#[test]
fn a_missing_observed_block_is_a_clear_error() {
    let tmp = copy_scenario(VARIED);
    let path = tmp.path().join("observed.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    // Drop the first block: from its header to the next one.
    let first_header = text.find('[').unwrap();
    let second = first_header + text[first_header..].find("\n[").unwrap();
    let trimmed = format!("{}{}", &text[..first_header], &text[second + 1..]);
    std::fs::write(&path, trimmed).unwrap();
    let err = plan_scenario(tmp.path()).expect_err("a scenario with a missing block is broken");
    assert!(err.contains("observed.txt has no block for ["), "{err}");
}

// Renderings beyond the pinned defaults.

/// Plans `config` (with `templates/big.j2` holding `template`) for `hosts`, every resource absent.
fn generated_plan(config: &str, template: &str, hosts: &[String]) -> Plan {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("templates")).unwrap();
    std::fs::write(tmp.path().join("templates/big.j2"), template).unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let loaded =
        nexus::config::load_str(config, "nexus.kdl", &dir).expect("generated config is valid");
    let inputs = nexus::app::inputs::collect(&loaded, &|_| None).unwrap();
    let base: Facts = read_json(&plans_dir().join("no-changes/facts/web1.json"))
        .unwrap()
        .unwrap();
    let facts = hosts
        .iter()
        .map(|h| {
            (
                h.clone(),
                Facts {
                    hostname: h.clone(),
                    ..base.clone()
                },
            )
        })
        .collect();
    plan_offline(
        &loaded,
        "nexus.kdl",
        Selection::default(),
        &inputs,
        &facts,
        &|_, _| "exists=false".into(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn markdown_of_a_huge_plan_stays_under_the_comment_limit() {
    let hosts: Vec<String> = (1..=40).map(|i| format!("web{i:02}")).collect();
    let mut config = String::new();
    for h in &hosts {
        config.push_str(&format!("host \"{h}\" \"{h}.example.com\"\n"));
    }
    config.push_str(&format!(
        "group \"web\" {}\n",
        hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    for t in 0..3 {
        config.push_str(&format!("task \"t{t}\" on=\"web\" {{\n"));
        for f in 0..10 {
            config.push_str(&format!(
                "    file \"/etc/app/t{t}-{f}.conf\" template=\"templates/big.j2\"\n"
            ));
        }
        config.push_str("}\n");
    }
    // Host-specific content, so nothing collapses: 1,200 distinct changes with diffs.
    let template = "{% for i in range(40) %}{{ facts.hostname }} line {{ i }}: some configuration value\n{% endfor %}";
    let plan = generated_plan(&config, template, &hosts);
    assert_eq!(plan.summary.create, 1200);
    let md = render::markdown::plan(&plan);
    let chars = md.chars().count();
    assert!(chars <= 65_000, "{chars} characters");
    assert!(
        chars > 50_000,
        "the budget is used, not wasted: {chars} characters"
    );
    let shown = md.matches("**`+ create`**").count();
    let note = format!(
        "… {} more changes not shown; run `nexus show plan.lock`",
        1200 - shown
    );
    assert!(
        md.contains(&note),
        "missing {note:?} in the tail:\n{}",
        &md[md.len() - 300..]
    );
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count(),
        "every block is closed"
    );
    assert_eq!(
        md.lines().filter(|l| l.starts_with("```")).count() % 2,
        0,
        "every fence is closed"
    );
    assert!(
        md.starts_with("### nexus plan\n\n**Plan: 1200 to create"),
        "the summary comes first"
    );
    // The text rendering is not truncated.
    let text = render::text::plan(&plan, &TextOptions::default());
    assert_eq!(text.matches("\n  + file ").count(), 1200);

    // A small limit keeps the head and as many changes as fit, and names the plan file given.
    for limit in [1_500, 3_000, 10_000] {
        let opts = render::markdown::MarkdownOptions {
            plan_file: "out/p.lock".into(),
            limit,
        };
        let small = render::markdown::plan_with(&plan, &opts);
        assert!(small.chars().count() <= limit, "{}", small.chars().count());
        let shown = small.matches("**`+ create`**").count();
        let note = format!(
            "{} more changes not shown; run `nexus show out/p.lock`",
            1200 - shown
        );
        assert!(small.contains(&note), "{limit}: {small}");
        assert!(small.starts_with("### nexus plan\n\n**Plan: 1200 to create"));
    }
}

#[test]
fn identical_changes_on_many_hosts_are_one_entry() {
    let hosts: Vec<String> = (1..=12).map(|i| format!("node{i}")).collect();
    let mut config = String::new();
    for h in &hosts {
        config.push_str(&format!("host \"{h}\" \"{h}.example.com\"\n"));
    }
    config.push_str(&format!(
        "task \"t\" {{\n    on {}\n",
        hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    config.push_str("    file \"/etc/app.conf\" template=\"templates/big.j2\"\n}\n");
    let plan = generated_plan(&config, "same everywhere\n", &hosts);
    let text = render::text::plan(
        &plan,
        &TextOptions {
            color: false,
            width: 60,
            verbose: 0,
        },
    );
    assert_eq!(text.matches("+ file /etc/app.conf").count(), 1, "{text}");
    // Twelve hosts do not fit in 60 columns: the task's list wraps, and the entry, which covers
    // all of them, says so instead of repeating them.
    assert!(
        text.contains("Task t  on 12 hosts: node1, node2,"),
        "{text}"
    );
    assert!(
        text.contains("  + file /etc/app.conf  on all 12 hosts\n"),
        "{text}"
    );
    assert!(
        text.lines().skip(1).all(|l| l.chars().count() <= 60),
        "{text}"
    );
    let md = render::markdown::plan(&plan);
    assert_eq!(md.matches("`file /etc/app.conf`").count(), 1, "{md}");
    assert!(md.contains("| node1, node2, node3, node4, node5, node6, node7, node8, and 4 more (12 hosts) | 1 | 0 | 0 | 0 | 0 |"), "{md}");
}

#[test]
fn colors_only_when_asked() {
    let plan = plan_of(&plans_dir().join("file-update"));
    let plain = render::text::plan(&plan, &TextOptions::default());
    assert!(!plain.contains('\x1b'));
    let color = render::text::plan(
        &plan,
        &TextOptions {
            color: true,
            ..TextOptions::default()
        },
    );
    assert!(
        color.contains("\x1b[33m~\x1b[0m \x1b[33mfile /etc/ssh/sshd_config.d/10-nexus.conf\x1b[0m"),
        "{color}"
    );
    assert!(
        color.contains("\x1b[32m+PasswordAuthentication no\x1b[0m"),
        "{color}"
    );
    assert!(
        color.contains("\x1b[31m-PasswordAuthentication yes\x1b[0m"),
        "{color}"
    );
    // Without the escapes, the colored rendering is the plain one.
    let stripped = color
        .replace("\x1b[0m", "")
        .replace("\x1b[1m", "")
        .replace("\x1b[2m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[33m", "")
        .replace("\x1b[36m", "");
    assert_eq!(stripped, plain);
}

#[test]
fn summary_lines() {
    let plan = plan_of(&plans_dir().join("collapsed-hosts"));
    assert_eq!(
        render::summary_line(&plan),
        "Plan: 6 to create, 7 to update, 0 to delete, 0 to run; 5 unchanged on 6 hosts."
    );
    let none = plan_of(&plans_dir().join("no-changes"));
    assert_eq!(
        render::summary_line(&none),
        "No changes. Hosts match the configuration."
    );
    assert!(!none.has_changes());
}

/// Every guarded command that will run is drift, whichever guard found the host not yet as
/// declared: `creates` and `removes` (tested in the probe's existence loop, not the command's
/// snippet) as much as `unless` and `onlyif`.
#[test]
fn guarded_commands_that_run_are_drift() {
    let plan = plan_of(&plans_dir().join("command-guards"));
    let drift: Vec<&str> = plan.hosts[0]
        .resources
        .iter()
        .filter(|r| r.is_drift())
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(
        drift,
        ["release#1", "release#3", "release#5", "release#7"],
        "{:#?}",
        plan.hosts[0].resources
    );
    assert_eq!(plan.drift_count(), 4);
}

#[test]
fn json_rendering_schema() {
    let plan = plan_of(&plans_dir().join("handlers"));
    let v = render::json::plan(&plan, None);
    assert_eq!(v["format_version"], "1.0");
    assert_eq!(v["plan_hash"], lockfile::hash(&plan));
    assert_eq!(v["has_changes"], true);
    assert_eq!(v["summary"]["update"], 1);
    let changes = v["resource_changes"].as_array().unwrap();
    let total: usize = plan.hosts.iter().map(|h| h.resources.len()).sum();
    assert_eq!(changes.len(), total, "one entry per resource per host");
    for c in changes {
        assert_eq!(
            c["actions"],
            serde_json::json!([c["action"].as_str().unwrap()])
        );
        for key in [
            "host",
            "task",
            "role",
            "key",
            "id",
            "type",
            "label",
            "reason",
            "fields",
            "diff",
            "steps",
            "skipped",
            "notify",
            "notified_by",
        ] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
    }
    let handler = changes
        .iter()
        .find(|c| {
            c["role"] == "handler"
                && c["host"] == "web1"
                && c["type"] == "service"
                && c["task"] == "reload-nginx"
        })
        .unwrap();
    assert_eq!(
        handler["notified_by"],
        serde_json::json!(["file /etc/nginx/nginx.conf"])
    );
    // File contents are referenced by hash and size, never inlined in steps.
    let write = changes
        .iter()
        .flat_map(|c| c["steps"].as_array().unwrap())
        .find(|s| !s["stdin"].is_null())
        .unwrap();
    assert!(
        write["stdin"]["blake3"].is_string() && write["stdin"]["size"].is_u64(),
        "{write}"
    );
}

#[test]
fn verbose_levels() {
    let plan = plan_of(&plans_dir().join("become-non-root"));
    let at = |verbose| {
        render::text::plan(
            &plan,
            &TextOptions {
                verbose,
                ..TextOptions::default()
            },
        )
    };
    let (v0, v1, v2) = (at(0), at(1), at(2));
    assert!(
        v0.contains("  1 unchanged\n") && !v0.contains("mkdir -p"),
        "{v0}"
    );
    assert!(
        v1.contains("  = directory /home/deploy/.cache/shop  on app1\n"),
        "{v1}"
    );
    assert!(
        v1.contains(
            "      $ set -e\n        mkdir -p -m 0755 -- /opt/shop\n        chown -- deploy /opt/shop\n        [sudo]\n"
        ),
        "{v1}"
    );
    assert!(!v1.contains("fingerprint"), "{v1}");
    assert!(v2.contains("observed fingerprint "), "{v2}");
    assert!(
        v2.contains(
            "\nHosts\n  app1: ssh deploy@192.0.2.21, becomes root, probes with sudo, facts "
        ),
        "{v2}"
    );
}

/// docs/plan.schema.json is what schemars generates from the rendering's types: the documented
/// contract cannot drift from the code. Regenerate with `NEXUS_BLESS=1 cargo test --test plan_golden`.
#[test]
fn json_schema_file_is_generated_from_the_rendering_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/plan.schema.json");
    let mut generated = serde_json::to_string_pretty(&render::json::schema()).expect("schema");
    generated.push('\n');
    if blessing() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/plan.schema.json differs from the types in src/render/json.rs; regenerate with \
         `NEXUS_BLESS=1 cargo test --test plan_golden` and review the diff"
    );
}

/// Every pinned `--format json` rendering reads back into the typed document and writes out
/// unchanged (a field the types do not know would be dropped): the goldens and the schema
/// describe the same shape.
#[test]
fn golden_json_renderings_match_the_schema_types() {
    let mut checked = 0;
    for entry in std::fs::read_dir(plans_dir()).expect("golden/plans") {
        let path = entry.expect("entry").path().join("plan.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let doc: render::json::PlanDocument =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(doc.format_version, render::json::JSON_FORMAT_VERSION);
        let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            golden,
            "{} has fields the types do not describe",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 10, "only {checked} golden plan.json files");
}

/// A service whose unit does not exist yet is planned as new when a change earlier in the plan
/// may install it (here a package), and is an error when nothing before it changes.
#[test]
fn a_service_a_package_installs_is_planned_as_new() {
    let tmp = copy_scenario("services");
    let dir = tmp.path();
    edit(
        &dir.join("nexus.kdl"),
        "task \"services\" on=\"mixed\" {",
        "task \"install\" on=\"web1\" {\n    package \"nginx\"\n}\n\ntask \"services\" on=\"mixed\" deps=\"install\" {",
    );
    let observed = dir.join("observed.txt");
    edit(
        &observed,
        "[web1 services#1]\ntool=true\nload=loaded\nactive=inactive\nneed_daemon_reload=yes\nexists=true\nenabled=disabled",
        "[web1 install#1]\ntool=true\ninstalled.nginx=\ncandidate.nginx=1.22.1-9\n\n\
         [web1 services#1]\ntool=true\nload=not-found\nactive=inactive\nneed_daemon_reload=no\nexists=false\nenabled=",
    );
    let plan = plan_of(dir);
    let web1 = plan.hosts.iter().find(|h| h.name == "web1").unwrap();
    let nginx = web1
        .resources
        .iter()
        .find(|r| r.key == "services#1")
        .unwrap();
    let scripts: Vec<&str> = nginx.steps.iter().map(|s| s.script.as_str()).collect();
    assert_eq!(
        scripts,
        [
            "systemctl daemon-reload",
            "systemctl enable -- nginx.service",
            "systemctl start -- nginx.service"
        ]
    );
    edit(
        &observed,
        "installed.nginx=\ncandidate.nginx=1.22.1-9",
        "installed.nginx=1.22.1-9",
    );
    match plan_scenario(dir) {
        Ok(Err(e)) => assert!(e.contains("no such service nginx.service on web1"), "{e}"),
        other => panic!(
            "planned without the package's change: {:?}",
            other.map(|_| ())
        ),
    }
}
