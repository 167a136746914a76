//! Command-line interface: clap definitions and one module per command. No business logic here:
//! commands call the library and render what it returns.

pub(crate) mod apply;
mod completions;
mod connect;
mod facts;
mod graph;
mod history;
mod init;
mod list;
mod lock;
mod plan;
mod preflight;
mod progress;
mod report;
mod rollback;
mod run;
mod secret;
mod show;
mod state;
mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigErrors, Loaded, RenderOptions};
use crate::exit::Exit;

#[derive(Debug, Parser)]
#[command(
    name = "nexus",
    version,
    about = "Deploy applications and converge hosts over SSH with a reviewable plan/apply workflow",
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file
    #[arg(
        short = 'c',
        long,
        global = true,
        value_name = "FILE",
        default_value = "nexus.kdl",
        env = "NEXUS_CONFIG"
    )]
    pub config: PathBuf,
    /// More detail (repeat for more)
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Output format (each command documents the formats it supports)
    #[arg(long, global = true, value_enum)]
    pub format: Option<Format>,
    /// Never use colors (also: the NO_COLOR environment variable)
    #[arg(long, global = true)]
    pub no_color: bool,
    /// State: a SQLite file, or a postgresql:// URL shared by a team (default: the config's
    /// `state` setting, else .nexus/state.db next to the config file)
    #[arg(long, global = true, value_name = "FILE|URL", env = "NEXUS_STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
    Dot,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter nexus.kdl
    Init(init::InitArgs),
    /// Check the configuration and report every error
    Validate,
    /// List tasks, hosts and groups
    List,
    /// Show the task dependency graph (DOT) or its execution phases (--format text)
    Graph(graph::GraphArgs),
    /// Gather and show host facts (one round trip per host)
    Facts(facts::FactsArgs),
    /// Check config, reachability, host keys, authentication, facts and sudo for a run
    Preflight(preflight::PreflightArgs),
    /// Gather facts, probe every resource, and show (or save with -o) what apply would do
    Plan(plan::PlanArgs),
    /// Render a saved plan file in any format, without contacting hosts
    Show(show::ShowArgs),
    /// Apply a saved plan file exactly, refusing it if the hosts changed since planning
    Apply(apply::ApplyArgs),
    /// Plan and apply in one step (--dry-run: only plan)
    Run(run::RunArgs),
    /// Past runs, or one run's actions; --host H lists a host's generations
    History(history::HistoryArgs),
    /// A plan restoring the hosts as they were before the last run (or after --to RUN)
    Rollback(rollback::RollbackArgs),
    /// The last applied state per host and resource
    State(state::StateArgs),
    /// Manage the encrypted secrets vault (init, set, get, list, rm)
    Secret(secret::SecretArgs),
    /// Re-run discovery and fetch source-urls, pinning the results in nexus.lock
    Lock(lock::LockArgs),
    /// Print a shell completion script
    Completions(completions::CompletionArgs),
}

/// A command's failure: a typed error of the application layer, which decides its exit code.
pub type Failure = crate::app::Error;

pub type CmdResult = Result<Exit, Failure>;

/// Shared context for commands.
pub struct Ctx {
    pub global: Global,
}

impl Ctx {
    pub fn color(&self) -> bool {
        !self.global.no_color
            && std::env::var_os("NO_COLOR").is_none()
            && std::io::stderr().is_terminal()
    }

    /// Colors on stdout: a terminal, and neither --no-color nor NO_COLOR.
    pub fn color_stdout(&self) -> bool {
        !self.global.no_color
            && std::env::var_os("NO_COLOR").is_none()
            && std::io::stdout().is_terminal()
    }

    /// The format the user asked for, or `default`; refuses formats this command cannot produce.
    pub fn format(&self, default: Format, supported: &[Format]) -> Result<Format, Failure> {
        let f = self.global.format.unwrap_or(default);
        if supported.contains(&f) {
            Ok(f)
        } else {
            let names: Vec<_> = supported
                .iter()
                .map(|f| {
                    f.to_possible_value()
                        .expect("no skipped variants")
                        .get_name()
                        .to_string()
                })
                .collect();
            Err(crate::app::Error::UnsupportedFormat {
                format: f
                    .to_possible_value()
                    .expect("no skipped variants")
                    .get_name()
                    .to_string(),
                supported: names,
            })
        }
    }

    /// Loads the configuration; on errors fails with every diagnostic.
    pub fn load(&self) -> Result<Loaded, Failure> {
        config::load(&self.global.config).map_err(crate::app::Error::Config)
    }

    /// Prints a failure (diagnostics as text or JSON, other errors after `error: `) and returns
    /// its exit code.
    fn report(&self, f: Failure) -> i32 {
        match &f {
            crate::app::Error::Config(c) => self.config_errors(c),
            e => note(&format!("error: {e}")),
        }
        f.exit_code()
    }

    fn config_errors(&self, e: &ConfigErrors) {
        if self.global.format == Some(Format::Json) {
            emit_json(&e.to_json());
        } else {
            let rendered = e.render(RenderOptions {
                color: self.color(),
                width: 100,
            });
            eprintln!("{}", rendered.trim_end());
        }
    }
}

/// Writes text for people to stdout, with the control characters of what came from hosts or the
/// configuration shown rather than sent ([`crate::render::terminal::escape`]).
pub fn emit(text: &str) {
    emit_exact(&crate::render::terminal::escape(text));
}

/// [`emit`] with a trailing newline.
pub fn emitln(text: &str) {
    emit(&format!("{text}\n"));
}

/// Writes `text` to stdout unchanged: a secret's value, a machine format, or a rendering that
/// escaped outside text itself because it adds colours of its own. A closed pipe
/// (`nexus list | head`) is not an error worth a panic: the reader has what it wanted.
pub fn emit_exact(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes `value` as pretty JSON to stdout, exactly: serde escapes control characters itself, and
/// consumers need the strings as they are.
pub fn emit_json(value: &impl serde::Serialize) {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    emit_exact(&text);
}

/// Writes a line for people to stderr (notes, progress of planning, errors), escaped as [`emit`].
pub fn note(text: &str) {
    eprintln!("{}", crate::render::terminal::escape(text));
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => Exit::Usage.code(),
            };
        }
    };
    let ctx = Ctx { global: cli.global };
    let result = match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Validate => validate::run(&ctx),
        Command::List => list::run(&ctx),
        Command::Graph(args) => graph::run(&ctx, args),
        Command::Facts(args) => facts::run(&ctx, args),
        Command::Preflight(args) => preflight::run(&ctx, args),
        Command::Plan(args) => plan::run(&ctx, args),
        Command::Show(args) => show::run(&ctx, args),
        Command::Apply(args) => apply::run(&ctx, args),
        Command::Run(args) => run::run(&ctx, args),
        Command::History(args) => history::run(&ctx, args),
        Command::Rollback(args) => rollback::run(&ctx, args),
        Command::State(args) => state::run(&ctx, args),
        Command::Secret(args) => secret::run(&ctx, args),
        Command::Lock(args) => lock::run(&ctx, args),
        Command::Completions(args) => completions::run(args),
    };
    match result {
        Ok(exit) => exit.code(),
        Err(f) => ctx.report(f),
    }
}

/// Resolves task names given on the command line, with a suggestion for typos.
pub fn resolve_tasks(cfg: &config::Config, names: &[String]) -> Result<Vec<usize>, Failure> {
    crate::app::plan::check_tasks(cfg, names)
}
