//! Where a command keeps its state, decided once: `--state` (a file path or a `postgresql://`
//! URL), else the configuration's `state` setting (which a plan carries to apply), else the
//! SQLite file `.nexus/state.db` beside the configuration. Values from `(env)` and `(secret)` are
//! read here, when the store is opened.

use std::path::Path;

use super::Error;
use super::secrets::{self, Source};
use crate::config::Value;
use crate::plan::StateRef;
use crate::state::{Location, PgSettings};

/// Why the state's location could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum StateSettingError {
    #[error("the state URL comes from the environment variable {0}, which is not set")]
    UnsetEnv(String),
    #[error("`state migrate` copies a SQLite file; --state names a server ({0})")]
    NotAFile(String),
    #[error("there is no state to migrate: {} does not exist", .0.display())]
    NoSource(std::path::PathBuf),
    #[error("`state migrate --to` takes a postgresql:// URL, not {0:?}")]
    NotAUrl(String),
    #[error("the state setting reads secret {name:?}: {source}")]
    Secret {
        name: String,
        source: secrets::SecretsError,
    },
}

/// The location for a command over `config` (plan, run, history, state): `--state`, the
/// configuration's `state` setting, or the default file.
pub fn location(
    flag: Option<&str>,
    setting: Option<&StateRef>,
    config: &Path,
    secrets: Option<&Source<'_>>,
) -> Result<Location, Error> {
    let env = |k: &str| std::env::var(k).ok();
    let project = || {
        setting.map_or_else(
            || crate::plan::default_project(config.parent().unwrap_or(Path::new("."))),
            |s| s.project.clone(),
        )
    };
    match (flag, setting) {
        (Some(f), _) if crate::state::is_postgres_url(f) => Ok(Location::Postgres(PgSettings {
            url: f.to_string(),
            password: match setting.and_then(|s| s.password.as_ref()) {
                Some(v) => Some(value(v, secrets, &env)?),
                None => env("PGPASSWORD"),
            },
            project: project(),
        })),
        (Some(f), _) => Ok(Location::Sqlite(f.into())),
        (None, Some(s)) => Ok(Location::Postgres(PgSettings {
            url: value(&s.url, secrets, &env)?,
            password: match &s.password {
                Some(v) => Some(value(v, secrets, &env)?),
                None => env("PGPASSWORD"),
            },
            project: s.project.clone(),
        })),
        (None, None) => Ok(Location::Sqlite(crate::state::default_path(config))),
    }
}

fn value(
    v: &Value,
    source: Option<&Source<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    match v {
        Value::Literal(s) => Ok(s.clone()),
        Value::Env(name) => {
            env(name).ok_or_else(|| StateSettingError::UnsetEnv(name.clone()).into())
        }
        Value::Secret(name) => {
            let source = source.ok_or_else(|| StateSettingError::Secret {
                name: name.clone(),
                source: secrets::SecretsError::NoVault,
            })?;
            let vault = secrets::open(source, env).map_err(|source| StateSettingError::Secret {
                name: name.clone(),
                source,
            })?;
            vault.get(name).map(str::to_string).ok_or_else(|| {
                StateSettingError::Secret {
                    name: name.clone(),
                    source: secrets::SecretsError::Missing(name.clone()),
                }
                .into()
            })
        }
    }
}

/// The location named by the configuration file at `config`, for commands that do not load it
/// otherwise (`history`, `state`): a configuration that does not load leaves the default.
pub fn of_config_file(flag: Option<&str>, config: &Path) -> Result<Location, Error> {
    if let Ok(loaded) = crate::config::load(config)
        && let Some(setting) = loaded.config.state_ref()
    {
        let source = Source::Config(&loaded.config);
        return location(flag, Some(&setting), config, Some(&source));
    }
    location(flag, None, config, None)
}

/// `nexus state migrate --to URL`: copies the SQLite state of the configuration at `config`
/// (or `--state FILE`) into the PostgreSQL database at `to`, under both apply locks. Idempotent:
/// runs copied before are skipped, so it can be repeated until the team switches over.
pub fn migrate(
    flag: Option<&str>,
    config: &Path,
    to: &str,
) -> Result<crate::state::Imported, Error> {
    let from = match flag {
        Some(f) if crate::state::is_postgres_url(f) => {
            return Err(StateSettingError::NotAFile(f.to_string()).into());
        }
        Some(f) => Location::Sqlite(f.into()),
        None => Location::Sqlite(crate::state::default_path(config)),
    };
    let Location::Sqlite(path) = &from else {
        unreachable!("a file location")
    };
    if !path.exists() {
        return Err(StateSettingError::NoSource(path.clone()).into());
    }
    if !crate::state::is_postgres_url(to) {
        return Err(StateSettingError::NotAUrl(to.to_string()).into());
    }
    let to = match of_config_file(Some(to), config)? {
        Location::Postgres(settings) => settings,
        Location::Sqlite(_) => unreachable!("a URL gives a server"),
    };
    let source = from.open()?;
    let _from_lock = source.lock(&crate::state::LockHolder::current("nexus state migrate"))?;
    let dest = crate::state::PostgresStore::open(to)?;
    let _to_lock = crate::state::StateStore::lock(
        &dest,
        &crate::state::LockHolder::current("nexus state migrate"),
    )?;
    let origin = format!(
        "sqlite:{}",
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.clone())
            .display()
    );
    Ok(dest.import(&*source, &origin)?)
}
