//! `nexus secret init|set|get|list|rm`: the encrypted vault of secrets. The vault itself is
//! src/secrets; docs/secrets.md documents the commands, key sources and threat model.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

use super::{CmdResult, Ctx, Failure, Format, emit, emit_exact, emit_json, emitln};
use crate::app::Error;
use crate::exit::Exit;
use crate::secrets::{
    self, KeySource, NewKey, PASSPHRASE_ENV, Prompt, SecretError, Settings, Unlock, Vault,
};

/// The largest value `set` accepts: secrets are tokens, passwords and keys, and a limit keeps
/// `set NAME < /dev/urandom` from eating all memory.
const MAX_VALUE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create the vault (never replaces an existing one)
    Init(InitArgs),
    /// Store a secret; its value is read from stdin, or from a no-echo prompt on a terminal
    Set(SetArgs),
    /// Print a secret's value
    Get(NameArg),
    /// List secret names (never values); --format json
    List,
    /// Remove a secret
    Rm(NameArg),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Protect the vault with a passphrase (from NEXUS_VAULT_PASSPHRASE, or asked twice)
    #[arg(long, conflicts_with = "key_file")]
    pub passphrase: bool,
    /// Use the key in FILE; if FILE does not exist, write a new random key to it (mode 0600)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Secret name: letters, digits, `_`, `-` and `.`
    pub name: String,
    /// Keep the trailing newline of a value read from stdin (by default one is removed)
    #[arg(long)]
    pub keep_newline: bool,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// Secret name
    pub name: String,
}

pub fn run(ctx: &Ctx, args: SecretArgs) -> CmdResult {
    let formats: &[Format] = match args.command {
        SecretCommand::List => &[Format::Text, Format::Json],
        _ => &[Format::Text],
    };
    let format = ctx.format(Format::Text, formats)?;
    let loaded = ctx.load()?;
    let settings = Settings::from_config(loaded.config.vault.as_ref(), &loaded.config.base_dir);
    let env = |name: &str| std::env::var(name).ok();
    let unlock = Unlock {
        env: &env,
        prompt: passphrase_prompt(),
    };
    match args.command {
        SecretCommand::Init(a) => init(ctx, &settings, &unlock, a),
        SecretCommand::Set(a) => set(ctx, &settings, &unlock, a),
        SecretCommand::Get(a) => get(&settings, &unlock, &a.name),
        SecretCommand::List => list(&settings, &unlock, format),
        SecretCommand::Rm(a) => rm(ctx, &settings, &unlock, &a.name),
    }
}

fn init(ctx: &Ctx, settings: &Settings, unlock: &Unlock<'_>, args: InitArgs) -> CmdResult {
    // Checked before asking for a passphrase, so nobody types one twice for nothing.
    if settings.path.exists() {
        return Err(fail(SecretError::Exists {
            path: settings.path.clone(),
        }));
    }
    let key_env = settings.key_env();
    let env_has_key = (unlock.env)(key_env).is_some_and(|v| !v.is_empty());
    let new_key = if args.passphrase {
        new_passphrase(settings, unlock)?
    } else if let Some(file) = args.key_file.clone() {
        NewKey::KeyFile(file)
    } else if let Some(file) = settings.key_file.clone() {
        // Opening prefers an existing key file and otherwise uses the variable; generating a new
        // key file while the variable holds another key would leave the two disagreeing.
        if !file.exists() && env_has_key {
            return Err(Error::VaultKeyAmbiguous {
                file,
                env: key_env.to_string(),
            });
        }
        NewKey::KeyFile(file)
    } else if env_has_key {
        NewKey::Env
    } else {
        return Err(Error::VaultKeyUnspecified {
            env: key_env.to_string(),
        });
    };
    let generated = match &new_key {
        NewKey::KeyFile(f) => !f.exists(),
        _ => false,
    };
    let vault = Vault::create(settings, new_key, unlock).map_err(fail)?;
    if ctx.global.quiet {
        return Ok(Exit::Ok);
    }
    let mut out = format!(
        "Created the vault {} (AES-256-GCM; {})\n",
        vault.path().display(),
        vault.key_source()
    );
    match vault.key_source() {
        KeySource::KeyFile(f) => {
            if generated {
                out.push_str(&format!(
                    "Wrote a new random key to {} (mode 0600). Keep a copy somewhere safe: \
                     without it the secrets cannot be decrypted.\n",
                    f.display()
                ));
            }
            if !same_file(Some(f), settings.key_file.as_deref()) {
                out.push_str(&format!(
                    "Add key-file=\"{}\" to the `vault` node of {} so that nexus finds the key \
                     (or put the key in {key_env}).\n",
                    f.display(),
                    ctx.global.config.display()
                ));
            }
        }
        KeySource::Passphrase { .. } => out.push_str(&format!(
            "Where nobody can type it (CI, scheduled plans), set {PASSPHRASE_ENV}.\n"
        )),
        KeySource::Env(_) => {}
    }
    out.push_str("Next: nexus secret set NAME\n");
    emit(&out);
    Ok(Exit::Ok)
}

/// The passphrase for a new vault: from the environment, or typed twice at the terminal.
fn new_passphrase(settings: &Settings, unlock: &Unlock<'_>) -> Result<NewKey, Failure> {
    if let Some(p) = (unlock.env)(PASSPHRASE_ENV).filter(|p| !p.is_empty()) {
        return Ok(NewKey::Passphrase {
            passphrase: Zeroizing::new(p),
            env: Some(PASSPHRASE_ENV.to_string()),
        });
    }
    let Some(prompt) = unlock.prompt else {
        return Err(fail(SecretError::NeedPassphrase {
            path: settings.path.clone(),
        }));
    };
    let read = |text: &str| {
        prompt(text).map_err(|source| {
            fail(SecretError::Prompt {
                what: "passphrase",
                source,
            })
        })
    };
    let first = read(&format!(
        "New passphrase for the vault {}: ",
        settings.path.display()
    ))?;
    let second = read("Repeat the passphrase: ")?;
    if first != second {
        return Err(fail(SecretError::PassphraseMismatch));
    }
    Ok(NewKey::Passphrase {
        passphrase: first,
        env: None,
    })
}

fn set(ctx: &Ctx, settings: &Settings, unlock: &Unlock<'_>, args: SetArgs) -> CmdResult {
    secrets::check_name(&args.name).map_err(fail)?;
    // Open (and so check the key or passphrase) before asking for the value, so a wrong
    // passphrase is reported before anybody types a secret.
    let mut vault = Vault::open_for_update(settings, unlock).map_err(fail)?;
    let value = read_value(&args.name, args.keep_newline)?;
    let replaced = vault.set(&args.name, value).map_err(fail)?;
    vault.save().map_err(fail)?;
    if !ctx.global.quiet {
        emitln(&format!(
            "{} the secret {} in {}",
            if replaced { "Updated" } else { "Stored" },
            args.name,
            vault.path().display()
        ));
    }
    Ok(Exit::Ok)
}

fn get(settings: &Settings, unlock: &Unlock<'_>, name: &str) -> CmdResult {
    secrets::check_name(name).map_err(fail)?;
    let vault = Vault::open_at(settings, unlock).map_err(fail)?;
    let value = vault.get(name).ok_or_else(|| missing(&vault, name))?;
    // The value exactly as stored, so `get NAME > file` and `set --keep-newline NAME < file`
    // round-trip; a newline is added only for a person reading it on a terminal.
    emit_exact(value);
    if std::io::stdout().is_terminal() && !value.ends_with('\n') {
        emit("\n");
    }
    Ok(Exit::Ok)
}

fn list(settings: &Settings, unlock: &Unlock<'_>, format: Format) -> CmdResult {
    let vault = Vault::open_at(settings, unlock).map_err(fail)?;
    let names = vault.names();
    if format == Format::Json {
        let v = json!({ "vault": vault.path(), "secrets": names });
        emit_json(&v);
    } else {
        let mut out = String::new();
        for n in names {
            out.push_str(n);
            out.push('\n');
        }
        emit(&out);
    }
    Ok(Exit::Ok)
}

fn rm(ctx: &Ctx, settings: &Settings, unlock: &Unlock<'_>, name: &str) -> CmdResult {
    secrets::check_name(name).map_err(fail)?;
    let mut vault = Vault::open_for_update(settings, unlock).map_err(fail)?;
    if !vault.remove(name) {
        return Err(missing(&vault, name));
    }
    vault.save().map_err(fail)?;
    if !ctx.global.quiet {
        emitln(&format!(
            "Removed the secret {name} from {}",
            vault.path().display()
        ));
    }
    Ok(Exit::Ok)
}

/// The value for `set`: a no-echo prompt when stdin is a terminal, otherwise all of stdin.
fn read_value(name: &str, keep_newline: bool) -> Result<Zeroizing<String>, Failure> {
    if std::io::stdin().is_terminal() {
        return prompt_hidden(&format!("Value for {name}: ")).map_err(|source| {
            fail(SecretError::Prompt {
                what: "value",
                source,
            })
        });
    }
    // Room for any ordinary secret up front: growing the buffer would leave unwiped copies.
    let mut buf = Zeroizing::new(Vec::with_capacity(16 * 1024));
    std::io::stdin()
        .lock()
        .take(MAX_VALUE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(Error::Stdin)?;
    if buf.len() > MAX_VALUE_BYTES {
        return Err(Error::SecretTooLarge {
            name: name.to_string(),
            max: MAX_VALUE_BYTES,
        });
    }
    // `echo TOKEN | nexus secret set NAME` means TOKEN, not TOKEN and a newline.
    if !keep_newline && buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    // Move the bytes into the String without a copy, so the only copy is the one wiped on drop.
    match String::from_utf8(std::mem::take(&mut *buf)) {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            Err(fail(SecretError::NotUtf8 {
                name: name.to_string(),
            }))
        }
    }
}

/// Prompts on the terminal without echo (rpassword reads /dev/tty, so this works with piped stdin).
fn prompt_hidden(text: &str) -> std::io::Result<Zeroizing<String>> {
    rpassword::prompt_password(text).map(Zeroizing::new)
}

/// The passphrase prompt for [`Unlock::prompt`], when a person can answer it: prompts go to the
/// terminal, which stderr being one shows. Tests and CI capture stderr, so they never wait on a
/// prompt. Other commands that open the vault (plan, apply) can use this too.
pub(crate) fn passphrase_prompt() -> Option<Prompt<'static>> {
    std::io::stderr()
        .is_terminal()
        .then_some(&prompt_hidden as Prompt<'static>)
}

fn same_file(a: Option<&Path>, b: Option<&Path>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        }
        _ => false,
    }
}

fn missing(vault: &Vault, name: &str) -> Failure {
    let hint = match crate::config::suggest_name(name, vault.names()) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    };
    Error::NoSuchSecret {
        name: name.to_string(),
        vault: vault.path().to_path_buf(),
        hint,
    }
}

fn fail(e: SecretError) -> Failure {
    Error::Vault(e)
}
