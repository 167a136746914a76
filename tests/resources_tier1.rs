//! Tier-1 resources against real sshd hosts (see tests/harness): file, command, upload, download
//! and wait-for are resolved from real configuration text, probed over SSH, planned, applied by a
//! small executor below, and probed again. Shell safety: paths, contents and environment values
//! full of quotes, `$(...)`, backticks, globs and newlines must land byte for byte, and nothing
//! else may appear on the host.

mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use harness::{SUDO_PW_USER, SshHost, TEST_USER};
use nexus::config;
use nexus::facts::{self, Facts};
use nexus::inputs::Inputs;
use nexus::plan::probe;
use nexus::resources::{self, Action, AnyResource, Change, EnvValue, Observed, ResolveCtx, q};
use nexus::transport::{Become, CommandSpec, Output, SshPool, SshTransport, Transport};

/// Everything in this string must survive quoting exactly.
const NASTY: &str = "it's \"quoted\" $(touch pwned1) `touch pwned2` *.conf $HOME \\ ; | & !";

fn pool(hosts: &[&SshHost]) -> (tempfile::TempDir, SshPool) {
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    harness::write_known_hosts(&kh, hosts);
    let pool = SshPool::new(harness::isolated_options(&kh)).unwrap();
    (dir, pool)
}

/// A KDL string literal for `s`.
fn kdl(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One host under test: its transport, facts and a directory for config files.
struct Bench {
    host: SshHost,
    _kh: tempfile::TempDir,
    pool: SshPool,
    t: Arc<SshTransport>,
    facts: Facts,
    cfg_dir: tempfile::TempDir,
}

/// A resolved resource with what the executor needs to know about it.
struct Res {
    r: AnyResource,
    sudo: bool,
}

impl Bench {
    async fn start(name: &str) -> Bench {
        let host = SshHost::builder(name).private_srv().start();
        let (kh, pool) = pool(&[&host]);
        let t = pool.transport(&host.target()).unwrap();
        let facts = facts::gather_facts(&*t).await.unwrap();
        Bench {
            host,
            _kh: kh,
            pool,
            t,
            facts,
            cfg_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a local file next to the configuration.
    fn local(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.cfg_dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Loads `task "t" { BODY }` and resolves its resources for this host.
    fn resolve(&self, body: &str, env: &[(&str, &str)]) -> Vec<Res> {
        self.try_resolve(body, env)
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    }

    fn try_resolve(
        &self,
        body: &str,
        env: &[(&str, &str)],
    ) -> Vec<Result<Res, resources::ResourceError>> {
        let text = format!("vars {{\n    app \"shop\"\n}}\ntask \"t\" {{\n{body}\n}}\n");
        let loaded = config::load_str(&text, "nexus.kdl", self.cfg_dir.path())
            .unwrap_or_else(|e| panic!("config does not load: {e:?}\n{text}"));
        let cfg = &loaded.config;
        let mut files = BTreeMap::new();
        for entry in walk(self.cfg_dir.path()) {
            files.insert(entry.clone(), std::fs::read(&entry).unwrap());
        }
        let env: BTreeMap<String, Option<String>> = env
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect();
        let inputs = Inputs::from_parts(cfg.base_dir.clone(), files, env);
        let vars: BTreeMap<String, String> = cfg
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.literal().unwrap().to_string()))
            .collect();
        let tags = vec!["tier1".to_string()];
        cfg.tasks[0]
            .resources
            .iter()
            .map(|r| {
                let sudo = r.common.sudo.unwrap_or(false);
                let ctx = ResolveCtx {
                    host: &self.host.name,
                    facts: &self.facts,
                    sudo,
                    inputs: &inputs,
                    vars: &vars,
                    host_tags: &tags,
                };
                resources::resolve(&r.kind, &ctx).map(|r| Res { r, sudo })
            })
            .collect()
    }

    /// Runs a resource's probe (alone, as the planner builds it) and parses it.
    async fn probe(&self, res: &Res) -> Observed {
        let owned = res.r.probe_owned();
        let specs = [owned.spec()];
        let mut spec = CommandSpec::new(probe::script(&specs));
        if res.sudo {
            spec.sudo = Some(Become::root());
        }
        let out = self.t.run(&spec).await.unwrap();
        assert!(
            out.success(),
            "probe of {} failed: {}",
            res.r.id(),
            out.failure_summary()
        );
        let sections = probe::split(&specs, &out.stdout_str(), None).unwrap();
        assert_eq!(sections[0].status, 0, "{}", sections[0].output);
        Observed::parse(&sections[0].output).unwrap()
    }

    async fn plan(&self, res: &Res) -> Change {
        let o = self.probe(res).await;
        res.r
            .plan(&o)
            .unwrap_or_else(|e| panic!("plan of {}: {e}", res.r.id()))
    }

    /// The executor, as small as it can be: skip_if, cwd, env, stdin blobs, sudo/user and
    /// download_to, exactly as the planner hands them over.
    async fn apply(&self, change: &Change) -> Vec<Option<Output>> {
        let mut outs = Vec::new();
        for step in &change.steps {
            // The guard runs in the step's own context (user, sudo, cwd, env), as src/exec does.
            if let Some(cond) = &step.skip_if
                && self.t.run(&step_spec(step, cond)).await.unwrap().success()
            {
                outs.push(None);
                continue;
            }
            let mut spec = step_spec(step, &step.script).timeout(Duration::from_secs(60));
            if let Some(hash) = &step.stdin {
                let blob = change
                    .blobs
                    .iter()
                    .find(|b| blake3::hash(b).to_hex().as_str() == hash)
                    .expect("the step's stdin blob is in the change");
                spec.stdin = Some(blob.clone());
            }
            let out = self.t.run(&spec).await.unwrap();
            if let (Some(dest), true) = (&step.download_to, out.success()) {
                let local = self.cfg_dir.path().join(dest);
                std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                std::fs::write(local, &out.stdout).unwrap();
            }
            outs.push(Some(out));
        }
        outs
    }

    /// Applies and requires every step that ran to succeed.
    async fn apply_ok(&self, change: &Change) {
        for out in self.apply(change).await.into_iter().flatten() {
            assert!(
                out.success(),
                "step failed: {}\n{}",
                out.failure_summary(),
                out.stdout_str()
            );
        }
    }

    async fn sh(&self, script: &str) -> Output {
        self.t
            .run(&CommandSpec::new(script.to_string()))
            .await
            .unwrap()
    }

    /// The bytes of a remote file, read with `cat` on the host.
    async fn cat(&self, path: &str) -> Vec<u8> {
        let out = self.sh(&format!("cat -- {}", q(path))).await;
        assert!(out.success(), "cat {path:?}: {}", out.failure_summary());
        out.stdout
    }

    /// `ls -A` of a remote directory, one name per line, as the host sees it.
    async fn ls(&self, dir: &str) -> Vec<String> {
        let out = self
            .sh(&format!(
                "cd {} && for f in * .[!.]*; do [ -e \"$f\" ] && printf '%s\\0' \"$f\"; done; :",
                q(dir)
            ))
            .await;
        assert!(out.success(), "{}", out.failure_summary());
        let mut names: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        names.sort();
        names
    }

    /// No injection ran: no `pwned*` file anywhere a stray command could have made one.
    async fn assert_no_injection(&self) {
        let out = self
            .sh("ls -A ~ /srv /tmp 2>/dev/null | grep -cxE 'pwned[0-9]?'; :")
            .await;
        assert_eq!(out.stdout_str().trim(), "0", "a quoted word was executed");
    }
}

/// A step's script as a command: `cd` to its directory, its environment, sudo or its user.
fn step_spec(step: &resources::Step, script: &str) -> CommandSpec {
    let script = match &step.cwd {
        Some(dir) => format!("cd -- {} || exit 1\n{script}", q(dir)),
        None => script.to_string(),
    };
    let mut spec = CommandSpec::new(script);
    spec.sudo = match &step.user {
        Some(u) => Some(Become::user(u.clone())),
        None => step.sudo.then(Become::root),
    };
    for (k, v) in &step.env {
        match v {
            EnvValue::Literal(s) => spec = spec.env(k.clone(), s.clone()),
            EnvValue::Secret { .. } => panic!("no secrets in tier 1"),
        }
    }
    spec
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_content_template_source_converge_and_land_exactly() {
    let b = Bench::start("res-file").await;
    let nasty_name = format!("/srv/{NASTY}");
    let content = format!("line 1\n{NASTY}\n\ttab and trailing spaces   \n\nno final newline");
    b.local("t/app.conf.j2", b"app={{ vars.app }}\nport={{ vars.port }}\nuser={{ facts.user }}\nhost={{ host.name }}\n{% for t in host.tags %}\ntag={{ t }}\n{% endfor %}\n");
    let binary: Vec<u8> = (0..=255u8).chain(b"\0\n\r\x1b".iter().copied()).collect();
    b.local("files/raw.bin", &binary);
    let body = format!(
        "file {path} content={content} mode=\"0640\"\n\
         file \"/srv/app.conf\" template=\"t/app.conf.j2\" {{\n vars port=(env)\"APP_PORT\"\n}}\n\
         file \"/srv/raw.bin\" source=\"files/raw.bin\"\n\
         file \"/srv/owned\" content=\"x\" owner={pw} group={pw} mode=\"0600\" sudo=#true\n",
        path = kdl(&nasty_name),
        content = kdl(&content),
        pw = kdl(SUDO_PW_USER),
    );
    let res = b.resolve(&body, &[("APP_PORT", "8080")]);
    assert_eq!(res[0].r.id(), format!("file:{nasty_name}"));
    assert_eq!(res[0].r.label(), format!("file {nasty_name}"));

    for r in &res {
        let c = b.plan(r).await;
        assert_eq!(c.action, Action::Create, "{}", r.r.id());
        b.apply_ok(&c).await;
    }
    for r in &res {
        let c = b.plan(r).await;
        assert_eq!(
            c.action,
            Action::NoOp,
            "{} does not converge: {c:?}",
            r.r.id()
        );
    }

    assert_eq!(b.cat(&nasty_name).await, content.as_bytes());
    assert_eq!(
        String::from_utf8(b.cat("/srv/app.conf").await).unwrap(),
        format!("app=shop\nport=8080\nuser={TEST_USER}\nhost=res-file\ntag=tier1\n")
    );
    assert_eq!(b.cat("/srv/raw.bin").await, binary);
    let modes = b
        .sh(&format!(
            "stat -c '%a %U:%G' -- {} /srv/raw.bin /srv/owned",
            q(&nasty_name)
        ))
        .await
        .stdout_str();
    assert_eq!(
        modes,
        format!(
            "640 {TEST_USER}:{TEST_USER}\n644 {TEST_USER}:{TEST_USER}\n600 {SUDO_PW_USER}:{SUDO_PW_USER}\n"
        )
    );
    // Exactly these files, at exactly these names, and no temporary files left behind.
    assert_eq!(
        b.ls("/srv").await,
        sorted(&[NASTY, "app.conf", "raw.bin", "owned"])
    );
    // The same bytes seen from this side of the mount.
    assert_eq!(
        std::fs::read(b.host.srv().join(NASTY)).unwrap(),
        content.as_bytes()
    );
    b.assert_no_injection().await;

    // New content with backup: a diff, one atomic write, the old content kept under its hash.
    let new_content = content.replace("line 1", "line one");
    let body2 = format!(
        "file {} content={} mode=\"0640\" backup=#true",
        kdl(&nasty_name),
        kdl(&new_content)
    );
    let r = &b.resolve(&body2, &[])[0];
    let c = b.plan(r).await;
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.reason, "content differs");
    let diff = c.diff.clone().unwrap();
    assert!(
        diff.starts_with(&format!("--- {nasty_name}\n+++ {nasty_name}\n@@ -1,")),
        "{diff}"
    );
    assert!(diff.contains("\n-line 1\n+line one\n"), "{diff}");
    b.apply_ok(&c).await;
    assert_eq!(b.plan(r).await.action, Action::NoOp);
    assert_eq!(b.cat(&nasty_name).await, new_content.as_bytes());
    let old_sha = resources::file::sha256_hex(content.as_bytes());
    let bak = format!("{NASTY}.{}.bak", &old_sha[..12]);
    assert_eq!(b.cat(&format!("/srv/{bak}")).await, content.as_bytes());
    assert_eq!(
        b.ls("/srv").await,
        sorted(&[NASTY, &bak, "app.conf", "raw.bin", "owned"])
    );

    // Only the mode differs: a chmod and nothing else.
    let body3 = format!(
        "file {} content={} mode=\"0600\"",
        kdl(&nasty_name),
        kdl(&new_content)
    );
    let r = &b.resolve(&body3, &[])[0];
    let c = b.plan(r).await;
    assert_eq!(
        (c.action, c.reason.as_str(), c.steps.len()),
        (Action::Update, "attributes differ", 1)
    );
    assert!(c.steps[0].script.starts_with("chmod -- 0600 "));
    b.apply_ok(&c).await;
    assert_eq!(b.plan(r).await.action, Action::NoOp);

    // A changed binary file: sizes, no diff.
    let r = &b.resolve("file \"/srv/raw.bin\" content=\"text now\"", &[])[0];
    let c = b.plan(r).await;
    assert_eq!(c.diff, None);
    assert_eq!(c.reason, "content differs (260 B → 8 B)");

    // Absent: removed, then nothing to do.
    let body4 = format!("file {} state=\"absent\"", kdl(&nasty_name));
    let r = &b.resolve(&body4, &[])[0];
    let c = b.plan(r).await;
    assert_eq!(c.action, Action::Delete);
    b.apply_ok(&c).await;
    assert_eq!(b.plan(r).await, Change::no_op("absent"));
    assert_eq!(
        b.ls("/srv").await,
        sorted(&[&bak, "app.conf", "raw.bin", "owned"])
    );

    // A directory in the way is an error, not a write into it.
    b.sh("mkdir /srv/adir").await;
    let r = &b.resolve("file \"/srv/adir\" content=\"x\"", &[])[0];
    let o = b.probe(r).await;
    assert!(
        r.r.plan(&o)
            .unwrap_err()
            .to_string()
            .contains("is a directory")
    );
    b.assert_no_injection().await;
    b.pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_errors_from_inputs() {
    let b = Bench::start("res-file-err").await;
    b.local("t/bad.j2", b"fine\n{{ vars.missing }}\n");
    b.local("t/good.j2", b"x");
    let res = b.try_resolve(
        "file \"/srv/a\" template=\"t/bad.j2\"\n\
         file \"/srv/b\" source-url=\"https://example.com/x\"\n\
         file \"/srv/c\" content=(env)\"UNSET_FOR_SURE\"\n",
        &[],
    );
    let errs: Vec<String> = res
        .into_iter()
        .map(|r| r.err().unwrap().to_string())
        .collect();
    assert!(
        errs[0].starts_with("template t/bad.j2 line 2: undefined value"),
        "{}",
        errs[0]
    );
    assert_eq!(
        errs[1],
        "source-url https://example.com/x was not fetched (missing input; see nexus.lock)"
    );
    assert!(errs[2].contains("UNSET_FOR_SURE"), "{}", errs[2]);
    // Paths with newlines never get this far.
    let text = "task \"t\" {\n file \"/srv/a\\nb\" content=\"x\"\n}\n";
    assert!(config::load_str(text, "nexus.kdl", b.cfg_dir.path()).is_err());
    b.pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_with_guards_env_user_cwd_and_sudo() {
    let b = Bench::start("res-cmd").await;
    std::fs::create_dir(b.host.srv().join("shared dir")).unwrap();
    std::fs::set_permissions(
        b.host.srv().join("shared dir"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let env_value = format!("{NASTY}\nsecond line\t%s %%");
    let body = format!(
        "command \"printf '%s' \\\"$NASTY\\\" > /srv/env.out && touch /srv/made\" creates=\"/srv/made\" {{\n env NASTY={}\n}}\n\
         command \"pwd > who.txt; id -un >> who.txt\" cwd=\"/srv/shared dir\" user={} unless=\"test -s who.txt\"\n\
         command \"touch /srv/onlyif-ran\" onlyif=\"test -e /srv/trigger\"\n\
         command \"rm -f /srv/junk\" removes=\"/srv/junk\"\n\
         command \"id -u > /srv/uid\" sudo=#true\n",
        kdl(&env_value),
        kdl(SUDO_PW_USER),
    );
    let res = b.resolve(&body, &[]);
    let [creates, as_user, onlyif, removes, sudo] = &res[..] else {
        panic!()
    };

    // creates: runs once, then the guard holds.
    let c = b.plan(creates).await;
    assert_eq!(
        (c.action, c.reason.as_str()),
        (Action::Run, "creates /srv/made is missing")
    );
    b.apply_ok(&c).await;
    assert_eq!(b.cat("/srv/env.out").await, env_value.as_bytes());
    let again = b.plan(creates).await;
    assert_eq!(again, Change::no_op("creates /srv/made exists"));
    // A changed guard outcome changes the fingerprint (the plan would be stale).
    let before = Observed::parse("creates_exists=false")
        .unwrap()
        .fingerprint();
    assert_ne!(b.probe(creates).await.fingerprint(), before);

    // user + cwd + unless.
    let c = b.plan(as_user).await;
    assert_eq!(
        (c.action, c.reason.as_str()),
        (Action::Run, "unless failed (exit 1)")
    );
    b.apply_ok(&c).await;
    assert_eq!(
        String::from_utf8(b.cat("/srv/shared dir/who.txt").await).unwrap(),
        format!("/srv/shared dir\n{SUDO_PW_USER}\n")
    );
    assert_eq!(b.plan(as_user).await, Change::no_op("unless succeeded"));

    // onlyif: skipped until its condition holds.
    assert_eq!(
        b.plan(onlyif).await,
        Change::no_op("onlyif failed (exit 1)")
    );
    b.sh("touch /srv/trigger").await;
    let c = b.plan(onlyif).await;
    assert_eq!(
        (c.action, c.reason.as_str()),
        (Action::Run, "onlyif succeeded")
    );
    // The world moves between plan and apply: skip_if re-checks the guard and skips.
    b.sh("rm /srv/trigger").await;
    let outs = b.apply(&c).await;
    assert!(outs[0].is_none(), "the step should have been skipped");
    assert!(!b.host.srv().join("onlyif-ran").exists());

    // removes.
    assert_eq!(
        b.plan(removes).await,
        Change::no_op("removes /srv/junk is absent")
    );
    b.sh("touch /srv/junk").await;
    let c = b.plan(removes).await;
    assert_eq!(
        (c.action, c.reason.as_str()),
        (Action::Run, "removes /srv/junk exists")
    );
    b.apply_ok(&c).await;
    assert_eq!(b.plan(removes).await.action, Action::NoOp);

    // sudo, and no guard: runs on every apply.
    let c = b.plan(sudo).await;
    assert_eq!(
        (c.action, c.reason.as_str()),
        (Action::Run, "runs every apply")
    );
    b.apply_ok(&c).await;
    assert_eq!(b.cat("/srv/uid").await, b"0\n");
    assert_eq!(b.plan(sudo).await.action, Action::Run);

    assert_eq!(
        b.ls("/srv").await,
        sorted(&["env.out", "made", "shared dir", "uid"])
    );
    b.assert_no_injection().await;

    // Secrets cannot be resolved in this version: an error, not an empty value.
    let err = b
        .try_resolve("command \"true\" {\n env X=(secret)\"X\"\n}", &[])
        .pop()
        .unwrap()
        .err()
        .unwrap();
    assert!(err.to_string().contains("secret"), "{err}");
    b.pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_download_round_trips_bytes() {
    let b = Bench::start("res-updown").await;
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    b.local("dist/app bundle.bin", &bytes);
    let dest = format!("/srv/{NASTY}.bin");
    let body = format!(
        "upload \"dist/app bundle.bin\" {} mode=\"0600\"\n\
         download {} \"out/{{host}}/copy.bin\"\n\
         upload \"dist/app bundle.bin\" \"/srv\"\n",
        kdl(&dest),
        kdl(&dest)
    );
    let res = b.resolve(&body, &[]);
    assert_eq!(
        res[0].r.label(),
        format!("upload dist/app bundle.bin → {dest}")
    );
    let c = b.plan(&res[0]).await;
    assert_eq!(
        (c.action, c.reason.as_str()),
        (Action::Create, "does not exist")
    );
    b.apply_ok(&c).await;
    assert_eq!(b.cat(&dest).await, bytes);
    assert_eq!(
        b.sh(&format!("stat -c %a -- {}", q(&dest)))
            .await
            .stdout_str(),
        "600\n"
    );
    // An upload is compared by hash: the same bytes are not sent again.
    assert_eq!(b.plan(&res[0]).await.action, Action::NoOp);

    let c = b.plan(&res[1]).await;
    assert_eq!(c.action, Action::Run);
    assert_eq!(
        c.steps[0].download_to.as_deref(),
        Some("out/res-updown/copy.bin")
    );
    b.apply_ok(&c).await;
    assert_eq!(
        std::fs::read(b.cfg_dir.path().join("out/res-updown/copy.bin")).unwrap(),
        bytes
    );

    // An upload onto a directory is refused when planning, so nothing is left behind.
    let o = b.probe(&res[2]).await;
    let e = res[2].r.plan(&o).unwrap_err();
    assert!(e.to_string().contains("/srv is a directory"), "{e}");
    assert_eq!(b.ls("/srv").await, sorted(&[&format!("{NASTY}.bin")]));
    b.assert_no_injection().await;
    b.pool.close_all().await;
}

/// A minimal HTTP server answering every request with `status`.
fn http_server(status: u16) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        use std::io::{Read, Write};
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().take(1000) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_tcp_http_and_command() {
    let b = Bench::start("res-wait").await;
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (http_port, _server) = http_server(200);
    b.sh("touch /srv/ready").await;
    let body = format!(
        "wait-for tcp=\"127.0.0.1:{open_port}\" timeout=\"10s\" interval=\"200ms\"\n\
         wait-for tcp=\"127.0.0.1:{closed_port}\" timeout=\"2s\" interval=\"500ms\"\n\
         wait-for http=\"http://127.0.0.1:{http_port}/health\" timeout=\"10s\"\n\
         wait-for http=\"http://127.0.0.1:{http_port}/health\" status=204 timeout=\"1s\" interval=\"300ms\"\n\
         wait-for command=\"test -e /srv/ready\" timeout=\"5s\"\n\
         wait-for command=\"test -e '/srv/never $(touch pwned)'\" timeout=\"1s\" interval=\"250ms\"\n"
    );
    let res = b.resolve(&body, &[]);
    assert_eq!(res[0].r.id(), format!("wait-for:tcp:127.0.0.1:{open_port}"));
    assert_eq!(
        res[2].r.label(),
        format!("wait-for http://127.0.0.1:{http_port}/health")
    );
    let mut results = Vec::new();
    for r in &res {
        let c = b.plan(r).await;
        assert_eq!(c.action, Action::Run);
        assert_eq!(c.steps.len(), 1);
        let started = std::time::Instant::now();
        let out = b.apply(&c).await.pop().unwrap().unwrap();
        results.push((out.success(), out.stderr_str(), started.elapsed()));
    }
    let ok: Vec<bool> = results.iter().map(|r| r.0).collect();
    assert_eq!(ok, [true, false, true, false, true, false], "{results:#?}");
    assert_eq!(
        results[1].1,
        format!("wait-for: tcp 127.0.0.1:{closed_port} did not succeed within 2s\n")
    );
    assert!(
        results[1].2 >= Duration::from_secs(2) && results[1].2 < Duration::from_secs(8),
        "{:?}",
        results[1].2
    );
    assert_eq!(
        results[3].1,
        format!(
            "wait-for: http http://127.0.0.1:{http_port}/health (status 204) did not succeed within 1s\nlast attempt: HTTP status 200\n"
        )
    );
    assert!(results[5].1.starts_with(
        "wait-for: command `test -e '/srv/never $(touch pwned)'` did not succeed within 1s"
    ));
    assert!(results[0].2 < Duration::from_secs(5));
    drop(open);
    b.assert_no_injection().await;
    b.pool.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_batch_into_one_round_trip_without_reading_stdin() {
    let b = Bench::start("res-batch").await;
    b.sh("printf 'old\\n' > /srv/exists; touch /srv/made").await;
    let body = format!(
        "file \"/srv/exists\" content=\"new\\n\"\n\
         file {} content=\"x\"\n\
         file \"/srv/gone\" state=\"absent\"\n\
         command \"true\" creates=\"/srv/made\" unless=\"read x\" onlyif=\"cat >/dev/null; true\"\n\
         upload \"f\" \"/srv/up\"\n\
         wait-for tcp=\"127.0.0.1:9\"\n",
        kdl(&format!("/srv/{NASTY}"))
    );
    b.local("f", b"up");
    let res = b.resolve(&body, &[]);
    // What a planner does: one script for all, batched path facts, one command.
    let owned: Vec<probe::Owned> = res.iter().map(|r| r.r.probe_owned()).collect();
    let specs: Vec<probe::Spec<'_>> = owned.iter().map(probe::Owned::spec).collect();
    let before = b.t.commands_run();
    let out =
        b.t.run(&CommandSpec::new(probe::script(&specs)).stdin(b"poison\npoison\n".to_vec()))
            .await
            .unwrap();
    assert_eq!(b.t.commands_run(), before + 1);
    assert!(out.success(), "{}", out.failure_summary());
    let split = probe::split(&specs, &out.stdout_str(), None).unwrap();
    assert!(split.iter().all(|s| s.status == 0), "{split:?}");
    let sections: Vec<&str> = split.iter().map(|s| s.output.as_str()).collect();
    assert_eq!(sections.len(), res.len());
    for (r, section) in res.iter().zip(&sections) {
        let batched = Observed::parse(section).unwrap();
        assert_eq!(batched, b.probe(r).await, "{}", r.r.id());
    }
    let plans: Vec<(Action, String)> = res
        .iter()
        .zip(&sections)
        .map(|(r, s)| {
            let c = r.r.plan(&Observed::parse(s).unwrap()).unwrap();
            (c.action, c.reason)
        })
        .collect();
    assert_eq!(
        plans,
        [
            (Action::Update, "content differs".to_string()),
            (Action::Create, "does not exist".to_string()),
            (Action::NoOp, "absent".to_string()),
            (Action::NoOp, "creates /srv/made exists".to_string()),
            (Action::Create, "does not exist".to_string()),
            (
                Action::Run,
                "waits up to 1m for tcp 127.0.0.1:9".to_string()
            ),
        ]
    );
    // The guards saw no stdin: `read x` failed, so `unless` did not succeed.
    assert_eq!(
        Observed::parse(sections[3]).unwrap().get("unless_status"),
        Some("1")
    );
    assert_eq!(b.ls("/srv").await, sorted(&["exists", "made"]));
    b.assert_no_injection().await;
    b.pool.close_all().await;
}
