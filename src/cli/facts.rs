//! `nexus facts [HOST|GROUP...]`: gather and show host facts (one round trip per host).

use clap::Args;
use serde_json::json;

use super::connect::{ConnectArgs, runtime};
use super::{CmdResult, Ctx, Failure, Format, emit, emit_json, note};
use crate::app::Error;
use crate::app::facts::gather_many;
use crate::config::{Config, LOCAL_HOST};
use crate::exit::Exit;
use crate::facts::Facts;
use crate::inventory::Inventory;

#[derive(Debug, Args)]
pub struct FactsArgs {
    /// Hosts or groups (default: every configured host, or `local` when there is none)
    pub targets: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Expands host and group names given on the command line; unknown names are a usage error.
/// Tailscale groups expand to the hosts pinned in nexus.lock (`pinned`), which the caller adds to
/// its inventory.
pub fn expand_cli_targets(
    cfg: &Config,
    names: &[String],
    pinned: &crate::discovery::Discovered,
) -> Result<Vec<String>, Failure> {
    if names.is_empty() {
        let all: Vec<String> = cfg.hosts.iter().map(|h| h.name.value.clone()).collect();
        return Ok(if all.is_empty() {
            vec![LOCAL_HOST.to_string()]
        } else {
            all
        });
    }
    let known: Vec<&str> = std::iter::once(LOCAL_HOST)
        .chain(cfg.hosts.iter().map(|h| h.name.value.as_str()))
        .chain(cfg.groups.iter().map(|g| g.name.value.as_str()))
        .chain(cfg.tailscale.iter().map(|t| t.name.value.as_str()))
        .collect();
    for n in names {
        if !known.contains(&n.as_str()) {
            let hint = match crate::config::suggest_name(n, known.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => format!("; hosts and groups: {}", known.join(", ")),
            };
            return Err(Error::UnknownHostOrGroup {
                name: n.clone(),
                hint,
            });
        }
    }
    let t = cfg.expand_targets(names.iter().map(|s| s.as_str()));
    let found = crate::pins::expand_pinned(&t.discovered, pinned).map_err(Error::from)?;
    let mut hosts = t.hosts;
    for h in found {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    Ok(hosts)
}

/// nexus.lock's discovery pins, as an error the commands report.
pub fn pinned(ctx: &Ctx) -> Result<crate::discovery::Discovered, Failure> {
    crate::pins::pinned_discovery(&ctx.global.config).map_err(Error::from)
}

fn describe(f: &Facts) -> String {
    let name = |v: serde_json::Value| v.as_str().unwrap_or("unknown").to_string();
    let gib = f.memory_total_bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("  {k:<14}{v}\n"));
    row(
        "os",
        format!(
            "{} {}{} (family {})",
            f.distribution.id,
            f.distribution.version,
            f.distribution
                .codename
                .as_ref()
                .map(|c| format!(" {c}"))
                .unwrap_or_default(),
            f.os_family
        ),
    );
    row(
        "kernel",
        format!("{} {} {}", f.os, f.kernel, f.architecture),
    );
    row("hostname", format!("{} (fqdn {})", f.hostname, f.fqdn));
    row("cpu / memory", format!("{} / {gib:.1} GiB", f.cpu_count));
    row(
        "packages",
        f.package_manager.map_or("none detected".into(), |p| {
            name(serde_json::to_value(p).unwrap_or_default())
        }),
    );
    row(
        "init",
        name(serde_json::to_value(f.init_system).unwrap_or_default()),
    );
    row(
        "user",
        format!(
            "{} (uid {}, gid {}), home {}, shell {}",
            f.user, f.uid, f.gid, f.home, f.shell
        ),
    );
    row(
        "ipv4",
        f.default_ipv4.map_or("none".into(), |a| a.to_string()),
    );
    row(
        "machine-id",
        f.machine_id.clone().unwrap_or_else(|| "none".into()),
    );
    s
}

pub fn run(ctx: &Ctx, args: FactsArgs) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let loaded = ctx.load()?;
    let cfg = &loaded.config;
    let pinned = pinned(ctx)?;
    let hosts = expand_cli_targets(cfg, &args.targets, &pinned)?;
    let rt = runtime()?;
    let results = rt.block_on(async {
        let inv =
            Inventory::for_config(cfg, &pinned, &args.connect.overrides()).map_err(Error::from)?;
        let r = gather_many(&inv, &hosts, args.connect.parallel).await;
        inv.close().await;
        Ok::<_, Failure>(r)
    })?;
    let failed = results.iter().filter(|r| r.result.is_err()).count();
    if format == Format::Json {
        let items: Vec<_> = results
            .iter()
            .map(|r| match &r.result {
                Ok(f) => {
                    json!({ "host": r.host, "ok": true, "round_trips": r.round_trips, "facts": f })
                }
                Err(e) => {
                    json!({ "host": r.host, "ok": false, "round_trips": r.round_trips, "error": e.to_string() })
                }
            })
            .collect();
        emit_json(&json!({ "hosts": items }));
    } else {
        let mut out = String::new();
        for r in &results {
            match &r.result {
                Ok(f) => out.push_str(&format!("{}\n{}", r.host, describe(f))),
                Err(e) => note(&format!("error: {e}")),
            }
        }
        emit(&out);
    }
    if failed > 0 {
        if format != Format::Json {
            note(&format!(
                "facts: {failed} of {} host(s) failed",
                results.len()
            ));
        }
        return Ok(Exit::Unreachable);
    }
    Ok(Exit::Ok)
}
