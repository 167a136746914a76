//! Top-level nodes and resources: KDL nodes (through [`NodeR`]) into the typed model.

use std::collections::BTreeMap;

use std::time::Duration;

use super::model::*;
use crate::resources::kind::{self, NAMES as RESOURCES};
use crate::syntax::diagnostic::{Diag, Span, Spanned, suggest};
use crate::syntax::expr;
use crate::syntax::fields::{FileCtx, account_name, local_path};
use crate::syntax::kdl::KdlNode;
use crate::syntax::reader::{Cx, NodeR, check_choice, read_map, span_of};
use crate::syntax::values::{self, Address};

/// Top-level node names, in the order the docs present them.
pub const TOP_LEVEL: &[&str] = &[
    "import",
    "defaults",
    "vars",
    "vault",
    "state",
    "trust",
    "host",
    "group",
    "tailscale",
    "notify",
    "task",
    "handler",
];

/// Accumulates the parts of the model from every loaded file.
#[derive(Default)]
pub(super) struct Builder {
    pub defaults: Option<(Defaults, Span)>,
    pub vars: BTreeMap<String, Value>,
    pub vault: Option<(Vault, Span)>,
    pub state: Option<(StateSetting, Span)>,
    pub trust: Option<(Trust, Span)>,
    pub hosts: Vec<Host>,
    pub groups: Vec<Group>,
    pub tailscale: Vec<Tailscale>,
    pub notifiers: Vec<Notifier>,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Handler>,
    /// Where each global variable was defined, to report redefinitions.
    pub var_spans: std::collections::HashMap<String, Span>,
    /// Per task: whether it chose its strategy, or takes the one from `defaults`.
    pub explicit_strategy: Vec<bool>,
}

/// Whether a node sets `key` as a property or a child node.
fn has_option(node: &KdlNode, key: &str) -> bool {
    node.entries()
        .iter()
        .any(|e| e.name().is_some_and(|n| n.value() == key))
        || node
            .children()
            .is_some_and(|c| c.nodes().iter().any(|n| n.name().value() == key))
}

/// The node's name (its first argument). A missing name is reported by the caller's
/// `expect_args`, which knows how many arguments the node takes, so that it is reported once.
fn name_arg(cx: &mut Cx, r: &NodeR<'_>) -> Option<Spanned<String>> {
    if r.args().is_empty() {
        return None;
    }
    let name = r.arg_str(cx, 0)?;
    if let Err(e) = values::check_name(&name) {
        cx.value_error(name.span, e, "config::invalid-name");
        return None;
    }
    Some(name)
}

/// Sudo passwords are credentials: plans record where they come from, so a literal one would be
/// written into every plan file. Only `(env)` and `(secret)` are accepted.
fn sudo_password(cx: &mut Cx, v: Option<Spanned<Value>>) -> Option<Value> {
    credential(cx, v, "a sudo password", "sudo-password", "SUDO_PASSWORD")
}

/// A password property (`key`), which only `(env)` and `(secret)` may give.
fn credential(
    cx: &mut Cx,
    v: Option<Spanned<Value>>,
    what: &str,
    key: &str,
    example: &str,
) -> Option<Value> {
    let v = v?;
    if let Value::Literal(_) = v.value {
        cx.push(
            Diag::new(
                "config::literal-secret",
                format!("{what} cannot be written in the configuration"),
            )
            .at(v.span, "a literal password")
            .help(format!(
                "read it from the vault or the environment: {key}=(secret)\"{example}\" or (env)\"{example}\""
            )),
        );
        return None;
    }
    Some(v.value)
}

fn when_expr(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spanned<String>> {
    let w = r.str(cx, "when")?;
    check_expression(cx, &w).then_some(w)
}

/// `when` conditions are minijinja expressions; a syntax error is a config error, not a plan error.
pub(super) fn check_expression(cx: &mut Cx, w: &Spanned<String>) -> bool {
    if let Err(e) = expr::check_expression(&w.value) {
        cx.push(if e.too_large {
            Diag::new("config::expression-too-large", format!("`when` {e}"))
                .at(w.span, "too large to evaluate safely")
                .help("split the condition: compute a var, or use a group or tags to select hosts")
        } else {
            Diag::new(
                "config::invalid-expression",
                format!("invalid `when` expression: {e}"),
            )
            .at(w.span, "cannot parse this expression")
            .help("`when` takes a minijinja expression, not a template: no {{ }} or {% %}")
        });
        return false;
    }
    let env = expr::environment();
    match env.compile_expression(&w.value) {
        Ok(_) => true,
        Err(e) => {
            cx.push(
                Diag::new("config::invalid-expression", format!("invalid `when` expression: {}", e.detail().unwrap_or("syntax error")))
                    .at(w.span, "cannot parse this expression")
                    .help("`when` takes a minijinja expression over facts and vars, e.g. when=\"facts.os_family == 'debian'\""),
            );
            false
        }
    }
}

impl Builder {
    /// Parses one top-level node (not `import`, which the loader handles).
    pub fn top_level(&mut self, cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) {
        match node.name().value() {
            "defaults" => self.defaults(cx, fc, node),
            "vars" => {
                let r = NodeR::new(cx, node, fc.file, "`vars`".into());
                let names = node.entries().iter().filter_map(|e| e.name()).chain(
                    node.children()
                        .into_iter()
                        .flat_map(|c| c.nodes())
                        .map(|n| n.name()),
                );
                for ident in names {
                    let (name, span) = (ident.value(), span_of(fc.file, ident.span()));
                    if !crate::shell::is_name(name) {
                        cx.push(
                            Diag::new("config::invalid-name", format!("invalid variable name {name:?}"))
                                .at(span, "not usable in templates")
                                .help("variable names use letters, digits and '_' (templates read them as vars.NAME)"),
                        );
                    }
                    if let Some(first) = self.var_spans.get(name) {
                        cx.push(
                            Diag::new("config::duplicate-name", format!("variable `{name}` is defined more than once"))
                                .at(span, "defined again here")
                                .also(*first, "first defined here")
                                .help("define each variable once; per-host values belong in the host's `vars`"),
                        );
                    } else {
                        self.var_spans.insert(name.to_string(), span);
                    }
                }
                for (k, v) in read_map(cx, fc.file, r.node, "vars") {
                    self.vars.insert(k, v);
                }
            }
            "vault" => self.vault(cx, fc, node),
            "state" => self.state(cx, fc, node),
            "trust" => self.trust(cx, fc, node),
            "host" => {
                if let Some(h) = host(cx, fc, node) {
                    self.hosts.push(h);
                }
            }
            "group" => {
                if let Some(g) = group(cx, fc, node) {
                    self.groups.push(g);
                }
            }
            "tailscale" => {
                if let Some(t) = tailscale(cx, fc, node) {
                    self.tailscale.push(t);
                }
            }
            "notify" => {
                if let Some(n) = notifier(cx, fc, node) {
                    self.notifiers.push(n);
                }
            }
            "task" => {
                if let Some(t) = task(cx, fc, node) {
                    self.explicit_strategy.push(has_option(node, "strategy"));
                    self.tasks.push(t);
                }
            }
            "handler" => {
                if let Some(h) = handler(cx, fc, node) {
                    self.handlers.push(h);
                }
            }
            other => {
                let span = span_of(fc.file, node.name().span());
                let mut d = Diag::new("config::unknown-node", format!("unknown node `{other}`"))
                    .at(span, "unknown node");
                let list = TOP_LEVEL.join(", ");
                d = if RESOURCES.contains(&other) {
                    d.help(format!(
                        "`{other}` is a resource: put it inside a `task` or `handler` block"
                    ))
                } else {
                    match suggest(other, TOP_LEVEL.iter().copied()) {
                        Some(s) => {
                            d.help(format!("did you mean `{s}`? top-level nodes are: {list}"))
                        }
                        None => d.help(format!("top-level nodes are: {list}")),
                    }
                };
                cx.push(d);
            }
        }
    }

    fn defaults(&mut self, cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) {
        let mut r = NodeR::new(cx, node, fc.file, "`defaults`".into());
        r.expect_args(cx, 0, 0, "defaults { user \"deploy\" ... }");
        let hkc = r.choice(cx, "host-key-checking", &["strict", "accept-new"]);
        let d = Defaults {
            user: r.str(cx, "user").and_then(|s| account_name(cx, s, "user")),
            port: r.port(cx, "port"),
            identity: r.str(cx, "identity").map(|s| local_path(fc, &s)),
            become_: r.bool(cx, "become"),
            become_user: r
                .str(cx, "become-user")
                .and_then(|s| account_name(cx, s, "become-user")),
            sudo_password: {
                let v = r.value(cx, "sudo-password");
                sudo_password(cx, v)
            },
            connect_timeout: r.duration(cx, "connect-timeout"),
            command_timeout: r.duration(cx, "command-timeout"),
            keepalive: r.duration(cx, "keepalive"),
            max_channels: r.int(cx, "max-channels", 1, 1024).map(|v| v as u32),
            parallel: r.int(cx, "parallel", 1, 100_000).map(|v| v as u32),
            // Batch sizes belong to a task's own hosts, so only the batch-free strategies can be defaults.
            strategy: r
                .choice(cx, "strategy", &["parallel", "serial"])
                .map(|s| strategy(&s)),
            retries: r.int(cx, "retries", 0, 100).map(|v| v as u32),
            retry_delay: r.duration(cx, "retry-delay"),
            known_hosts: r.str(cx, "known-hosts").map(|s| local_path(fc, &s)),
            ssh_config: r.str(cx, "ssh-config").map(|s| local_path(fc, &s)),
            host_key_checking: hkc.map(|s| match *s {
                "accept-new" => HostKeyChecking::AcceptNew,
                _ => HostKeyChecking::Strict,
            }),
        };
        let span = r.name_span();
        r.finish(cx);
        if let Some((_, first)) = &self.defaults {
            cx.push(
                Diag::new(
                    "config::duplicate-defaults",
                    "`defaults` is given more than once",
                )
                .at(span, "second `defaults`")
                .also(*first, "first `defaults`")
                .help("merge the settings into one `defaults` node"),
            );
            return;
        }
        self.defaults = Some((d, span));
    }

    fn vault(&mut self, cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) {
        let mut r = NodeR::new(cx, node, fc.file, "`vault`".into());
        r.expect_args(
            cx,
            0,
            0,
            "vault path=\".nexus/secrets.vault\" key-env=\"NEXUS_VAULT_KEY\"",
        );
        let v = Vault {
            path: r
                .str(cx, "path")
                .map(|s| local_path(fc, &s))
                .unwrap_or_else(|| fc.dir.join(".nexus/secrets.vault")),
            key_file: r.str(cx, "key-file").map(|s| local_path(fc, &s)),
            key_env: r.str(cx, "key-env").map(|s| s.value),
        };
        let span = r.name_span();
        r.finish(cx);
        if let Some((_, first)) = &self.vault {
            cx.push(
                Diag::new("config::duplicate-vault", "`vault` is given more than once")
                    .at(span, "second `vault`")
                    .also(*first, "first `vault`"),
            );
            return;
        }
        self.vault = Some((v, span));
    }

    fn trust(&mut self, cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) {
        let mut r = NodeR::new(cx, node, fc.file, "`trust`".into());
        r.expect_args(cx, 0, 0, "trust allowed-signers=\".nexus/allowed_signers\"");
        let file = r.str(cx, "allowed-signers");
        let span = r.name_span();
        r.finish(cx);
        let Some(file) = file else {
            cx.push(
                Diag::new("config::missing-option", "`trust` needs `allowed-signers`")
                    .at(span, "no allowed-signers")
                    .help("trust allowed-signers=\".nexus/allowed_signers\""),
            );
            return;
        };
        if let Some((_, first)) = &self.trust {
            cx.push(
                Diag::new("config::duplicate-trust", "`trust` is given more than once")
                    .at(span, "second `trust`")
                    .also(*first, "first `trust`"),
            );
            return;
        }
        let trust = Trust {
            allowed_signers: local_path(fc, &file),
        };
        self.trust = Some((trust, span));
    }

    fn state(&mut self, cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) {
        let mut r = NodeR::new(cx, node, fc.file, "`state`".into());
        r.expect_args(
            cx,
            0,
            0,
            "state url=(env)\"NEXUS_STATE_URL\" password=(secret)\"PG_PASSWORD\" project=\"web\"",
        );
        let url = r.value(cx, "url");
        let password = r.value(cx, "password");
        let password = credential(
            cx,
            password,
            "a database password",
            "password",
            "PG_PASSWORD",
        );
        let project = r.str(cx, "project");
        let span = r.name_span();
        r.finish(cx);
        let Some(url) = url else {
            cx.push(
                Diag::new("config::missing-option", "`state` needs a `url`")
                    .at(span, "no url")
                    .help("state url=(env)\"NEXUS_STATE_URL\""),
            );
            return;
        };
        if let Value::Literal(text) = &url.value
            && text
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        {
            cx.push(
                Diag::new(
                    "config::literal-secret",
                    "the state URL holds a password, which would be written into every plan",
                )
                .at(url.span, "a password in the URL")
                .help("give it separately: password=(secret)\"PG_PASSWORD\" or (env)\"PGPASSWORD\", or read the whole URL from (env)"),
            );
            return;
        }
        if let Some(p) = &project
            && let Err(e) = values::check_name(p)
        {
            cx.value_error(p.span, e, "config::invalid-name");
            return;
        }
        let setting = StateSetting {
            url: url.value,
            password,
            project: project.map(|p| p.value),
        };
        if let Some((_, first)) = &self.state {
            cx.push(
                Diag::new("config::duplicate-state", "`state` is given more than once")
                    .at(span, "second `state`")
                    .also(*first, "first `state`"),
            );
            return;
        }
        self.state = Some((setting, span));
    }
}

const STRATEGIES: &[&str] = &["parallel", "serial", "rolling", "canary"];

fn strategy(s: &str) -> Strategy {
    match s {
        "serial" => Strategy::Serial,
        "rolling" => Strategy::Rolling,
        "canary" => Strategy::Canary,
        _ => Strategy::Parallel,
    }
}

fn host(cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) -> Option<Host> {
    let usage = "host NAME [\"user@address:port\"] [user=..] [port=..] [identity=..] [jump=..] [become=#true]";
    let mut r = NodeR::new(cx, node, fc.file, "`host`".into());
    let name = name_arg(cx, &r);
    if let Some(n) = &name {
        r.what = format!("host `{}`", n.value);
    }
    r.expect_args(cx, 1, 2, usage);
    let positional = r.arg_str(cx, 1);
    let prop_address = r.str(cx, "address");
    let user = r.str(cx, "user").and_then(|s| {
        let span = s.span;
        account_name(cx, s, "user").map(|v| Spanned::new(v, span))
    });
    let port = r.port(cx, "port");
    let identity = r.str(cx, "identity").map(|s| local_path(fc, &s));
    let jump = r.str(cx, "jump");
    let become_ = r.bool(cx, "become");
    let become_user = r
        .str(cx, "become-user")
        .and_then(|s| account_name(cx, s, "become-user"));
    let sudo_password = {
        let v = r.value(cx, "sudo-password");
        sudo_password(cx, v)
    };
    let connect_timeout = r.duration(cx, "connect-timeout");
    let tags = r
        .str_list(cx, "tags")
        .into_iter()
        .map(|s| s.value)
        .collect();
    let vars = r.map(cx, "vars");
    r.finish(cx);
    let name = name?;
    if name.value == LOCAL_HOST {
        cx.push(
            Diag::new("config::reserved-name", "`local` is the built-in name of the machine running nexus")
                .at(name.span, "reserved name")
                .help("tasks without `on` (or with on=\"local\") run locally; pick another name for this host"),
        );
        return None;
    }
    let address_src = match (positional, prop_address) {
        (Some(a), Some(b)) => {
            cx.push(
                Diag::new(
                    "config::duplicate-option",
                    format!("host `{}` has two addresses", name.value),
                )
                .at(b.span, "second address")
                .also(a.span, "first address")
                .help("give the address either as the second argument or as address=\"...\""),
            );
            a
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => name.clone(),
    };
    let Address {
        user: addr_user,
        host: address,
        port: addr_port,
    } = match values::parse_address(&address_src) {
        Ok(a) => a,
        Err(e) => {
            cx.value_error(address_src.span, e, "config::invalid-address");
            // Keep the host (the config is rejected anyway) so that references to it do not
            // also report it as undefined.
            Address {
                user: None,
                host: address_src.value.clone(),
                port: None,
            }
        }
    };
    if let (Some(_), Some(u)) = (&addr_user, &user) {
        cx.push(
            Diag::new(
                "config::duplicate-option",
                format!("host `{}` sets its user twice", name.value),
            )
            .at(u.span, "user set here")
            .also(address_src.span, "and in the address")
            .help("keep the user in one place"),
        );
    }
    if let (Some(_), Some(_)) = (&addr_port, &port) {
        cx.push(
            Diag::new(
                "config::duplicate-option",
                format!("host `{}` sets its port twice", name.value),
            )
            .at(address_src.span, "the address has a port")
            .help("keep the port in one place"),
        );
    }
    Some(Host {
        name,
        address,
        user: addr_user.or(user.map(|u| u.value)),
        port: addr_port.or(port),
        identity,
        jump,
        become_,
        become_user,
        sudo_password,
        connect_timeout,
        tags,
        vars,
    })
}

fn group(cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) -> Option<Group> {
    let usage = "group NAME MEMBER... (hosts or groups), or group NAME { members \"a\" \"b\" }";
    let mut r = NodeR::new(cx, node, fc.file, "`group`".into());
    let name = name_arg(cx, &r);
    if let Some(n) = &name {
        r.what = format!("group `{}`", n.value);
    }
    r.expect_args(cx, 1, usize::MAX, usage);
    let mut members: Vec<Spanned<String>> = (1..r.args().len())
        .filter_map(|i| r.arg_str(cx, i))
        .collect();
    members.extend(r.str_list(cx, "members"));
    let span = r.name_span();
    r.finish(cx);
    let name = name?;
    if members.is_empty() {
        cx.push(
            Diag::new(
                "config::empty-group",
                format!("group `{}` has no members", name.value),
            )
            .at(span, "empty group")
            .help(format!(
                "list its hosts: group \"{}\" \"web1\" \"web2\"",
                name.value
            )),
        );
        // Kept so that tasks targeting it do not also report it as undefined.
    }
    Some(Group { name, members })
}

fn tailscale(cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) -> Option<Tailscale> {
    let usage = "tailscale GROUP tag=\"webserver\" [user=\"deploy\"] [online-only=#true] [binary=\"tailscale\"]";
    let mut r = NodeR::new(cx, node, fc.file, "`tailscale`".into());
    let name = name_arg(cx, &r);
    r.expect_args(cx, 1, 1, usage);
    let mut tags: Vec<String> = Vec::new();
    for t in r.str_list(cx, "tag") {
        let v = t.value.strip_prefix("tag:").unwrap_or(&t.value).to_string();
        if values::check_name(&v).is_err() {
            cx.push(
                Diag::new(
                    "config::invalid-name",
                    format!("invalid Tailscale tag {:?}", t.value),
                )
                .at(t.span, "invalid tag")
                .help("Tailscale tags are written \"web\" or \"tag:web\""),
            );
        } else {
            tags.push(v);
        }
    }
    let user = r.str(cx, "user").and_then(|s| account_name(cx, s, "user"));
    let online_only = r.bool(cx, "online-only").unwrap_or(true);
    let binary = r
        .str(cx, "binary")
        .map(|s| s.value)
        .unwrap_or_else(|| "tailscale".into());
    let span = r.span();
    r.finish(cx);
    Some(Tailscale {
        name: name?,
        tags,
        user,
        online_only,
        binary,
        span,
    })
}

fn notifier(cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) -> Option<Notifier> {
    let usage = "notify NAME url=(env)\"WEBHOOK_URL\" [template=\"slack\"] [on=\"failure\"]";
    let mut r = NodeR::new(cx, node, fc.file, "`notify`".into());
    let name = name_arg(cx, &r);
    r.expect_args(cx, 1, 1, usage);
    let url = r.value(cx, "url");
    let template = r.choice(cx, "template", &["slack", "discord", "teams", "generic"]);
    let on_raw = r.str_list(cx, "on");
    let headers = r.map(cx, "headers");
    let timeout = r.duration(cx, "timeout").unwrap_or(Duration::from_secs(10));
    let retries = r.int(cx, "retries", 0, 20).map_or(3, |v| v as u32);
    let span = r.name_span();
    let url_written = r.option_span("url").is_some();
    r.finish(cx);
    let mut on = Vec::new();
    for e in &on_raw {
        if let Some(c) = check_choice(
            cx,
            e,
            "notify event",
            &["success", "failure", "always", "drift"],
        ) {
            on.push(match *c {
                "success" => NotifyEvent::Success,
                "always" => NotifyEvent::Always,
                "drift" => NotifyEvent::Drift,
                _ => NotifyEvent::Failure,
            });
        }
    }
    if on.is_empty() && on_raw.is_empty() {
        on.push(NotifyEvent::Failure);
    }
    let name = name?;
    let template = match template.map(|t| *t).or(match name.value.as_str() {
        "slack" => Some("slack"),
        "discord" => Some("discord"),
        "teams" => Some("teams"),
        "generic" => Some("generic"),
        _ => None,
    }) {
        Some("slack") => NotifyTemplate::Slack,
        Some("discord") => NotifyTemplate::Discord,
        Some("teams") => NotifyTemplate::Teams,
        Some(_) => NotifyTemplate::Generic,
        None => {
            cx.push(
                Diag::new(
                    "config::missing-option",
                    format!("notify `{}` needs a template", name.value),
                )
                .at(span, "which payload format?")
                .help("add template=\"slack\", \"discord\", \"teams\" or \"generic\""),
            );
            return None;
        }
    };
    let Some(url) = url else {
        if url_written {
            // The url was given but invalid, and that is already reported.
            return None;
        }
        cx.push(
            Diag::new(
                "config::missing-option",
                format!("notify `{}` needs a url", name.value),
            )
            .at(span, "no url")
            .help("add url=(env)\"WEBHOOK_URL\" or url=(secret)\"WEBHOOK_URL\""),
        );
        return None;
    };
    if let Value::Literal(u) = &url.value
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        cx.push(
            Diag::new(
                "config::invalid-url",
                format!("webhook url {u:?} is not an http(s) URL"),
            )
            .at(url.span, "invalid URL")
            .help("webhook URLs start with https:// (or http:// for a local endpoint)"),
        );
    }
    Some(Notifier {
        name,
        url: url.value,
        template,
        on,
        headers,
        timeout,
        retries,
    })
}

fn task(cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) -> Option<Task> {
    let usage = "task NAME [on=TARGET] [strategy=..] { resources... }";
    let mut r = NodeR::new(cx, node, fc.file, "`task`".into());
    r.container();
    let name = name_arg(cx, &r);
    if let Some(n) = &name {
        r.what = format!("task `{}`", n.value);
    }
    r.expect_args(cx, 1, 1, usage);
    let description = r.str(cx, "description").map(|s| s.value);
    let on = r.str_list(cx, "on");
    let deps = r.str_list(cx, "deps");
    let strategy_s = r.choice(cx, "strategy", STRATEGIES);
    let batches = r.batch_list(cx, "batch");
    let canary = r.batch(cx, "canary");
    let max_fail = r.percent(cx, "max-fail");
    let parallel = r.int(cx, "parallel", 1, 100_000).map(|v| v as u32);
    let timeout = r.duration(cx, "timeout");
    let retries = r.int(cx, "retries", 0, 100).map(|v| v as u32);
    let retry_delay = r.duration(cx, "retry-delay");
    let tags = r
        .str_list(cx, "tags")
        .into_iter()
        .map(|s| s.value)
        .collect();
    let when = when_expr(cx, &mut r);
    let continue_on_error = r.bool(cx, "continue-on-error").unwrap_or(false);
    let on_failure_s = r.choice(cx, "on-failure", &["stop", "rollback"]);
    let mut health_check = Vec::new();
    let mut health_span = None;
    let mut resources = Vec::new();
    for child in r.remaining_children() {
        if child.name().value() == "health-check" {
            let this = span_of(fc.file, child.name().span());
            if let Some(first) = health_span {
                cx.push(
                    Diag::new(
                        "config::duplicate-option",
                        "`health-check` is given more than once",
                    )
                    .at(this, "second health check")
                    .also(first, "first health check")
                    .help("put every check in one `health-check` block"),
                );
            }
            health_span = Some(this);
            if child.children().is_none_or(|c| c.nodes().is_empty()) {
                cx.push(
                    Diag::new("config::missing-option", "`health-check` is empty")
                        .at(this, "no checks")
                        .help("add a check, e.g. health-check { wait-for http=\"http://localhost:4000/health\" }"),
                );
            }
            let mut hr = NodeR::new(cx, child, fc.file, "`health-check`".into());
            hr.container();
            hr.expect_args(cx, 0, 0, "health-check { wait-for http=\"...\" }");
            for c in hr.remaining_children() {
                if let Some(res) = resource(cx, fc, c, r.known()) {
                    health_check.push(res);
                }
            }
            hr.finish(cx);
        } else if let Some(res) = resource(cx, fc, child, r.known()) {
            resources.push(res);
        }
    }
    let span = r.name_span();
    let batch_span = r.option_span("batch");
    let canary_span = r.option_span("canary");
    // An invalid strategy was already reported; checks against the fallback would only add noise.
    let strategy_invalid = strategy_s.is_none() && r.option_span("strategy").is_some();
    r.finish(cx);
    let name = name?;
    let strategy = strategy_s
        .as_ref()
        .map_or(Strategy::Parallel, |s| strategy(s));
    let strategy_given = strategy_s.as_ref().map(|s| s.span);
    let strategy_span = strategy_given.unwrap_or(span);
    // Points at the option that has no effect, and at the strategy when one was written.
    let strategy_mismatch = |cx: &mut Cx, option: &str, at: Span, needs: &str| {
        let mut d = Diag::new(
            "config::strategy-option",
            format!(
                "`{option}` has no effect with strategy \"{}\"",
                strategy_name(strategy)
            ),
        )
        .at(at, format!("`{option}` needs another strategy"));
        d = match strategy_given {
            Some(s) => d.also(s, "strategy set here"),
            None => d,
        };
        let default = if strategy_given.is_none() {
            " (the default strategy is \"parallel\")"
        } else {
            ""
        };
        cx.push(d.help(format!("`{option}` needs strategy=\"{needs}\"{default}")));
    };
    if let Some(at) = batch_span
        && !strategy_invalid
        && !matches!(strategy, Strategy::Rolling | Strategy::Canary)
    {
        strategy_mismatch(cx, "batch", at, "rolling");
    }
    if let Some(at) = canary_span
        && !strategy_invalid
        && strategy != Strategy::Canary
    {
        strategy_mismatch(cx, "canary", at, "canary");
    }
    if let Some(hs) = health_span
        && !strategy_invalid
        && strategy != Strategy::Canary
        && strategy != Strategy::Rolling
    {
        cx.push(
            Diag::new(
                "config::strategy-option",
                "`health-check` needs strategy \"canary\" or \"rolling\"",
            )
            .at(hs, "health check here")
            .help("a health check runs after the canary batch (or after each rolling batch)"),
        );
    }
    let on_failure = match on_failure_s.as_ref().map(|s| s.value) {
        Some("rollback") => OnFailure::Rollback,
        _ => OnFailure::Stop,
    };
    if let Some(of) = on_failure_s
        .as_ref()
        .filter(|_| on_failure == OnFailure::Rollback)
    {
        if !strategy_invalid && !matches!(strategy, Strategy::Rolling | Strategy::Canary) {
            strategy_mismatch(
                cx,
                "on-failure=\"rollback\"",
                of.span,
                "rolling\" or \"canary",
            );
        }
        if continue_on_error {
            cx.push(
                Diag::new(
                    "config::conflicting-options",
                    "`on-failure=\"rollback\"` and `continue-on-error` contradict each other",
                )
                .at(of.span, "rolls back when the rollout stops")
                .help("continue-on-error never stops the rollout, so nothing would be rolled back; keep one"),
            );
        }
    }
    if strategy == Strategy::Rolling && batch_span.is_none() {
        cx.push(
            Diag::new(
                "config::missing-option",
                format!("rolling task `{}` needs batch sizes", name.value),
            )
            .at(strategy_span, "rolling without batches")
            .help("add batch=1, batch=\"25%\" or batch 1 5 \"20%\""),
        );
    }
    Some(Task {
        name,
        description,
        on,
        deps,
        strategy,
        batches,
        canary: canary.or((strategy == Strategy::Canary).then_some(values::BatchSize::Hosts(1))),
        health_check,
        max_fail,
        parallel,
        timeout,
        retries,
        retry_delay,
        tags,
        when,
        continue_on_error,
        on_failure,
        resources,
        span,
    })
}

pub fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Parallel => "parallel",
        Strategy::Serial => "serial",
        Strategy::Rolling => "rolling",
        Strategy::Canary => "canary",
    }
}

fn handler(cx: &mut Cx, fc: &FileCtx<'_>, node: &KdlNode) -> Option<Handler> {
    let usage = "handler NAME { resources... }";
    let mut r = NodeR::new(cx, node, fc.file, "`handler`".into());
    r.container();
    let name = name_arg(cx, &r);
    r.expect_args(cx, 1, 1, usage);
    let mut resources = Vec::new();
    for child in r.remaining_children() {
        if let Some(res) = resource(cx, fc, child, &[]) {
            if let Some(n) = res.common.notify.first() {
                cx.push(
                    Diag::new("config::handler-notify", "resources in a handler cannot notify handlers")
                        .at(n.span, "notify inside a handler")
                        .help("put the follow-up resources in the same handler; handlers run in definition order"),
                );
            }
            resources.push(res);
        }
    }
    let span = r.name_span();
    r.finish(cx);
    if resources.is_empty() {
        cx.push(
            Diag::new("config::empty-handler", "handler has no resources")
                .at(span, "empty handler")
                .help("add the resources to run, e.g. service \"nginx\" state=\"restarted\""),
        );
    }
    Some(Handler {
        name: name?,
        resources,
        span,
    })
}

/// Parses a resource node; `settings` are the names valid alongside it (for suggestions).
fn resource(
    cx: &mut Cx,
    fc: &FileCtx<'_>,
    node: &KdlNode,
    settings: &[&'static str],
) -> Option<Resource> {
    let kind_name = node.name().value();
    if !RESOURCES.contains(&kind_name) {
        let span = span_of(fc.file, node.name().span());
        let mut d = Diag::new(
            "config::unknown-node",
            format!("unknown resource `{kind_name}`"),
        )
        .at(span, "unknown resource");
        let candidates = RESOURCES.iter().chain(settings.iter()).copied();
        let list = RESOURCES.join(", ");
        d = match suggest(kind_name, candidates) {
            Some(s) => d.help(format!("did you mean `{s}`? resources are: {list}")),
            None if TOP_LEVEL.contains(&kind_name) => d.help(format!(
                "`{kind_name}` is a top-level node and cannot be nested here"
            )),
            None => d.help(format!("resources are: {list}")),
        };
        cx.push(d);
        return None;
    }
    let mut r = NodeR::new(cx, node, fc.file, format!("`{kind_name}`"));
    let common = Common {
        label: r.str(cx, "label").map(|s| s.value),
        when: when_expr(cx, &mut r),
        notify: r.str_list(cx, "notify"),
        sudo: r.bool(cx, "sudo"),
        timeout: r.duration(cx, "timeout"),
        retries: r.int(cx, "retries", 0, 100).map(|v| v as u32),
        retry_delay: r.duration(cx, "retry-delay"),
    };
    let span = r.span();
    let kind = kind::parse(kind_name, cx, fc, &mut r, common.timeout);
    r.finish(cx);
    Some(Resource {
        kind: kind?,
        common,
        span,
    })
}
