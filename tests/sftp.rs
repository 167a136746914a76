//! Large contents over SFTP, end to end: the real nexus binary against real sshd hosts, with
//! and without the sftp subsystem. What went by SFTP is read from sshd's own log (a line per
//! SFTP session, and one per refused request), never guessed from timings.

mod harness;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use harness::project::Project;
use harness::{SshHost, TEST_USER};

/// Over the 1 MiB threshold, and not a multiple of any chunk size.
fn big(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn write_bytes(p: &Project, rel: &str, bytes: &[u8]) {
    let path = p.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// SFTP sessions the host started (sshd logs each at VERBOSE).
fn sftp_sessions(h: &SshHost) -> usize {
    h.log()
        .matches("Starting session: subsystem 'sftp'")
        .count()
}

/// SFTP requests the host refused for want of the subsystem.
fn sftp_refusals(h: &SshHost) -> usize {
    h.log().matches("subsystem request for sftp").count()
}

/// Files whose name starts with `.nexus-` in `dir` (temporary or staged files left behind).
fn leftovers(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".nexus-"))
        .collect()
}

fn home() -> std::path::PathBuf {
    let out = Command::new("getent")
        .args(["passwd", TEST_USER])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.trim().split(':').nth(5).unwrap().into()
}

fn uid(name: &str) -> u32 {
    harness::uid_of(name).unwrap_or_else(|| panic!("no user {name}"))
}

#[test]
fn sftp_upload_and_download_are_byte_exact_with_mode_and_owner() {
    let h = SshHost::builder("sftp-up").private_srv().start();
    let content = big(5 * 1024 * 1024 + 12_345, 1);
    // As root through sudo: the staged bytes are copied into a file sudo made.
    let p = Project::over(
        &[&h],
        " become=#true",
        "task \"t\" on=\"sftp-up\" {\n\
         upload \"dist/big.bin\" \"/srv/big.bin\" mode=\"0640\" owner=\"daemon\"\n\
         download \"/srv/big.bin\" \"out/{host}/big.bin\"\n\
         }\n",
    );
    write_bytes(&p, "dist/big.bin", &content);
    let run = p.nexus(&["run", "-q"]);
    assert!(run.success(), "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let landed = h.srv().join("big.bin");
    assert_eq!(std::fs::read(&landed).unwrap(), content);
    let meta = std::fs::metadata(&landed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.uid(), uid("daemon"));
    assert_eq!(
        std::fs::read(p.path("out/sftp-up/big.bin")).unwrap(),
        content
    );
    // One SFTP channel for the upload, one for the download.
    assert_eq!(sftp_sessions(&h), 2, "{}", h.log());
    assert_eq!(leftovers(&h.srv()), Vec::<String>::new());
    assert_eq!(leftovers(&home()), Vec::<String>::new());

    // As the login user: the staged file is renamed into place; mode as asked.
    let h2 = SshHost::builder("sftp-plain").private_srv().start();
    let content2 = big(3 * 1024 * 1024 + 7, 2);
    let p2 = Project::over(
        &[&h2],
        "",
        "task \"t\" on=\"sftp-plain\" {\n\
         upload \"dist/b.bin\" \"/srv/b.bin\" mode=\"0604\"\n\
         }\n",
    );
    write_bytes(&p2, "dist/b.bin", &content2);
    let run = p2.nexus(&["run", "-q"]);
    assert!(run.success(), "{run:?}");
    let landed = h2.srv().join("b.bin");
    assert_eq!(std::fs::read(&landed).unwrap(), content2);
    let meta = std::fs::metadata(&landed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o604);
    assert_eq!(meta.uid(), uid(TEST_USER));
    assert_eq!(sftp_sessions(&h2), 1, "{}", h2.log());
    assert_eq!(leftovers(&h2.srv()), Vec::<String>::new());
}

#[test]
fn without_the_sftp_subsystem_transfers_fall_back_quietly_asking_once() {
    let h = SshHost::builder("no-sftp")
        .private_srv()
        .without_sftp()
        .start();
    let one = big(2 * 1024 * 1024 + 1, 3);
    let two = big(3 * 1024 * 1024 + 3, 4);
    let p = Project::over(
        &[&h],
        " become=#true",
        "task \"t\" on=\"no-sftp\" {\n\
         upload \"dist/one.bin\" \"/srv/one.bin\" mode=\"0600\" owner=\"daemon\"\n\
         upload \"dist/two.bin\" \"/srv/two.bin\"\n\
         download \"/srv/two.bin\" \"out/two.bin\"\n\
         }\n",
    );
    write_bytes(&p, "dist/one.bin", &one);
    write_bytes(&p, "dist/two.bin", &two);
    let run = p.nexus(&["run", "-q"]);
    assert!(run.success(), "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    assert_eq!(std::fs::read(h.srv().join("one.bin")).unwrap(), one);
    assert_eq!(
        std::fs::metadata(h.srv().join("one.bin")).unwrap().uid(),
        uid("daemon")
    );
    assert_eq!(std::fs::read(h.srv().join("two.bin")).unwrap(), two);
    assert_eq!(std::fs::read(p.path("out/two.bin")).unwrap(), two);
    // The host was asked once; its refusal was remembered for the other two transfers.
    assert_eq!(sftp_refusals(&h), 1, "{}", h.log());
    assert!(h.log().contains("subsystem not found"), "{}", h.log());
    assert_eq!(leftovers(&h.srv()), Vec::<String>::new());
}

#[test]
fn a_directory_the_login_user_cannot_write_fails_clearly_and_leaves_nothing() {
    let h = SshHost::builder("sftp-locked").private_srv().start();
    let locked = h.srv().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(locked.join("big.bin"), b"old\n").unwrap();
    std::fs::set_permissions(
        locked.join("big.bin"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let content = big(2 * 1024 * 1024 + 5, 5);
    let p = Project::over(
        &[&h],
        "",
        "task \"t\" on=\"sftp-locked\" {\n\
         upload \"dist/big.bin\" \"/srv/locked/big.bin\"\n\
         }\n\
         task \"u\" on=\"sftp-locked\" {\n\
         upload \"dist/big.bin\" \"/srv/missing/big.bin\"\n\
         }\n",
    );
    write_bytes(&p, "dist/big.bin", &content);
    let run = p.nexus(&["run", "--continue-on-error"]);
    assert!(!run.success(), "{run:?}");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("/srv/locked") && all.contains("Permission denied"),
        "{run:?}"
    );
    assert!(
        all.contains("directory /srv/missing does not exist"),
        "{run:?}"
    );
    assert_eq!(std::fs::read(locked.join("big.bin")).unwrap(), b"old\n");
    assert_eq!(leftovers(&locked), Vec::<String>::new());
    assert_eq!(leftovers(&h.srv()), Vec::<String>::new());
    assert_eq!(leftovers(&home()), Vec::<String>::new());
    assert!(!h.srv().join("missing").exists());
}

/// A filesystem too small for the new content: the transfer breaks part way.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(bytes: usize) -> SmallFs {
        let dir = tempfile::Builder::new()
            .prefix("nexus-sftp-full-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        let st = Command::new("chown")
            .arg(format!("{TEST_USER}:{TEST_USER}"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_transfer_that_breaks_part_way_leaves_the_old_target_intact() {
    let h = SshHost::start("sftp-full");
    let fs = SmallFs::mount(3 * 1024 * 1024);
    let dir = fs.0.path().to_str().unwrap().to_string();
    let old = big(1024 * 1024, 6);
    std::fs::write(fs.0.path().join("app.bin"), &old).unwrap();
    let content = big(4 * 1024 * 1024, 7);
    let p = Project::over(
        &[&h],
        "",
        &format!(
            "task \"t\" on=\"sftp-full\" {{\n\
             upload \"dist/app.bin\" \"{dir}/app.bin\"\n\
             }}\n"
        ),
    );
    write_bytes(&p, "dist/app.bin", &content);
    let run = p.nexus(&["run"]);
    assert!(!run.success(), "{run:?}");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains(&format!("{dir}/")), "{run:?}");
    // The SFTP path was the one that broke.
    assert_eq!(sftp_sessions(&h), 1, "{}", h.log());
    assert_eq!(std::fs::read(fs.0.path().join("app.bin")).unwrap(), old);
    assert_eq!(leftovers(fs.0.path()), Vec::<String>::new());
}

#[test]
fn nexus_killed_mid_transfer_leaves_the_old_target_intact() {
    let h = SshHost::builder("sftp-killed").private_srv().start();
    let old = b"the old release\n".to_vec();
    std::fs::write(h.srv().join("app.bin"), &old).unwrap();
    let content = big(64 * 1024 * 1024, 8);
    let p = Project::over(
        &[&h],
        "",
        "task \"t\" on=\"sftp-killed\" {\n\
         upload \"dist/app.bin\" \"/srv/app.bin\"\n\
         }\n",
    );
    write_bytes(&p, "dist/app.bin", &content);
    let mut child = p
        .command(&["run", "-q"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the staged file exists on the host, that is, in the middle of the transfer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !leftovers(&h.srv())
        .iter()
        .any(|n| n.starts_with(".nexus-sftp-"))
    {
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no staged file appeared before nexus ended or the deadline passed");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(std::fs::read(h.srv().join("app.bin")).unwrap(), old);
    // What stays is the staged file alone, which a later write into /srv removes after an hour
    // (docs/ssh.md); never a temporary file of the write's script nor a partial target.
    let left = leftovers(&h.srv());
    assert!(
        left.iter().all(|n| n.starts_with(".nexus-sftp-")),
        "{left:?}"
    );
}

/// The local file of a large upload is pinned by the plan, not carried in it: the plan file
/// stays small, and apply refuses (exit 6, nothing touched) when the file changed since, or
/// is gone.
#[test]
fn a_large_upload_is_pinned_by_the_plan_not_carried_and_checked_when_applied() {
    let h = SshHost::builder("sftp-pinned").private_srv().start();
    let content = big(6 * 1024 * 1024 + 11, 9);
    let p = Project::over(
        &[&h],
        "",
        "task \"t\" on=\"sftp-pinned\" {\n\
         upload \"dist/big.bin\" \"/srv/big.bin\" mode=\"0644\"\n\
         }\n",
    );
    write_bytes(&p, "dist/big.bin", &content);
    let plan = p.nexus(&["plan", "-o", "one.lock"]);
    assert!(plan.success(), "{plan:?}");
    let size = std::fs::metadata(p.path("one.lock")).unwrap().len();
    assert!(
        size < 64 * 1024,
        "the plan file carries the content: {size} bytes"
    );
    let text = std::fs::read_to_string(p.path("one.lock")).unwrap();
    assert!(text.contains("\"streamed\""), "{text}");
    assert!(text.contains("dist/big.bin"), "{text}");

    // Changed after planning: refused before any host is touched.
    write_bytes(&p, "dist/big.bin", &big(6 * 1024 * 1024 + 11, 10));
    let apply = p.nexus(&["apply", "one.lock"]);
    assert_eq!(apply.code, 6, "{apply:?}");
    assert!(
        apply.stderr.contains("dist/big.bin") && apply.stderr.contains("changed since the plan"),
        "{apply:?}"
    );
    assert!(!h.srv().join("big.bin").exists());
    assert_eq!(sftp_sessions(&h), 0, "{}", h.log());

    // Gone: refused as well (the configuration beside the plan, read for its trust settings,
    // names it first), and nothing moved.
    std::fs::remove_file(p.path("dist/big.bin")).unwrap();
    let apply = p.nexus(&["apply", "one.lock"]);
    assert_eq!(apply.code, 3, "{apply:?}");
    assert!(
        apply
            .stderr
            .contains("upload source file \"dist/big.bin\" not found"),
        "{apply:?}"
    );
    assert_eq!(sftp_sessions(&h), 0, "{}", h.log());

    // The planned content back in place: the plan applies, byte for byte.
    write_bytes(&p, "dist/big.bin", &content);
    let apply = p.nexus(&["apply", "one.lock"]);
    assert!(apply.success(), "{apply:?}");
    assert_eq!(std::fs::read(h.srv().join("big.bin")).unwrap(), content);
    assert_eq!(sftp_sessions(&h), 1, "{}", h.log());
    assert_eq!(leftovers(&h.srv()), Vec::<String>::new());
    let again = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");
}

/// Whether this CPU has the AES and carry-less multiply instructions (x86's cpuinfo flags).
fn cpu_has_aes() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    has("aes") && has("pclmulqdq")
}

/// The cipher sshd says it agreed on with the client, for data the client sends.
fn client_to_server_ciphers(h: &SshHost) -> Vec<String> {
    h.log()
        .lines()
        .filter_map(|l| l.split("kex: client->server cipher: ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Where the CPU has AES instructions nexus asks for AES-256-GCM first (it halves what the host's
/// sshd spends decrypting an upload); a host that does not offer it gets ChaCha20-Poly1305 as
/// before, and the upload lands the same.
#[test]
fn aes_gcm_is_asked_for_first_where_the_cpu_has_aes_and_chacha20_still_serves() {
    let want = match cpu_has_aes() {
        true => "aes256-gcm@openssh.com",
        false => "chacha20-poly1305@openssh.com",
    };
    for (name, option, agreed) in [
        ("sftp-aes", None, want),
        (
            "sftp-chacha",
            Some("Ciphers chacha20-poly1305@openssh.com"),
            "chacha20-poly1305@openssh.com",
        ),
    ] {
        let mut b = SshHost::builder(name)
            .private_srv()
            .sshd_option("LogLevel DEBUG1");
        if let Some(o) = option {
            b = b.sshd_option(o);
        }
        let h = b.start();
        let content = big(2 * 1024 * 1024 + 5, 9);
        let p = Project::over(
            &[&h],
            "",
            &format!("task \"t\" on=\"{name}\" {{\n    upload \"dist/c.bin\" \"/srv/c.bin\"\n}}\n"),
        );
        write_bytes(&p, "dist/c.bin", &content);
        let run = p.nexus(&["run", "-q"]);
        assert!(run.success(), "{name}: {run:?}");
        assert_eq!(std::fs::read(h.srv().join("c.bin")).unwrap(), content);
        assert_eq!(sftp_sessions(&h), 1, "{name}: {}", h.log());
        let ciphers = client_to_server_ciphers(&h);
        assert!(!ciphers.is_empty(), "{name}: no kex line in {}", h.log());
        assert!(
            ciphers.iter().all(|c| c == agreed),
            "{name}: {ciphers:?}, not {agreed}"
        );
    }
}

/// ssh_config's `Ciphers` decides, as it does for OpenSSH (a host without AES instructions is
/// better served by ChaCha20): a list, and `-` on nexus's own order. `none` is refused before
/// any connection, with an error that says why.
#[test]
fn ssh_config_ciphers_are_honoured_and_none_is_refused() {
    let h = SshHost::builder("ciphers")
        .private_srv()
        .sshd_option("LogLevel DEBUG1")
        .start();
    let p = Project::over(
        &[&h],
        "",
        "task \"t\" on=\"ciphers\" {\n    file \"/srv/c.txt\" content=\"c\"\n}\n",
    );
    for (config, agreed) in [
        ("Ciphers aes128-ctr,aes256-ctr", "aes128-ctr"),
        (
            "Ciphers -aes256-gcm@openssh.com",
            "chacha20-poly1305@openssh.com",
        ),
    ] {
        p.write("ssh_config", &format!("Host *\n    {config}\n"));
        let before = client_to_server_ciphers(&h).len();
        let run = p.nexus(&["plan"]);
        assert!(run.success(), "{config}: {run:?}");
        let ciphers = client_to_server_ciphers(&h);
        assert!(
            ciphers.len() > before,
            "{config}: no kex line in {}",
            h.log()
        );
        assert!(
            ciphers[before..].iter().all(|c| c == agreed),
            "{config}: {ciphers:?}, not {agreed}"
        );
    }
    p.write("ssh_config", "Host *\n    Ciphers none\n");
    let before = client_to_server_ciphers(&h).len();
    let run = p.nexus(&["plan"]);
    assert!(!run.success(), "{run:?}");
    assert!(
        run.stderr
            .contains("ssh_config's Ciphers leaves no cipher nexus can use (it lists: none;"),
        "{run:?}"
    );
    assert_eq!(client_to_server_ciphers(&h).len(), before, "it connected");
}
