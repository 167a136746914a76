//! `nexus lock`: re-run Tailscale discovery and re-fetch every `source-url`, and pin the results
//! in nexus.lock next to the configuration (written only when it changes).

use clap::Args;

use super::connect::runtime;
use super::{CmdResult, Ctx, Format, emit, emit_exact};
use crate::exit::Exit;
use crate::pins::{self, Mode};

#[derive(Debug, Args)]
pub struct LockArgs {}

pub fn run(ctx: &Ctx, _args: LockArgs) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let loaded = ctx.load()?;
    let cfg = &loaded.config;
    let path = pins::path_for(&ctx.global.config);
    let rt = runtime()?;
    let resolved = rt
        .block_on(pins::resolve(cfg, &path, Mode::Update))
        .map_err(crate::app::Error::from)?;
    if format == Format::Json {
        emit_exact(&pins::to_text(&resolved.pins));
        return Ok(Exit::Ok);
    }
    if ctx.global.quiet {
        return Ok(Exit::Ok);
    }
    let p = &resolved.pins;
    let mut out = String::new();
    if p.discovery.is_empty() && p.urls.is_empty() && !resolved.written {
        out.push_str("Nothing to pin: no task uses a tailscale group or a source-url.\n");
        emit(&out);
        return Ok(Exit::Ok);
    }
    for (g, hosts) in &p.discovery {
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        out.push_str(&format!(
            "tailscale {g}: {} host(s){}\n",
            hosts.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            }
        ));
    }
    for (u, h) in &p.urls {
        out.push_str(&format!("{u}: blake3 {h}\n"));
    }
    out.push_str(&if resolved.written {
        format!("Wrote {}\n", path.display())
    } else {
        format!("{} is up to date\n", path.display())
    });
    emit(&out);
    Ok(Exit::Ok)
}
