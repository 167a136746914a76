//! `service`: a systemd unit or an OpenRC service, running or stopped, enabled at boot or not;
//! or restarted/reloaded on every apply (what handlers use).
//!
//! The probe prints `tool` (the init system's command exists), `exists` (the unit is known),
//! `active` (systemd's ActiveState, or `active`/`inactive` for OpenRC) and `enabled`
//! (`systemctl is-enabled`'s word, or `enabled`/`disabled` for OpenRC's default runlevel); for
//! systemd also `load` and `need_daemon_reload`.

use super::*;
use crate::facts::{Init, InitSystem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
    Restarted,
    Reloaded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    Auto,
    Systemd,
    Openrc,
}

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
    pub state: Option<ServiceState>,
    pub enabled: Option<bool>,
    pub manager: ServiceManager,
}

pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spec> {
    let usage =
        "service NAME [state=\"running\"|\"stopped\"|\"restarted\"|\"reloaded\"] [enabled=#true]";
    r.expect_args(cx, 1, 1, usage);
    let name = r.arg_str(cx, 0);
    let state = r
        .choice(
            cx,
            "state",
            &["running", "stopped", "restarted", "reloaded"],
        )
        .map(|s| match *s {
            "stopped" => ServiceState::Stopped,
            "restarted" => ServiceState::Restarted,
            "reloaded" => ServiceState::Reloaded,
            _ => ServiceState::Running,
        });
    let enabled = r.bool(cx, "enabled");
    let manager = match r
        .choice(cx, "manager", &["auto", "systemd", "openrc"])
        .map(|s| *s)
    {
        Some("systemd") => ServiceManager::Systemd,
        Some("openrc") => ServiceManager::Openrc,
        _ => ServiceManager::Auto,
    };
    let name = name?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | ':'));
    if !ok {
        cx.push(
            Diag::new(
                "config::invalid-name",
                format!("invalid service name {:?}", name.value),
            )
            .at(name.span, "invalid service name")
            .help("service names use letters, digits and . - _ @ :"),
        );
        return None;
    }
    if state.is_none()
        && enabled.is_none()
        && r.option_span("state").is_none()
        && r.option_span("enabled").is_none()
    {
        cx.push(
            Diag::new(
                "config::missing-option",
                format!("service {:?} sets neither state nor enabled", name.value),
            )
            .at(r.name_span(), "does nothing")
            .help("add state=\"running\" and/or enabled=#true"),
        );
        return None;
    }
    Some(Spec {
        name: name.value,
        state,
        enabled,
        manager,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub spec: Spec,
    /// The host's name, for error messages.
    pub host: String,
    /// The init system that runs it: the configured one, else the host's.
    pub manager: Init,
    /// What the init system calls it: `nginx.service` for systemd (a name with a unit type
    /// suffix is kept), the init script's name for OpenRC.
    pub unit: String,
    pub sudo: bool,
}

/// `service nginx`: how plans name the service, also when it was skipped before resolving.
pub fn label(s: &Spec) -> String {
    format!("service {}", s.name)
}

/// Unit types systemd knows; a name ending in one of them is a full unit name.
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
    ".scope",
    ".device",
];

pub fn resolve(s: &Spec, ctx: &ResolveCtx<'_>) -> Result<Service, ResourceError> {
    let manager = match s.manager {
        ServiceManager::Systemd => Init::Systemd,
        ServiceManager::Openrc => Init::Openrc,
        ServiceManager::Auto => match ctx.facts.init_system {
            InitSystem::Systemd => Init::Systemd,
            InitSystem::Openrc => Init::Openrc,
            InitSystem::Other => {
                return Err(ResourceError::Unsupported(format!(
                    "service {}: no init system nexus can manage on {} (systemd or OpenRC is not running)",
                    s.name, ctx.host
                )));
            }
        },
    };
    let unit = match manager {
        Init::Systemd if !UNIT_SUFFIXES.iter().any(|x| s.name.ends_with(x)) => {
            format!("{}.service", s.name)
        }
        _ => s.name.clone(),
    };
    Ok(Service {
        spec: s.clone(),
        host: ctx.host.to_string(),
        manager,
        unit,
        sudo: ctx.sudo,
    })
}

/// Whether the unit is enabled as far as `want` is concerned: `None` when nothing needs doing.
/// Units without an install section (static, generated, transient...) cannot be switched and
/// count as matching either way; a masked unit is disabled beyond what `enable` can fix.
fn enable_needed(word: &str, want: bool) -> Result<bool, &'static str> {
    match (word, want) {
        ("enabled" | "alias", true) => Ok(false),
        (
            "disabled" | "static" | "indirect" | "generated" | "transient" | "masked"
            | "masked-runtime",
            false,
        ) => Ok(false),
        ("static" | "indirect" | "generated" | "transient", true) => Ok(false),
        ("masked" | "masked-runtime", true) => Err("masked"),
        // disabled, linked, enabled-runtime (gone at reboot), bad, or unknown.
        (_, true) => Ok(true),
        (_, false) => Ok(word.starts_with("enabled")),
    }
}

/// The init system a service's probe output came from: only systemd's probe prints `load`.
pub fn manager_of(observed: &Observed) -> Init {
    match observed.get("load") {
        Some(_) => Init::Systemd,
        None => Init::Openrc,
    }
}

/// Steps that bring `unit` to a recorded state whatever it is now (a rollback): enable or
/// disable, then start or stop. Each is a no-op when already so.
pub fn restore_steps(
    unit: &str,
    manager: Init,
    running: bool,
    enabled: bool,
    sudo: bool,
) -> Vec<Step> {
    vec![
        Step::new(
            command(manager, unit, if enabled { "enable" } else { "disable" }),
            sudo,
        ),
        Step::new(
            command(manager, unit, if running { "start" } else { "stop" }),
            sudo,
        ),
    ]
}

/// The shell command that applies `verb` (start, stop, enable, ...) to `unit` under `manager`.
fn command(manager: Init, unit: &str, verb: &str) -> String {
    let u = q(unit);
    match (manager, verb) {
        (Init::Systemd, _) => format!("systemctl {verb} -- {u}"),
        (Init::Openrc, "enable") => format!("rc-update -- add {u} default"),
        (Init::Openrc, "disable") => format!("rc-update -- del {u} default"),
        (Init::Openrc, _) => format!("rc-service -- {u} {verb}"),
    }
}

impl Service {
    fn command(&self, verb: &str) -> String {
        command(self.manager, &self.unit, verb)
    }

    /// The plan for a service nothing is known about yet: stopped and disabled. A planner may use
    /// it instead of [`Resource::plan`]'s "no such service" when an earlier resource of the same
    /// run installs the unit (a package, a unit file).
    pub fn plan_as_new(&self) -> Change {
        let o = Observed::parse(
            "tool=true\nexists=true\nload=loaded\nactive=inactive\nenabled=disabled",
        )
        .expect("fixed probe text parses");
        let mut c = self.plan(&o).expect("a stopped, disabled unit plans");
        if self.manager == Init::Systemd && !c.steps.is_empty() {
            c.steps
                .insert(0, Step::new("systemctl daemon-reload", self.sudo));
        }
        c
    }
}

impl Resource for Service {
    fn id(&self) -> String {
        ResourceType::Service.id(&self.unit)
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    fn probe(&self) -> String {
        let u = q(&self.unit);
        match self.manager {
            Init::Systemd => format!(
                "command -v systemctl >/dev/null 2>&1 || {{ echo tool=false; exit 0; }}\n\
                 echo tool=true\n\
                 s=$(systemctl show -p LoadState -p ActiveState -p NeedDaemonReload -- {u} 2>/dev/null)\n\
                 printf '%s\\n' \"$s\" | sed -n 's/^LoadState=/load=/p; s/^ActiveState=/active=/p; s/^NeedDaemonReload=/need_daemon_reload=/p'\n\
                 case $s in *LoadState=loaded*|*LoadState=masked*) echo exists=true;; *) echo exists=false;; esac\n\
                 printf 'enabled=%s\\n' \"$(systemctl is-enabled -- {u} 2>/dev/null)\""
            ),
            // OpenRC: `status` exits 0 only when started; enabled means in the default runlevel.
            Init::Openrc => format!(
                "command -v rc-service >/dev/null 2>&1 || {{ echo tool=false; exit 0; }}\n\
                 echo tool=true\n\
                 if rc-service -e {u} >/dev/null 2>&1; then echo exists=true; else echo exists=false; fi\n\
                 if rc-service -- {u} status >/dev/null 2>&1; then echo active=active; else echo active=inactive; fi\n\
                 if [ -e /etc/runlevels/default/{u} ] || [ -L /etc/runlevels/default/{u} ]; then echo enabled=enabled; else echo enabled=disabled; fi"
            ),
        }
    }

    fn plan_if_created_earlier(&self, changed: &[ResourceType]) -> Option<Change> {
        // Packages ship units, files and uploads may write one, a command may do anything.
        let may_make_unit = |t: &ResourceType| {
            matches!(
                t,
                ResourceType::Package
                    | ResourceType::File
                    | ResourceType::Upload
                    | ResourceType::Command
            )
        };
        changed
            .iter()
            .any(may_make_unit)
            .then(|| self.plan_as_new())
    }

    fn plan(&self, o: &Observed) -> Result<Change, ResourceError> {
        let (tool, init) = match self.manager {
            Init::Systemd => ("systemctl", "systemd"),
            Init::Openrc => ("rc-service", "OpenRC"),
        };
        if o.require("tool")? != "true" {
            return Err(ResourceError::Unsupported(format!(
                "{}: {tool} is not available on {}; is {init} its init system?",
                self.label(),
                self.host
            )));
        }
        if self.manager == Init::Systemd && o.get("load").is_none() {
            return Err(ResourceError::Unsupported(format!(
                "{}: systemd does not answer on {} (systemctl show failed; is systemd running?)",
                self.label(),
                self.host
            )));
        }
        if o.require("exists")? != "true" {
            return Err(ResourceError::Invalid(format!(
                "no such service {} on {}",
                self.unit, self.host
            )));
        }
        let active_word = o.require("active")?;
        let enabled_word = o.require("enabled")?;
        let masked = o.get("load") == Some("masked");
        let wants_up = matches!(
            self.spec.state,
            Some(ServiceState::Running | ServiceState::Restarted | ServiceState::Reloaded)
        );
        if masked && (wants_up || self.spec.enabled == Some(true)) {
            return Err(ResourceError::Invalid(format!(
                "service {} is masked on {}; unmask it first (systemctl unmask {})",
                self.unit, self.host, self.unit
            )));
        }
        // Starting counts as running (a unit restarting after a crash is activating too);
        // stopping counts as stopped.
        let active = matches!(active_word, "active" | "reloading" | "activating");

        let mut fields = Vec::new();
        let mut steps = Vec::new();
        if let Some(want) = self.spec.enabled {
            let needed = enable_needed(enabled_word, want).map_err(|why| {
                ResourceError::Invalid(format!("service {} is {why} on {}", self.unit, self.host))
            })?;
            if needed {
                fields.push(FieldChange::new(
                    "enabled",
                    Some(enabled_word),
                    Some(if want { "enabled" } else { "disabled" }),
                ));
                steps.push(Step::new(
                    self.command(if want { "enable" } else { "disable" }),
                    self.sudo,
                ));
            }
        }
        let mut action = Action::Update;
        let mut reason = Vec::new();
        match self.spec.state {
            None => {}
            Some(ServiceState::Running) if !active => {
                fields.push(FieldChange::new(
                    "state",
                    Some(active_word),
                    Some("running"),
                ));
                steps.push(Step::new(self.command("start"), self.sudo));
                reason.push("not running");
            }
            Some(ServiceState::Stopped) if active => {
                fields.push(FieldChange::new(
                    "state",
                    Some(active_word),
                    Some("stopped"),
                ));
                steps.push(Step::new(self.command("stop"), self.sudo));
                reason.push("running");
            }
            Some(ServiceState::Running | ServiceState::Stopped) => {}
            Some(ServiceState::Restarted) => {
                action = Action::Run;
                steps.push(Step::new(self.command("restart"), self.sudo));
                reason.push("restarts every apply");
            }
            Some(ServiceState::Reloaded) => {
                action = Action::Run;
                // A stopped service has nothing to reload: start it with the new configuration.
                let verb = if active { "reload" } else { "start" };
                steps.push(Step::new(self.command(verb), self.sudo));
                reason.push(if active {
                    "reloads every apply"
                } else {
                    "not running; starts"
                });
            }
        }
        if fields.iter().any(|f| f.field == "enabled") {
            reason.push(if self.spec.enabled == Some(true) {
                "not enabled"
            } else {
                "enabled"
            });
        }
        if steps.is_empty() {
            return Ok(Change::no_op("up to date"));
        }
        // Unit files changed on disk are read before the unit is acted on.
        if o.get("need_daemon_reload") == Some("yes") {
            steps.insert(0, Step::new("systemctl daemon-reload", self.sudo));
        }
        let mut c = Change::new(action, reason.join(", "), steps);
        c.fields = fields;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(manager: Init, state: Option<ServiceState>, enabled: Option<bool>) -> Service {
        Service {
            spec: Spec {
                name: "nginx".into(),
                state,
                enabled,
                manager: ServiceManager::Auto,
            },
            host: "web1".into(),
            manager,
            unit: if manager == Init::Systemd {
                "nginx.service".into()
            } else {
                "nginx".into()
            },
            sudo: true,
        }
    }

    fn obs(active: &str, enabled: &str) -> Observed {
        Observed::parse(&format!(
            "tool=true\nexists=true\nload=loaded\nneed_daemon_reload=no\nactive={active}\nenabled={enabled}"
        ))
        .unwrap()
    }

    fn scripts(c: &Change) -> Vec<&str> {
        c.steps.iter().map(|s| s.script.as_str()).collect()
    }

    #[test]
    fn running_and_stopped() {
        let run = svc(Init::Systemd, Some(ServiceState::Running), None);
        let c = run.plan(&obs("inactive", "disabled")).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "not running");
        assert_eq!(scripts(&c), ["systemctl start -- nginx.service"]);
        assert!(c.steps[0].sudo);
        assert_eq!(
            c.fields,
            vec![FieldChange::new("state", Some("inactive"), Some("running"))]
        );
        assert_eq!(
            run.plan(&obs("failed", "enabled")).unwrap().action,
            Action::Update
        );
        assert_eq!(
            run.plan(&obs("active", "disabled")).unwrap(),
            Change::no_op("up to date")
        );
        assert_eq!(
            run.plan(&obs("activating", "disabled")).unwrap().action,
            Action::NoOp
        );

        let stop = svc(Init::Systemd, Some(ServiceState::Stopped), None);
        assert_eq!(
            scripts(&stop.plan(&obs("active", "enabled")).unwrap()),
            ["systemctl stop -- nginx.service"]
        );
        assert_eq!(
            stop.plan(&obs("inactive", "enabled")).unwrap().action,
            Action::NoOp
        );
        assert_eq!(
            stop.plan(&obs("failed", "enabled")).unwrap().action,
            Action::NoOp
        );
    }

    #[test]
    fn enabled() {
        let on = svc(Init::Systemd, Some(ServiceState::Running), Some(true));
        let c = on.plan(&obs("inactive", "disabled")).unwrap();
        assert_eq!(
            scripts(&c),
            [
                "systemctl enable -- nginx.service",
                "systemctl start -- nginx.service"
            ]
        );
        assert_eq!(c.reason, "not running, not enabled");
        assert_eq!(
            c.fields[0],
            FieldChange::new("enabled", Some("disabled"), Some("enabled"))
        );
        for word in ["enabled", "static", "alias", "generated"] {
            assert_eq!(
                on.plan(&obs("active", word)).unwrap().action,
                Action::NoOp,
                "{word}"
            );
        }
        for word in ["enabled-runtime", "linked", ""] {
            assert_eq!(
                on.plan(&obs("active", word)).unwrap().action,
                Action::Update,
                "{word}"
            );
        }
        let off = svc(Init::Systemd, None, Some(false));
        let c = off.plan(&obs("active", "enabled")).unwrap();
        assert_eq!((c.action, c.reason.as_str()), (Action::Update, "enabled"));
        assert_eq!(scripts(&c), ["systemctl disable -- nginx.service"]);
        for word in ["disabled", "static", "masked"] {
            assert_eq!(
                off.plan(&obs("active", word)).unwrap().action,
                Action::NoOp,
                "{word}"
            );
        }
    }

    #[test]
    fn restarted_and_reloaded_always_run() {
        let r = svc(Init::Systemd, Some(ServiceState::Restarted), None);
        for active in ["active", "inactive"] {
            let c = r.plan(&obs(active, "enabled")).unwrap();
            assert_eq!(c.action, Action::Run);
            assert_eq!(scripts(&c), ["systemctl restart -- nginx.service"]);
        }
        let l = svc(Init::Systemd, Some(ServiceState::Reloaded), Some(true));
        let c = l.plan(&obs("active", "enabled")).unwrap();
        assert_eq!(
            (c.action, scripts(&c)),
            (Action::Run, vec!["systemctl reload -- nginx.service"])
        );
        let c = l.plan(&obs("inactive", "disabled")).unwrap();
        assert_eq!(
            scripts(&c),
            [
                "systemctl enable -- nginx.service",
                "systemctl start -- nginx.service"
            ]
        );
    }

    #[test]
    fn daemon_reload_comes_first_when_a_unit_file_changed() {
        let o = Observed::parse("tool=true\nexists=true\nload=loaded\nneed_daemon_reload=yes\nactive=inactive\nenabled=enabled")
            .unwrap();
        let c = svc(Init::Systemd, Some(ServiceState::Running), None)
            .plan(&o)
            .unwrap();
        assert_eq!(
            scripts(&c),
            [
                "systemctl daemon-reload",
                "systemctl start -- nginx.service"
            ]
        );
        // Alone it is no reason to change anything.
        let c = svc(Init::Systemd, Some(ServiceState::Stopped), None)
            .plan(&o)
            .unwrap();
        assert_eq!(c.action, Action::NoOp);
    }

    #[test]
    fn unknown_masked_and_missing_init() {
        let s = svc(Init::Systemd, Some(ServiceState::Running), None);
        let gone =
            Observed::parse("tool=true\nload=not-found\nexists=false\nactive=inactive\nenabled=")
                .unwrap();
        assert_eq!(
            s.plan(&gone).unwrap_err(),
            ResourceError::Invalid("no such service nginx.service on web1".into())
        );
        let masked =
            Observed::parse("tool=true\nload=masked\nexists=true\nactive=inactive\nenabled=masked")
                .unwrap();
        assert!(
            matches!(s.plan(&masked), Err(ResourceError::Invalid(m)) if m.contains("is masked"))
        );
        assert_eq!(
            svc(Init::Systemd, Some(ServiceState::Stopped), Some(false))
                .plan(&masked)
                .unwrap()
                .action,
            Action::NoOp
        );
        assert!(matches!(
            s.plan(&Observed::parse("tool=false").unwrap()),
            Err(ResourceError::Unsupported(_))
        ));
        // systemctl present but systemd not running: `show` printed nothing.
        let silent = Observed::parse("tool=true\nexists=false\nenabled=").unwrap();
        assert!(
            matches!(s.plan(&silent), Err(ResourceError::Unsupported(m)) if m.contains("does not answer"))
        );
    }

    #[test]
    fn plan_as_new_assumes_a_stopped_disabled_unit() {
        let c = svc(Init::Systemd, Some(ServiceState::Running), Some(true)).plan_as_new();
        assert_eq!(
            scripts(&c),
            [
                "systemctl daemon-reload",
                "systemctl enable -- nginx.service",
                "systemctl start -- nginx.service"
            ]
        );
        assert_eq!(
            svc(Init::Systemd, Some(ServiceState::Stopped), None)
                .plan_as_new()
                .action,
            Action::NoOp
        );
    }

    #[test]
    fn planned_as_new_only_after_a_change_that_may_make_the_unit() {
        let s = svc(Init::Systemd, Some(ServiceState::Running), None);
        assert_eq!(s.plan_if_created_earlier(&[]), None);
        assert_eq!(
            s.plan_if_created_earlier(&[ResourceType::Directory, ResourceType::User]),
            None
        );
        assert_eq!(
            s.plan_if_created_earlier(&[ResourceType::Directory, ResourceType::Package]),
            Some(s.plan_as_new())
        );
    }

    #[test]
    fn openrc_commands() {
        let s = svc(Init::Openrc, Some(ServiceState::Running), Some(true));
        let o =
            Observed::parse("tool=true\nexists=true\nactive=inactive\nenabled=disabled").unwrap();
        assert_eq!(
            scripts(&s.plan(&o).unwrap()),
            [
                "rc-update -- add nginx default",
                "rc-service -- nginx start"
            ]
        );
        let s = svc(Init::Openrc, Some(ServiceState::Stopped), Some(false));
        let o = Observed::parse("tool=true\nexists=true\nactive=active\nenabled=enabled").unwrap();
        assert_eq!(
            scripts(&s.plan(&o).unwrap()),
            ["rc-update -- del nginx default", "rc-service -- nginx stop"]
        );
        let s = svc(Init::Openrc, Some(ServiceState::Reloaded), None);
        assert_eq!(
            scripts(&s.plan(&o).unwrap()),
            ["rc-service -- nginx reload"]
        );
        let s = svc(Init::Openrc, Some(ServiceState::Restarted), None);
        assert_eq!(
            scripts(&s.plan(&o).unwrap()),
            ["rc-service -- nginx restart"]
        );
        let gone =
            Observed::parse("tool=true\nexists=false\nactive=inactive\nenabled=disabled").unwrap();
        assert_eq!(
            s.plan(&gone).unwrap_err(),
            ResourceError::Invalid("no such service nginx on web1".into())
        );
        assert!(s.probe().contains("rc-service -e nginx"));
    }

    #[test]
    fn probe_text() {
        let s = svc(Init::Systemd, Some(ServiceState::Running), None);
        assert_eq!(
            s.probe(),
            "command -v systemctl >/dev/null 2>&1 || { echo tool=false; exit 0; }\n\
             echo tool=true\n\
             s=$(systemctl show -p LoadState -p ActiveState -p NeedDaemonReload -- nginx.service 2>/dev/null)\n\
             printf '%s\\n' \"$s\" | sed -n 's/^LoadState=/load=/p; s/^ActiveState=/active=/p; s/^NeedDaemonReload=/need_daemon_reload=/p'\n\
             case $s in *LoadState=loaded*|*LoadState=masked*) echo exists=true;; *) echo exists=false;; esac\n\
             printf 'enabled=%s\\n' \"$(systemctl is-enabled -- nginx.service 2>/dev/null)\""
        );
    }

    #[test]
    fn resolve_names_units_and_refuses_other_inits() {
        let inputs = crate::inputs::Inputs::default();
        let vars = BTreeMap::new();
        let on = |init: &str, cfg: &Spec| {
            let f =
                crate::facts::Facts::parse(&format!("format=1\nkernel_name=Linux\ninit={init}\n"))
                    .unwrap();
            let ctx = ResolveCtx {
                host: "web1",
                facts: &f,
                sudo: true,
                inputs: &inputs,
                vars: &vars,
                host_tags: &[],
            };
            resolve(cfg, &ctx)
        };
        let mut cfg = Spec {
            name: "getty@tty1".into(),
            state: Some(ServiceState::Running),
            enabled: None,
            manager: ServiceManager::Auto,
        };
        let s = on("systemd", &cfg).unwrap();
        assert_eq!(
            (s.unit.as_str(), s.id(), s.label()),
            (
                "getty@tty1.service",
                "service:getty@tty1.service".into(),
                "service getty@tty1".into()
            )
        );
        cfg.name = "docker.socket".into();
        assert_eq!(on("systemd", &cfg).unwrap().unit, "docker.socket");
        assert_eq!(on("openrc", &cfg).unwrap().manager, Init::Openrc);
        assert_eq!(
            on("other", &cfg).unwrap_err(),
            ResourceError::Unsupported(
                "service docker.socket: no init system nexus can manage on web1 (systemd or OpenRC is not running)".into()
            )
        );
        cfg.manager = ServiceManager::Systemd;
        assert_eq!(on("other", &cfg).unwrap().manager, Init::Systemd);
    }
}
