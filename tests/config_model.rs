//! The typed model that valid configurations produce: every way of writing an option lands in the
//! same place, defaults apply, and references resolve.

use std::path::Path;
use std::time::Duration;

use nexus::config::*;
use nexus::resources::file::FileContent;
use nexus::syntax::values::{BatchSize, Mode, Percent};

fn load(text: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    match load_str(text, "t.kdl", dir.path()) {
        Ok(l) => l.config,
        Err(e) => panic!(
            "{}",
            e.render(RenderOptions {
                color: false,
                width: 100
            })
        ),
    }
}

fn errors(text: &str) -> Vec<&'static str> {
    let dir = tempfile::tempdir().unwrap();
    match load_str(text, "t.kdl", dir.path()) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.diags.iter().map(|d| d.code).collect(),
    }
}

#[test]
fn host_address_forms_agree() {
    let c = load(
        r#"
        host "a" "deploy@10.0.0.1:2222"
        host "b" address="10.0.0.2" user="deploy" port=2222
        host "c" { address "10.0.0.3"; user "deploy"; port 2222 }
        host "d"
        "#,
    );
    for (name, addr) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        let h = c.host(name).unwrap();
        assert_eq!(h.address, addr);
        assert_eq!(h.user.as_deref(), Some("deploy"));
        assert_eq!(h.port, Some(2222));
    }
    // A host without an address is reached by its name.
    assert_eq!(c.host("d").unwrap().address, "d");
}

#[test]
fn task_options_as_properties_or_children() {
    let c = load(
        r#"
        host "w1"
        host "w2"
        group "web" "w1" "w2"
        task "build" { command "make" }
        task "deploy" on="web" strategy="rolling" max-fail="25%" timeout="5m" {
            deps "build"
            batch 1 "50%"
            tags "app" "deploy"
            command "./deploy.sh"
        }
        task "check" {
            on "w1" "w2"
            strategy "canary"
            canary 1
            health-check { wait-for http="http://localhost:4000/health" timeout="30s" }
            command "true"
        }
        "#,
    );
    let d = c.task("deploy").unwrap();
    assert_eq!(d.strategy, Strategy::Rolling);
    assert_eq!(
        d.batches,
        vec![BatchSize::Hosts(1), BatchSize::Percent(Percent(50))]
    );
    assert_eq!(d.max_fail, Some(Percent(25)));
    assert_eq!(d.timeout, Some(Duration::from_secs(300)));
    assert_eq!(d.tags, vec!["app", "deploy"]);
    assert_eq!(c.task_targets(d).hosts, vec!["w1", "w2"]);
    let k = c.task("check").unwrap();
    assert_eq!(k.canary, Some(BatchSize::Hosts(1)));
    assert_eq!(k.health_check.len(), 1);
    match &k.health_check[0].kind {
        ResourceKind::WaitFor(w) => assert_eq!(w.timeout, Duration::from_secs(30)),
        other => panic!("{other:?}"),
    }
    // No `on`: the local machine.
    assert_eq!(
        c.task_targets(c.task("build").unwrap()).hosts,
        vec![LOCAL_HOST]
    );
}

#[test]
fn nested_groups_expand_once_in_order() {
    let c = load(
        r#"
        host "a"
        host "b"
        host "c"
        group "ab" "a" "b"
        group "all" "ab" "c" "a"
        tailscale "ts" tag="web"
        group "mixed" "all" "ts"
        task "t" on="mixed" { command "true" }
        "#,
    );
    let t = c.task_targets(c.task("t").unwrap());
    assert_eq!(t.hosts, vec!["a", "b", "c"]);
    assert_eq!(t.discovered, vec!["ts"]);
}

#[test]
fn resources_and_values() {
    let c = load(
        r#"
        handler "reload" { service "nginx" state="reloaded" }
        task "t" {
            package "nginx" "curl" state="latest"
            file "/etc/app.conf" content=(secret)"APP_CONF" mode=0o640 owner="root" notify="reload"
            file "/etc/motd" content="hi" mode="644"
            directory "/srv/my app" recursive=#true state="absent"
            user "deploy" uid=1001 shell="/bin/bash" { groups "sudo" "docker"; }
            group "docker" system=#true
            command "./run" creates="/srv/done" {
                env TOKEN=(env)"TOKEN" MODE="prod"
            }
            wait-for tcp="127.0.0.1:5432" interval="1s"
        }
        "#,
    );
    let r = &c.task("t").unwrap().resources;
    assert_eq!(r.len(), 8);
    match &r[1].kind {
        ResourceKind::File(f) => {
            assert!(
                matches!(&f.content, Some(FileContent::Inline { value: Value::Secret(n) }) if n == "APP_CONF")
            );
            assert_eq!(f.mode, Some(Mode(0o640)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r[1].common.notify[0].value, "reload");
    match &r[2].kind {
        ResourceKind::File(f) => assert_eq!(f.mode, Some(Mode(0o644))),
        other => panic!("{other:?}"),
    }
    match &r[4].kind {
        ResourceKind::User(u) => assert_eq!(u.groups, vec!["sudo", "docker"]),
        other => panic!("{other:?}"),
    }
    match &r[6].kind {
        ResourceKind::Command(cmd) => {
            assert_eq!(cmd.env.get("TOKEN"), Some(&Value::Env("TOKEN".into())));
            assert_eq!(cmd.creates.as_deref(), Some("/srv/done"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let codes = errors(
        r#"
        task "a" on="nowhere" { command "x" mode="0644" }
        task "b" { deps "c"; command "x" }
        task "c" { deps "b"; command "x" }
        task "a" { command "x" }
        "#,
    );
    for want in [
        "config::undefined-reference",
        "config::unknown-property",
        "config::dependency-cycle",
        "config::duplicate-name",
    ] {
        assert!(codes.contains(&want), "{want} missing from {codes:?}");
    }
}

#[test]
fn imports_follow_env_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nexus.kdl");
    std::fs::write(
        &root,
        r#"
        import "prod.kdl" when="env.STAGE == 'prod'"
        import "staging.kdl" when="env.STAGE != 'prod'"
        task "t" on="web" { command "true" }
        "#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prod.kdl"),
        "host \"p1\"\ngroup \"web\" \"p1\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("staging.kdl"),
        "host \"s1\"\ngroup \"web\" \"s1\"\n",
    )
    .unwrap();
    let prod = load_with_env(&root, &|k| (k == "STAGE").then(|| "prod".to_string())).unwrap();
    assert_eq!(
        prod.config.task_targets(&prod.config.tasks[0]).hosts,
        vec!["p1"]
    );
    assert_eq!(
        prod.config.env_used.get("STAGE"),
        Some(&Some("prod".to_string()))
    );
    let staging = load_with_env(&root, &|_| None).unwrap();
    assert_eq!(
        staging.config.task_targets(&staging.config.tasks[0]).hosts,
        vec!["s1"]
    );
    assert_eq!(staging.sources.files().len(), 2);
    assert!(Path::new(&staging.sources.files()[1].display).ends_with("staging.kdl"));
}
