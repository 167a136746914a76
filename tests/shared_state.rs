//! Shared state in PostgreSQL, as a team uses it: two working directories stand in for two CI
//! runners, sharing one real PostgreSQL server (started by the harness) and real sshd hosts.
//! Replay protection, the apply lock (a kill -9 of its holder frees it at once) and history
//! hold across both; TLS and a password from the vault connect; bad settings fail clearly.

mod harness;

use std::time::{Duration, Instant};

use harness::SshHost;
use harness::postgres::Postgres;
use harness::project::{Project, Run};

/// Two tasks on `h`: `slow` holds the lock for a while, `count` appends a line to /srv/count.
fn tasks(h: &SshHost) -> String {
    format!(
        r#"state url=(env)"NEXUS_STATE_URL" project="web"
task "count" on="{name}" {{
    command "echo run >> /srv/count"
}}
task "slow" on="{name}" {{
    command "sleep 20"
}}
"#,
        name = h.name
    )
}

/// A runner: its own directory and configuration, the shared database's URL.
fn runner(h: &SshHost, pg: &Postgres) -> Project {
    Project::over(&[h], "", &tasks(h))
        .env("NEXUS_STATE_URL", &pg.url("sslmode=disable"))
        .env_remove("PGPASSWORD")
}

/// Waits until the server records a run as running (nexus holds the lock and executes).
fn wait_for_a_running_run(pg: &Postgres) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg
        .try_psql("SELECT COUNT(*) FROM nexus.runs WHERE status = 'running'")
        .as_deref()
        != Ok("1")
    {
        assert!(Instant::now() < deadline, "no run started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(h: &SshHost) -> usize {
    std::fs::read_to_string(h.srv().join("count"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn history(p: &Project) -> Vec<serde_json::Value> {
    let o = p.nexus(&["history", "--format", "json"]);
    assert!(o.success(), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON history");
    v.as_array()
        .cloned()
        .or_else(|| v["runs"].as_array().cloned())
        .expect("a list of runs")
}

#[test]
fn a_plan_applied_on_one_runner_is_refused_on_the_other_and_history_is_shared() {
    let pg = Postgres::start();
    let h = SshHost::builder("shared1").private_srv().start();
    let (a, b) = (runner(&h, &pg), runner(&h, &pg));

    let plan = a.nexus(&["plan", "count", "-o", "plan.lock"]);
    assert!(plan.success(), "{}", plan.stderr);
    let applied = a.nexus(&["apply", "plan.lock"]);
    assert!(applied.success(), "{}{}", applied.stdout, applied.stderr);
    assert_eq!(count(&h), 1);

    // The artifact moves to the other runner, which has no local state at all.
    std::fs::copy(a.path("plan.lock"), b.path("plan.lock")).unwrap();
    let again = b.nexus(&["apply", "plan.lock"]);
    assert_eq!(again.code, 6, "{}{}", again.stdout, again.stderr);
    assert!(again.stderr.contains("already applied"), "{}", again.stderr);
    assert_eq!(count(&h), 1, "nothing ran twice");
    assert!(
        !b.path(".nexus/state.db").exists(),
        "no local state was made"
    );

    let ran = b.nexus(&["run", "count"]);
    assert!(ran.success(), "{}{}", ran.stdout, ran.stderr);
    assert_eq!(count(&h), 2);
    for p in [&a, &b] {
        let runs = history(p);
        assert_eq!(runs.len(), 2, "{runs:?}");
        let kinds: Vec<&str> = runs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["run", "apply"]);
    }
}

#[test]
fn one_of_two_concurrent_applies_runs_and_a_killed_holder_frees_the_lock_at_once() {
    let pg = Postgres::start();
    let h = SshHost::builder("shared2").private_srv().start();
    let (a, b) = (runner(&h, &pg), runner(&h, &pg));

    let mut holder = a
        .command(&["run", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it holds the lock and executes (its run is recorded as running).
    wait_for_a_running_run(&pg);
    let refused = b.nexus(&["run", "count"]);
    assert_eq!(refused.code, 7, "{}{}", refused.stdout, refused.stderr);
    for part in [format!("pid {}", holder.id()), "nexus run slow".to_string()] {
        assert!(
            refused.stderr.contains(&part),
            "{part:?} in {}",
            refused.stderr
        );
    }
    assert_eq!(count(&h), 0);

    // kill -9: the server ends the holder's session, and with it the lock.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let mut attempts = 0;
    let next = loop {
        attempts += 1;
        let o = b.nexus(&["run", "count"]);
        if o.code != 7 || attempts == 3 {
            break o;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(next.success(), "{}{}", next.stdout, next.stderr);
    assert_eq!(attempts, 1, "the lock was free at once");
    assert_eq!(count(&h), 1);
    let runs = history(&a);
    let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["succeeded", "interrupted"], "{runs:?}");
}

#[test]
fn tls_and_a_password_from_the_vault_connect_and_bad_settings_fail_clearly() {
    const PW: &str = "pg-secret-pw-8842";
    let pg = Postgres::builder().password(PW).tls().start();
    let h = SshHost::builder("shared3").private_srv().start();
    let ca = pg.ca.clone().unwrap();
    let rest = tasks(&h).replace(
        r#"project="web""#,
        r#"project="web" password=(secret)"PG_PW""#,
    );
    let p = Project::over(&[&h], "", &rest)
        .env_remove("PGPASSWORD")
        .with_vault(&[("PG_PW", PW)]);
    let url = |q: &str| pg.url(q);
    let mut outputs: Vec<Run> = Vec::new();
    let mut run = |query: &str, args: &[&str]| {
        let o = p.nexus_with(args, "", &[("NEXUS_STATE_URL", &url(query))]);
        outputs.push(o.clone());
        o
    };

    let verified = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let ok = run(&verified, &["run", "count"]);
    assert!(ok.success(), "{}{}", ok.stdout, ok.stderr);
    assert_eq!(count(&h), 1);
    assert!(run(&verified, &["history"]).success());
    // TLS was used: the server saw an encrypted session of nexus.
    let ssl = run("sslmode=require", &["history", "--format", "json"]);
    assert!(ssl.success(), "{}", ssl.stderr);

    // No trusted root: the certificate is refused, and nothing runs.
    let untrusted = run("sslmode=verify-full", &["run", "count"]);
    assert_eq!(untrusted.code, 1, "{}", untrusted.stderr);
    assert!(
        untrusted.stderr.contains("certificate"),
        "{}",
        untrusted.stderr
    );
    // No TLS at all: the server's pg_hba still accepts it, but a wrong password does not.
    let wrong = p.nexus_with(
        &["run", "count"],
        "",
        &[
            ("NEXUS_STATE_URL", &url(&verified)),
            ("NEXUS_VAULT_KEY", "0".repeat(64).as_str()),
        ],
    );
    assert_ne!(wrong.code, 0);
    assert_eq!(count(&h), 1, "nothing ran without its state");

    let unset = p.nexus(&["run", "count"]);
    assert_eq!(unset.code, 1, "{}", unset.stderr);
    assert!(
        unset.stderr.contains("NEXUS_STATE_URL, which is not set"),
        "{}",
        unset.stderr
    );
    for o in &outputs {
        assert!(!o.stdout.contains(PW) && !o.stderr.contains(PW), "{o:?}");
    }
}

/// The database goes away mid-apply: nothing new starts, what could not be recorded is kept
/// locally and reported, the next apply refuses until `nexus state --recover` has written it, and
/// then the history tells the whole truth.
#[test]
fn postgres_stopped_mid_apply_stops_the_run_and_keeps_what_it_could_not_record() {
    let pg = Postgres::start();
    let h = SshHost::builder("shared4").private_srv().start();
    let rest = tasks(&h).replace(
        "task \"slow\"",
        "task \"steps\" on=\"shared4\" {\n    command \"sleep 2; echo first >> /srv/steps\"\n}\n\
         task \"more\" on=\"shared4\" deps=\"steps\" {\n    command \"echo second >> /srv/steps\"\n}\ntask \"slow\"",
    );
    let p = Project::over(&[&h], "", &rest)
        .env("NEXUS_STATE_URL", &pg.url("sslmode=disable"))
        .env_remove("PGPASSWORD");
    let child = p
        .command(&["run", "steps", "more"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_a_running_run(&pg);
    pg.stop();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The first command was in flight and finished; the second never started.
    let steps = std::fs::read_to_string(h.srv().join("steps")).unwrap_or_default();
    assert_eq!(steps, "first\n", "{stderr}");
    for part in ["could not be recorded", "nexus state --recover"] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }

    pg.restart();
    let refused = p.nexus(&["run", "count"]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("nexus state --recover"),
        "{}",
        refused.stderr
    );
    assert_eq!(count(&h), 0);
    let recovered = p.nexus(&["state", "--recover"]);
    assert!(
        recovered.success(),
        "{}{}",
        recovered.stdout,
        recovered.stderr
    );
    let shown = p.nexus(&["history", "1", "--format", "json"]);
    assert!(shown.success(), "{}", shown.stderr);
    assert!(shown.stdout.contains("echo first"), "{}", shown.stdout);
    assert!(p.nexus(&["run", "count"]).success());
    assert_eq!(count(&h), 1);
}

/// A scheduled drift job (`nexus plan --record`) leaves a trail both runners see.
#[test]
fn recorded_drift_checks_form_a_trail() {
    let pg = Postgres::start();
    let h = SshHost::builder("shared5").private_srv().start();
    let rest = format!(
        "{}task \"motd\" on=\"shared5\" {{\n    file \"/srv/motd\" content=\"hello\\n\"\n}}\n",
        tasks(&h)
    );
    let a = Project::over(&[&h], "", &rest)
        .env("NEXUS_STATE_URL", &pg.url("sslmode=disable"))
        .env_remove("PGPASSWORD");
    assert!(a.nexus(&["run", "motd"]).success());
    let quiet = a.nexus(&["plan", "motd", "--record", "--detailed-exitcode"]);
    assert_eq!(quiet.code, 0, "{}{}", quiet.stdout, quiet.stderr);
    std::fs::write(h.srv().join("motd"), "edited by hand\n").unwrap();
    let drift = a.nexus(&["plan", "motd", "--record", "--detailed-exitcode"]);
    assert_eq!(drift.code, 2, "{}{}", drift.stdout, drift.stderr);

    let b = runner(&h, &pg);
    let o = b.nexus(&["history", "--drift", "--format", "json"]);
    assert!(o.success(), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let checks = v["drift_checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{v}");
    assert_eq!(checks[0]["drifted"], serde_json::json!(["shared5"]));
    assert_eq!(checks[0]["changes"], 1);
    assert_eq!(checks[1]["drifted"], serde_json::json!([]));
    let text = b.nexus(&["history", "--drift"]);
    assert!(
        text.stdout.contains("shared5") && text.stdout.contains("none"),
        "{}",
        text.stdout
    );
    // Recording never touches the runs.
    assert!(history(&b).len() == 1);
}

/// A solo project grows into a team: its SQLite history is copied into PostgreSQL, twice without
/// duplicates, and then reads the same from the server.
#[test]
fn state_migrate_copies_a_sqlite_history_idempotently() {
    let pg = Postgres::start();
    let h = SshHost::builder("shared6").private_srv().start();
    let rest = String::from(
        "task \"count\" on=\"shared6\" {\n    command \"echo run >> /srv/count\"\n}\n\
         task \"motd\" on=\"shared6\" {\n    file \"/srv/motd\" content=\"hello\\n\"\n}\n\
         task \"broken\" on=\"shared6\" {\n    command \"exit 3\"\n}\n",
    );
    // No `state` setting yet: the default SQLite file.
    let p = Project::over(&[&h], "", &rest).env_remove("PGPASSWORD");
    assert!(p.nexus(&["run", "count", "motd"]).success());
    assert_eq!(p.nexus(&["run", "broken"]).code, 1);
    // A hand edit the drift check finds (commands that run on every apply are not drift).
    std::fs::write(h.srv().join("motd"), "edited by hand\n").unwrap();
    assert!(p.nexus(&["plan", "--record"]).success());
    let url = pg.url("sslmode=disable");

    let first = p.nexus(&["state", "migrate", "--to", &url, "--format", "json"]);
    assert!(first.success(), "{}{}", first.stdout, first.stderr);
    let v: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(v["imported"]["runs"], 2, "{v}");
    assert_eq!(v["imported"]["drift_checks"], 1, "{v}");
    assert_eq!(v["imported"]["last_applied"], 2, "{v}");
    let again = p.nexus(&["state", "migrate", "--to", &url, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        (
            v["imported"]["runs"].as_u64(),
            v["imported"]["runs_skipped"].as_u64()
        ),
        (Some(0), Some(2)),
        "{v}"
    );
    assert_eq!(v["imported"]["drift_checks"], 0, "{v}");

    let local = p.nexus(&["history", "--format", "json"]);
    let remote = p.nexus(&["history", "--format", "json", "--state", &url]);
    let runs = |o: &Run| {
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["kind"].clone(),
                    r["status"].clone(),
                    r["counts"].clone(),
                    r["plan_hash"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(runs(&local), runs(&remote));
    let state = p.nexus(&["state", "--state", &url]);
    assert!(state.stdout.contains("/srv/motd"), "{}", state.stdout);
    assert!(
        p.nexus(&["history", "--drift", "--state", &url])
            .stdout
            .contains("shared6")
    );
    // Refusals: nothing to copy, or not a server.
    assert_ne!(p.nexus(&["state", "migrate", "--to", "/tmp/x.db"]).code, 0);
}
