//! Facts that are decided once, by the application layer, for every command: the secrets a run
//! needs (webhooks and sudo passwords included), a host's connection as the plan records it, and
//! `-j` as one limit over the whole run. Each test reproduces a bug where two places disagreed.

mod harness;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::project::{Project, login};
use harness::webhook::Webhook;
use harness::{SUDO_PW, SUDO_PW_USER, SshHost, TEST_USER};

/// `nexus apply plan.lock` sends a webhook whose URL is a vault secret (it used to read only the
/// resources' and sudo secrets, and reported "NOT SENT").
#[test]
fn apply_sends_a_webhook_whose_url_is_a_secret() {
    let hook = Webhook::start(200);
    let h = SshHost::start("hk");
    let p = Project::over(
        &[&h],
        "",
        "notify \"ops\" url=(secret)\"HOOK\" template=\"generic\" on=\"always\" retries=0\n\
         task \"t\" on=\"hk\" { command \"true\" }\n",
    )
    .with_vault(&[("HOOK", &hook.url)]);
    let r = p.nexus(&["plan", "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = p.nexus(&["apply", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("NOT SENT"), "{r:?}");
    let got = hook.bodies();
    assert_eq!(got.len(), 1, "{r:?}");
    assert_eq!(got[0]["kind"], "apply");
    assert_eq!(got[0]["event"], "success");
    // The URL is a credential: never printed.
    assert!(!r.stdout.contains("secret-path") && !r.stderr.contains("secret-path"));
}

/// `nexus preflight` checks sudo with a password from the vault, as plan and apply use it.
#[test]
fn preflight_passes_with_a_vault_sudo_password() {
    let h = SshHost::start("vs");
    let p = Project::new();
    harness::write_known_hosts(&p.path("known_hosts"), &[&h]);
    p.write("ssh_config", "");
    p.config(&format!(
        "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\" \
         become-user=\"{TEST_USER}\" sudo-password=(secret)\"SUDO\"\n\
         host \"vs\" \"{SUDO_PW_USER}@{}:{}\" identity=\"{}\"\n\
         task \"t\" on=\"vs\" {{ command \"id\" sudo=#true }}\n",
        h.ip,
        h.port,
        h.user_key.private.display()
    ));
    let p = p.with_vault(&[("SUDO", SUDO_PW)]);
    let r = p.nexus(&["preflight"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("[ok]   vs: sudo: can run commands as {TEST_USER}")),
        "{r:?}"
    );
}

/// A `jump` given as an address (`user@host:port`, not a configured host) is reached by apply
/// exactly as by plan.
#[test]
fn apply_reaches_a_host_through_an_address_form_jump() {
    let bastion = SshHost::start("jb");
    let target = SshHost::start("jt");
    // Both hosts accept the target's key, so one identity (-i) serves the jump and the target.
    bastion.authorize(&target.user_key.public);
    let p = Project::new();
    harness::write_known_hosts(&p.path("known_hosts"), &[&bastion, &target]);
    p.write("ssh_config", "");
    let marker = p.path("jumped");
    p.config(&format!(
        "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\" connect-timeout=\"10s\"\n\
         host \"jt\" \"{}\" identity=\"{}\" jump=\"{}\"\n\
         task \"t\" on=\"jt\" {{ command \"touch {}\" creates=\"{}\" }}\n",
        login(&target),
        target.user_key.private.display(),
        login(&bastion),
        marker.display(),
        marker.display(),
    ));
    std::fs::set_permissions(p.dir(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let logins = || bastion.log().matches("Accepted publickey").count();
    let key = target.user_key.private.display().to_string();
    let r = p.nexus(&["plan", "-i", &key, "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = logins();
    assert!(before >= 1, "plan went through the jump host");
    let r = p.nexus(&["apply", "-i", &key, "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(marker.exists(), "{r:?}");
    assert!(logins() > before, "apply went through the jump host");
}

/// A host's own `connect-timeout` reaches apply: a host that accepts TCP but never speaks SSH
/// times out at its configured 1 s, not at the defaults' 30 s.
#[test]
fn apply_honours_a_hosts_connect_timeout() {
    let mut h = SshHost::start("ct");
    let p = Project::new();
    harness::write_known_hosts(&p.path("known_hosts"), &[&h]);
    p.write("ssh_config", "");
    p.config(&format!(
        "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\" connect-timeout=\"30s\"\n\
         host \"ct\" \"{}\" identity=\"{}\" connect-timeout=\"1s\"\n\
         task \"t\" on=\"ct\" {{ command \"true\" }}\n",
        login(&h),
        h.user_key.private.display(),
    ));
    let r = p.nexus(&["plan", "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    // The host goes silent: the address still accepts connections but never answers.
    h.kill();
    let silent = TcpListener::bind((h.ip, h.port)).expect("take over the host's address");
    let r = p.nexus(&["apply", "plan.lock"]);
    drop(silent);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("connection timed out after 1s"), "{r:?}");
}

/// `-j 2` bounds the whole run: three independent tasks over six hosts never have more than two
/// hosts at work at once, counted from the hosts' sshd.
#[test]
fn parallel_is_one_limit_over_all_tasks() {
    let hosts: Vec<SshHost> = (0..6).map(|i| SshHost::start(&format!("j{i}"))).collect();
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    // Each task on its own two hosts: only a limit over all tasks keeps them from overlapping.
    let mut tasks = String::new();
    for (t, pair) in ["a", "b", "c"].iter().zip(names.chunks(2)) {
        tasks.push_str(&format!(
            "group \"g{t}\" \"{}\" \"{}\"\ntask \"{t}\" on=\"g{t}\" {{ command \"sleep 0.4\" }}\n",
            pair[0], pair[1]
        ));
    }
    let p = Project::over(&refs, " connect-timeout=\"10s\"", &tasks);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let hosts = &hosts;
        move || {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                let busy: usize = hosts.iter().map(|h| h.running("sleep")).sum();
                most = most.max(busy);
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        }
    };
    let (r, most) = std::thread::scope(|s| {
        let counter = s.spawn(sampler);
        let r = p.nexus(&["run", "-j", "2"]);
        done.store(true, Ordering::Relaxed);
        (r, counter.join().unwrap())
    });
    assert_eq!(r.code, 0, "{r:?}");
    assert!(most >= 1, "the sampler saw the commands run");
    assert!(most <= 2, "{most} commands at once with -j 2");
}
