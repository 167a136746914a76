//! Generations and rollback (docs/rollback.md) against a real sshd host: apply v1, apply v2, then
//! `nexus rollback -o r.lock && nexus apply r.lock` restores v1 byte for byte with owner and mode;
//! a host that drifted since the run is refused (unless --force); a file that held a secret is
//! restored while the state only ever held its ciphertext.

mod harness;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use harness::SshHost;
use harness::postgres::Postgres;
use harness::project::{Project, Run};

const KEY: &str = "6a1f3c0e9b7d2a4c8e5f1b3d7a9c2e4f6b8d0a1c3e5f7b9d1a3c5e7f9b1d3a5c";
const API_KEY: &str = "sk-live-rollback-uniq-5531";

/// The task of version `v` of the deploy: the config file's content and mode change, v2 adds a
/// file and a directory.
fn task(h: &SshHost, v: u32, state: &str) -> String {
    let (content, mode, extra) = match v {
        1 => ("port=80\nname=v1\n", "0640", ""),
        _ => (
            "port=8080\nname=v2\n",
            "0600",
            "    directory \"/srv/app/cache\" mode=\"0700\"\n    file \"/srv/app/new.conf\" content=\"added in v2\"\n",
        ),
    };
    format!(
        "{state}task \"deploy\" on=\"{name}\" {{\n    directory \"/srv/app\" mode=\"0755\"\n    \
         file \"/srv/app/app.conf\" content={content:?} mode=\"{mode}\"\n{extra}}}\n",
        name = h.name
    )
}

fn project(h: &SshHost, v: u32) -> Project {
    Project::over(&[h], "", &task(h, v, ""))
}

fn use_version(p: &Project, h: &SshHost, v: u32, state: &str) {
    let head = harness::project_config(p.dir(), &[h], "");
    p.config(&format!("{head}{}", task(h, v, state)));
}

fn ok(r: Run) -> Run {
    assert!(r.success(), "{r:?}");
    r
}

fn apply_config(p: &Project, lock: &str) {
    ok(p.nexus(&["plan", "-o", lock]));
    ok(p.nexus(&["apply", lock]));
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn rollback_of_a_drifted_file_is_refused_unless_forced() {
    let h = SshHost::builder("rb-drift").private_srv().start();
    let p = project(&h, 1);
    apply_config(&p, "v1.lock");
    use_version(&p, &h, 2, "");
    apply_config(&p, "v2.lock");
    let conf = h.srv().join("app/app.conf");
    // Someone edits the file after the run: restoring it would destroy that edit.
    std::fs::write(&conf, "edited by hand\n").unwrap();
    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    let refused = p.nexus(&["apply", "r.lock"]);
    assert_eq!(refused.code, 6, "{refused:?}");
    assert!(refused.stderr.contains("/srv/app/app.conf"), "{refused:?}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "edited by hand\n");
    assert!(
        h.srv().join("app/new.conf").exists(),
        "nothing was executed"
    );

    // --force contacts the host and takes what it shows now as expected.
    let forced = ok(p.nexus(&["rollback", "--force", "-o", "forced.lock"]));
    assert!(forced.stderr.contains("--force"), "{forced:?}");
    ok(p.nexus(&["apply", "forced.lock"]));
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "port=80\nname=v1\n"
    );
}

#[test]
fn rollback_without_any_run_says_there_is_nothing_to_roll_back() {
    let h = SshHost::builder("rb-none").private_srv().start();
    let p = project(&h, 1);
    let none = p.nexus(&["rollback", "-o", "r.lock"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("nothing to roll back"), "{none:?}");
    assert!(!p.path("r.lock").exists());
    let unknown = p.nexus(&["rollback", "--to", "99"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
}

#[test]
fn rollback_restores_v1_exactly_and_a_plan_of_v1_is_then_empty() {
    let h = SshHost::builder("rb-cycle").private_srv().start();
    cycle(&h, &Project::new(), "");
}

#[test]
fn the_rollback_cycle_holds_with_the_state_in_postgresql() {
    let pg = Postgres::start();
    let h = SshHost::builder("rb-pg").private_srv().start();
    let p = Project::new()
        .env("NEXUS_STATE_URL", &pg.url("sslmode=disable"))
        .env_remove("PGPASSWORD");
    cycle(
        &h,
        &p,
        "state url=(env)\"NEXUS_STATE_URL\" project=\"rb\"\n",
    );
    assert!(!p.path(".nexus/state.db").exists());
    let kept = pg.psql("SELECT COUNT(*) FROM nexus.preimages WHERE fingerprint_after IS NOT NULL");
    assert_ne!(kept, "0");
    ok(p.nexus(&["state", "gc", "--keep", "1"]));
    let runs = pg.psql("SELECT COUNT(DISTINCT run_id) FROM nexus.preimages");
    assert_eq!(runs, "1");
    let orphans = pg.psql(
        "SELECT COUNT(*) FROM nexus.blobs WHERE hash NOT IN \
         (SELECT blob FROM nexus.preimages WHERE blob IS NOT NULL)",
    );
    assert_eq!(orphans, "0");
}

/// v1, v2, rollback, apply: v1 exactly, and a plan of v1 has nothing to do.
fn cycle(h: &SshHost, p: &Project, state: &str) {
    use_version(p, h, 1, state);
    apply_config(p, "v1.lock");
    let conf = h.srv().join("app/app.conf");
    let v1_bytes = std::fs::read(&conf).unwrap();
    let v1_meta = std::fs::metadata(&conf).unwrap();
    use_version(p, h, 2, state);
    apply_config(p, "v2.lock");
    assert_eq!(mode_of(&conf), 0o600);
    assert!(h.srv().join("app/cache").is_dir());

    let r = ok(p.nexus(&["rollback", "-o", "r.lock"]));
    assert!(r.stdout.contains("/srv/app/app.conf"), "{r:?}");
    // An ordinary plan file: `show` renders it.
    let shown = ok(p.nexus(&["show", "r.lock"]));
    assert!(
        shown.stdout.contains("restores its state before run"),
        "{shown:?}"
    );
    ok(p.nexus(&["apply", "r.lock"]));

    assert_eq!(std::fs::read(&conf).unwrap(), v1_bytes);
    let meta = std::fs::metadata(&conf).unwrap();
    assert_eq!(mode_of(&conf), 0o640);
    assert_eq!((meta.uid(), meta.gid()), (v1_meta.uid(), v1_meta.gid()));
    assert!(!h.srv().join("app/new.conf").exists());
    assert!(!h.srv().join("app/cache").exists());

    use_version(p, h, 1, state);
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");

    // Applied twice it would not be the same plan: replay protection holds for rollbacks too.
    assert_eq!(p.nexus(&["apply", "r.lock"]).code, 6);
    let gens = ok(p.nexus(&["history", "--host", &h.name]));
    assert!(gens.stdout.contains("rollback to 1"), "{gens:?}");
    assert!(
        gens.stdout
            .contains(&format!("3 generations of {}", h.name)),
        "{gens:?}"
    );
}

#[test]
fn rollback_of_a_file_holding_a_secret_keeps_only_ciphertext() {
    let h = SshHost::builder("rb-secret").private_srv().start();
    let p = Project::new().env("NEXUS_VAULT_KEY", KEY);
    let head = harness::project_config(p.dir(), &[&h], "");
    let version = |content: &str| {
        format!(
            "{head}task \"deploy\" on=\"rb-secret\" {{\n    file \"/srv/token\" content={content} mode=\"0600\"\n}}\n"
        )
    };
    p.config(&version("(secret)\"API_KEY\""));
    ok(p.nexus(&["secret", "init"]));
    ok(p.nexus_with_stdin(&["secret", "set", "API_KEY"], API_KEY));
    apply_config(&p, "v1.lock");
    let token = h.srv().join("token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), API_KEY);
    p.config(&version("\"public\""));
    apply_config(&p, "v2.lock");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "public");

    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(std::fs::read_to_string(&token).unwrap(), API_KEY);
    assert_eq!(mode_of(&token), 0o600);

    // The state (and every plan file) holds the secret only encrypted.
    let mut files = Vec::new();
    harness::all_files_under(p.dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("state.db")));
    for f in files.iter().filter(|f| !f.ends_with("secrets.vault")) {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes
                .windows(API_KEY.len())
                .any(|w| w == API_KEY.as_bytes()),
            "{} holds the secret",
            f.display()
        );
    }
}

#[test]
fn gc_keeps_the_newest_generations_and_rollback_refuses_past_them() {
    let h = SshHost::builder("rb-gc").private_srv().start();
    let p = project(&h, 1);
    apply_config(&p, "v1.lock");
    use_version(&p, &h, 2, "");
    apply_config(&p, "v2.lock");
    let gc = ok(p.nexus(&["state", "gc", "--keep", "1"]));
    assert!(gc.stdout.contains("Deleted 2 pre-image(s)"), "{gc:?}");
    // Back to before run 1 needs run 1's pre-images: refused, nothing written.
    let refused = p.nexus(&["rollback", "--to", "0", "-o", "r0.lock"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("state gc"), "{refused:?}");
    assert!(!p.path("r0.lock").exists());
    // The newest generation can still be undone.
    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(
        std::fs::read_to_string(h.srv().join("app/app.conf")).unwrap(),
        "port=80\nname=v1\n"
    );
}

const DEMO_UNIT: &str = "[Unit]\nDescription=nexus rollback demo\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";

/// Tier 2 (a booted systemd host): v2 stops and disables a service and adds a user; the
/// rollback starts and enables it again and removes the user, and a plan of v1 is then empty.
#[test]
fn rollback_restores_a_package_version_a_service_and_removes_a_user_on_a_systemd_host() {
    harness::nspawn::require_prerequisites();
    let c = harness::nspawn::Container::boot("rb-svc");
    c.exec(&format!(
        "printf '%s' '{DEMO_UNIT}' > /etc/systemd/system/nexus-demo.service && systemctl daemon-reload"
    ));
    // A local repository holding both versions of a package: v1 pins 1.0, v2 pins 2.0.
    c.exec(harness::nspawn::LOCAL_SOURCES_ONLY);
    c.exec(&harness::nspawn::publish(
        &[("nexus-rb-pkg", "1.0"), ("nexus-rb-pkg", "2.0")],
        true,
    ));
    let p = Project::new();
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &[&c]);
    p.write("ssh_config", "");
    let version = |v2: bool| {
        let (state, enabled, user) = match v2 {
            false => ("running", "#true", ""),
            true => ("stopped", "#false", "    user \"rbuser\"\n"),
        };
        format!(
            "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n\
             host \"rb-svc\" \"root@{ip}:{port}\" identity=\"{key}\"\n\
             task \"deploy\" on=\"rb-svc\" {{\n    \
             package \"nexus-rb-pkg\" version=\"{version}\"\n    \
             service \"nexus-demo\" state=\"{state}\" enabled={enabled}\n{user}}}\n",
            version = if v2 { "2.0" } else { "1.0" },
            ip = c.ip,
            port = c.port,
            key = c.user_key.private.display()
        )
    };
    let svc = || {
        c.exec("systemctl is-active nexus-demo.service || true; systemctl is-enabled nexus-demo.service || true")
    };
    let pkg = || c.exec("cat /usr/share/nexus-rb-pkg/version");
    p.config(&version(false));
    apply_config(&p, "v1.lock");
    assert_eq!(svc(), "active\nenabled\n");
    assert_eq!(pkg(), "1.0\n");
    p.config(&version(true));
    apply_config(&p, "v2.lock");
    assert_eq!(svc(), "inactive\ndisabled\n");
    assert_eq!(pkg(), "2.0\n");
    assert_eq!(
        c.exec("getent passwd rbuser >/dev/null && echo yes || echo no"),
        "yes\n"
    );

    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(svc(), "active\nenabled\n");
    assert_eq!(pkg(), "1.0\n", "the package is back at v1's version");
    assert_eq!(
        c.exec("getent passwd rbuser >/dev/null && echo yes || echo no"),
        "no\n"
    );
    p.config(&version(false));
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");
}

/// Tier 2: a package changed by several undone runs goes straight back to the version it had
/// before them, not through the versions in between: here 2.0 has left the repository by the
/// time of the rollback. Package `a` was at 1.0 before runs 2 and 3 (2.0, then 3.0); package `b`
/// was not installed (run 2 installs 2.0, run 3 upgrades it to 3.0).
#[test]
fn a_rollback_over_several_package_upgrades_skips_the_versions_in_between() {
    harness::nspawn::require_prerequisites();
    let c = harness::nspawn::Container::boot("rb-pkgs");
    c.exec(harness::nspawn::LOCAL_SOURCES_ONLY);
    let all: Vec<(&str, &str)> = ["nexus-rb-a", "nexus-rb-b"]
        .into_iter()
        .flat_map(|n| [(n, "1.0"), (n, "2.0"), (n, "3.0")])
        .collect();
    c.exec(&harness::nspawn::publish(&all, true));
    let p = Project::new();
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &[&c]);
    p.write("ssh_config", "");
    let version = |v: u32| {
        let b = match v {
            1 => String::new(),
            _ => format!("    package \"nexus-rb-b\" version=\"{v}.0\"\n"),
        };
        format!(
            "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n\
             host \"rb-pkgs\" \"root@{ip}:{port}\" identity=\"{key}\"\n\
             task \"deploy\" on=\"rb-pkgs\" {{\n    \
             package \"nexus-rb-a\" version=\"{v}.0\"\n{b}}}\n",
            ip = c.ip,
            port = c.port,
            key = c.user_key.private.display()
        )
    };
    let installed = || {
        c.exec(
            "for n in nexus-rb-a nexus-rb-b; do cat /usr/share/$n/version 2>/dev/null || echo none; done",
        )
    };
    for v in 1..=3 {
        p.config(&version(v));
        apply_config(&p, &format!("v{v}.lock"));
    }
    assert_eq!(installed(), "3.0\n3.0\n");
    // 2.0 leaves the repository (and the host's lists); 1.0 is still there.
    c.exec(
        "rm /srv/nexus-repo/nexus-rb-a_2.0_all.deb /srv/nexus-repo/nexus-rb-b_2.0_all.deb && \
         rm -f /var/cache/apt/archives/nexus-rb-*_2.0_all.deb",
    );
    c.exec(&harness::nspawn::publish(&[], true));

    let r = ok(p.nexus(&["rollback", "--to", "1", "-o", "r.lock"]));
    assert!(!r.stderr.contains("irreversible"), "{r:?}");
    // Each package is put back by the undo of the oldest undone run alone.
    let plan = nexus::plan::lockfile::read(&p.path("r.lock")).unwrap().plan;
    // Each step by its last line, and the names or versions it is about.
    let steps: Vec<(&str, Vec<(&str, &str)>)> = plan.hosts[0]
        .resources
        .iter()
        .map(|r| {
            let scripts = r.steps.iter().map(|s| {
                let about = ["\\n' -- ", "for t in ", "-- "]
                    .iter()
                    .filter_map(|at| s.script.split(at).nth(1))
                    .map(|rest| rest.split([';', '\n', ' ']).next().unwrap())
                    .next()
                    .unwrap_or("");
                (s.script.lines().last().unwrap(), about)
            });
            (r.label.as_str(), scripts.collect())
        })
        .collect();
    let apt = "DEBIAN_FRONTEND=noninteractive apt-get";
    let downgrade = "install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --allow-downgrades";
    let remove = format!("{apt} remove -y -q -- nexus-rb-b");
    let install = format!("{apt} {downgrade} -- \"$@\"");
    assert_eq!(
        steps,
        [
            (
                "package nexus-rb-b",
                vec![("exit 0", "nexus-rb-b"), (remove.as_str(), "nexus-rb-b")]
            ),
            (
                "package nexus-rb-a",
                vec![
                    ("exit 0", "nexus-rb-a"),
                    (install.as_str(), "'nexus-rb-a=1.0'")
                ]
            ),
        ]
    );
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(installed(), "1.0\nnone\n", "as run 1 left them");
    p.config(&version(1));
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");
    // Rolling back the rollback re-applies runs 2 and 3 in turn, through 2.0 again.
    c.exec(&harness::nspawn::publish(
        &[("nexus-rb-a", "2.0"), ("nexus-rb-b", "2.0")],
        true,
    ));
    ok(p.nexus(&["rollback", "-o", "rr.lock"]));
    ok(p.nexus(&["apply", "rr.lock"]));
    assert_eq!(installed(), "3.0\n3.0\n", "as run 3 left them");
}

/// Tier 2: a rollback to versions the repositories dropped since (a point release replaced them)
/// installs them from the copies apply kept on the host when it replaced them: one from apt's own
/// cache (with an epoch, which apt writes as `%3a` in file names), one that apt's cache no longer
/// held and apply downloaded. Rolling that rollback back needs 2.0 after it too left.
#[test]
fn a_rollback_installs_versions_the_repositories_dropped_from_the_copies_apply_kept() {
    harness::nspawn::require_prerequisites();
    let c = harness::nspawn::Container::boot("rb-kept");
    c.exec(harness::nspawn::LOCAL_SOURCES_ONLY);
    c.exec(&harness::nspawn::publish(
        &[
            ("nexus-rb-k", "1:1.0"),
            ("nexus-rb-k", "1:2.0"),
            ("nexus-rb-d", "1.0"),
            ("nexus-rb-d", "2.0"),
            // Keeps the repository from ever being empty.
            ("nexus-rb-other", "1.0"),
        ],
        true,
    ));
    let p = Project::new();
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &[&c]);
    p.write("ssh_config", "");
    let version = |v: u32| {
        format!(
            "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n\
             host \"rb-kept\" \"root@{ip}:{port}\" identity=\"{key}\"\n\
             task \"deploy\" on=\"rb-kept\" {{\n    \
             package \"nexus-rb-k\" version=\"1:{v}.0\"\n    \
             package \"nexus-rb-d\" version=\"{v}.0\"\n}}\n",
            ip = c.ip,
            port = c.port,
            key = c.user_key.private.display()
        )
    };
    let installed = || {
        c.exec("for n in nexus-rb-k nexus-rb-d; do cat /usr/share/$n/version 2>/dev/null || echo none; done")
    };
    // Drops `version` of both from the repository, apt's lists and apt's cache.
    let drop = |version: &str| {
        c.exec(&format!(
            "rm /srv/nexus-repo/nexus-rb-k_1:{version}_all.deb /srv/nexus-repo/nexus-rb-d_{version}_all.deb && \
             rm -f /var/cache/apt/archives/nexus-rb-*_{version}_all.deb /var/cache/apt/archives/nexus-rb-*_1%3a{version}_all.deb"
        ));
        c.exec(&harness::nspawn::publish(&[], true));
    };
    p.config(&version(1));
    apply_config(&p, "v1.lock");
    assert_eq!(installed(), "1:1.0\n1.0\n");
    // apt's cache no longer holds d's 1.0 (as after `apt-get clean`); k's is still there.
    c.exec("rm /var/cache/apt/archives/nexus-rb-d_1.0_all.deb && ls /var/cache/apt/archives/nexus-rb-k_1%3a1.0_all.deb");
    p.config(&version(2));
    apply_config(&p, "v2.lock");
    assert_eq!(installed(), "1:2.0\n2.0\n");
    drop("1.0");

    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(
        installed(),
        "1:1.0\n1.0\n",
        "back at v1's versions, which no repository has"
    );
    assert_eq!(
        c.exec("stat -c '%a %U' /var/cache/nexus/packages"),
        "755 root\n",
        "the kept packages are root's to change"
    );
    p.config(&version(1));
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");

    drop("2.0");
    ok(p.nexus(&["rollback", "-o", "rr.lock"]));
    ok(p.nexus(&["apply", "rr.lock"]));
    assert_eq!(
        installed(),
        "1:2.0\n2.0\n",
        "as run 2 left them, 2.0 from the kept copies"
    );
}

/// Tier 2: users and groups that existed before get their attributes back, across two runs:
/// run 2 renumbers, moves and regroups them and deletes a user and a group; run 3 changes the
/// shell again. A rollback to run 1 restores what `getent` showed then (the deleted user comes
/// back with its uid, groups and home; without a vault its password is not kept, so it comes
/// back locked).
#[test]
fn rollback_restores_the_attributes_of_users_and_groups_that_existed() {
    harness::nspawn::require_prerequisites();
    let c = harness::nspawn::Container::boot("rb-users");
    c.exec(
        "groupadd -g 3200 rbgrp && groupadd -g 3300 rbgone && \
         useradd -u 3100 -G adm,rbgrp -d /home/rbold -s /bin/sh -c 'Old One' -m rbold && \
         useradd -u 3400 -G rbgone,adm -d /srv/rbdel -s /bin/sh -c 'Deleted' -m rbdel && \
         touch /home/rbold/mine",
    );
    let getent = || {
        c.exec(
            "for u in rbold rbdel rbnewu; do getent passwd $u || echo \"$u: none\"; id -Gn $u 2>/dev/null | tr ' ' '\\n' | sort | tr '\\n' ' '; echo; done; \
             for g in rbgrp rbgone; do getent group $g || echo \"$g: none\"; done; stat -c '%u' /home/rbold/mine",
        )
    };
    let before = getent();
    let p = Project::new();
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &[&c]);
    p.write("ssh_config", "");
    let version = |body: &str| {
        format!(
            "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n\
             host \"rb-users\" \"root@{ip}:{port}\" identity=\"{key}\"\n\
             task \"accounts\" on=\"rb-users\" {{\n    file \"/root/marker\" content=\"m\"\n{body}}}\n",
            ip = c.ip,
            port = c.port,
            key = c.user_key.private.display()
        )
    };
    p.config(&version(""));
    apply_config(&p, "v1.lock");
    p.config(&version(
        "    group \"rbgrp\" gid=3201\n    \
         user \"rbold\" uid=3101 group=\"rbgrp\" groups=\"users\" home=\"/home/rbnew\" shell=\"/bin/bash\" comment=\"New\"\n    \
         user \"rbdel\" state=\"absent\"\n    \
         group \"rbgone\" state=\"absent\"\n    \
         user \"rbnewu\"\n",
    ));
    apply_config(&p, "v2.lock");
    // A user created by run 2 and deleted by run 3: undone newest first, it is gone again.
    p.config(&version(
        "    user \"rbold\" shell=\"/usr/sbin/nologin\"\n    user \"rbnewu\" state=\"absent\"\n",
    ));
    apply_config(&p, "v3.lock");
    let after3 = getent();
    assert_ne!(after3, before, "the runs changed the accounts");

    let r = ok(p.nexus(&["rollback", "--to", "1", "-o", "r.lock"]));
    assert!(!r.stderr.contains("irreversible"), "{r:?}");
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(getent(), before, "the accounts are as before run 2");
    assert_eq!(
        c.exec("passwd -S rbdel | cut -d' ' -f2"),
        "L\n",
        "a re-created account is locked: without a vault its password was not kept"
    );
    // Rolling back the rollback re-applies: the accounts are as run 3 left them.
    let r = ok(p.nexus(&["rollback", "-o", "rr.lock"]));
    assert!(!r.stderr.contains("irreversible"), "{r:?}");
    ok(p.nexus(&["apply", "rr.lock"]));
    assert_eq!(getent(), after3, "the accounts are as run 3 left them");
}

/// The config of a test whose task on the container `c` changes accounts (`body`) after a
/// marker file.
fn accounts_config(c: &harness::nspawn::Container, body: &str) -> String {
    format!(
        "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n\
         host \"{name}\" \"root@{ip}:{port}\" identity=\"{key}\"\n\
         task \"accounts\" on=\"{name}\" {{\n    file \"/root/marker\" content=\"m\"\n{body}}}\n",
        name = c.name,
        ip = c.ip,
        port = c.port,
        key = c.user_key.private.display()
    )
}

/// A project over `c` (with a vault when `vault`) that applied [`accounts_config`] without
/// accounts: run 1.
fn accounts_project(c: &harness::nspawn::Container, vault: bool) -> Project {
    let p = match vault {
        true => Project::new().env("NEXUS_VAULT_KEY", KEY),
        false => Project::new(),
    };
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &[c]);
    p.write("ssh_config", "");
    p.config(&accounts_config(c, ""));
    if vault {
        ok(p.nexus(&["secret", "init"]));
    }
    apply_config(&p, "v1.lock");
    p
}

/// That `sampler` saw nexus run, and no command line holding any of `hashes`.
fn assert_no_command_line_holds(sampler: &harness::CmdlineSampler, hashes: &[&str]) {
    let lines = sampler.lines();
    assert!(
        lines.iter().any(|l| l.contains("nexus")),
        "the sampler saw nexus run"
    );
    for hash in hashes {
        assert!(
            !lines.iter().any(|l| l.contains(hash)),
            "a command line holds a hash"
        );
    }
}

/// Password hashes the accounts of [`a_deleted_account_comes_back_with_its_password`] have.
const USER_HASH: &str = "$6$nexusRbShadow1$NkLcbyX0PEo5vLPhlhemNWXQhuxPEic7p9QqZUoAO1ecVkOxpDBbFvKhbQqIz1CNUjjfvbomX6MECDcKzbigc1";
const GROUP_HASH: &str = "$6$nexusRbGshadow$M4zYHxjZ0yoMhH.lAaxhTmjH0.dfzkYAnAZ0hlrmp9xjmoSfBFpp0n1NWKNfbFOKoZPfugDYgrps6ffRzOEg//";
const NO_VAULT_HASH: &str = "$6$nexusRbNoVault$xiGhCzkfBPi6tyYP4wHzT2YUmj25SFcV2L/JMqdgw/QP8F29g3k/3ECWQTzCz6BOo8UZyXNNz8194Vm9jY4VU0";

/// Tier 2: a user and a group that a run deleted come back with their password hashes, the
/// user's ageing fields and the group's administrators, exactly as `getent shadow` and
/// `getent gshadow` showed them; the state store and the plan files hold the hashes only
/// encrypted with the vault key. Without a vault, a deleted user comes back locked (with its
/// ageing fields), and the rollback plan says so (docs/rollback.md).
#[test]
fn a_deleted_account_comes_back_with_its_password() {
    harness::nspawn::require_prerequisites();
    let c = harness::nspawn::Container::boot("rb-shadow");
    c.exec(&format!(
        "useradd -u 3700 -d /home/rbpw -s /bin/sh -m rbpw && echo 'rbpw:{USER_HASH}' | chpasswd -e && \
         chage -d 19000 -m 1 -M 90 -W 5 -I 3 -E 20500 rbpw && \
         groupadd -g 3710 rbpwg && echo 'rbpwg:{GROUP_HASH}' | chgpasswd -e && gpasswd -A daemon,bin rbpwg && \
         useradd -u 3720 -M rbnov && echo 'rbnov:{NO_VAULT_HASH}' | chpasswd -e && chage -d 19001 -E 20501 rbnov"
    ));
    let shadow = |what: &str| c.exec(&format!("getent {what} || echo none"));
    let (user, group, no_vault) = (
        shadow("shadow rbpw"),
        shadow("gshadow rbpwg"),
        shadow("shadow rbnov"),
    );
    assert!(
        user.contains(USER_HASH) && group.contains(GROUP_HASH),
        "{user}{group}"
    );
    let config = |body: &str| accounts_config(&c, body);
    let project = |vault: bool| accounts_project(&c, vault);

    // From here on, nothing nexus runs may have a hash on its command line (the set-up above
    // did, through ssh's).
    let sampler = harness::CmdlineSampler::start();
    // With the vault: both come back as they were.
    let p = project(true);
    p.config(&config(
        "    user \"rbpw\" state=\"absent\"\n    group \"rbpwg\" state=\"absent\"\n",
    ));
    apply_config(&p, "v2.lock");
    assert_eq!(shadow("shadow rbpw"), "none\n");
    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    let shown = ok(p.nexus(&["show", "r.lock"]));
    assert!(!shown.stdout.contains("locked"), "{shown:?}");
    assert!(
        shown.stdout.contains("as before (holds secrets)"),
        "{shown:?}"
    );
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(
        shadow("shadow rbpw"),
        user,
        "the user's hash and ageing are back"
    );
    assert_eq!(
        shadow("gshadow rbpwg"),
        group,
        "the group's password and administrators are back"
    );
    // Rolling the rollback back deletes them again; rolling that back brings them back again,
    // with the password the rollback's own plan carried (sealed) for its step.
    ok(p.nexus(&["rollback", "-o", "rr.lock"]));
    ok(p.nexus(&["apply", "rr.lock"]));
    assert_eq!(shadow("shadow rbpw"), "none\n");
    ok(p.nexus(&["rollback", "-o", "rrr.lock"]));
    ok(p.nexus(&["apply", "rrr.lock"]));
    assert_eq!(shadow("shadow rbpw"), user, "back again, with its hash");
    assert_eq!(shadow("gshadow rbpwg"), group);
    harness::assert_no_file_holds(p.dir(), &harness::leak_needles(&[USER_HASH, GROUP_HASH]));

    // Without a vault: the user comes back locked, with its ageing fields.
    let q = project(false);
    q.config(&config("    user \"rbnov\" state=\"absent\"\n"));
    apply_config(&q, "v2.lock");
    ok(q.nexus(&["rollback", "-o", "r.lock"]));
    let shown = ok(q.nexus(&["show", "r.lock"]));
    assert!(shown.stdout.contains("comes back locked"), "{shown:?}");
    ok(q.nexus(&["apply", "r.lock"]));
    assert_eq!(
        shadow("shadow rbnov"),
        no_vault.replace(NO_VAULT_HASH, "!"),
        "locked, with its ageing fields"
    );
    harness::assert_no_file_holds(q.dir(), &harness::leak_needles(&[NO_VAULT_HASH]));
    assert_no_command_line_holds(&sampler, &[USER_HASH, GROUP_HASH, NO_VAULT_HASH]);
}

/// Tier 2: the same capture and restore through `sudo` that asks for a password (a login user
/// that is not root, `sudo-password` from the vault): sudo reads its password on stdin, where
/// `chpasswd -e` reads the hash, and `getent shadow` needs root to read the entry at all.
#[test]
fn a_deleted_account_comes_back_with_its_password_through_sudo_with_a_password() {
    harness::nspawn::require_prerequisites();
    let c = harness::nspawn::Container::boot("rb-sudo");
    c.exec(&format!(
        "useradd -m -s /bin/sh rbdeploy && echo 'rbdeploy:{SUDO_PASSWORD}' | chpasswd && \
         echo 'rbdeploy ALL=(ALL:ALL) ALL' > /etc/sudoers.d/rbdeploy && chmod 440 /etc/sudoers.d/rbdeploy && \
         install -d -o rbdeploy -m 700 /home/rbdeploy/.ssh && \
         install -o rbdeploy -m 600 /root/.ssh/authorized_keys /home/rbdeploy/.ssh/authorized_keys && \
         useradd -u 3730 -M rbsudo && echo 'rbsudo:{SUDO_USER_HASH}' | chpasswd -e && chage -d 19002 -M 60 rbsudo"
    ));
    let shadow = || c.exec("getent shadow rbsudo || echo none");
    let before = shadow();
    assert!(before.contains(SUDO_USER_HASH), "{before}");
    let config = |body: &str| {
        accounts_config(&c, body).replace(
            &format!("\"root@{}:{}\"", c.ip, c.port),
            &format!(
                "\"rbdeploy@{}:{}\" become=#true sudo-password=(secret)\"SUDO_PW\"",
                c.ip, c.port
            ),
        )
    };
    let p = Project::new().env("NEXUS_VAULT_KEY", KEY);
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &[&c]);
    p.write("ssh_config", "");
    p.config(&config(""));
    ok(p.nexus(&["secret", "init"]));
    let set = p.nexus_with_stdin(&["secret", "set", "SUDO_PW"], SUDO_PASSWORD);
    assert!(set.success(), "{set:?}");
    let sampler = harness::CmdlineSampler::start();
    apply_config(&p, "v1.lock");
    p.config(&config("    user \"rbsudo\" state=\"absent\"\n"));
    apply_config(&p, "v2.lock");
    assert_eq!(shadow(), "none\n");
    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    let shown = ok(p.nexus(&["show", "r.lock"]));
    assert!(!shown.stdout.contains("locked"), "{shown:?}");
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(
        shadow(),
        before,
        "the hash and ageing are back, through sudo"
    );
    harness::assert_no_file_holds(
        p.dir(),
        &harness::leak_needles(&[SUDO_USER_HASH, SUDO_PASSWORD]),
    );
    assert_no_command_line_holds(&sampler, &[SUDO_USER_HASH, SUDO_PASSWORD]);
}

const SUDO_PASSWORD: &str = "Rb-sudo-pw-8812";
/// Its own hash: tests run at once, and each checks that no command line holds its hashes (the
/// set-up's do, on ssh's command line).
const SUDO_USER_HASH: &str = "$6$nexusRbSudoPw1$mRN4.6ojwahxB.3ccDiwp/U47YoEPghjPXwQzSuK2UR6YIvUTTRCvu.6kP680qdzuzPmVIBu4ni0Hld.5LlPs1";

/// Password hashes the accounts of [`a_users_own_group_and_a_later_administrator_come_back`] have.
const OWN_USER_HASH: &str = "$6$nexusRbOwnUsr1$Ns47kA776AFJwMqG/sp1KBZ1OQjkpmvVfoelrPOhRaIZ8AM5d4vMABb8gFQ.68XAB3Dc804JohDQffjTmdYZM/";
const OWN_GROUP_HASH: &str = "$6$nexusRbOwnGrp1$YTC7vBF7hX3T79AktGaxGar6d6bYcE4g1SmuIUnL93MregEVNIabvh/1TXjE3kXYBSpeZHJoiSqM9FQWqd0oR.";
const ADM_GROUP_HASH: &str = "$6$nexusRbAdmGrp1$m71X9RBfA1P2oRH/73A4V9Hq17FpHs68t1uJm0BFFheA1qiz5ncPu1ZyE1s1X36tnH27J3oWh9tvNFKSUOZ6z/";
const OWN_NO_VAULT_HASH: &str = "$6$nexusRbOwnNoV1$uTrko8hog1ZU8twb1HbZXZph0A5HkslWxJNZ2NL6A1G8Xcu8icPCwW.ydHMGCWMSphj3KedQhveU/jlUdeBnP1";

/// Tier 2: a user's own group, which `userdel` removes with it (same name, its primary group, no
/// other members; USERGROUPS_ENAB is yes), comes back with its gshadow password and
/// administrators, the password only ever encrypted; a same-named group with another member,
/// which userdel keeps, is left as it is. A group deleted after its administrator, so that the
/// rollback re-creates the group before the administrator, gets the administrator back once the
/// rollback re-created it (so does the own group of a user re-created before its administrator).
/// Rolling back the rollback, and that one again, holds. Without a vault, the own group comes back
/// locked with its administrators, and `nexus show` says why (docs/rollback.md).
#[test]
fn a_users_own_group_and_a_later_administrator_come_back() {
    harness::nspawn::require_prerequisites();
    let c = harness::nspawn::Container::boot("rb-owngrp");
    c.exec(&format!(
        "useradd -u 3810 -g users -M rbadmin && \
         useradd -u 3800 -U -M rbown && echo 'rbown:{OWN_USER_HASH}' | chpasswd -e && \
         echo 'rbown:{OWN_GROUP_HASH}' | chgpasswd -e && gpasswd -A daemon,rbadmin rbown && \
         groupadd -g 3820 rbadm && echo 'rbadm:{ADM_GROUP_HASH}' | chgpasswd -e && gpasswd -A rbadmin,daemon rbadm && \
         useradd -u 3830 -U -M rbkeep && usermod -a -G rbkeep daemon && gpasswd -A daemon rbkeep && \
         useradd -u 3840 -U -M rbownnov && echo 'rbownnov:{OWN_NO_VAULT_HASH}' | chgpasswd -e && gpasswd -A daemon rbownnov"
    ));
    let shadow = |what: &str| c.exec(&format!("getent {what} || echo none"));
    let accounts = || {
        c.exec(
            "for u in rbadmin rbown; do getent passwd $u || echo \"$u: none\"; getent shadow $u || echo \"$u: no shadow\"; done; \
             for g in rbown rbadm; do getent group $g || echo \"$g: none\"; getent gshadow $g || echo \"$g: no gshadow\"; done",
        )
    };
    let before = accounts();
    assert!(
        before.contains(&format!("rbown:{OWN_GROUP_HASH}:daemon,rbadmin:"))
            && before.contains(&format!("rbadm:{ADM_GROUP_HASH}:rbadmin,daemon:")),
        "{before}"
    );
    let config = |body: &str| accounts_config(&c, body);
    let project = |vault: bool| accounts_project(&c, vault);

    let sampler = harness::CmdlineSampler::start();
    let p = project(true);
    // The rollback re-creates in reverse: rbkeep, rbown (whose own group rbadmin administers),
    // the group rbadm (which rbadmin administers), and only then rbadmin.
    p.config(&config(
        "    user \"rbadmin\" state=\"absent\"\n    group \"rbadm\" state=\"absent\"\n    \
         user \"rbown\" state=\"absent\"\n    user \"rbkeep\" state=\"absent\"\n",
    ));
    apply_config(&p, "v2.lock");
    assert_eq!(
        shadow("group rbown"),
        "none\n",
        "userdel took rbown's own group"
    );
    assert_ne!(
        shadow("group rbkeep"),
        "none\n",
        "userdel kept rbkeep's group: it has a member"
    );
    // Changed after the run: the rollback must leave the group it did not delete alone.
    c.exec("gpasswd -A bin rbkeep");
    let keep = shadow("gshadow rbkeep");
    ok(p.nexus(&["rollback", "-o", "r.lock"]));
    let shown = ok(p.nexus(&["show", "r.lock"]));
    assert!(!shown.stdout.contains("locked"), "{shown:?}");
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(
        accounts(),
        before,
        "the own group's password and administrators, and rbadm's administrator, are back"
    );
    assert_eq!(
        shadow("gshadow rbkeep"),
        keep,
        "a group userdel kept is left alone"
    );
    // Rolling the rollback back deletes them again; rolling that back brings them back again.
    ok(p.nexus(&["rollback", "-o", "rr.lock"]));
    ok(p.nexus(&["apply", "rr.lock"]));
    assert_eq!(shadow("group rbown"), "none\n");
    assert_eq!(shadow("group rbadm"), "none\n");
    ok(p.nexus(&["rollback", "-o", "rrr.lock"]));
    ok(p.nexus(&["apply", "rrr.lock"]));
    assert_eq!(
        accounts(),
        before,
        "back again, with the passwords and administrators"
    );
    harness::assert_no_file_holds(
        p.dir(),
        &harness::leak_needles(&[OWN_USER_HASH, OWN_GROUP_HASH, ADM_GROUP_HASH]),
    );

    // Without a vault: the own group comes back locked, with its administrators.
    let q = project(false);
    q.config(&config("    user \"rbownnov\" state=\"absent\"\n"));
    apply_config(&q, "v2.lock");
    ok(q.nexus(&["rollback", "-o", "r.lock"]));
    let shown = ok(q.nexus(&["show", "r.lock"]));
    assert!(
        shown
            .stdout
            .contains("not kept (no vault is open to keep it encrypted): the group comes back without one (locked)"),
        "{shown:?}"
    );
    ok(q.nexus(&["apply", "r.lock"]));
    assert_eq!(shadow("gshadow rbownnov"), "rbownnov:!:daemon:\n");
    harness::assert_no_file_holds(q.dir(), &harness::leak_needles(&[OWN_NO_VAULT_HASH]));
    assert_no_command_line_holds(
        &sampler,
        &[
            OWN_USER_HASH,
            OWN_GROUP_HASH,
            ADM_GROUP_HASH,
            OWN_NO_VAULT_HASH,
        ],
    );
}

/// Tier 2: changes that depend on each other across runs are each undone at their own place.
/// On host A, run 1 moves a user off a group and then deletes the group, and run 2 changes the
/// user's shell: the user's run-1 groups can only come back after the group (undoing the user
/// at its newest change, both runs at once, fails with `usermod: group ... does not exist`).
/// On host B, run 1 changes a user's comment, and run 2 creates a group and makes it the user's
/// primary group: the group can only go after the user left it (undoing the user at its oldest
/// change fails with `groupdel: cannot remove the primary group`). A rollback of the rollback
/// re-applies host A's runs in turn.
#[test]
fn a_rollback_undoes_each_change_of_a_resource_at_its_own_place() {
    harness::nspawn::require_prerequisites();
    let a = harness::nspawn::Container::boot("rb-order-a");
    let b = harness::nspawn::Container::boot("rb-order-b");
    a.exec(
        "groupadd -g 3500 rbog && \
         useradd -u 3501 -G adm,rbog -d /home/rboa -s /bin/sh -c 'Order A' -m rboa",
    );
    b.exec("useradd -u 3601 -d /home/rbob -s /bin/sh -c 'Order B' -m rbob");
    let getent = |c: &harness::nspawn::Container, user: &str, groups: &str| {
        c.exec(&format!(
            "getent passwd {user}; id -Gn {user} | tr ' ' '\\n' | sort | tr '\\n' ' '; echo; \
             for g in {groups}; do getent group $g || echo \"$g: none\"; done"
        ))
    };
    let state_a = || getent(&a, "rboa", "rbog");
    let state_b = || getent(&b, "rbob", "rbob rbg2");
    let (before_a, before_b) = (state_a(), state_b());
    let p = Project::new();
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &[&a, &b]);
    p.write("ssh_config", "");
    let version = |on_a: &str, on_b: &str| {
        let host = |name: &str, c: &harness::nspawn::Container| {
            format!(
                "host \"{name}\" \"root@{}:{}\" identity=\"{}\"\n",
                c.ip,
                c.port,
                c.user_key.private.display()
            )
        };
        format!(
            "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n{}{}\
             task \"a\" on=\"rb-order-a\" {{\n{on_a}}}\n\
             task \"b\" on=\"rb-order-b\" {{\n{on_b}}}\n",
            host("rb-order-a", &a),
            host("rb-order-b", &b),
        )
    };
    p.config(&version(
        "    user \"rboa\" groups=\"adm\"\n    group \"rbog\" state=\"absent\"\n",
        "    user \"rbob\" comment=\"Changed B\"\n",
    ));
    apply_config(&p, "v1.lock");
    p.config(&version(
        "    user \"rboa\" shell=\"/bin/bash\"\n",
        "    group \"rbg2\" gid=3602\n    user \"rbob\" group=\"rbg2\"\n",
    ));
    apply_config(&p, "v2.lock");
    let (after_a, after_b) = (state_a(), state_b());
    assert!(after_a.contains("rbog: none"), "{after_a}");
    assert!(after_b.contains(":3602:"), "{after_b}");

    let r = ok(p.nexus(&["rollback", "--to", "0", "-o", "r.lock"]));
    assert!(!r.stderr.contains("irreversible"), "{r:?}");
    let plan = nexus::plan::lockfile::read(&p.path("r.lock")).unwrap().plan;
    let order: Vec<(&str, Vec<&str>)> = plan
        .hosts
        .iter()
        .map(|h| {
            let labels = h.resources.iter().map(|r| r.label.as_str()).collect();
            (h.name.as_str(), labels)
        })
        .collect();
    assert_eq!(
        order,
        [
            ("rb-order-a", vec!["user rboa", "group rbog", "user rboa"]),
            ("rb-order-b", vec!["user rbob", "group rbg2", "user rbob"]),
        ]
    );
    let shown = ok(p.nexus(&["show", "r.lock"]));
    assert!(shown.stdout.contains("(undoes runs 1, 2)"), "{shown:?}");

    // A hand edit since the runs refuses the plan, naming the user once with both its entries.
    a.exec("usermod -s /bin/dash rboa");
    let refused = p.nexus(&["apply", "r.lock"]);
    assert_eq!(refused.code, 6, "{refused:?}");
    assert_eq!(
        refused.stderr.matches("user rboa").count(),
        1,
        "{refused:?}"
    );
    assert!(
        refused
            .stderr
            .contains("changed: rb-order-a: user rboa (rollback#1, rollback#3)"),
        "{refused:?}"
    );
    let forced = ok(p.nexus(&["rollback", "--to", "0", "--force", "-o", "r.lock"]));
    assert_eq!(forced.stderr.matches("user rboa").count(), 1, "{forced:?}");
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(state_a(), before_a, "host A is as before run 1");
    assert_eq!(state_b(), before_b, "host B is as before run 1");

    // Rolling back the rollback re-applies runs 1 and 2 on host A, each change at its place.
    let r = ok(p.nexus(&["rollback", "--host", "rb-order-a", "-o", "rr.lock"]));
    assert!(!r.stderr.contains("irreversible"), "{r:?}");
    ok(p.nexus(&["apply", "rr.lock"]));
    assert_eq!(state_a(), after_a, "host A is as run 2 left it");
}

/// A restored resource notifies its handlers as any change does, and a command the run executed
/// is listed as irreversible.
#[test]
fn a_rollback_notifies_handlers_and_lists_what_it_cannot_undo() {
    let h = SshHost::builder("rb-hand").private_srv().start();
    let version = |content: &str| {
        format!(
            "task \"site\" on=\"rb-hand\" {{\n    \
             file \"/srv/site.conf\" content=\"{content}\" notify=\"reload\"\n    \
             command \"echo {content} >> /srv/log\" creates=\"/srv/{content}.done\"\n}}\n\
             handler \"reload\" {{\n    command \"echo reload >> /srv/reloads\"\n}}\n"
        )
    };
    let p = Project::over(&[&h], "", &version("v1"));
    apply_config(&p, "v1.lock");
    let head = harness::project_config(p.dir(), &[&h], "");
    p.config(&format!("{head}{}", version("v2")));
    apply_config(&p, "v2.lock");
    let reloads = || std::fs::read_to_string(h.srv().join("reloads")).unwrap();
    assert_eq!(reloads(), "reload\nreload\n");

    let r = ok(p.nexus(&["rollback", "-o", "r.lock"]));
    assert!(
        r.stderr.contains("irreversible: command"),
        "the command is listed: {r:?}"
    );
    let shown = ok(p.nexus(&["show", "r.lock"]));
    assert!(
        shown
            .stdout
            .contains("Rollback to the state after run 1 (undoes run 2)"),
        "{shown:?}"
    );
    assert!(shown.stdout.contains("irreversible: command"), "{shown:?}");
    ok(p.nexus(&["apply", "r.lock"]));
    assert_eq!(
        std::fs::read_to_string(h.srv().join("site.conf")).unwrap(),
        "v1"
    );
    assert_eq!(reloads(), "reload\nreload\nreload\n", "the handler ran");
}

/// `nexus run` keeps no pre-images: a rollback across its changes is refused, not silently partial.
#[test]
fn a_rollback_across_a_nexus_run_is_refused() {
    let h = SshHost::builder("rb-run").private_srv().start();
    let p = project(&h, 1);
    apply_config(&p, "v1.lock");
    use_version(&p, &h, 2, "");
    ok(p.nexus(&["run"]));
    let refused = p.nexus(&["rollback", "--to", "0", "-o", "r.lock"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("`nexus run`"), "{refused:?}");
    assert!(!p.path("r.lock").exists());
}

/// A command that declares `undo` is undone by running it.
#[test]
fn a_command_with_undo_is_undone() {
    let h = SshHost::builder("rb-undo").private_srv().start();
    let version = |with: bool| {
        let cmd = match with {
            true => {
                "    command \"echo made > /srv/made\" creates=\"/srv/made\" undo=\"rm /srv/made\"\n"
            }
            false => "",
        };
        format!("task \"t\" on=\"rb-undo\" {{\n    file \"/srv/keep\" content=\"k\"\n{cmd}}}\n")
    };
    let p = Project::over(&[&h], "", &version(false));
    apply_config(&p, "v1.lock");
    let head = harness::project_config(p.dir(), &[&h], "");
    p.config(&format!("{head}{}", version(true)));
    apply_config(&p, "v2.lock");
    assert!(h.srv().join("made").exists());
    let r = ok(p.nexus(&["rollback", "-o", "r.lock"]));
    assert!(!r.stderr.contains("irreversible"), "{r:?}");
    ok(p.nexus(&["apply", "r.lock"]));
    assert!(!h.srv().join("made").exists());
    assert!(h.srv().join("keep").exists(), "run 1 is not undone");
}

/// The deploy of `content` to three hosts in a canary rollout that rolls back when the health
/// check (the file holds v1) fails.
fn canary(hosts: &[&SshHost], content: &str, on_failure: &str) -> String {
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    format!(
        "group \"web\" {names}\n\
         task \"deploy\" on=\"web\" strategy=\"canary\" canary=1 {on_failure} {{\n    \
         file \"/srv/site.conf\" content=\"{content}\" notify=\"reload\"\n    \
         health-check {{\n        command \"grep -qx v1 /srv/site.conf\"\n    }}\n}}\n\
         handler \"reload\" {{\n    command \"echo reload >> /srv/reloads\"\n}}\n",
        names = names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A canary whose health check fails on v2 is put back on v1 (bytes and handler) by the same
/// apply; the other hosts are never touched, both runs are recorded, and a plan of v1 is empty.
#[test]
fn a_failed_canary_is_rolled_back_automatically() {
    let hs: Vec<SshHost> = ["rb-auto1", "rb-auto2", "rb-auto3"]
        .iter()
        .map(|n| SshHost::builder(n).private_srv().start())
        .collect();
    let hosts: Vec<&SshHost> = hs.iter().collect();
    let rollback = "on-failure=\"rollback\"";
    let p = Project::over(&hosts, "", &canary(&hosts, "v1", rollback));
    apply_config(&p, "v1.lock");
    let head = harness::project_config(p.dir(), &hosts, "");
    p.config(&format!("{head}{}", canary(&hosts, "v2", rollback)));
    ok(p.nexus(&["plan", "-o", "v2.lock"]));
    let failed = p.nexus(&["apply", "v2.lock"]);
    assert_eq!(failed.code, 1, "the run still failed: {failed:?}");
    assert!(
        failed
            .stdout
            .contains("Rollback of task deploy: SUCCESS (run 3"),
        "{failed:?}"
    );
    assert!(
        failed
            .stdout
            .contains("health check after the rollback: 1 of 1 passed"),
        "{failed:?}"
    );
    let site = |h: &SshHost| std::fs::read_to_string(h.srv().join("site.conf")).unwrap();
    let reloads = |h: &SshHost| std::fs::read_to_string(h.srv().join("reloads")).unwrap();
    assert_eq!(site(&hs[0]), "v1", "the canary is back on v1");
    assert_eq!(
        reloads(&hs[0]),
        "reload\nreload\nreload\n",
        "v1, v2, rollback"
    );
    for h in &hs[1..] {
        assert_eq!(site(h), "v1");
        assert_eq!(reloads(h), "reload\n", "{} was never touched by v2", h.name);
    }
    let history = ok(p.nexus(&["history", "--format", "json"]));
    assert!(
        history.stdout.contains("\"rolled_back_by\": 3"),
        "{history:?}"
    );
    let generations = ok(p.nexus(&["history", "--host", "rb-auto1"]));
    assert!(
        generations.stdout.contains("rollback to 1"),
        "{generations:?}"
    );
    p.config(&format!("{head}{}", canary(&hosts, "v1", rollback)));
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");
}

/// Tier 2: a canary of three booted systemd hosts whose v2 changes a service's unit (and turns
/// it off at boot) fails its health check; the same apply restores the canary's unit file, its
/// enablement and, through the restart handler, the running service; the other two hosts are
/// never touched (same main PID as before v2).
#[test]
fn a_failed_canary_with_a_service_is_rolled_back_on_systemd_hosts() {
    harness::nspawn::require_prerequisites();
    let cs: Vec<harness::nspawn::Container> = ["rb-can1", "rb-can2", "rb-can3"]
        .iter()
        .map(|n| harness::nspawn::Container::boot(n))
        .collect();
    let p = Project::new();
    harness::nspawn::write_known_hosts(&p.path("known_hosts"), &cs.iter().collect::<Vec<_>>());
    p.write("ssh_config", "");
    let version = |v: u32| {
        let hosts: String = cs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "host \"can{i}\" \"root@{}:{}\" identity=\"{}\"\n",
                    c.ip,
                    c.port,
                    c.user_key.private.display()
                )
            })
            .collect();
        let unit = format!(
            "[Unit]\\nDescription=nexus canary demo\\n[Service]\\nEnvironment=VERSION={v}\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n"
        );
        format!(
            "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"\n{hosts}\
             group \"web\" \"can0\" \"can1\" \"can2\"\n\
             task \"deploy\" on=\"web\" strategy=\"canary\" canary=1 on-failure=\"rollback\" {{\n    \
             file \"/etc/systemd/system/nexus-canary.service\" content=\"{unit}\" notify=\"restart\"\n    \
             service \"nexus-canary\" state=\"running\" enabled={enabled}\n    \
             health-check {{\n        \
             command \"systemctl is-active --quiet nexus-canary && systemctl show -p Environment --value nexus-canary | grep -qx VERSION=1\"\n    \
             }}\n}}\n\
             handler \"restart\" {{\n    command \"systemctl daemon-reload && systemctl restart nexus-canary\"\n}}\n",
            enabled = if v == 1 { "#true" } else { "#false" },
        )
    };
    let state = |c: &harness::nspawn::Container| {
        c.exec(
            "systemctl is-active nexus-canary || true; systemctl is-enabled nexus-canary || true; \
             systemctl show -p Environment --value nexus-canary; systemctl show -p MainPID --value nexus-canary",
        )
    };
    p.config(&version(1));
    apply_config(&p, "v1.lock");
    let before: Vec<String> = cs.iter().map(state).collect();
    for s in &before {
        assert!(s.starts_with("active\nenabled\nVERSION=1\n"), "{s}");
    }
    p.config(&version(2));
    ok(p.nexus(&["plan", "-o", "v2.lock"]));
    let failed = p.nexus(&["apply", "v2.lock"]);
    assert_eq!(failed.code, 1, "the run still failed: {failed:?}");
    assert!(
        failed.stdout.contains("Rollback of task deploy: SUCCESS"),
        "{failed:?}"
    );
    assert!(
        failed
            .stdout
            .contains("health check after the rollback: 1 of 1 passed"),
        "{failed:?}"
    );
    let canary = state(&cs[0]);
    assert!(
        canary.starts_with("active\nenabled\nVERSION=1\n"),
        "the canary runs v1's unit again, enabled: {canary}"
    );
    assert_ne!(
        canary, before[0],
        "the handler restarted it (a new main PID)"
    );
    for (c, was) in cs[1..].iter().zip(&before[1..]) {
        assert_eq!(&state(c), was, "{} was never touched", c.name);
    }
    p.config(&version(1));
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");
}

/// Without `on-failure="rollback"` the canary stays as the failed run left it; with it, a task
/// that cannot stop a rollout is refused, and `nexus run` says why it cannot roll back.
#[test]
fn automatic_rollback_is_only_what_was_asked_for() {
    let h = SshHost::builder("rb-ask").private_srv().start();
    let p = Project::over(&[&h], "", &canary(&[&h], "v1", ""));
    apply_config(&p, "v1.lock");
    let head = harness::project_config(p.dir(), &[&h], "");
    p.config(&format!("{head}{}", canary(&[&h], "v2", "")));
    ok(p.nexus(&["plan", "-o", "v2.lock"]));
    let failed = p.nexus(&["apply", "v2.lock"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(!failed.stdout.contains("Rollback"), "{failed:?}");
    assert_eq!(
        std::fs::read_to_string(h.srv().join("site.conf")).unwrap(),
        "v2"
    );

    p.config(&format!(
        "{head}task \"t\" on=\"{}\" on-failure=\"rollback\" {{\n    command \"true\"\n}}\n",
        h.name
    ));
    let refused = p.nexus(&["plan"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("on-failure"), "{refused:?}");

    p.config(&format!(
        "{head}{}",
        canary(&[&h], "v3", "on-failure=\"rollback\"")
    ));
    let run = p.nexus(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("Rollback: NOT DONE") && run.stdout.contains("records no pre-images"),
        "{run:?}"
    );
}
