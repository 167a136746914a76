//! package, service, user and group against real Debian hosts (tier 2: debootstrap + systemd-nspawn,
//! see tests/harness/nspawn.rs). Each test boots its own container and walks a resource through
//! its states: configure with KDL, resolve with the host's real facts, probe over SSH, plan,
//! check the planned action, run the steps, and probe again: a converged resource plans a no-op.

mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;

use harness::nspawn::{self, Container, LOCAL_SOURCES_ONLY, publish};
use nexus::config;
use nexus::facts::{self, Facts, InitSystem, PackageManager};
use nexus::inputs::Inputs;
use nexus::resources::{self, Action, AnyResource, Change, Observed, ResolveCtx, ResourceError};
use nexus::transport::{CommandSpec, SshPool, SshTransport, Transport};

/// A booted host, a connection to it, and its facts.
struct Host {
    container: Container,
    transport: Arc<SshTransport>,
    facts: Facts,
    _pool: SshPool,
    _dir: tempfile::TempDir,
}

impl Host {
    async fn boot(name: &'static str) -> Host {
        let container = tokio::task::spawn_blocking(move || Container::boot(name))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        nspawn::write_known_hosts(&kh, &[&container]);
        let pool = SshPool::new(harness::isolated_options(&kh)).unwrap();
        let transport = pool.transport(&container.target()).unwrap();
        let facts = facts::gather_facts(&*transport).await.unwrap();
        Host {
            container,
            transport,
            facts,
            _pool: pool,
            _dir: dir,
        }
    }

    /// The resources of a one-task config, resolved for this host.
    fn resources(&self, body: &str) -> Vec<AnyResource> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("task \"t\" {{\n{body}\n}}\n");
        let loaded = config::load_str(&text, "t.kdl", dir.path()).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.render(config::RenderOptions {
                    color: false,
                    width: 100
                })
            )
        });
        let inputs = Inputs::default();
        let vars = BTreeMap::new();
        let ctx = ResolveCtx {
            host: &self.container.name,
            facts: &self.facts,
            sudo: false,
            inputs: &inputs,
            vars: &vars,
            host_tags: &[],
        };
        loaded.config.tasks[0]
            .resources
            .iter()
            .map(|r| resources::resolve(&r.kind, &ctx).unwrap_or_else(|e| panic!("resolve: {e}")))
            .collect()
    }

    fn one(&self, body: &str) -> AnyResource {
        let mut all = self.resources(body);
        assert_eq!(all.len(), 1, "{body}");
        all.pop().unwrap()
    }

    async fn getent(&self, db: &str, name: &str) -> String {
        self.sh(&format!("getent {db} {name} || true")).await
    }

    async fn sh(&self, script: &str) -> String {
        let out = self
            .transport
            .run(&CommandSpec::new(script.to_string()))
            .await
            .unwrap();
        assert!(
            out.success(),
            "{script}: {}\n{}",
            out.failure_summary(),
            out.stdout_str()
        );
        out.stdout_str()
    }

    /// Runs the probe as the planner does: a subshell of a larger script.
    async fn probe(&self, r: &AnyResource) -> Observed {
        let text = self.sh(&format!("true\n(\n{}\n)\n", r.probe())).await;
        Observed::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", r.label()))
    }

    async fn plan(&self, r: &AnyResource) -> Result<Change, ResourceError> {
        r.plan(&self.probe(r).await)
    }

    /// A tiny executor: every step in order, stopping at the first failure.
    async fn apply(&self, c: &Change) {
        if let Err(e) = self.try_apply(c).await {
            panic!("{e}");
        }
    }

    /// [`Host::apply`], returning the failure (the step, its exit and its output) instead.
    async fn try_apply(&self, c: &Change) -> Result<(), String> {
        for step in &c.steps {
            assert!(step.stdin.is_none() && step.env.is_empty() && step.user.is_none());
            if let Some(guard) = &step.skip_if {
                let out = self
                    .transport
                    .run(&CommandSpec::new(guard.clone()))
                    .await
                    .unwrap();
                if out.success() {
                    continue;
                }
            }
            // The tests log in as root, so `sudo` changes nothing.
            let out = self
                .transport
                .run(&CommandSpec::new(step.script.clone()))
                .await
                .unwrap();
            if !out.success() {
                return Err(format!(
                    "step {:?} failed: {}\nstdout: {}\nstderr: {}",
                    step.script,
                    out.failure_summary(),
                    out.stdout_str(),
                    out.stderr_str()
                ));
            }
        }
        Ok(())
    }

    /// Plans `body`, expects `action`, applies, and checks that a second plan is a no-op
    /// (or, for actions that run every time, the same action again).
    async fn converge(&self, body: &str, action: Action) -> Change {
        let r = self.one(body);
        let c = self
            .plan(&r)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(c.action, action, "{body}: {c:#?}");
        self.apply(&c).await;
        let again = self.plan(&r).await.unwrap();
        let want = if action == Action::Run {
            Action::Run
        } else {
            Action::NoOp
        };
        assert_eq!(again.action, want, "{body} did not converge: {again:#?}");
        c
    }
}

fn scripts(c: &Change) -> Vec<&str> {
    c.steps.iter().map(|s| s.script.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_with_apt() {
    let h = Host::boot("pkg").await;
    assert_eq!(h.facts.package_manager, Some(PackageManager::Apt));
    assert_eq!(h.facts.init_system, InitSystem::Systemd);

    // From the Debian archive: install, then remove.
    let c = h.converge("package \"hello\"", Action::Create).await;
    assert_eq!(c.reason, "not installed: hello");
    assert!(
        scripts(&c)
            .last()
            .unwrap()
            .contains("apt-get install -y -q"),
        "{c:#?}"
    );
    assert!(h.sh("hello").await.contains("Hello, world!"));
    let c = h
        .converge("package \"hello\" state=\"absent\"", Action::Delete)
        .await;
    let steps = scripts(&c);
    assert_eq!(steps.len(), 2, "{c:#?}");
    assert!(steps[0].starts_with("# nexus keeps the versions this replaces"));
    assert_eq!(
        steps[1],
        "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -- hello"
    );
    assert_eq!(h.sh("command -v hello || echo gone").await, "gone\n");
    // The removed version was kept, from apt's cache, for a rollback (docs/rollback.md).
    assert_eq!(
        h.sh("ls /var/cache/nexus/packages | grep -c '^hello_.*_amd64[.]deb$'")
            .await,
        "1\n"
    );

    // Pinned versions, up and down, from the local repository.
    h.sh(&publish(
        &[("nexus-demo-pkg", "1.0"), ("nexus-demo-pkg", "2.0")],
        true,
    ))
    .await;
    let version = || h.sh("cat /usr/share/nexus-demo-pkg/version");
    let c = h
        .converge("package \"nexus-demo-pkg\" version=\"1.0\"", Action::Create)
        .await;
    assert!(
        scripts(&c)
            .last()
            .unwrap()
            .contains("for t in 'nexus-demo-pkg=1.0'; do"),
        "{c:#?}"
    );
    assert_eq!(version().await, "1.0\n");
    let c = h
        .converge("package \"nexus-demo-pkg\" version=\"2.0\"", Action::Update)
        .await;
    assert_eq!(c.reason, "other version: nexus-demo-pkg");
    assert_eq!(version().await, "2.0\n");
    h.converge("package \"nexus-demo-pkg\" version=\"1.0\"", Action::Update)
        .await;
    assert_eq!(version().await, "1.0\n");

    // latest: 1.0 is installed and 2.0 available.
    let c = h
        .converge(
            "package \"nexus-demo-pkg\" state=\"latest\"",
            Action::Update,
        )
        .await;
    assert_eq!(c.fields[0].from.as_deref(), Some("1.0"));
    assert_eq!(c.fields[0].to.as_deref(), Some("2.0"));
    assert_eq!(version().await, "2.0\n");

    // Several names: only the installed one is removed; then both are installed at once.
    let c = h
        .converge(
            "package \"hello\" \"nexus-demo-pkg\" state=\"absent\"",
            Action::Delete,
        )
        .await;
    assert_eq!(c.reason, "installed: nexus-demo-pkg");
    let c = h
        .converge("package \"hello\" \"nexus-demo-pkg\"", Action::Create)
        .await;
    assert_eq!(c.reason, "not installed: hello, nexus-demo-pkg");
}

/// A package no configured repository has is a plan error naming it, not a planned install
/// that apply then fails with apt's "Unable to locate package". With `update-cache=#true` it is
/// planned, with a note, since the refresh may bring it (issue 13, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_without_a_candidate() {
    let h = Host::boot("nocand").await;
    h.sh(LOCAL_SOURCES_ONLY).await;
    h.sh(&publish(&[("nexus-demo-pkg", "1.0")], true)).await;
    let host = &h.container.name;

    let r = h.one("package \"nexus-no-such-package\"");
    assert_eq!(
        h.plan(&r).await,
        Err(ResourceError::Invalid(format!(
            "package nexus-no-such-package: no installation candidate for nexus-no-such-package in the package lists on {host} (not in the configured repositories, or the lists are out of date: update-cache=#true refreshes them before installing)"
        )))
    );
    // Only the names without a candidate are named; a pinned version does not help.
    let r = h.one("package \"nexus-demo-pkg\" \"nexus-no-such-package\" \"nexus-nope\"");
    let err = h.plan(&r).await.unwrap_err().to_string();
    assert!(
        err.starts_with("package nexus-demo-pkg, nexus-no-such-package, nexus-nope: no installation candidate for nexus-no-such-package, nexus-nope in the package lists on "),
        "{err}"
    );
    let r = h.one("package \"nexus-no-such-package\" version=\"1.0\"");
    assert!(matches!(h.plan(&r).await, Err(ResourceError::Invalid(_))));
    // latest is the same for a missing package.
    let r = h.one("package \"nexus-no-such-package\" state=\"latest\"");
    assert!(matches!(h.plan(&r).await, Err(ResourceError::Invalid(_))));

    // Published after the host's lists were last refreshed: no candidate yet.
    h.sh(&publish(&[("nexus-late-pkg", "1.0")], false)).await;
    let r = h.one("package \"nexus-late-pkg\"");
    assert!(matches!(h.plan(&r).await, Err(ResourceError::Invalid(_))));
    // update-cache refreshes before installing: planned, with the reason saying so.
    let c = h
        .converge(
            "package \"nexus-late-pkg\" update-cache=#true",
            Action::Create,
        )
        .await;
    assert_eq!(
        c.reason,
        "not installed: nexus-late-pkg; note: no candidate for nexus-late-pkg in the host's current package lists, apply refreshes them first"
    );
    assert_eq!(c.fields[0].to.as_deref(), Some("candidate after refresh"));
    assert_eq!(scripts(&c)[0], "apt-get update -q");
    assert_eq!(h.sh("cat /usr/share/nexus-late-pkg/version").await, "1.0\n");

    // Still in no repository after the refresh: apt's own error at apply.
    let c = h
        .plan(&h.one("package \"nexus-no-such-package\" update-cache=#true"))
        .await
        .unwrap();
    assert_eq!(c.action, Action::Create);
    let err = h.try_apply(&c).await.unwrap_err();
    assert!(
        err.contains("Unable to locate package nexus-no-such-package"),
        "{err}"
    );
}

/// Apply installs the version the plan showed, not whatever the host's lists offer by then; a
/// plan whose candidate moved is stale; with `update-cache=#true`, apply stops when the refresh
/// moved the candidate away from the planned version (issue 13, item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_install_the_planned_version() {
    let h = Host::boot("pinned").await;
    h.sh(LOCAL_SOURCES_ONLY).await;
    let version = || h.sh("cat /usr/share/nexus-demo-pkg/version");
    h.sh(&publish(&[("nexus-demo-pkg", "1.0")], true)).await;

    // Planned while 1.0 is the candidate; 2.0 is published before the plan is applied.
    let r = h.one("package \"nexus-demo-pkg\"");
    let planned = h.probe(&r).await;
    let c = r.plan(&planned).unwrap();
    assert_eq!(c.action, Action::Create);
    assert_eq!(c.fields[0].to.as_deref(), Some("1.0"));
    h.sh(&publish(&[("nexus-demo-pkg", "2.0")], true)).await;
    // The candidate is part of the observed state: apply's re-probe refuses the plan as stale.
    assert_ne!(h.probe(&r).await.fingerprint(), planned.fingerprint());
    // And the plan's steps install exactly what it showed.
    h.apply(&c).await;
    assert_eq!(version().await, "1.0\n");

    // latest: planned as 1.0 → 2.0; 3.0 appears before apply.
    let r = h.one("package \"nexus-demo-pkg\" state=\"latest\"");
    let c = h.plan(&r).await.unwrap();
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.fields[0].from.as_deref(), Some("1.0"));
    assert_eq!(c.fields[0].to.as_deref(), Some("2.0"));
    h.sh(&publish(&[("nexus-demo-pkg", "3.0")], true)).await;
    h.apply(&c).await;
    assert_eq!(version().await, "2.0\n");

    // update-cache: the refresh at apply finds 4.0 where the plan said 3.0. Apply stops before
    // installing anything, naming both versions.
    h.sh("apt-get remove -y -q nexus-demo-pkg >/dev/null").await;
    h.sh(&publish(&[("nexus-demo-pkg", "4.0")], false)).await;
    let body = "package \"nexus-demo-pkg\" update-cache=#true";
    let c = h.plan(&h.one(body)).await.unwrap();
    assert_eq!(c.fields[0].to.as_deref(), Some("3.0"));
    let err = h.try_apply(&c).await.unwrap_err();
    assert!(
        err.contains("nexus: nexus-demo-pkg: the plan installs 3.0, but after refreshing the package lists the candidate is 4.0; plan again"),
        "{err}"
    );
    assert_eq!(
        h.sh("test -e /usr/share/nexus-demo-pkg/version || echo absent")
            .await,
        "absent\n"
    );
    // Planned again, the candidate stays through the refresh: installed as planned.
    let c = h.converge(body, Action::Create).await;
    assert_eq!(c.fields[0].to.as_deref(), Some("4.0"));
    assert_eq!(version().await, "4.0\n");
}

const DEMO_UNIT: &str = "[Unit]\nDescription=nexus tier-2 demo\n[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/true\n[Install]\nWantedBy=multi-user.target\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_with_systemd() {
    let h = Host::boot("svc").await;
    h.sh(&format!(
        "printf '%s' '{DEMO_UNIT}' > /etc/systemd/system/nexus-demo.service"
    ))
    .await;
    let active = || h.sh("systemctl is-active nexus-demo.service || true");
    let enabled = || h.sh("systemctl is-enabled nexus-demo.service || true");

    let c = h
        .converge(
            "service \"nexus-demo\" state=\"running\" enabled=#true",
            Action::Update,
        )
        .await;
    assert_eq!(
        scripts(&c),
        [
            "systemctl enable -- nexus-demo.service",
            "systemctl start -- nexus-demo.service"
        ]
    );
    assert_eq!(
        (active().await.as_str(), enabled().await.as_str()),
        ("active\n", "enabled\n")
    );

    let c = h
        .converge(
            "service \"nexus-demo\" state=\"stopped\" enabled=#false",
            Action::Update,
        )
        .await;
    assert_eq!(
        scripts(&c),
        [
            "systemctl disable -- nexus-demo.service",
            "systemctl stop -- nexus-demo.service"
        ]
    );
    assert_eq!(
        (active().await.as_str(), enabled().await.as_str()),
        ("inactive\n", "disabled\n")
    );

    // Enabled alone leaves the state alone.
    h.converge("service \"nexus-demo\" enabled=#true", Action::Update)
        .await;
    assert_eq!(active().await, "inactive\n");

    // restarted runs every time, and really restarts.
    let pid = || h.sh("systemctl show -p MainPID --value nexus-demo.service");
    h.converge("service \"nexus-demo\" state=\"restarted\"", Action::Run)
        .await;
    let first = pid().await;
    assert_ne!(first.trim(), "0");
    h.converge("service \"nexus-demo\" state=\"restarted\"", Action::Run)
        .await;
    assert_ne!(pid().await, first);

    // reloaded reloads a running unit.
    let c = h
        .converge("service \"nexus-demo\" state=\"reloaded\"", Action::Run)
        .await;
    assert_eq!(scripts(&c), ["systemctl reload -- nexus-demo.service"]);

    // A unit file changed on disk is re-read before the unit is acted on.
    h.sh("sed -i 's/Description=.*/Description=changed/' /etc/systemd/system/nexus-demo.service")
        .await;
    let c = h
        .converge("service \"nexus-demo\" state=\"stopped\"", Action::Update)
        .await;
    assert_eq!(
        scripts(&c),
        [
            "systemctl daemon-reload",
            "systemctl stop -- nexus-demo.service"
        ]
    );

    // The host's own sshd: running and enabled already.
    let ssh = h.one("service \"ssh\" state=\"running\" enabled=#true");
    assert_eq!(h.plan(&ssh).await.unwrap().action, Action::NoOp);

    let nope = h.one("service \"nexus-nope\" state=\"running\"");
    let err = h.plan(&nope).await.unwrap_err();
    assert_eq!(
        err,
        ResourceError::Invalid(format!(
            "no such service nexus-nope.service on {}",
            h.container.name
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_groups() {
    let h = Host::boot("acct").await;

    // Groups: create with a gid, renumber, system group.
    let c = h
        .converge("group \"nexus-g1\" gid=2101", Action::Create)
        .await;
    assert_eq!(scripts(&c), ["groupadd -g 2101 -- nexus-g1"]);
    h.converge("group \"nexus-g1\" gid=2102", Action::Update)
        .await;
    assert_eq!(h.getent("group", "nexus-g1").await, "nexus-g1:x:2102:\n");
    h.converge("group \"nexus-g2\" system=#true", Action::Create)
        .await;
    let gid: u32 = h
        .getent("group", "nexus-g2")
        .await
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(gid < 1000, "system group got gid {gid}");

    // A user with groups, shell and a comment with spaces.
    let create = "user \"nexus-u1\" uid=2201 shell=\"/bin/sh\" comment=\"Nexus Test User\" { groups \"nexus-g1\" \"nexus-g2\"; }";
    h.converge(create, Action::Create).await;
    assert_eq!(
        h.getent("passwd", "nexus-u1").await,
        "nexus-u1:x:2201:2201:Nexus Test User:/home/nexus-u1:/bin/sh\n"
    );
    assert_eq!(
        h.sh("id -Gn nexus-u1").await,
        "nexus-u1 nexus-g1 nexus-g2\n"
    );
    assert_eq!(h.sh("stat -c %U /home/nexus-u1").await, "nexus-u1\n");

    // Modify uid and shell; the rest already matches.
    let c = h
        .converge(
            "user \"nexus-u1\" uid=2202 shell=\"/bin/bash\" comment=\"Nexus Test User\"",
            Action::Update,
        )
        .await;
    assert_eq!(scripts(&c), ["usermod -u 2202 -s /bin/bash -- nexus-u1"]);
    assert_eq!(
        h.getent("passwd", "nexus-u1").await,
        "nexus-u1:x:2202:2201:Nexus Test User:/home/nexus-u1:/bin/bash\n"
    );

    // Supplementary groups: the exact set, then appended.
    h.converge("user \"nexus-u1\" { groups \"nexus-g2\"; }", Action::Update)
        .await;
    assert_eq!(h.sh("id -Gn nexus-u1").await, "nexus-u1 nexus-g2\n");
    let c = h
        .converge(
            "user \"nexus-u1\" append=#true { groups \"nexus-g1\"; }",
            Action::Update,
        )
        .await;
    assert_eq!(scripts(&c), ["usermod -a -G nexus-g1 -- nexus-u1"]);
    assert_eq!(
        h.sh("id -Gn nexus-u1").await,
        "nexus-u1 nexus-g1 nexus-g2\n"
    );

    // A group named like the user already exists: useradd must be told to use it.
    h.converge("group \"nexus-u2\" gid=2301", Action::Create)
        .await;
    h.converge("user \"nexus-u2\" system=#true", Action::Create)
        .await;
    let line = h.getent("passwd", "nexus-u2").await;
    assert_eq!(line.split(':').nth(3), Some("2301"), "{line}");

    // Absent: users first (a primary group cannot go while its user exists), home kept.
    for u in ["nexus-u1", "nexus-u2"] {
        let c = h
            .converge(&format!("user \"{u}\" state=\"absent\""), Action::Delete)
            .await;
        assert_eq!(scripts(&c), [format!("userdel -- {u}")]);
    }
    assert_eq!(h.getent("passwd", "nexus-u1").await, "");
    assert_eq!(h.sh("test -d /home/nexus-u1 && echo kept").await, "kept\n");
    for g in ["nexus-g1", "nexus-g2"] {
        h.converge(&format!("group \"{g}\" state=\"absent\""), Action::Delete)
            .await;
    }
    assert_eq!(h.getent("group", "nexus-g1").await, "");
    // userdel removes a primary group named like its user (USERGROUPS_ENAB), even one that
    // existed before the user: nothing is left to delete.
    let gone = h.one("group \"nexus-u2\" state=\"absent\"");
    assert_eq!(h.plan(&gone).await.unwrap().action, Action::NoOp);
}

/// The planner concatenates every resource's probe into one script per host: the snippets must
/// not disturb each other, and the whole batch is one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_batch_into_one_round_trip() {
    let h = Host::boot("batch").await;
    let all = h.resources(
        "package \"dpkg\" \"hello\" state=\"latest\"\n\
         service \"ssh\" state=\"running\"\n\
         user \"root\"\n\
         group \"nexus-none\" state=\"absent\"",
    );
    let mut script = String::new();
    for (i, r) in all.iter().enumerate() {
        script.push_str(&format!("echo '@@ {i}'\n(\n{}\n)\n", r.probe()));
    }
    let before = h.transport.commands_run();
    let out = h.sh(&script).await;
    assert_eq!(h.transport.commands_run(), before + 1);
    let mut parts: Vec<String> = Vec::new();
    for line in out.lines() {
        if line.starts_with("@@ ") {
            parts.push(String::new());
        } else {
            let last = parts.last_mut().expect("output before the first marker");
            last.push_str(line);
            last.push('\n');
        }
    }
    assert_eq!(parts.len(), all.len());
    let changes: Vec<Change> = all
        .iter()
        .zip(&parts)
        .map(|(r, p)| r.plan(&Observed::parse(p).unwrap()).unwrap())
        .collect();
    let actions: Vec<Action> = changes.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        [Action::Create, Action::NoOp, Action::NoOp, Action::NoOp],
        "{changes:#?}"
    );
    let pkg = Observed::parse(&parts[0]).unwrap();
    assert!(!pkg.get("installed.dpkg").unwrap().is_empty());
    assert_eq!(pkg.get("candidate.dpkg"), pkg.get("installed.dpkg"));
    assert_eq!(pkg.get("installed.hello"), Some(""));
    let root = Observed::parse(&parts[2]).unwrap();
    assert_eq!(root.get("uid"), Some("0"));
    assert_eq!(root.get("home"), Some("/root"));
    assert_eq!(all[0].id(), "package:dpkg,hello");
}
