//! Top-level nodes and resources: KDL nodes (through [`NodeR`]) into the typed model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::syntax::KdlNode;

use super::diagnostic::{Diag, FileId, Span, Spanned, suggest};
use super::files;
use super::model::*;
use super::reader::{Cx, NodeR, check_choice, read_map, span_of};
use super::values::{self, Address};

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

/// Resource node names accepted inside `task`, `handler` and `health-check` blocks.
pub const RESOURCES: &[&str] = &[
    "package",
    "service",
    "file",
    "directory",
    "user",
    "group",
    "command",
    "upload",
    "download",
    "wait-for",
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

/// Where relative local paths of one file resolve, and whether to check that they exist.
pub(super) struct FileCtx<'p> {
    pub file: FileId,
    pub dir: &'p Path,
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

fn local_path(fc: &FileCtx<'_>, p: &str) -> PathBuf {
    // `~/` means the invoking user's home, as in ssh and shells; everything else is relative to
    // the config file that names it.
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = crate::local_user::home_dir()
    {
        return home.join(rest);
    }
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        fc.dir.join(p)
    }
}

/// Says where a missing local file was looked for, relative to the working directory when possible
/// (never an absolute path the user did not write, so messages stay short and goldens stable).
fn missing_file_help(p: &Path) -> String {
    format!(
        "looked for {}; local paths are relative to the directory of the file that names them",
        super::display_path(p)
    )
}

/// A local `source`, `template` or upload file: it must exist and be a regular file (a FIFO would
/// block the read, a device never end it), and a template at most the size of a configuration.
fn local_file(cx: &mut Cx, fc: &FileCtx<'_>, s: &Spanned<String>, what: &str) -> PathBuf {
    let p = local_path(fc, s);
    let limit = (what == "template").then_some(files::MAX_TEXT_BYTES);
    let d = match files::check_regular(&p, limit) {
        Ok(_) => return p,
        Err(e @ files::ReadError::Io(_)) => Diag::new(
            "config::missing-file",
            format!("{what} file {:?} not found", s.value),
        )
        .at(s.span, e.to_string())
        .help(missing_file_help(&p)),
        Err(e) => Diag::new(e.code(), e.about(&format!("{what} {:?}", s.value)))
            .at(s.span, "here")
            .help("local files are read whole when planning: name a regular file"),
    };
    cx.push(d);
    p
}

fn remote_path(cx: &mut Cx, s: Option<Spanned<String>>) -> Option<String> {
    let s = s?;
    match values::check_remote_path(&s) {
        Ok(()) => Some(s.value),
        Err(e) => {
            cx.value_error(s.span, e, "config::invalid-path");
            None
        }
    }
}

/// User and group names (see [`values::check_account_name`]): nothing odd reaches a command line.
fn account_name(cx: &mut Cx, s: Spanned<String>, what: &str) -> Option<String> {
    match values::check_account_name(&s) {
        Ok(()) => Some(s.value),
        Err(e) => {
            cx.push(
                Diag::new(
                    "config::invalid-name",
                    format!("invalid {what} name {:?}", s.value),
                )
                .at(s.span, "invalid name")
                .help(e.help),
            );
            None
        }
    }
}

fn when_expr(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spanned<String>> {
    let w = r.str(cx, "when")?;
    check_expression(cx, &w).then_some(w)
}

/// `when` conditions are minijinja expressions; a syntax error is a config error, not a plan error.
pub(super) fn check_expression(cx: &mut Cx, w: &Spanned<String>) -> bool {
    if let Err(e) = super::expr::check_expression(&w.value) {
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
    let env = super::expr::environment();
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
                    let valid = name
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
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
    let kind = match kind_name {
        "package" => package(cx, &mut r),
        "service" => service(cx, &mut r),
        "file" => file(cx, fc, &mut r),
        "directory" => directory(cx, &mut r),
        "user" => user(cx, &mut r),
        "group" => group_res(cx, &mut r),
        "command" => command(cx, &mut r),
        "upload" => upload(cx, fc, &mut r),
        "download" => download(cx, &mut r),
        _ => wait_for(cx, &mut r),
    };
    r.finish(cx);
    let mut kind = kind?;
    if let ResourceKind::WaitFor(w) = &mut kind {
        // wait-for reads the common `timeout` as its deadline.
        if let Some(t) = common.timeout {
            w.timeout = t;
        }
    }
    Some(Resource { kind, common, span })
}

const PRESENCE: &[&str] = &["present", "absent"];

fn presence(cx: &mut Cx, r: &mut NodeR<'_>) -> Presence {
    match r.choice(cx, "state", PRESENCE).map(|s| *s) {
        Some("absent") => Presence::Absent,
        _ => Presence::Present,
    }
}

fn package(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    let usage = "package NAME... [state=\"present\"|\"absent\"|\"latest\"] [version=\"1.2.3\"]";
    r.expect_args(cx, 1, usize::MAX, usage);
    let mut names = Vec::new();
    for i in 0..r.args().len() {
        let Some(n) = r.arg_str(cx, i) else { continue };
        let ok = !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_' | ':' | '@')
            });
        if ok {
            names.push(n.value);
        } else {
            cx.push(
                Diag::new("config::invalid-name", format!("invalid package name {:?}", n.value))
                    .at(n.span, "invalid package name")
                    .help("package names use letters, digits and . + - _ : @; give several packages as separate arguments"),
            );
        }
    }
    let state = r.choice(cx, "state", &["present", "absent", "latest"]);
    let version = r.str(cx, "version");
    let manager = match r
        .choice(
            cx,
            "manager",
            &["auto", "apt", "dnf", "yum", "apk", "pacman"],
        )
        .map(|s| *s)
    {
        Some("apt") => PackageManager::Apt,
        Some("dnf") => PackageManager::Dnf,
        Some("yum") => PackageManager::Yum,
        Some("apk") => PackageManager::Apk,
        Some("pacman") => PackageManager::Pacman,
        _ => PackageManager::Auto,
    };
    let update_cache = r.bool(cx, "update-cache").unwrap_or(false);
    let state = match state.as_ref().map(|s| **s) {
        Some("absent") => PackageState::Absent,
        Some("latest") => PackageState::Latest,
        _ => PackageState::Present,
    };
    if let Some(v) = &version {
        if names.len() > 1 {
            cx.push(
                Diag::new(
                    "config::version-with-many",
                    "`version` needs exactly one package",
                )
                .at(v.span, "which package?")
                .help("write one `package` node per pinned version"),
            );
        }
        if state != PackageState::Present {
            cx.push(
                Diag::new(
                    "config::version-state",
                    "`version` only goes with state \"present\"",
                )
                .at(v.span, "version with another state")
                .help("remove `version`, or the state"),
            );
        }
        if v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            cx.push(
                Diag::new(
                    "config::invalid-version",
                    format!("invalid version {:?}", v.value),
                )
                .at(v.span, "invalid version"),
            );
        }
    }
    if names.is_empty() {
        return None;
    }
    Some(ResourceKind::Package(Package {
        names,
        state,
        version: version.map(|v| v.value),
        manager,
        update_cache,
    }))
}

fn service(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
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
    Some(ResourceKind::Service(Service {
        name: name.value,
        state,
        enabled,
        manager,
    }))
}

fn ownership(
    cx: &mut Cx,
    r: &mut NodeR<'_>,
) -> (Option<String>, Option<String>, Option<values::Mode>) {
    let owner = r.str(cx, "owner").and_then(|s| owner_name(cx, s, "owner"));
    let group = r.str(cx, "group").and_then(|s| owner_name(cx, s, "group"));
    let mode = r.mode(cx, "mode");
    (owner, group, mode)
}

/// Owners may be names or numeric ids.
fn owner_name(cx: &mut Cx, s: Spanned<String>, what: &str) -> Option<String> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return Some(s.value);
    }
    account_name(cx, s, what)
}

fn file(cx: &mut Cx, fc: &FileCtx<'_>, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    let usage = "file PATH (content=\"...\" | source=\"local/file\" | template=\"local.j2\") [owner=..] [group=..] [mode=\"0644\"]";
    r.expect_args(cx, 1, 1, usage);
    let path = {
        let v = r.arg_str(cx, 0);
        remote_path(cx, v)
    };
    let state = presence(cx, r);
    let content = r.value(cx, "content");
    let source = r.str(cx, "source");
    let template = r.str(cx, "template");
    let source_url = r.str(cx, "source-url");
    let blake3 = r.str(cx, "blake3");
    let (owner, group, mode) = ownership(cx, r);
    let backup = r.bool(cx, "backup").unwrap_or(false);
    let vars = r.map(cx, "vars");
    let given: Vec<Span> = [
        content.as_ref().map(|c| c.span),
        source.as_ref().map(|c| c.span),
        template.as_ref().map(|c| c.span),
        source_url.as_ref().map(|c| c.span),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        cx.push(
            Diag::new(
                "config::conflicting-options",
                "a file takes one of content, source, template and source-url",
            )
            .at(given[1], "second content source")
            .also(given[0], "first content source")
            .help("keep exactly one"),
        );
    }
    if state == Presence::Absent && !given.is_empty() {
        cx.push(
            Diag::new(
                "config::conflicting-options",
                "an absent file has no content",
            )
            .at(given[0], "content for an absent file")
            .help("remove the content, or state=\"absent\""),
        );
    }
    let written = ["content", "source", "template", "source-url"]
        .iter()
        .any(|k| r.option_span(k).is_some());
    if state == Presence::Present && !written {
        cx.push(
            Diag::new("config::missing-option", "file needs content, source, template or source-url")
                .at(r.name_span(), "no content")
                .help("add content=\"...\", source=\"files/app.conf\" or template=\"templates/app.conf.j2\"; use `directory` for directories"),
        );
    }
    if let Some(b) = &blake3 {
        if source_url.is_none() {
            cx.push(
                Diag::new(
                    "config::conflicting-options",
                    "`blake3` pins a `source-url` and needs one",
                )
                .at(b.span, "nothing to pin")
                .help("add source-url=\"https://...\" or remove blake3"),
            );
        } else if b.len() != 64 || !b.chars().all(|c| c.is_ascii_hexdigit()) {
            cx.push(
                Diag::new(
                    "config::invalid-hash",
                    "`blake3` must be 64 hexadecimal digits",
                )
                .at(b.span, "invalid hash"),
            );
        }
    }
    if !vars.is_empty() && template.is_none() {
        cx.push(
            Diag::new(
                "config::conflicting-options",
                "`vars` are only used by templates",
            )
            .at(r.name_span(), "vars without a template")
            .help("add template=\"...\" or remove vars"),
        );
    }
    let content = if let Some(c) = content {
        Some(FileContent::Inline { value: c.value })
    } else if let Some(s) = &source {
        Some(FileContent::Source {
            path: local_file(cx, fc, s, "source"),
        })
    } else if let Some(t) = &template {
        Some(FileContent::Template {
            path: local_file(cx, fc, t, "template"),
        })
    } else if let Some(u) = source_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            cx.push(
                Diag::new(
                    "config::invalid-url",
                    format!("source-url {:?} is not an http(s) URL", u.value),
                )
                .at(u.span, "invalid URL"),
            );
        }
        Some(FileContent::Url {
            url: u.value,
            blake3: blake3.map(|b| b.value.to_ascii_lowercase()),
        })
    } else {
        None
    };
    Some(ResourceKind::File(File {
        path: path?,
        state,
        content,
        owner,
        group,
        mode,
        backup,
        vars,
    }))
}

fn directory(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    r.expect_args(
        cx,
        1,
        1,
        "directory PATH [owner=..] [group=..] [mode=\"0755\"] [recursive=#true] [state=\"absent\"]",
    );
    let path = {
        let v = r.arg_str(cx, 0);
        remote_path(cx, v)
    };
    let state = presence(cx, r);
    let (owner, group, mode) = ownership(cx, r);
    let recursive = r.bool(cx, "recursive").unwrap_or(false);
    if let Some(p) = &path
        && p.trim_end_matches('/').is_empty()
        && state == Presence::Absent
    {
        cx.push(
            Diag::new("config::dangerous-path", "refusing to remove \"/\"")
                .at(r.name_span(), "state=\"absent\" on the root directory"),
        );
        return None;
    }
    Some(ResourceKind::Directory(Directory {
        path: path?,
        state,
        owner,
        group,
        mode,
        recursive,
    }))
}

fn user(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    r.expect_args(cx, 1, 1, "user NAME [uid=1001] [group=\"staff\"] [home=\"/home/NAME\"] [shell=\"/bin/bash\"] { groups \"a\" \"b\" }");
    let name = r.arg_str(cx, 0).and_then(|s| account_name(cx, s, "user"));
    let state = presence(cx, r);
    let uid = r.u32(cx, "uid");
    let group = r.str(cx, "group").and_then(|s| owner_name(cx, s, "group"));
    let groups = r
        .str_list(cx, "groups")
        .into_iter()
        .filter_map(|s| account_name(cx, s, "group"))
        .collect();
    let append = r.bool(cx, "append").unwrap_or(false);
    let home = {
        let v = r.str(cx, "home");
        remote_path(cx, v)
    };
    let shell = {
        let v = r.str(cx, "shell");
        remote_path(cx, v)
    };
    let comment = r.str(cx, "comment");
    if let Some(c) = &comment
        && c.contains([':', '\n'])
    {
        cx.push(
            Diag::new(
                "config::invalid-comment",
                "a user comment cannot contain ':' or a newline",
            )
            .at(c.span, "invalid comment"),
        );
    }
    let system = r.bool(cx, "system").unwrap_or(false);
    let create_home = r.bool(cx, "create-home").unwrap_or(!system);
    Some(ResourceKind::User(User {
        name: name?,
        state,
        uid,
        group,
        groups,
        append,
        home,
        shell,
        comment: comment.map(|c| c.value),
        system,
        create_home,
    }))
}

fn group_res(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    r.expect_args(
        cx,
        1,
        1,
        "group NAME [gid=1001] [system=#true] [state=\"absent\"]",
    );
    let name = r.arg_str(cx, 0).and_then(|s| account_name(cx, s, "group"));
    let state = presence(cx, r);
    let gid = r.u32(cx, "gid");
    let system = r.bool(cx, "system").unwrap_or(false);
    Some(ResourceKind::Group(GroupRes {
        name: name?,
        state,
        gid,
        system,
    }))
}

fn command(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    r.expect_args(cx, 1, 1, "command \"SHELL COMMAND\" [creates=PATH] [removes=PATH] [unless=CMD] [onlyif=CMD] [user=..] [cwd=..] [undo=CMD] { env NAME=\"value\" }");
    let cmd = r.arg_str(cx, 0);
    let creates = {
        let v = r.str(cx, "creates");
        remote_path(cx, v)
    };
    let removes = {
        let v = r.str(cx, "removes");
        remote_path(cx, v)
    };
    let unless = r.str(cx, "unless").map(|s| s.value);
    let onlyif = r.str(cx, "onlyif").map(|s| s.value);
    let undo = r.str(cx, "undo").map(|s| s.value);
    let user = r.str(cx, "user").and_then(|s| account_name(cx, s, "user"));
    let cwd = {
        let v = r.str(cx, "cwd");
        remote_path(cx, v)
    };
    let env = r.map(cx, "env");
    let env_span = r.option_span("env").unwrap_or(r.name_span());
    for k in env.keys() {
        let ok = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
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
    Some(ResourceKind::Command(Command {
        command: cmd.value,
        creates,
        removes,
        unless,
        onlyif,
        user,
        cwd,
        env,
        undo,
    }))
}

fn upload(cx: &mut Cx, fc: &FileCtx<'_>, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    r.expect_args(
        cx,
        2,
        2,
        "upload LOCAL_PATH REMOTE_PATH [owner=..] [group=..] [mode=\"0644\"]",
    );
    let source = r.arg_str(cx, 0);
    let dest = {
        let v = r.arg_str(cx, 1);
        remote_path(cx, v)
    };
    let (owner, group, mode) = ownership(cx, r);
    let source = source?;
    // Directories would need a recursive copy with its own semantics; uploads are single files.
    let path = local_file(cx, fc, &source, "upload source");
    Some(ResourceKind::Upload(Upload {
        source: path,
        dest: dest?,
        owner,
        group,
        mode,
    }))
}

fn download(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    r.expect_args(
        cx,
        2,
        2,
        "download REMOTE_PATH LOCAL_PATH (\"{host}\" in LOCAL_PATH is the host name)",
    );
    let source = {
        let v = r.arg_str(cx, 0);
        remote_path(cx, v)
    };
    let dest = r.arg_str(cx, 1);
    Some(ResourceKind::Download(Download {
        source: source?,
        dest: dest?.value,
    }))
}

fn wait_for(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<ResourceKind> {
    r.expect_args(cx, 0, 0, "wait-for (tcp=\"host:port\" | http=\"http://...\" | command=\"...\") [timeout=\"60s\"] [interval=\"2s\"]");
    let tcp = r.str(cx, "tcp");
    let http = r.str(cx, "http");
    let command = r.str(cx, "command");
    let status = r.int(cx, "status", 100, 599).map(|v| v as u16);
    let interval = r.duration(cx, "interval").unwrap_or(Duration::from_secs(2));
    // `timeout` is a common option read earlier; wait-for reuses it as its deadline.
    let given: Vec<Span> = [&tcp, &http, &command]
        .iter()
        .filter_map(|o| o.as_ref().map(|s| s.span))
        .collect();
    if given.is_empty()
        && ["tcp", "http", "command"]
            .iter()
            .any(|k| r.option_span(k).is_some())
    {
        // The check was written but its value is invalid, which is already reported.
        return None;
    }
    if given.len() != 1 {
        let d = Diag::new(
            "config::wait-for-check",
            "wait-for needs exactly one of tcp, http and command",
        );
        cx.push(match given.get(1) {
            Some(s) => d.at(*s, "second check").help("use one wait-for node per check"),
            None => d.at(r.name_span(), "no check").help("add tcp=\"127.0.0.1:5432\", http=\"http://localhost:4000/health\" or command=\"...\""),
        });
        return None;
    }
    if status.is_some() && http.is_none() {
        cx.push(
            Diag::new(
                "config::conflicting-options",
                "`status` only applies to http checks",
            )
            .at(r.name_span(), "status without http"),
        );
    }
    let check = if let Some(t) = tcp {
        match values::parse_address(&t) {
            Ok(Address {
                user: None,
                host,
                port: Some(port),
            }) => WaitCheck::Tcp {
                address: host,
                port,
            },
            _ => {
                cx.push(
                    Diag::new(
                        "config::invalid-address",
                        format!("invalid tcp check {:?}", t.value),
                    )
                    .at(t.span, "expected HOST:PORT")
                    .help("write tcp=\"127.0.0.1:5432\""),
                );
                return None;
            }
        }
    } else if let Some(h) = http {
        if !(h.starts_with("http://") || h.starts_with("https://")) {
            cx.push(
                Diag::new(
                    "config::invalid-url",
                    format!("invalid http check {:?}", h.value),
                )
                .at(h.span, "expected an http(s) URL"),
            );
            return None;
        }
        WaitCheck::Http {
            url: h.value,
            status: status.unwrap_or(200),
        }
    } else {
        WaitCheck::Command {
            command: command?.value,
        }
    };
    Some(ResourceKind::WaitFor(WaitFor {
        check,
        timeout: Duration::from_secs(60),
        interval,
    }))
}
