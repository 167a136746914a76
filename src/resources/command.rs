//! `command`: a shell command, made idempotent by guards. `creates`/`removes` test a path,
//! `unless`/`onlyif` run a command; all are evaluated by the probe (so the plan says whether the
//! command will run, and a changed outcome makes the plan stale) and again just before the step
//! runs, through [`Step::skip_if`], because an earlier step of the same apply may have changed them.

use super::*;

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// Shell text, run by `sh -c` as written.
    pub command: String,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub unless: Option<String>,
    pub onlyif: Option<String>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, Value>,
    /// What `nexus rollback` runs to undo the command (docs/rollback.md).
    pub undo: Option<String>,
}

pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spec> {
    r.expect_args(cx, 1, 1, "command \"SHELL COMMAND\" [creates=PATH] [removes=PATH] [unless=CMD] [onlyif=CMD] [user=..] [cwd=..] [undo=CMD] { env NAME=\"value\" }");
    let cmd = r.arg_str(cx, 0);
    let creates = remote_option(cx, r, "creates");
    let removes = remote_option(cx, r, "removes");
    let unless = r.str(cx, "unless").map(|s| s.value);
    let onlyif = r.str(cx, "onlyif").map(|s| s.value);
    let undo = r.str(cx, "undo").map(|s| s.value);
    let user = r.str(cx, "user").and_then(|s| account_name(cx, s, "user"));
    let cwd = remote_option(cx, r, "cwd");
    let env = r.map(cx, "env");
    let env_span = r.option_span("env").unwrap_or(r.name_span());
    for k in env.keys() {
        if !crate::shell::is_name(k) {
            cx.push(
                Diag::new("config::invalid-name", format!("invalid environment variable name {k:?}"))
                    .at(env_span, "in this command's env")
                    .help("environment variable names use letters, digits and '_' and do not start with a digit"),
            );
        }
    }
    let cmd = cmd?;
    if cmd.trim().is_empty() {
        cx.push(Diag::new("config::empty-command", "empty command").at(cmd.span, "nothing to run"));
        return None;
    }
    Some(Spec {
        command: cmd.value,
        creates,
        removes,
        unless,
        onlyif,
        user,
        cwd,
        env,
        undo,
    })
}

impl Spec {
    /// The environment values a command is given: see [`InputNeeds`].
    pub fn input_needs<'a>(&'a self, needs: &mut InputNeeds<'a>) {
        needs.values.extend(self.env.values());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The configured command. Its `env` holds configuration values; `env` below is what they
    /// are on this host.
    pub spec: Spec,
    /// The step's environment: `(env)` values as pinned by the inputs, secrets as references.
    pub env: BTreeMap<String, EnvValue>,
    pub sudo: bool,
}

pub fn resolve(c: &Spec, ctx: &ResolveCtx<'_>) -> Result<Command, ResourceError> {
    let mut env = BTreeMap::new();
    for (k, v) in &c.env {
        let value = match v {
            // Only a reference and a keyed fingerprint reach the plan; the value is read at apply.
            Value::Secret(name) => EnvValue::Secret {
                name: name.clone(),
                fingerprint: ctx
                    .inputs
                    .secret_fingerprint(name)
                    .ok_or_else(|| {
                        ResourceError::Invalid(format!("secret {name:?} is not in the vault"))
                    })?
                    .to_string(),
            },
            other => EnvValue::Literal(ctx.value(other)?),
        };
        env.insert(k.clone(), value);
    }
    Ok(Command {
        spec: c.clone(),
        env,
        sudo: ctx.sudo,
    })
}

/// `command ./deploy.sh --now`: how plans name the command (its first line, cut), also when it
/// was skipped before resolving.
pub fn label(c: &Spec) -> String {
    format!("command {}", short(&c.command, 60))
}

/// `sh -c CMD` with no stdin and no output: how guard commands run, when probing and at apply.
fn guard(cmd: &str) -> String {
    format!("sh -c {} </dev/null >/dev/null 2>&1", q(cmd))
}

/// At most `n` characters of the first line, with `…` when cut.
fn short(s: &str, n: usize) -> String {
    let line = s.trim().lines().next().unwrap_or("");
    let cut: String = line.chars().take(n).collect();
    if cut.len() < s.trim().len() {
        format!("{cut}…")
    } else {
        cut
    }
}

impl Command {
    /// The condition that skips the step at apply: any guard saying "skip".
    fn skip_condition(&self) -> Option<String> {
        let mut conds = Vec::new();
        if let Some(p) = &self.spec.creates {
            conds.push(format!("[ -e {} ]", q(p)));
        }
        if let Some(p) = &self.spec.removes {
            conds.push(format!("[ ! -e {} ]", q(p)));
        }
        if let Some(c) = &self.spec.unless {
            conds.push(guard(c));
        }
        if let Some(c) = &self.spec.onlyif {
            conds.push(format!("! {}", guard(c)));
        }
        (!conds.is_empty()).then(|| conds.join(" || "))
    }
}

impl Resource for Command {
    fn id(&self) -> String {
        let mut h = blake3::Hasher::new();
        for part in [
            Some(&self.spec.command),
            self.spec.cwd.as_ref(),
            self.spec.user.as_ref(),
        ] {
            h.update(part.map_or(b"" as &[u8], |s| s.as_bytes()));
            h.update(b"\0");
        }
        let head: String = self
            .spec
            .command
            .chars()
            .take(60)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("command:{head}#{}", &h.finalize().to_hex()[..8])
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    /// `unless` and `onlyif`; `creates` and `removes` are [`Resource::probe_exists`].
    fn probe(&self) -> String {
        let mut lines = Vec::new();
        for (key, cmd) in [
            ("unless_status", &self.spec.unless),
            ("onlyif_status", &self.spec.onlyif),
        ] {
            if let Some(c) = cmd {
                // In the command's directory, as the executor re-checks them (a missing directory
                // fails the guard, as it will fail the command).
                let g = match &self.spec.cwd {
                    Some(dir) => format!("(cd -- {} 2>/dev/null && {})", q(dir), guard(c)),
                    None => guard(c),
                };
                lines.push(format!("{g}; echo \"{key}=$?\""));
            }
        }
        lines.join("\n")
    }

    /// `creates` and `removes` are answered with every other path of the host in one loop of
    /// `[ -e ]`, the test `skip_if` repeats at apply.
    fn probe_exists(&self) -> Vec<ProbeExists> {
        [
            ("creates_exists", &self.spec.creates),
            ("removes_exists", &self.spec.removes),
        ]
        .into_iter()
        .filter_map(|(key, path)| path.as_deref().map(|p| ProbeExists::new(key, p)))
        .collect()
    }

    /// Guards are `sh -c` (in a subshell when they need a directory): no `exit` or `cd` reaches
    /// the probe's shell.
    fn probe_inline(&self) -> bool {
        true
    }

    fn plan(&self, o: &Observed) -> Result<Change, ResourceError> {
        let mut why_run = Vec::new();
        if let Some(p) = &self.spec.creates {
            if o.require("creates_exists")? == "true" {
                return Ok(Change::no_op(format!("creates {p} exists")));
            }
            why_run.push(format!("creates {p} is missing"));
        }
        if let Some(p) = &self.spec.removes {
            if o.require("removes_exists")? != "true" {
                return Ok(Change::no_op(format!("removes {p} is absent")));
            }
            why_run.push(format!("removes {p} exists"));
        }
        if self.spec.unless.is_some() {
            let status = o.require("unless_status")?;
            if status == "0" {
                return Ok(Change::no_op("unless succeeded"));
            }
            why_run.push(format!("unless failed (exit {status})"));
        }
        if self.spec.onlyif.is_some() {
            let status = o.require("onlyif_status")?;
            if status != "0" {
                return Ok(Change::no_op(format!("onlyif failed (exit {status})")));
            }
            why_run.push("onlyif succeeded".to_string());
        }
        let reason = if why_run.is_empty() {
            "runs every apply".to_string()
        } else {
            why_run.join(", ")
        };
        let mut step = Step::new(self.spec.command.clone(), self.sudo);
        step.user = self.spec.user.clone();
        step.cwd = self.spec.cwd.clone();
        step.env = self.env.clone();
        step.skip_if = self.skip_condition();
        // The undo runs in the command's context, unguarded: the guards say when to do, not undo.
        let undo = self.spec.undo.as_ref().map(|u| Step {
            script: u.clone(),
            skip_if: None,
            ..step.clone()
        });
        let mut c = Change::new(Action::Run, reason, vec![step]);
        c.undo = undo.into_iter().collect();
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::plan::probe;

    fn cmd(s: &str) -> Command {
        Command {
            spec: Spec {
                command: s.into(),
                creates: None,
                removes: None,
                unless: None,
                onlyif: None,
                user: None,
                cwd: None,
                env: BTreeMap::new(),
                undo: None,
            },
            env: BTreeMap::new(),
            sudo: false,
        }
    }

    fn obs(s: &str) -> Observed {
        Observed::parse(s).unwrap()
    }

    fn guarded() -> Command {
        let mut c = cmd("make install");
        c.spec.creates = Some("/opt/app/bin/app".into());
        c.spec.removes = Some("/tmp/it's here".into());
        c.spec.unless = Some("grep -q \"ok\" /etc/x".into());
        c.spec.onlyif = Some("test -d /run/systemd/system".into());
        c
    }

    #[test]
    fn without_guards_it_always_runs() {
        let c = cmd("./deploy.sh --now");
        assert_eq!(c.probe(), "");
        let ch = c.plan(&Observed::default()).unwrap();
        assert_eq!(ch.action, Action::Run);
        assert_eq!(ch.reason, "runs every apply");
        assert_eq!(ch.steps, vec![Step::new("./deploy.sh --now", false)]);
        assert_eq!(c.label(), "command ./deploy.sh --now");
    }

    #[test]
    fn each_guard_can_skip() {
        let c = guarded();
        let run = "creates_exists=false\nremoves_exists=true\nunless_status=1\nonlyif_status=0";
        let ch = c.plan(&obs(run)).unwrap();
        assert_eq!(ch.action, Action::Run);
        assert_eq!(
            ch.reason,
            "creates /opt/app/bin/app is missing, removes /tmp/it's here exists, unless failed (exit 1), onlyif succeeded"
        );
        let cases = [
            (
                "creates_exists=false",
                "creates_exists=true",
                "creates /opt/app/bin/app exists",
            ),
            (
                "removes_exists=true",
                "removes_exists=false",
                "removes /tmp/it's here is absent",
            ),
            ("unless_status=1", "unless_status=0", "unless succeeded"),
            (
                "onlyif_status=0",
                "onlyif_status=127",
                "onlyif failed (exit 127)",
            ),
        ];
        for (from, to, reason) in cases {
            let ch = c.plan(&obs(&run.replace(from, to))).unwrap();
            assert_eq!(ch, Change::no_op(reason));
        }
        // A missing key is a probe bug, not a silent run.
        assert!(matches!(
            c.plan(&obs("creates_exists=false")),
            Err(ResourceError::Probe(_))
        ));
    }

    #[test]
    fn skip_if_rechecks_every_guard() {
        let ch = guarded()
            .plan(&obs(
                "creates_exists=false\nremoves_exists=true\nunless_status=1\nonlyif_status=0",
            ))
            .unwrap();
        assert_eq!(
            ch.steps[0].skip_if.as_deref(),
            Some(
                "[ -e /opt/app/bin/app ] || [ ! -e \"/tmp/it's here\" ] || \
                 sh -c 'grep -q \"ok\" /etc/x' </dev/null >/dev/null 2>&1 || \
                 ! sh -c 'test -d /run/systemd/system' </dev/null >/dev/null 2>&1"
            )
        );
    }

    #[test]
    fn probe_and_skip_if_agree_when_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mut c = cmd("true");
        c.spec.creates = Some(format!("{d}/made $(touch pwned) `x` *"));
        c.spec.unless = Some(format!("test -e '{d}/flag'"));
        c.spec.onlyif = Some("read line".into()); // must not see the probe's stdin
        let input = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(input.path(), "a line\n").unwrap();
        let sh = |script: &str| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(dir.path())
                .stdin(std::fs::File::open(input.path()).unwrap())
                .output()
                .unwrap()
        };
        // The host's probe for this one command, as the planner builds it.
        let probe = |c: &Command| {
            let owned = c.probe_owned();
            let specs = [owned.spec()];
            let out = String::from_utf8(sh(&probe::script(&specs)).stdout).unwrap();
            obs(&probe::split(&specs, &out, None).unwrap()[0].output)
        };
        let skip = |c: &Command| {
            sh(c.plan(&probe(c)).unwrap().steps[0]
                .skip_if
                .as_ref()
                .unwrap())
            .status
            .success()
        };
        let o = probe(&c);
        assert_eq!(
            o,
            obs("creates_exists=false\nunless_status=1\nonlyif_status=1")
        );
        assert_eq!(c.plan(&o).unwrap(), Change::no_op("onlyif failed (exit 1)"));
        c.spec.onlyif = Some("true".into());
        assert_eq!(c.plan(&probe(&c)).unwrap().action, Action::Run);
        assert!(!skip(&c));
        std::fs::write(dir.path().join("flag"), "").unwrap();
        assert_eq!(
            c.plan(&probe(&c)).unwrap(),
            Change::no_op("unless succeeded")
        );
        std::fs::remove_file(dir.path().join("flag")).unwrap();
        std::fs::write(dir.path().join("made $(touch pwned) `x` *"), "").unwrap();
        assert_eq!(
            c.plan(&probe(&c)).unwrap().reason,
            format!("creates {d}/made $(touch pwned) `x` * exists")
        );
        // Nothing the quoting should have kept literal was run.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["made $(touch pwned) `x` *"]);
    }

    /// Issue 18: the `creates` and `removes` paths of all of a host's commands are tested in
    /// one loop of `[ -e ]`, not in a framed section per command, and each command plans as
    /// its own test would have had it: links followed (a dangling one is missing), odd names
    /// kept literal, a path asked about twice tested once.
    #[test]
    fn guards_of_twenty_commands_share_one_loop() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("file"), "").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::os::unix::fs::symlink(d.join("file"), d.join("link")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        std::fs::write(d.join("it's $(x) *"), "").unwrap();
        let names = [
            "file",
            "dir",
            "link",
            "dangling",
            "missing",
            "it's $(x) *",
            "it's",
        ];
        let path = |i: usize| d.join(names[i % names.len()]).to_str().unwrap().to_string();
        let mut cmds: Vec<Command> = (0..20)
            .map(|i| {
                let mut c = cmd(&format!("echo {i}"));
                match i % 3 {
                    0 => c.spec.creates = Some(path(i)),
                    1 => c.spec.removes = Some(path(i)),
                    _ => {
                        c.spec.creates = Some(path(i));
                        c.spec.removes = Some(path(i + 1));
                    }
                }
                c
            })
            .collect();
        // A command with a guard of another kind keeps a section for it.
        cmds[7].spec.unless = Some("false".into());
        let owned: Vec<probe::Owned> = cmds.iter().map(|c| c.probe_owned()).collect();
        let specs: Vec<probe::Spec<'_>> = owned.iter().map(probe::Owned::spec).collect();
        let text = probe::script(&specs);
        // One section for all the paths, one for the `unless`.
        assert_eq!(text.matches(" begin\\n'").count(), 2, "{text}");
        assert_eq!(text.matches("[ -e ").count(), 1, "{text}");
        let sections = probe::split(&specs, &probe::run_sh(&text), None).unwrap();
        assert_eq!(sections.len(), cmds.len());
        for (c, section) in cmds.iter().zip(&sections) {
            assert_eq!(section.status, 0);
            let exists = |p: &Option<String>| {
                p.as_ref()
                    .map(|p| std::path::Path::new(p).exists().to_string())
            };
            let mut want = BTreeMap::new();
            if let Some(e) = exists(&c.spec.creates) {
                want.insert("creates_exists".to_string(), e);
            }
            if let Some(e) = exists(&c.spec.removes) {
                want.insert("removes_exists".to_string(), e);
            }
            if c.spec.unless.is_some() {
                want.insert("unless_status".to_string(), "1".to_string());
            }
            assert_eq!(Observed::parse(&section.output).unwrap(), Observed(want));
        }
        // Both answers are there: the test is not trivially all true or all false.
        let outputs: String = sections.iter().map(|s| s.output.as_str()).collect();
        assert!(outputs.contains("=true") && outputs.contains("=false"));
        // Nothing in the odd name ran.
        assert!(!d.join("x").exists());
    }

    #[test]
    fn guards_run_in_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("it's $(here)");
        std::fs::create_dir(&cwd).unwrap();
        std::fs::write(cwd.join("flag"), "").unwrap();
        let mut c = cmd("true");
        c.spec.cwd = Some(cwd.to_str().unwrap().to_string());
        c.spec.unless = Some("test -e flag".into());
        c.spec.onlyif = Some("test -e flag".into());
        let probe = |c: &Command| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(c.probe())
                .current_dir("/")
                .output()
                .unwrap();
            obs(&String::from_utf8(out.stdout).unwrap())
        };
        assert_eq!(probe(&c), obs("unless_status=0\nonlyif_status=0"));
        // A directory that does not exist (yet) fails the guard, as it fails the command.
        c.spec.cwd = Some(format!("{}/missing", dir.path().display()));
        let o = probe(&c);
        assert!(o.get("unless_status").is_some_and(|s| s != "0"), "{o:?}");
        assert!(o.get("onlyif_status").is_some_and(|s| s != "0"), "{o:?}");
        // At apply the executor runs skip_if in the step's directory: no cd in it.
        let step = &c
            .plan(&obs("unless_status=1\nonlyif_status=0"))
            .unwrap()
            .steps[0];
        assert_eq!(
            step.skip_if.as_deref(),
            Some(
                "sh -c 'test -e flag' </dev/null >/dev/null 2>&1 || ! sh -c 'test -e flag' </dev/null >/dev/null 2>&1"
            )
        );
    }

    #[test]
    fn step_carries_user_cwd_env_and_sudo() {
        let facts = crate::facts::Facts::parse("format=1\nkernel_name=Linux\n").unwrap();
        let inputs = crate::inputs::Inputs::from_parts(
            PathBuf::from("/cfg"),
            BTreeMap::new(),
            BTreeMap::from([("TOKEN".to_string(), Some("t0k3n".to_string()))]),
        );
        let vars = BTreeMap::new();
        let ctx = ResolveCtx {
            host: "web1",
            facts: &facts,
            sudo: true,
            inputs: &inputs,
            vars: &vars,
            host_tags: &[],
        };
        let cfg = Spec {
            command: "./bin/migrate".into(),
            creates: None,
            removes: None,
            unless: None,
            onlyif: None,
            user: Some("deploy".into()),
            cwd: Some("/opt/my app".into()),
            undo: Some("./bin/migrate --down".into()),
            env: BTreeMap::from([
                ("MIX_ENV".to_string(), Value::Literal("prod".into())),
                ("TOKEN".to_string(), Value::Env("TOKEN".into())),
            ]),
        };
        let c = resolve(&cfg, &ctx).unwrap();
        let ch = c.plan(&Observed::default()).unwrap();
        let mut want = Step::new("./bin/migrate", true);
        want.user = Some("deploy".into());
        want.cwd = Some("/opt/my app".into());
        want.env = BTreeMap::from([
            ("MIX_ENV".to_string(), EnvValue::Literal("prod".into())),
            ("TOKEN".to_string(), EnvValue::Literal("t0k3n".into())),
        ]);
        assert_eq!(ch.steps, vec![want.clone()]);
        // The undo runs in the same context.
        want.script = "./bin/migrate --down".into();
        assert_eq!(ch.undo, vec![want]);

        // A secret not in the vault (no fingerprint among the inputs) cannot be planned.
        let mut secret = cfg.clone();
        secret.env.insert("DB".into(), Value::Secret("DB".into()));
        assert!(matches!(
            resolve(&secret, &ctx),
            Err(ResourceError::Invalid(_))
        ));
        let mut unset = cfg;
        unset.env.insert("X".into(), Value::Env("UNSET".into()));
        assert!(matches!(
            resolve(&unset, &ctx),
            Err(ResourceError::Invalid(_))
        ));
    }

    #[test]
    fn ids_and_labels() {
        let long = format!("echo {}\necho second line", "x".repeat(80));
        let c = cmd(&long);
        assert!(
            c.id()
                .starts_with(&format!("command:echo {}#", "x".repeat(55))),
            "{}",
            c.id()
        );
        assert_eq!(c.id().len(), "command:".len() + 60 + 1 + 8);
        assert_eq!(c.label(), format!("command echo {}…", "x".repeat(55)));
        assert_eq!(cmd("a\nb").label(), "command a…");
        // The same command elsewhere or as someone else is another resource.
        let mut other = c.clone();
        other.spec.cwd = Some("/tmp".into());
        assert_ne!(c.id(), other.id());
        assert_eq!(c.id(), c.clone().id());
        let mut as_user = c.clone();
        as_user.spec.user = Some("deploy".into());
        assert_ne!(c.id(), as_user.id());
    }

    /// A command skipped by `when` is named in the plan as it would be when planned.
    #[test]
    fn skipped_commands_have_the_planned_label() {
        let c = cmd("  make \\\n  install\n");
        let skipped = crate::resources::label(
            &ResourceKind::Command(c.spec.clone()),
            &crate::inputs::Inputs::default(),
        );
        assert_eq!(skipped, c.label());
        assert_eq!(c.label(), "command make \\…");
    }
}
