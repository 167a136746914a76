//! Transports and facts against real sshd servers (see tests/harness): commands, stdin/stdout,
//! exit codes, concurrent channels, file writes, sudo, auth, host keys, jump hosts, and faults.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{Agent, KeyPair, SUDO_PW, SUDO_PW_USER, SshHost, TEST_USER};
use nexus::facts::{self, InitSystem};
use nexus::transport::{
    AgentSource, Become, CommandSpec, ExitStatus, HostKeyPolicy, LocalTransport, OutputStream,
    SshConfigSource, SshOptions, SshPool, SshTarget, Transport, TransportError,
};

/// A pool trusting `hosts`, isolated from the machine's ssh configuration.
fn pool(hosts: &[&SshHost]) -> (tempfile::TempDir, SshPool) {
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    harness::write_known_hosts(&kh, hosts);
    let pool = SshPool::new(harness::isolated_options(&kh)).unwrap();
    (dir, pool)
}

/// A pool logging in to `host` as the user whose sudo needs a password, and that target.
fn sudo_pw_pool(host: &SshHost) -> (tempfile::TempDir, SshPool, SshTarget) {
    let target = SshTarget {
        user: Some(SUDO_PW_USER.into()),
        ..host.target()
    };
    let (dir, pool) = pool(&[host]);
    (dir, pool, target)
}

fn pool_with(opts: SshOptions) -> SshPool {
    SshPool::new(opts).unwrap()
}

async fn run_ok(t: &dyn Transport, script: &str) -> String {
    let out = t.run(&CommandSpec::new(script.to_string())).await.unwrap();
    assert!(out.success(), "{script}: {}", out.failure_summary());
    out.stdout_str()
}

/// Asserts that a healthy host still works in a run where another host failed.
async fn assert_healthy(pool: &SshPool, host: &SshHost) {
    let t = pool.transport(&host.target()).unwrap();
    assert_eq!(run_ok(&*t, "echo alive").await, "alive\n");
}

fn assert_names_host(err: &TransportError, host: &SshHost) {
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{} (", host.name)),
        "error does not start with the host name {:?}: {msg}",
        host.name
    );
    assert_eq!(err.host().map(|h| h.starts_with(&host.name)), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_are_gathered_in_one_round_trip() {
    let host = SshHost::start("facts1");
    let (_dir, pool) = pool(&[&host]);
    let t = pool.transport(&host.target()).unwrap();

    let f = facts::gather_facts(&*t).await.unwrap();

    assert_eq!(t.commands_run(), 1, "facts must take a single command");
    assert_eq!(t.connections_opened(), 1);
    assert_eq!(f.os, "linux");
    assert_eq!(f.user, TEST_USER);
    assert_eq!(Some(f.uid), harness::uid_of(TEST_USER));
    assert_eq!(f.home, format!("/home/{TEST_USER}"));
    assert_eq!(f.shell, "/bin/sh");
    assert!(f.cpu_count >= 1);
    assert!(f.memory_total_bytes > 1 << 20);
    assert!(!f.hostname.is_empty() && !f.kernel.is_empty() && !f.architecture.is_empty());
    // The harness hosts are this machine; compare with what it says locally.
    let local = facts::gather_facts(&LocalTransport::new("localhost"))
        .await
        .unwrap();
    assert_eq!(f.distribution, local.distribution);
    assert_eq!(f.os_family, local.os_family);
    assert_eq!(f.package_manager, local.package_manager);
    assert_eq!(f.init_system, local.init_system);
    assert_eq!(f.machine_id, local.machine_id);
    assert!(matches!(
        f.init_system,
        InitSystem::Systemd | InitSystem::Openrc | InitSystem::Other
    ));
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(serde_json::from_str::<facts::Facts>(&json).unwrap(), f);
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_get_stdin_and_report_output_and_exit_codes() {
    let host = SshHost::start("cmd1");
    let (_dir, pool) = pool(&[&host]);
    let ssh = pool.transport(&host.target()).unwrap();
    let local = LocalTransport::new("localhost");

    for t in [&*ssh as &dyn Transport, &local] {
        let out = t
            .run(&CommandSpec::new("cat; echo oops >&2; exit 3").stdin(b"line1\nline2".to_vec()))
            .await
            .unwrap();
        assert_eq!(out.exit, ExitStatus::Code(3), "{}", t.label());
        assert_eq!(out.stdout, b"line1\nline2");
        assert_eq!(out.stderr, b"oops\n");

        // No stdin: the command sees end of file at once rather than hanging.
        let out = t.run(&CommandSpec::new("wc -c")).await.unwrap();
        assert_eq!(out.stdout_str().trim(), "0");

        // Binary stdin larger than an SSH window survives intact.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let out = t
            .run(&CommandSpec::new("cksum").stdin(big.clone()))
            .await
            .unwrap();
        let local_sum = LocalTransport::new("ref")
            .run(&CommandSpec::new("cksum").stdin(big))
            .await
            .unwrap();
        assert_eq!(out.stdout, local_sum.stdout);

        let out = t.run(&CommandSpec::new("kill -TERM $$")).await.unwrap();
        assert_eq!(out.exit, ExitStatus::Signal("TERM".into()), "{}", t.label());
    }
    assert!(ssh.commands_run() >= 4);
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_reach_the_command_but_not_its_command_line() {
    let host = SshHost::start("env1");
    let (_dir, pool) = pool(&[&host]);
    let ssh = pool.transport(&host.target()).unwrap();
    let local = LocalTransport::new("localhost");
    let secret = "probe-7f3a9 'quoted' \"double\" $HOME `x` \\ %s\nsecond line\n\n";

    for t in [&*ssh as &dyn Transport, &local] {
        // The probe is looked for in the command lines of the script's shell and its parent;
        // the script text itself only names the variable.
        let cmd = CommandSpec::new(
            "printf '%s' \"$SECRET_TOKEN\"; \
             for p in $$ $PPID; do if tr '\\0' ' ' < /proc/$p/cmdline | grep -qF \"$PROBE\"; then echo LEAK >&2; fi; done; \
             cat",
        )
        .env("PROBE", "probe-7f3a9")
        .env("SECRET_TOKEN", secret)
        .env("OTHER", "")
        .stdin(b"after env".to_vec());
        let out = t.run(&cmd).await.unwrap();
        assert!(out.success(), "{}", out.failure_summary());
        assert_eq!(out.stdout_str(), format!("{secret}after env"));
        assert!(!out.stderr_str().contains("LEAK"));

        // Control: the same check does see a value that is on the command line.
        let mut on_argv = cmd.clone();
        on_argv.script = format!(": probe-7f3a9; {}", cmd.script).into();
        let out = t.run(&on_argv).await.unwrap();
        assert!(out.stderr_str().contains("LEAK"), "{}", t.label());
    }

    let err = ssh
        .run(&CommandSpec::new("true").env("BAD-NAME", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::InvalidCommand { .. }));
    assert_names_host(&err, &host);
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_while_the_command_runs() {
    let host = SshHost::start("stream1");
    let (_dir, pool) = pool(&[&host]);
    let ssh = pool.transport(&host.target()).unwrap();
    let local = LocalTransport::new("localhost");

    for t in [&*ssh as &dyn Transport, &local] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cmd = CommandSpec::new("echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three");
        let running = t.run_streaming(&cmd, Some(tx));
        let collect = async {
            let mut first_at = None;
            let mut chunks = Vec::new();
            let start = std::time::Instant::now();
            while let Some(c) = rx.recv().await {
                first_at.get_or_insert(start.elapsed());
                chunks.push(c);
            }
            (first_at, chunks)
        };
        let (out, (first_at, chunks)) = tokio::join!(running, collect);
        let out = out.unwrap();
        assert_eq!(out.stdout_str(), "one\nthree\n");
        assert_eq!(out.stderr_str(), "two\n");
        let stdout: Vec<u8> = chunks
            .iter()
            .filter(|c| c.stream == OutputStream::Stdout)
            .flat_map(|c| c.data.clone())
            .collect();
        assert_eq!(stdout, b"one\nthree\n");
        // The first line arrived before the command finished.
        assert!(first_at.unwrap() < out.duration, "{}", t.label());
    }
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_channels_share_one_connection() {
    let host = SshHost::start("chan1");
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    harness::write_known_hosts(&kh, &[&host]);
    let pool = pool_with(SshOptions {
        max_channels: 20,
        ..harness::isolated_options(&kh)
    });
    let t = pool.transport(&host.target()).unwrap();

    let runs = (0..20).map(|i| {
        let t = t.clone();
        tokio::spawn(async move {
            t.run(&CommandSpec::new(format!("sleep 0.2; echo {i}")))
                .await
                .map(|o| o.stdout_str())
        })
    });
    let results = futures_join_all(runs).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), format!("{i}\n"));
    }
    assert_eq!(t.commands_run(), 20);
    assert_eq!(
        t.connections_opened(),
        1,
        "all channels must share one connection"
    );
    assert_eq!(pool.connections_opened(), 1);

    // More commands than channels: the limit queues them instead of failing.
    let small = pool_with(SshOptions {
        max_channels: 2,
        ..harness::isolated_options(&kh)
    });
    let t2 = small.transport(&host.target()).unwrap();
    let runs = (0..8).map(|i| {
        let t = t2.clone();
        tokio::spawn(async move { t.run(&CommandSpec::new(format!("echo {i}"))).await })
    });
    for r in futures_join_all(runs).await {
        assert!(r.unwrap().success());
    }
    assert_eq!(small.connections_opened(), 1);

    // Same name, same transport: the pool hands out one per host.
    assert!(Arc::ptr_eq(&t, &pool.transport(&host.target()).unwrap()));
    pool.close_all().await;
    small.close_all().await;
}

async fn futures_join_all<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.expect("task panicked"));
    }
    out
}

/// Replaces `path` on the host as a plan's file write does (`plan::file_write`, the one
/// way nexus writes a file), with its content on stdin; the failure summary when it fails.
async fn write(
    t: &dyn Transport,
    path: &str,
    content: &[u8],
    mode: Option<&str>,
    owner: Option<&str>,
    sudo: Option<Become>,
) -> Result<(), String> {
    let w = nexus::plan::file_write::FileWrite {
        path: path.into(),
        owner: owner.map(str::to_string),
        group: None,
        mode: mode.map(str::to_string),
        replaces_link: false,
        backup_to: None,
        sha256: nexus::resources::file::sha256_hex(content),
    };
    let mut cmd = CommandSpec::new(w.script()).stdin(content.to_vec());
    cmd.sudo = sudo;
    let out = t.run(&cmd).await.map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(out.failure_summary())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_written_atomically_on_separate_hosts() {
    let a = SshHost::builder("filesa").private_srv().start();
    let b = SshHost::builder("filesb").private_srv().start();
    let (_dir, pool) = pool(&[&a, &b]);
    let ta = pool.transport(&a.target()).unwrap();
    let tb = pool.transport(&b.target()).unwrap();

    write(&*ta, "/srv/app.conf", b"port = 1\n", None, None, None)
        .await
        .unwrap();
    write(
        &*tb,
        "/srv/app.conf",
        b"port = 2\n",
        Some("0600"),
        None,
        None,
    )
    .await
    .unwrap();
    // Each host has its own /srv.
    assert_eq!(
        std::fs::read(a.srv().join("app.conf")).unwrap(),
        b"port = 1\n"
    );
    assert_eq!(
        std::fs::read(b.srv().join("app.conf")).unwrap(),
        b"port = 2\n"
    );
    assert_eq!(run_ok(&*ta, "stat -c %a /srv/app.conf").await, "644\n");
    assert_eq!(run_ok(&*tb, "stat -c %a /srv/app.conf").await, "600\n");

    // Replacing keeps the mode, leaves no temporary file behind, and swaps the inode
    // (a rename, not an in-place rewrite that a reader could observe half done).
    let inode_before = run_ok(&*tb, "stat -c %i /srv/app.conf").await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    write(&*tb, "/srv/app.conf", &binary, None, None, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(b.srv().join("app.conf")).unwrap(), binary);
    assert_eq!(run_ok(&*tb, "stat -c %a /srv/app.conf").await, "600\n");
    assert_ne!(run_ok(&*tb, "stat -c %i /srv/app.conf").await, inode_before);
    assert_eq!(run_ok(&*tb, "ls -A /srv").await, "app.conf\n");

    // Writing where the user may not: a clear error, nothing left; with sudo it works.
    let err = write(&*ta, "/etc/nexus-test-denied", b"x", None, None, None)
        .await
        .unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(
        run_ok(&*ta, "ls -A /etc | grep -c nexus || true").await,
        "0\n"
    );
    write(
        &*ta,
        "/srv/root-owned",
        b"by root\n",
        Some("0640"),
        Some("root"),
        Some(Become::root()),
    )
    .await
    .unwrap();
    assert_eq!(
        run_ok(&*ta, "stat -c '%U %a' /srv/root-owned").await,
        "root 640\n"
    );
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_transport_writes_files_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalTransport::new("localhost");
    let path = dir.path().join("out.txt");
    write(&local, path.to_str().unwrap(), b"hello", None, None, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"hello");

    let started = std::time::Instant::now();
    let err = local
        .run(&CommandSpec::new("sleep 30 & sleep 30").timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::CommandTimeout { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("localhost (local): command timed out")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_without_password_and_with_password_over_stdin() {
    let host = SshHost::start("sudo1");
    let (_dir, pool) = pool(&[&host]);
    let t = pool.transport(&host.target()).unwrap();

    // NOPASSWD: plain `sudo -n`.
    let out = t
        .run(
            &CommandSpec::new("id -un; cat")
                .sudo(Become::root())
                .stdin(b"in".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "root\nin");
    // A password given although sudo does not ask for it must not reach the command.
    let out = t
        .run(
            &CommandSpec::new("id -un; cat")
                .sudo(Become::root().with_password("unused"))
                .stdin(b"in".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "root\nin");

    // A user whose sudo needs a password.
    let (_dir2, pw_pool, pw_target) = sudo_pw_pool(&host);
    let tp = pw_pool.transport(&pw_target).unwrap();
    assert_eq!(run_ok(&*tp, "id -un").await, format!("{SUDO_PW_USER}\n"));

    let err = tp
        .run(&CommandSpec::new("id -un").sudo(Become::user(TEST_USER)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::SudoPasswordRequired { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("sudo requires a password"));
    assert!(err.to_string().starts_with(&format!("{} (", host.name)));

    let cmd = CommandSpec::new("id -un; printf '%s|' \"$TOKEN\"; cat")
        .sudo(Become::user(TEST_USER).with_password(SUDO_PW))
        .env("TOKEN", "t0k")
        .stdin(b"payload".to_vec());
    let out = tp.run(&cmd).await.unwrap();
    assert!(out.success(), "{}", out.failure_summary());
    assert_eq!(out.stdout_str(), format!("{TEST_USER}\nt0k|payload"));

    let err = tp
        .run(&CommandSpec::new("id -un").sudo(Become::user(TEST_USER).with_password("wrong")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::SudoPasswordIncorrect { .. }),
        "{err}"
    );

    // The password user may not become root at all.
    let err = tp
        .run(&CommandSpec::new("id -un").sudo(Become::root().with_password(SUDO_PW)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::SudoNotAllowed { .. }),
        "unexpected: {err}"
    );
    pool.close_all().await;
    pw_pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_flag_overrides_the_configured_user() {
    let host = SshHost::start("user1");
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    harness::write_known_hosts(&kh, &[&host]);
    let pool = pool_with(SshOptions {
        user: Some(SUDO_PW_USER.into()),
        ..harness::isolated_options(&kh)
    });
    let t = pool.transport(&host.target()).unwrap();
    assert_eq!(run_ok(&*t, "id -un").await, format!("{SUDO_PW_USER}\n"));
    assert!(t.label().contains(&format!("{SUDO_PW_USER}@")));
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_agent_keys_are_used() {
    let host = SshHost::start("agent1");
    let agent = Agent::start();
    agent.add(&host.user_key.private);
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    harness::write_known_hosts(&kh, &[&host]);
    let pool = pool_with(SshOptions {
        agent: AgentSource::Socket(agent.socket.clone()),
        ..harness::isolated_options(&kh)
    });
    let target = SshTarget {
        identity_files: vec![],
        ..host.target()
    };
    let t = pool.transport(&target).unwrap();
    assert_eq!(run_ok(&*t, "id -un").await, format!("{TEST_USER}\n"));
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_key_needs_a_passphrase() {
    let host = SshHost::start("enc1");
    let healthy = SshHost::start("enc2");
    let key = KeyPair::generate(&host.dir().join("id_encrypted"), "correct horse");
    host.authorize(&key.public);
    let target = SshTarget {
        identity_files: vec![key.private.clone()],
        ..host.target()
    };

    let (_dir, pool) = pool(&[&host, &healthy]);
    let err = pool
        .transport(&target)
        .unwrap()
        .run(&CommandSpec::new("true"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::EncryptedKeyNoPassphrase { .. }),
        "{err}"
    );
    assert_names_host(&err, &host);
    assert!(err.to_string().contains("id_encrypted"));
    assert!(err.to_string().contains("ssh-add"));
    assert_healthy(&pool, &healthy).await;

    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    harness::write_known_hosts(&kh, &[&host]);
    let with_pass = pool_with(SshOptions {
        key_passphrase: Some("correct horse".into()),
        ..harness::isolated_options(&kh)
    });
    let t = with_pass.transport(&target).unwrap();
    assert_eq!(run_ok(&*t, "echo ok").await, "ok\n");
    pool.close_all().await;
    with_pass.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_host_explicit_and_from_ssh_config() {
    let bastion = SshHost::start("bastion1");
    let inner = SshHost::start("inner1");
    let (_dir, pool) = pool(&[&bastion, &inner]);

    let target = inner.target().jump(bastion.target());
    let t = pool.transport(&target).unwrap();
    assert_eq!(run_ok(&*t, "echo via jump").await, "via jump\n");
    assert_eq!(
        pool.connections_opened(),
        2,
        "one to the bastion, one tunnelled"
    );

    // The same through ~/.ssh/config-style settings: HostName, Port, User, IdentityFile,
    // ProxyJump, UserKnownHostsFile, all from the file.
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("kh");
    harness::write_known_hosts(&kh, &[&bastion, &inner]);
    let config = dir.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host jumpbox\n  HostName {bip}\n  Port {bport}\n\n\
             Host app-*\n  HostName {iip}\n  Port {iport}\n  ProxyJump jumpbox\n\n\
             Host *\n  User {TEST_USER}\n  IdentityFile {bkey}\n  IdentityFile {ikey}\n  UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n",
            bip = bastion.ip,
            bport = bastion.port,
            iip = inner.ip,
            iport = inner.port,
            bkey = bastion.user_key.private.display(),
            ikey = inner.user_key.private.display(),
            kh = kh.display(),
        ),
    )
    .unwrap();
    let cfg_pool = pool_with(SshOptions {
        ssh_config: SshConfigSource::File(config),
        agent: AgentSource::Disabled,
        default_identities: false,
        global_known_hosts_files: vec![],
        ..SshOptions::default()
    });
    let resolved = cfg_pool.resolve(&SshTarget::new("app-1")).unwrap();
    assert_eq!(resolved.host_name, inner.ip.to_string());
    assert_eq!(resolved.jump.as_ref().unwrap().port, bastion.port);
    assert_eq!(resolved.known_hosts_files, vec![kh.clone()]);
    let t = cfg_pool.transport(&SshTarget::new("app-1")).unwrap();
    assert_eq!(run_ok(&*t, "echo from config").await, "from config\n");

    // Hosts behind the same bastion share its connection.
    let t2 = cfg_pool.transport(&SshTarget::new("app-2")).unwrap();
    assert_eq!(run_ok(&*t2, "echo second").await, "second\n");
    assert_eq!(cfg_pool.connections_opened(), 3);

    pool.close_all().await;
    cfg_pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_host_failure_names_both_hosts() {
    let mut bastion = SshHost::start("bastion2");
    let inner = SshHost::start("inner2");
    let (_dir, pool) = pool(&[&bastion, &inner]);
    bastion.kill();
    let err = pool
        .transport(&inner.target().jump(bastion.target()))
        .unwrap()
        .run(&CommandSpec::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Jump { .. }), "{err}");
    assert_names_host(&err, &inner);
    assert!(
        err.to_string().contains("via jump host: bastion2 ("),
        "{err}"
    );
    assert!(err.to_string().contains("connection refused"), "{err}");
}

// ---- faults: each names the failing host, and a healthy host in the same run carries on ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_connection_refused() {
    let mut down = SshHost::start("refused1");
    let healthy = SshHost::start("refused2");
    let (_dir, pool) = pool(&[&down, &healthy]);
    down.kill();

    let err = pool
        .transport(&down.target())
        .unwrap()
        .run(&CommandSpec::new("true"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionRefused { .. }),
        "{err}"
    );
    assert_names_host(&err, &down);
    assert!(err.to_string().contains("connection refused"));
    assert!(err.is_connection_error());
    assert_healthy(&pool, &healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_wrong_key() {
    let host = SshHost::start("wrongkey1");
    let healthy = SshHost::start("wrongkey2");
    let (_dir, pool) = pool(&[&host, &healthy]);
    // The other host's key is valid, just not authorized here.
    let target = SshTarget {
        identity_files: vec![healthy.user_key.private.clone()],
        ..host.target()
    };
    let err = pool
        .transport(&target)
        .unwrap()
        .run(&CommandSpec::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::AuthFailed { .. }), "{err}");
    assert_names_host(&err, &host);
    let msg = err.to_string();
    assert!(
        msg.contains("authentication failed for user \"nexus-test\""),
        "{msg}"
    );
    assert!(
        msg.contains(&healthy.user_key.private.display().to_string()),
        "{msg}"
    );
    assert_healthy(&pool, &healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_unknown_host_key_then_accept_new() {
    let host = SshHost::start("unknown1");
    let healthy = SshHost::start("unknown2");
    // known_hosts trusts only the healthy host.
    let (dir, pool) = pool(&[&healthy]);
    let err = pool
        .transport(&host.target())
        .unwrap()
        .run(&CommandSpec::new("true"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{err}"
    );
    assert_names_host(&err, &host);
    let msg = err.to_string();
    assert!(
        msg.contains(&host.host_key.fingerprint()),
        "no fingerprint in: {msg}"
    );
    assert!(msg.contains("--accept-new-host-keys"), "{msg}");
    assert!(msg.contains("StrictHostKeyChecking accept-new"), "{msg}");
    assert_healthy(&pool, &healthy).await;

    // Accepting records the key; a strict run afterwards trusts it.
    let kh = dir.path().join("known_hosts");
    let accepting = pool_with(SshOptions {
        host_key_policy: Some(HostKeyPolicy::AcceptNew),
        ..harness::isolated_options(&kh)
    });
    let t = accepting.transport(&host.target()).unwrap();
    assert_eq!(run_ok(&*t, "echo accepted").await, "accepted\n");
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert!(recorded.contains(&host.known_hosts_line()), "{recorded}");
    let strict = pool_with(harness::isolated_options(&kh));
    let t = strict.transport(&host.target()).unwrap();
    assert_eq!(run_ok(&*t, "echo known").await, "known\n");
    accepting.close_all().await;
    strict.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_changed_host_key_is_refused_even_when_accepting_new() {
    let host = SshHost::start("changed1");
    let healthy = SshHost::start("changed2");
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        format!(
            "{}\n{}\n",
            host.wrong_known_hosts_line(),
            healthy.known_hosts_line()
        ),
    )
    .unwrap();
    let before = std::fs::read_to_string(&kh).unwrap();

    for policy in [None, Some(HostKeyPolicy::AcceptNew)] {
        let pool = pool_with(SshOptions {
            host_key_policy: policy,
            ..harness::isolated_options(&kh)
        });
        let err = pool
            .transport(&host.target())
            .unwrap()
            .run(&CommandSpec::new("true"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::ChangedHostKey { .. }),
            "{err}"
        );
        assert_names_host(&err, &host);
        let msg = err.to_string();
        assert!(msg.contains("HOST KEY CHANGED"), "{msg}");
        assert!(msg.contains(&host.host_key.fingerprint()), "{msg}");
        assert!(msg.contains(&format!("{}:1", kh.display())), "{msg}");
        assert_healthy(&pool, &healthy).await;
        pool.close_all().await;
    }
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        before,
        "known_hosts must not change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_entries_are_trusted() {
    let host = SshHost::start("hashed1");
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    harness::write_known_hosts(&kh, &[&host]);
    harness::run(
        std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&kh),
    );
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(
        text.starts_with("|1|"),
        "ssh-keygen -H did not hash: {text}"
    );
    let pool = pool_with(harness::isolated_options(&kh));
    let t = pool.transport(&host.target()).unwrap();
    assert_eq!(run_ok(&*t, "echo hashed").await, "hashed\n");
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sshd_killed_mid_command() {
    let mut host = SshHost::start("killed1");
    let healthy = SshHost::start("killed2");
    let (_dir, pool) = pool(&[&host, &healthy]);
    let t = pool.transport(&host.target()).unwrap();
    assert_eq!(run_ok(&*t, "echo before").await, "before\n");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let running = {
        let t = t.clone();
        tokio::spawn(async move {
            t.run_streaming(&CommandSpec::new("echo started; sleep 30"), Some(tx))
                .await
        })
    };
    // Kill only once the command is certainly running.
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(first.unwrap().unwrap().data, b"started\n");
    host.kill();
    let err = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("a killed host must not hang the command")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, TransportError::Disconnected { .. }), "{err}");
    assert_names_host(&err, &host);
    assert!(
        err.to_string()
            .contains("connection lost while running a command"),
        "{err}"
    );

    // The next command tries to reconnect, and says why it cannot.
    let err = t.run(&CommandSpec::new("true")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionRefused { .. }),
        "{err}"
    );
    assert_names_host(&err, &host);
    assert_healthy(&pool, &healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_command_timeout() {
    let host = SshHost::start("timeout1");
    let healthy = SshHost::start("timeout2");
    let (_dir, pool) = pool(&[&host, &healthy]);
    let t = pool.transport(&host.target()).unwrap();

    let started = std::time::Instant::now();
    let err = t
        .run(&CommandSpec::new("sleep 37; echo never").timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::CommandTimeout { .. }),
        "{err}"
    );
    assert_names_host(&err, &host);
    assert!(
        err.to_string().contains("command timed out after 500ms"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!err.is_connection_error());

    // The connection survives a timed-out command.
    assert_eq!(run_ok(&*t, "echo still here").await, "still here\n");
    // And the timed-out command does not keep running on the host.
    let mut left = String::new();
    for _ in 0..50 {
        left = run_ok(&*t, "ps -u nexus-test -o args | grep '^sleep 37' || true").await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "", "the timed-out command is still running");
    assert_eq!(t.connections_opened(), 1);
    assert_healthy(&pool, &healthy).await;
    pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_names_the_host() {
    // A listener that accepts TCP but never speaks SSH.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_with(SshOptions {
        connect_timeout: Some(Duration::from_millis(400)),
        ..harness::isolated_options(&dir.path().join("kh"))
    });
    let target = SshTarget::new("silent1")
        .address("127.0.0.1")
        .port(port)
        .user(TEST_USER);
    let err = pool
        .transport(&target)
        .unwrap()
        .run(&CommandSpec::new("true"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectTimeout { .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "silent1 ({TEST_USER}@127.0.0.1:{port}): connection timed out after 400ms"
        )),
        "{err}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_disconnects_and_next_command_reconnects() {
    let host = SshHost::start("close1");
    let (_dir, pool) = pool(&[&host]);
    let t = pool.transport(&host.target()).unwrap();
    assert_eq!(run_ok(&*t, "echo 1").await, "1\n");
    t.close().await;
    assert_eq!(run_ok(&*t, "echo 2").await, "2\n");
    assert_eq!(t.connections_opened(), 2);
    pool.close_all().await;
}

/// `run_chained` over SSH: the second command is built from the first's output and runs in the
/// same session (one command, one channel), with its own output, status, environment, stdin and
/// sudo; a password sudo asks for, and one it does not; and no second command at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_commands_share_one_session() {
    let host = SshHost::start("chain1");
    let (_dir, pool) = pool(&[&host]);
    let t = pool.transport(&host.target()).unwrap();
    let first = CommandSpec::new("echo first-out; echo first-err >&2; false");
    let then: nexus::transport::Then<'_> = Box::new(|out| {
        assert_eq!(out.stdout_str(), "first-out\n");
        assert_eq!(out.stderr_str(), "first-err\n");
        assert_eq!(out.code(), Some(1));
        Some(
            CommandSpec::new("id -un; printf '%s|' \"$TOKEN\"; cat; echo second-err >&2; exit 4")
                .sudo(Become::root())
                .env("TOKEN", "t0k")
                .stdin(b"payload".to_vec()),
        )
    });
    let (a, b) = t.run_chained(&first, then).await.unwrap();
    assert_eq!(a.stdout_str(), "first-out\n");
    let b = b.expect("a second command");
    assert_eq!(b.stdout_str(), "root\nt0k|payload");
    assert_eq!(b.stderr_str(), "second-err\n");
    assert_eq!(b.exit, ExitStatus::Code(4));
    assert_eq!(t.commands_run(), 1, "one session for both");

    let (a, b) = t
        .run_chained(&CommandSpec::new("echo only"), Box::new(|_| None))
        .await
        .unwrap();
    assert_eq!((a.stdout_str().as_str(), b.is_none()), ("only\n", true));

    // Facts then a probe, as planning runs them.
    let then: nexus::transport::Then<'_> = Box::new(|out| {
        let f = facts::from_output("chain1", out).unwrap();
        Some(CommandSpec::new(format!("echo {}", f.user)))
    });
    let (_, b) = t.run_chained(&facts::facts_command(), then).await.unwrap();
    assert_eq!(b.unwrap().stdout_str(), format!("{TEST_USER}\n"));

    // Through a sudo that needs its password, given on stdin after the command line.
    let (_dir2, pw_pool, pw_target) = sudo_pw_pool(&host);
    let tp = pw_pool.transport(&pw_target).unwrap();
    let then: nexus::transport::Then<'_> = Box::new(|_| {
        Some(
            CommandSpec::new("id -un; cat")
                .sudo(Become::user(TEST_USER).with_password(SUDO_PW))
                .stdin(b"in".to_vec()),
        )
    });
    let (_, b) = tp
        .run_chained(&CommandSpec::new("true"), then)
        .await
        .unwrap();
    let b = b.unwrap();
    assert!(b.success(), "{}", b.failure_summary());
    assert_eq!(b.stdout_str(), format!("{TEST_USER}\nin"));
    pool.close_all().await;
    pw_pool.close_all().await;
}
