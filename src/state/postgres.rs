//! The PostgreSQL [`StateStore`]: the same records and semantics as the SQLite store, shared by
//! every machine that applies a project (CI runners, laptops).
//!
//! - Several projects share one database: every row carries its project, and each project sees
//!   only its own runs, last applied state, pending handlers and lock.
//! - The apply lock is a **session-level advisory lock** on a connection of its own, held for as
//!   long as the guard lives. The server releases it the moment the holder's connection ends
//!   (the process exited, was killed, or lost the network), so a dead holder never blocks the next
//!   apply. A row in `nexus.apply_lock` names the holder for the "locked by …" message.
//! - Every write is one transaction, as in SQLite.
//!
//! The `postgres` client blocks on a runtime of its own, which must not run inside nexus's tokio
//! runtime: each connection lives on a thread of its own and the store sends it jobs.

use std::sync::{Mutex, mpsc};
use std::time::Duration;

use postgres::{Client, Row};

use super::lock::{Identity, Liveness, liveness, new_token};
use super::{
    ActionCounts, ActionRecord, Blob, DriftCheck, LastApplied, LockGuard, LockHolder,
    NewDriftCheck, NewGeneration, NewRun, PendingHandler, Preimage, Recovered, RunId, RunPlan,
    RunStatus, RunSummary, StateError, StateStore, now_ms, text_of,
};
use crate::plan::Action;

/// Migrations in order; migration N (1-based) brings the schema from version N-1 to N.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations_pg/0001_init.sql"),
    include_str!("migrations_pg/0002_signer_and_drift.sql"),
    include_str!("migrations_pg/0003_generations.sql"),
];

/// The schema version this nexus writes.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Advisory lock key that serialises migrations across processes ("nexus" in ASCII).
const MIGRATION_KEY: i64 = 0x006e_6578_7573;

/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the database is and which project's records to use.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgresql://USER@HOST:PORT/DB?sslmode=...`, libpq's URL form.
    pub url: String,
    /// Given separately (from the environment or the vault) rather than in the URL.
    pub password: Option<String>,
    /// The project key (docs/state.md).
    pub project: String,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

/// How the connection is encrypted and checked, with libpq's `sslmode` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    /// TLS when the server offers it; the certificate is not checked (libpq's default).
    Prefer,
    /// TLS always; the certificate is not checked.
    Require,
    /// TLS; the certificate chains to a trusted root, whatever name it is for.
    VerifyCa,
    /// TLS; the certificate chains to a trusted root and names the host.
    VerifyFull,
}

/// The URL without its password and query: safe for messages and the history.
pub fn redact_url(url: &str) -> String {
    let (rest, _) = url.split_once('?').unwrap_or((url, ""));
    let Some((scheme, rest)) = rest.split_once("://") else {
        return "invalid URL".into();
    };
    let rest = match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => rest.to_string(),
    };
    format!("{scheme}://{rest}")
}

/// Why a session could not be set up, before the server said anything.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("the state URL must start with postgresql:// (libpq's URL form)")]
    NotPostgres,
    #[error("unknown sslmode {0:?}")]
    SslMode(String),
    #[error("invalid state URL: {0}")]
    Url(#[source] postgres::Error),
    #[error("cannot read sslrootcert {path}: {source}")]
    RootCertFile {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("sslrootcert {path}: {source}")]
    RootCert { path: String, source: rustls::Error },
    #[error("no trusted roots for sslmode verify: {0}")]
    NoRoots(#[source] rustls::client::VerifierBuilderError),
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    #[error("cannot start the connection thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the connection thread ended")]
    ThreadEnded,
}

/// Parses the URL into a client configuration, taking `sslmode` and `sslrootcert` out of the
/// query (the client library knows neither verify mode nor root files).
fn parse(s: &PgSettings) -> Result<(postgres::Config, SslMode, Option<String>), SetupError> {
    if !super::is_postgres_url(&s.url) {
        return Err(SetupError::NotPostgres);
    }
    let (base, query) = s.url.split_once('?').unwrap_or((&s.url, ""));
    let mut mode = SslMode::Prefer;
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => {
                mode = match v {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(SetupError::SslMode(other.to_string())),
                }
            }
            "sslrootcert" => root = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: postgres::Config = url.parse().map_err(SetupError::Url)?;
    if let Some(pw) = &s.password {
        config.password(pw);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("nexus");
    config.ssl_mode(match mode {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    Ok((config, mode, root))
}

/// rustls for `mode`: the system's roots (or `root`'s certificates) for the verify modes.
fn tls(
    mode: SslMode,
    root: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, SetupError> {
    use rustls::client::danger::ServerCertVerifier;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            use rustls::pki_types::pem::PemObject as _;
            let unreadable = |source| SetupError::RootCertFile {
                path: path.to_string(),
                source,
            };
            for c in rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(unreadable)? {
                roots
                    .add(c.map_err(unreadable)?)
                    .map_err(|source| SetupError::RootCert {
                        path: path.to_string(),
                        source,
                    })?;
            }
        }
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
        None => {}
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build();
    let verifier: std::sync::Arc<dyn ServerCertVerifier> = match (mode, webpki) {
        (SslMode::VerifyFull, Ok(v)) => v,
        (SslMode::VerifyCa, Ok(v)) => std::sync::Arc::new(verify::ChainOnly(v)),
        (SslMode::VerifyFull | SslMode::VerifyCa, Err(e)) => {
            return Err(SetupError::NoRoots(e));
        }
        _ => std::sync::Arc::new(verify::Unchecked(provider)),
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Certificate checks for the modes rustls has no ready verifier for.
mod verify {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

    /// `require` and `prefer`: encrypted, but any certificate (libpq's semantics). The handshake
    /// signatures are still checked, so the peer holds the certificate's key.
    #[derive(Debug)]
    pub struct Unchecked(pub Arc<rustls::crypto::CryptoProvider>);

    /// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
    #[derive(Debug)]
    pub struct ChainOnly(pub Arc<rustls::client::WebPkiServerVerifier>);

    impl ServerCertVerifier for Unchecked {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end: &CertificateDer<'_>,
            inter: &[CertificateDer<'_>],
            name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.0.verify_server_cert(end, inter, name, ocsp, now) {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// The server's own message for a database error (the client's Display says only "db error"),
/// or the cause of a connection error.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// One connection, on a thread of its own.
struct Session {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    db: String,
    /// Set when a watched session finds its connection gone (see [`Session::watched`]).
    lost: std::sync::Arc<Mutex<Option<String>>>,
}

/// How often an idle watched session checks that its connection still works.
const WATCH_EVERY: Duration = Duration::from_millis(250);

impl Session {
    fn connect(settings: &PgSettings, db: &str) -> Result<Session, StateError> {
        Session::open(settings, db, false)
    }

    /// A session that, while idle, checks its connection every [`WATCH_EVERY`]: the one that
    /// holds the apply lock, whose loss means the lock is gone too.
    fn watched(settings: &PgSettings, db: &str) -> Result<Session, StateError> {
        Session::open(settings, db, true)
    }

    fn open(settings: &PgSettings, db: &str, watch: bool) -> Result<Session, StateError> {
        let open_err = |e: SetupError| StateError::Open {
            db: db.to_string(),
            source: e.into(),
        };
        let (config, mode, root) = parse(settings).map_err(open_err)?;
        let tls = tls(mode, root.as_deref()).map_err(open_err)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let lost = std::sync::Arc::new(Mutex::new(None));
        let seen = lost.clone();
        std::thread::Builder::new()
            .name("nexus-postgres".into())
            .spawn(move || match config.connect(tls) {
                Ok(mut client) => {
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        match rx.recv_timeout(WATCH_EVERY) {
                            Ok(job) => job(&mut client),
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            Err(mpsc::RecvTimeoutError::Timeout) if watch => {
                                if let Err(e) = client.is_valid(WATCH_EVERY * 4) {
                                    *seen.lock().unwrap_or_else(|e| e.into_inner()) =
                                        Some(describe(&e));
                                    // Stays lost: a new connection would not hold the lock.
                                    while let Ok(job) = rx.recv() {
                                        job(&mut client);
                                    }
                                    break;
                                }
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                        }
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| open_err(SetupError::Thread(e)))?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Session {
                jobs: Mutex::new(Some(jobs)),
                db: db.to_string(),
                lost,
            }),
            Ok(Err(e)) => Err(StateError::Open {
                db: db.to_string(),
                source: describe(&e).into(),
            }),
            Err(_) => Err(open_err(SetupError::ThreadEnded)),
        }
    }

    /// Runs `f` on the connection and waits for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StateError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|jobs| {
                jobs.send(Box::new(move |c: &mut Client| {
                    let _ = tx.send(f(c));
                }))
            });
        let closed = || StateError::Backend {
            db: self.db.clone(),
            source: "the connection to the database is closed".into(),
        };
        match sent {
            Some(Ok(())) => {}
            _ => return Err(closed()),
        }
        match rx.recv() {
            Ok(r) => r.map_err(|e| StateError::Backend {
                db: self.db.clone(),
                source: describe(&e).into(),
            }),
            Err(_) => Err(closed()),
        }
    }

    /// Ends the connection (the server then releases its session locks).
    fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The PostgreSQL store of one project.
pub struct PostgresStore {
    settings: PgSettings,
    db: String,
    session: Session,
}

impl PostgresStore {
    /// Connects, and creates or migrates the `nexus` schema. A schema written by a newer nexus
    /// is refused.
    pub fn open(settings: PgSettings) -> Result<PostgresStore, StateError> {
        if settings.project.is_empty() {
            return Err(StateError::Open {
                db: redact_url(&settings.url),
                source: "the project name is empty".into(),
            });
        }
        let db = format!(
            "{} (project {:?})",
            redact_url(&settings.url),
            settings.project
        );
        let session = Session::connect(&settings, &db)?;
        let store = PostgresStore {
            settings,
            db,
            session,
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn project(&self) -> &str {
        &self.settings.project
    }

    fn migrate(&self) -> Result<(), StateError> {
        let found = self.session.call(|c| {
            // The common case, an up-to-date schema, takes one read and no lock; anything else
            // (no schema yet) is met again under the lock below.
            if let Ok(row) = c.query_one("SELECT MAX(version) FROM nexus.schema_version", &[])
                && row.get::<_, Option<i64>>(0) == Some(PG_SCHEMA_VERSION)
            {
                return Ok(None);
            }
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_KEY])?;
            tx.batch_execute(
                "CREATE SCHEMA IF NOT EXISTS nexus;
                 CREATE TABLE IF NOT EXISTS nexus.schema_version (
                     version       BIGINT PRIMARY KEY,
                     applied_at    BIGINT NOT NULL,
                     nexus_version TEXT   NOT NULL
                 );",
            )?;
            let current: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM nexus.schema_version",
                    &[],
                )?
                .get(0);
            if current > PG_SCHEMA_VERSION {
                return Ok(Some(current));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO nexus.schema_version (version, applied_at, nexus_version) \
                     VALUES ($1, $2, $3)",
                    &[&(i as i64 + 1), &now_ms(), &env!("CARGO_PKG_VERSION")],
                )?;
            }
            tx.commit()?;
            Ok(None)
        })?;
        match found {
            Some(found) => Err(StateError::NewerSchema {
                db: self.db.clone(),
                found,
                known: PG_SCHEMA_VERSION,
            }),
            None => Ok(()),
        }
    }

    /// The advisory lock key of this project.
    fn lock_key(&self) -> i64 {
        lock_key(&self.settings.project)
    }

    fn summaries(
        &self,
        where_sql: &'static str,
        arg: Option<String>,
        limit: i64,
    ) -> Result<Vec<RunSummary>, StateError> {
        let project = self.settings.project.clone();
        let key = self.lock_key();
        self.session.call(move |c| {
            // Runs still marked running while nobody holds the lock were cut off.
            let held = lock_held(c, key)?;
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM nexus.runs WHERE project = $1 {where_sql} \
                 ORDER BY id DESC LIMIT $3"
            );
            let arg = arg.unwrap_or_default();
            let rows = c.query(&sql, &[&project, &arg, &limit])?;
            Ok(rows.iter().map(|r| run_from_row(r, held)).collect())
        })
    }
}

/// What [`PostgresStore::import`] copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    pub runs: usize,
    /// Runs found already copied by an earlier import.
    pub runs_skipped: usize,
    pub actions: usize,
    pub last_applied: usize,
    pub pending_handlers: usize,
    pub drift_checks: usize,
}

impl PostgresStore {
    /// Copies another store's records into this project, in one transaction: runs with their
    /// actions (skipping runs an earlier import copied, by `origin_prefix` + run id), the last
    /// applied state (a newer row here wins), pending handlers and drift checks. Run ids are
    /// renumbered; references follow them.
    pub fn import(
        &self,
        from: &dyn StateStore,
        origin_prefix: &str,
    ) -> Result<Imported, StateError> {
        let runs = from.history(usize::MAX)?;
        let mut with_actions = Vec::with_capacity(runs.len());
        for r in runs.into_iter().rev() {
            let actions = from.run_actions(r.id)?;
            with_actions.push((r, actions));
        }
        let last = from.last_applied(None)?;
        let pending = from.pending_handlers()?;
        let drift = from.drift_checks(usize::MAX)?;
        let project = self.settings.project.clone();
        let prefix = origin_prefix.to_string();
        self.session.call(move |c| {
            let mut tx = c.transaction()?;
            let mut done = Imported::default();
            let mut ids = std::collections::HashMap::new();
            for (r, actions) in &with_actions {
                let origin = format!("{prefix}#{}", r.id);
                if let Some(row) = tx.query_opt(
                    "SELECT id FROM nexus.runs WHERE project = $1 AND origin = $2",
                    &[&project, &origin],
                )? {
                    ids.insert(r.id, RunId(row.get(0)));
                    done.runs_skipped += 1;
                    continue;
                }
                let row = tx.query_one(
                    "INSERT INTO nexus.runs (project, kind, status, plan_hash, config, tasks, \
                     hosts, started_at, finished_at, summary, nexus_version, pid, hostname, \
                     succeeded, changed, failed, skipped, not_run, pruned, signer, origin) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17, $18, $19, $20, $21) RETURNING id",
                    &[
                        &project,
                        &text_of(&r.kind),
                        // A run that was running in the old store will never finish there.
                        &text_of(&match r.status {
                            RunStatus::Running => RunStatus::Interrupted,
                            s => s,
                        }),
                        &r.plan_hash,
                        &r.config,
                        &serde_json::to_string(&r.tasks).expect("strings serialize"),
                        &serde_json::to_string(&r.hosts).expect("strings serialize"),
                        &r.started_at,
                        &r.finished_at,
                        &(!r.summary.is_null()).then(|| r.summary.to_string()),
                        &r.nexus_version,
                        &i64::from(r.pid),
                        &r.hostname,
                        &(r.counts.succeeded as i64),
                        &(r.counts.changed as i64),
                        &(r.counts.failed as i64),
                        &(r.counts.skipped as i64),
                        &(r.counts.not_run as i64),
                        &r.pruned,
                        &r.signer,
                        &origin,
                    ],
                )?;
                let id = RunId(row.get(0));
                ids.insert(r.id, id);
                done.runs += 1;
                for a in actions {
                    tx.execute(
                        "INSERT INTO nexus.actions (run_id, host, key, task, resource_id, kind, \
                         label, action, status, exit_code, duration_ms, attempts, output_tail, \
                         error, fingerprint_after, finished_at, holds_secrets) VALUES ($1, $2, \
                         $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
                        &[
                            &id.0,
                            &a.host,
                            &a.key,
                            &a.task,
                            &a.resource_id,
                            &a.kind,
                            &a.label,
                            &text_of(&a.action),
                            &text_of(&a.status),
                            &a.exit_code,
                            &i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
                            &i64::from(a.attempts),
                            &a.output_tail,
                            &a.error,
                            &a.fingerprint_after,
                            &a.finished_at,
                            &a.holds_secrets,
                        ],
                    )?;
                    done.actions += 1;
                }
            }
            for l in &last {
                let Some(run) = ids.get(&l.run) else { continue };
                done.last_applied += tx.execute(
                    "INSERT INTO nexus.last_applied (project, host, resource_id, kind, label, \
                     task, key, action, fingerprint, run_id, applied_at, holds_secrets) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (project, host, resource_id) DO UPDATE SET \
                     kind = excluded.kind, label = excluded.label, task = excluded.task, \
                     key = excluded.key, action = excluded.action, \
                     fingerprint = excluded.fingerprint, run_id = excluded.run_id, \
                     applied_at = excluded.applied_at, holds_secrets = excluded.holds_secrets \
                     WHERE nexus.last_applied.applied_at < excluded.applied_at",
                    &[
                        &project,
                        &l.host,
                        &l.resource_id,
                        &l.kind,
                        &l.label,
                        &l.task,
                        &l.key,
                        &text_of(&l.action),
                        &l.fingerprint,
                        &run.0,
                        &l.applied_at,
                        &l.holds_secrets,
                    ],
                )? as usize;
            }
            for p in &pending {
                let Some(run) = ids.get(&RunId(p.since_run)) else {
                    continue;
                };
                done.pending_handlers += tx.execute(
                    "INSERT INTO nexus.pending_handlers (project, host, handler, since_run, \
                     notified_by, notified_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (project, host, handler) DO NOTHING",
                    &[
                        &project,
                        &p.host,
                        &p.handler,
                        &run.0,
                        &p.notified_by,
                        &p.notified_at,
                    ],
                )? as usize;
            }
            for d in &drift {
                let origin = format!("{prefix}#drift{}", d.id);
                done.drift_checks += tx.execute(
                    "INSERT INTO nexus.drift_checks (project, checked_at, plan_hash, config, \
                     hosts, drifted, changes, nexus_version, hostname, origin) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (project, origin) DO NOTHING",
                    &[
                        &project,
                        &d.checked_at,
                        &d.plan_hash,
                        &d.config,
                        &serde_json::to_string(&d.hosts).expect("strings serialize"),
                        &serde_json::to_string(&d.drifted).expect("strings serialize"),
                        &(d.changes as i64),
                        &d.nexus_version,
                        &d.hostname,
                        &origin,
                    ],
                )? as usize;
            }
            tx.commit()?;
            Ok(done)
        })
    }
}

/// A stable 64-bit key for the project's apply lock.
fn lock_key(project: &str) -> i64 {
    let h = blake3::hash(format!("nexus apply lock\0{project}").as_bytes());
    i64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The key of the transaction lock under which contenders take `key` and name its holder.
fn naming_key(key: i64) -> i64 {
    key ^ 0x5a5a_5a5a
}

/// Whether any session holds the advisory lock `key`.
fn lock_held(c: &mut Client, key: i64) -> Result<bool, postgres::Error> {
    // A bigint key shows in pg_locks as classid (high half) and objid (low half), objsubid 1.
    let (high, low) = ((key >> 32) as u32, key as u32);
    let row = c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1)",
        &[&i64::from(high), &i64::from(low)],
    )?;
    Ok(row.get(0))
}

const RUN_COLUMNS: &str = "id, kind, status, plan_hash, config, tasks, hosts, started_at, \
    finished_at, summary, nexus_version, pid, hostname, succeeded, changed, failed, skipped, \
    not_run, pruned, boot_id, process_start, signer";

/// A stored enum from its serde name; an unknown one (a newer nexus) reads as its text.
fn enum_of<T: serde::de::DeserializeOwned>(text: String) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text)).ok()
}

fn list(text: String) -> Vec<String> {
    serde_json::from_str(&text).unwrap_or_default()
}

fn run_from_row(r: &Row, lock_held: bool) -> RunSummary {
    let mut status: RunStatus = enum_of(r.get(2)).unwrap_or(RunStatus::Interrupted);
    let pid = u32::try_from(r.get::<_, i64>(11)).unwrap_or(0);
    let hostname: String = r.get(12);
    // Runs execute under the project's lock: one still marked running while nobody holds the
    // lock was cut off, unless its process is seen running (it may not have locked yet).
    if status == RunStatus::Running && !lock_held {
        let start = r
            .get::<_, Option<i64>>(20)
            .and_then(|s| u64::try_from(s).ok());
        let boot: Option<String> = r.get(19);
        if !matches!(
            liveness(pid, &hostname, boot.as_deref(), start),
            Liveness::Alive
        ) {
            status = RunStatus::Interrupted;
        }
    }
    let started_at: i64 = r.get(7);
    let finished_at: Option<i64> = r.get(8);
    let summary: Option<String> = r.get(9);
    let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
    RunSummary {
        id: RunId(r.get(0)),
        kind: enum_of(r.get(1)).unwrap_or(super::RunKind::Apply),
        status,
        plan_hash: r.get(3),
        config: r.get(4),
        tasks: list(r.get(5)),
        hosts: list(r.get(6)),
        started_at,
        finished_at,
        duration_ms: finished_at.map(|f| f - started_at),
        counts: ActionCounts {
            succeeded: n(13),
            changed: n(14),
            failed: n(15),
            skipped: n(16),
            not_run: n(17),
        },
        summary: match summary.as_deref() {
            None | Some("") => serde_json::Value::Null,
            Some(text) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_string())),
        },
        nexus_version: r.get(10),
        pid,
        hostname,
        pruned: r.get(18),
        signer: r.get(21),
    }
}

fn holder_from_row(r: &Row) -> LockHolder {
    LockHolder {
        pid: u32::try_from(r.get::<_, i64>(0)).unwrap_or(0),
        hostname: r.get(1),
        command: r.get(2),
        since: r.get(3),
        boot_id: r.get(4),
        process_start: r
            .get::<_, Option<i64>>(5)
            .and_then(|s| u64::try_from(s).ok()),
    }
}

const HOLDER_COLUMNS: &str = "pid, hostname, command, since, boot_id, process_start";

fn read_holder(
    c: &mut impl postgres::GenericClient,
    project: &str,
) -> Result<Option<LockHolder>, postgres::Error> {
    Ok(c.query_opt(
        &format!("SELECT {HOLDER_COLUMNS} FROM nexus.apply_lock WHERE project = $1"),
        &[&project],
    )?
    .map(|r| holder_from_row(&r)))
}

/// Marks interrupted the project's runs still recorded as running: called by the new lock
/// holder, no other process can be executing them.
fn mark_interrupted(
    tx: &mut impl postgres::GenericClient,
    project: &str,
) -> Result<Vec<RunId>, postgres::Error> {
    Ok(tx
        .query(
            "UPDATE nexus.runs SET status = 'interrupted' WHERE project = $1 AND status = 'running' \
             RETURNING id",
            &[&project],
        )?
        .iter()
        .map(|r| RunId(r.get(0)))
        .collect())
}

impl StateStore for PostgresStore {
    fn location(&self) -> String {
        self.db.clone()
    }

    fn lock(&self, holder: &LockHolder) -> Result<LockGuard, StateError> {
        // The lock lives as long as this session: a connection of its own, kept by the guard and
        // watched, since losing it loses the lock.
        let session = Session::watched(&self.settings, &self.db)?;
        let (key, project, token) = (self.lock_key(), self.settings.project.clone(), new_token());
        let me = holder.clone();
        let tok = token.clone();
        let taken = session.call(move |c| {
            let mut tx = c.transaction()?;
            // Taking the lock and naming its holder are one step for every contender: a loser
            // reads the holder only after the winner's row is committed.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&naming_key(key)])?;
            // A session-level lock taken in a transaction outlives the transaction.
            let got: bool = tx
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
                .get(0);
            let old = read_holder(&mut tx, &project)?;
            if !got {
                return Ok(Err(old));
            }
            tx.execute(
                "DELETE FROM nexus.apply_lock WHERE project = $1",
                &[&project],
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO nexus.apply_lock (project, token, {HOLDER_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &project,
                    &tok,
                    &i64::from(me.pid),
                    &me.hostname,
                    &me.command,
                    &me.since,
                    &me.boot_id,
                    &me.process_start.and_then(|s| i64::try_from(s).ok()),
                ],
            )?;
            let interrupted = mark_interrupted(&mut tx, &project)?;
            tx.commit()?;
            Ok(Ok((old, interrupted)))
        })?;
        let (old, interrupted) = match taken {
            Ok(t) => t,
            Err(holder) => {
                session.close();
                return Err(StateError::Locked {
                    db: self.db.clone(),
                    holder: Box::new(holder.unwrap_or_else(|| LockHolder {
                        pid: 0,
                        hostname: "an unknown host".into(),
                        command: "a nexus that has not named itself yet".into(),
                        since: now_ms(),
                        boot_id: None,
                        process_start: None,
                    })),
                });
            }
        };
        let recovered = old.map(|holder| Recovered {
            holder,
            reason: "its database session ended (the process exited, was killed, or lost its \
                     connection), which released its lock"
                .into(),
        });
        let project = self.settings.project.clone();
        let lost = session.lost.clone();
        let db = self.db.clone();
        Ok(
            LockGuard::new(holder.clone(), recovered, interrupted, move || {
                let r = session.call(move |c| {
                    // Unlock first: a holder taken after a force-unlock keeps its own row, since
                    // only the row with this lock's token is removed.
                    c.execute("SELECT pg_advisory_unlock($1)", &[&key])?;
                    c.execute(
                        "DELETE FROM nexus.apply_lock WHERE project = $1 AND token = $2",
                        &[&project, &token],
                    )?;
                    Ok(())
                });
                session.close();
                r
            })
            .watched(move || {
                lost.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|e| {
                        format!("the connection to {db} that held the apply lock was lost: {e}")
                    })
            }),
        )
    }

    fn lock_holder(&self) -> Result<Option<LockHolder>, StateError> {
        let (key, project) = (self.lock_key(), self.settings.project.clone());
        self.session.call(move |c| {
            if !lock_held(c, key)? {
                return Ok(None);
            }
            read_holder(c, &project)
        })
    }

    fn force_unlock(&self) -> Result<Option<LockHolder>, StateError> {
        let (key, project) = (self.lock_key(), self.settings.project.clone());
        self.session.call(move |c| {
            let holder = read_holder(c, &project)?;
            // Ends the holder's session, which releases its advisory lock.
            let (high, low) = ((key >> 32) as u32, key as u32);
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND granted AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
                &[&i64::from(high), &i64::from(low)],
            )?;
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM nexus.apply_lock WHERE project = $1",
                &[&project],
            )?;
            if holder.is_some() {
                mark_interrupted(&mut tx, &project)?;
            }
            tx.commit()?;
            Ok(holder)
        })
    }

    fn begin_run(&self, run: &NewRun) -> Result<RunId, StateError> {
        let me = Identity::current();
        let (pid, hostname, boot_id, start) = (
            i64::from(me.pid),
            me.hostname.clone(),
            me.boot_id.clone(),
            me.process_start.and_then(|s| i64::try_from(s).ok()),
        );
        let project = self.settings.project.clone();
        let run = run.clone();
        self.session.call(move |c| {
            let row = c.query_one(
                "INSERT INTO nexus.runs (project, kind, status, plan_hash, config, tasks, hosts, \
                 started_at, nexus_version, pid, hostname, boot_id, process_start, signer) \
                 VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 RETURNING id",
                &[
                    &project,
                    &text_of(&run.kind),
                    &run.plan_hash,
                    &run.config,
                    &serde_json::to_string(&run.tasks).expect("strings serialize"),
                    &serde_json::to_string(&run.hosts).expect("strings serialize"),
                    &run.started_at,
                    &env!("CARGO_PKG_VERSION"),
                    &pid,
                    &hostname,
                    &boot_id,
                    &start,
                    &run.signer,
                ],
            )?;
            Ok(RunId(row.get(0)))
        })
    }

    fn record_actions(&self, run: RunId, actions: &[ActionRecord]) -> Result<(), StateError> {
        if actions.is_empty() {
            return Ok(());
        }
        let project = self.settings.project.clone();
        let actions = actions.to_vec();
        // Every statement is a round trip to the server: a batch is written with three, whatever
        // its size (arrays unnested server-side), not two or three per action.
        let found = self.session.call(move |c| {
            let mut tx = c.transaction()?;
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM nexus.runs WHERE id = $1 AND project = $2 FOR UPDATE",
                    &[&run.0, &project],
                )?
                .is_some();
            if !exists {
                return Ok(false);
            }
            let col = |f: &dyn Fn(&ActionRecord) -> String| -> Vec<String> {
                actions.iter().map(f).collect()
            };
            let tails: Vec<String> = actions
                .iter()
                .map(|a| super::cap_tail(&a.output_tail, super::OUTPUT_TAIL_MAX).into_owned())
                .collect();
            let errors: Vec<Option<String>> = actions
                .iter()
                .map(|a| {
                    a.error
                        .as_deref()
                        .map(|e| super::cap_head(e, super::OUTPUT_TAIL_MAX).into_owned())
                })
                .collect();
            tx.execute(
                "INSERT INTO nexus.actions (run_id, host, key, task, resource_id, kind, label, \
                 action, status, exit_code, duration_ms, attempts, output_tail, error, \
                 fingerprint_after, finished_at, holds_secrets) \
                 SELECT $1::int8, h, k, ta, r, ki, l, ac, st, ex, du, at, ou, er, fi, fin, hs \
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::int8[], \
                 $12::int8[], $13::text[], $14::text[], $15::text[], $16::int8[], $17::bool[]) \
                 WITH ORDINALITY AS t(h, k, ta, r, ki, l, ac, st, ex, du, at, ou, er, fi, fin, hs, n) \
                 ORDER BY n",
                &[
                    &run.0,
                    &col(&|a| a.host.clone()),
                    &col(&|a| a.key.clone()),
                    &col(&|a| a.task.clone()),
                    &col(&|a| a.resource_id.clone()),
                    &col(&|a| a.kind.clone()),
                    &col(&|a| a.label.clone()),
                    &col(&|a| text_of(&a.action)),
                    &col(&|a| text_of(&a.status)),
                    &actions.iter().map(|a| a.exit_code).collect::<Vec<_>>(),
                    &actions
                        .iter()
                        .map(|a| i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
                        .collect::<Vec<_>>(),
                    &actions
                        .iter()
                        .map(|a| i64::from(a.attempts))
                        .collect::<Vec<_>>(),
                    &tails,
                    &errors,
                    &actions
                        .iter()
                        .map(|a| a.fingerprint_after.clone())
                        .collect::<Vec<_>>(),
                    &actions.iter().map(|a| a.finished_at).collect::<Vec<_>>(),
                    &actions.iter().map(|a| a.holds_secrets).collect::<Vec<_>>(),
                ],
            )?;
            let n = |f: &dyn Fn(&ActionRecord) -> bool| actions.iter().filter(|a| f(a)).count() as i64;
            let ok = |a: &ActionRecord| a.status == super::ActionStatus::Succeeded;
            tx.execute(
                "UPDATE nexus.runs SET succeeded = succeeded + $2, changed = changed + $3, \
                 failed = failed + $4, skipped = skipped + $5, not_run = not_run + $6 WHERE id = $1",
                &[
                    &run.0,
                    &n(&ok),
                    &n(&|a| ok(a) && a.action != Action::NoOp),
                    &n(&|a| a.status == super::ActionStatus::Failed),
                    &n(&|a| a.status == super::ActionStatus::Skipped),
                    &n(&|a| a.status == super::ActionStatus::NotRun),
                ],
            )?;
            // The last success of each host+resource in the batch (one upsert may not touch a row
            // twice).
            let mut last: Vec<&ActionRecord> = Vec::new();
            for a in actions.iter().filter(|a| ok(a)) {
                last.retain(|b| (b.host.as_str(), b.resource_id.as_str()) != (a.host.as_str(), a.resource_id.as_str()));
                last.push(a);
            }
            if !last.is_empty() {
                let col = |f: &dyn Fn(&ActionRecord) -> String| -> Vec<String> {
                    last.iter().map(|a| f(a)).collect()
                };
                tx.execute(
                    "INSERT INTO nexus.last_applied (project, host, resource_id, kind, label, \
                     task, key, action, fingerprint, run_id, applied_at, holds_secrets) \
                     SELECT $1::text, h, r, ki, l, ta, k, ac, fi, $2::int8, fin, hs FROM UNNEST($3::text[], \
                     $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
                     $10::text[], $11::int8[], $12::bool[]) AS t(h, r, ki, l, ta, k, ac, fi, fin, hs) \
                     ON CONFLICT (project, host, resource_id) DO UPDATE SET \
                     kind = excluded.kind, label = excluded.label, task = excluded.task, \
                     key = excluded.key, action = excluded.action, \
                     fingerprint = excluded.fingerprint, run_id = excluded.run_id, \
                     applied_at = excluded.applied_at, holds_secrets = excluded.holds_secrets",
                    &[
                        &project,
                        &run.0,
                        &col(&|a| a.host.clone()),
                        &col(&|a| a.resource_id.clone()),
                        &col(&|a| a.kind.clone()),
                        &col(&|a| a.label.clone()),
                        &col(&|a| a.task.clone()),
                        &col(&|a| a.key.clone()),
                        &col(&|a| text_of(&a.action)),
                        &last.iter().map(|a| a.fingerprint_after.clone()).collect::<Vec<_>>(),
                        &last.iter().map(|a| a.finished_at).collect::<Vec<_>>(),
                        &last.iter().map(|a| a.holds_secrets).collect::<Vec<_>>(),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })?;
        if found {
            Ok(())
        } else {
            Err(StateError::NoSuchRun {
                db: self.db.clone(),
                run,
            })
        }
    }

    fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        summary_json: &str,
    ) -> Result<(), StateError> {
        if status == RunStatus::Running {
            return Err(StateError::Invalid {
                db: self.db.clone(),
                message: format!("run {run} cannot finish as running"),
            });
        }
        let (project, summary) = (self.settings.project.clone(), summary_json.to_string());
        let changed = self.session.call(move |c| {
            c.execute(
                "UPDATE nexus.runs SET status = $3, finished_at = $4, summary = $5 \
                 WHERE id = $1 AND project = $2",
                &[&run.0, &project, &text_of(&status), &now_ms(), &summary],
            )
        })?;
        if changed == 0 {
            return Err(StateError::NoSuchRun {
                db: self.db.clone(),
                run,
            });
        }
        Ok(())
    }

    fn applied(&self, plan_hash: &str) -> Result<Option<RunSummary>, StateError> {
        Ok(self
            .summaries(
                "AND plan_hash = $2 AND status != 'refused'",
                Some(plan_hash.to_string()),
                1,
            )?
            .pop())
    }

    fn notify_handler(
        &self,
        run: RunId,
        host: &str,
        handler: &str,
        notified_by: &str,
    ) -> Result<(), StateError> {
        let project = self.settings.project.clone();
        let (host, handler, by) = (
            host.to_string(),
            handler.to_string(),
            notified_by.to_string(),
        );
        self.session.call(move |c| {
            c.execute(
                "INSERT INTO nexus.pending_handlers (project, host, handler, since_run, \
                 notified_by, notified_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (project, host, handler) DO NOTHING",
                &[&project, &host, &handler, &run.0, &by, &now_ms()],
            )
            .map(drop)
        })
    }

    fn handler_succeeded(&self, host: &str, handler: &str) -> Result<(), StateError> {
        let project = self.settings.project.clone();
        let (host, handler) = (host.to_string(), handler.to_string());
        self.session.call(move |c| {
            c.execute(
                "DELETE FROM nexus.pending_handlers WHERE project = $1 AND host = $2 AND handler = $3",
                &[&project, &host, &handler],
            )
            .map(drop)
        })
    }

    fn pending_handlers(&self) -> Result<Vec<PendingHandler>, StateError> {
        let project = self.settings.project.clone();
        self.session.call(move |c| {
            Ok(c.query(
                "SELECT host, handler, since_run, notified_by, notified_at \
                 FROM nexus.pending_handlers WHERE project = $1 ORDER BY host, handler",
                &[&project],
            )?
            .iter()
            .map(|r| PendingHandler {
                host: r.get(0),
                handler: r.get(1),
                since_run: r.get(2),
                notified_by: r.get(3),
                notified_at: r.get(4),
            })
            .collect())
        })
    }

    fn history(&self, limit: usize) -> Result<Vec<RunSummary>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.summaries("AND $2::text = $2::text", None, limit)
    }

    fn run(&self, run: RunId) -> Result<Option<RunSummary>, StateError> {
        Ok(self
            .summaries("AND id::text = $2", Some(run.0.to_string()), 1)?
            .pop())
    }

    fn run_actions(&self, run: RunId) -> Result<Vec<ActionRecord>, StateError> {
        let project = self.settings.project.clone();
        self.session.call(move |c| {
            Ok(c.query(
                "SELECT a.host, a.key, a.task, a.resource_id, a.kind, a.label, a.action, a.status, \
                 a.exit_code, a.duration_ms, a.attempts, a.output_tail, a.error, \
                 a.fingerprint_after, a.finished_at, a.holds_secrets FROM nexus.actions a \
                 JOIN nexus.runs r ON r.id = a.run_id WHERE a.run_id = $1 AND r.project = $2 \
                 ORDER BY a.id",
                &[&run.0, &project],
            )?
            .iter()
            .filter_map(|r| {
                Some(ActionRecord {
                    host: r.get(0),
                    key: r.get(1),
                    task: r.get(2),
                    resource_id: r.get(3),
                    kind: r.get(4),
                    label: r.get(5),
                    action: enum_of(r.get(6))?,
                    status: enum_of(r.get(7))?,
                    exit_code: r.get(8),
                    duration_ms: r.get::<_, i64>(9).max(0) as u64,
                    attempts: u32::try_from(r.get::<_, i64>(10)).unwrap_or(u32::MAX),
                    output_tail: r.get(11),
                    error: r.get(12),
                    fingerprint_after: r.get(13),
                    finished_at: r.get(14),
                    holds_secrets: r.get(15),
                })
            })
            .collect())
        })
    }

    fn last_applied(&self, host: Option<&str>) -> Result<Vec<LastApplied>, StateError> {
        let project = self.settings.project.clone();
        let host = host.map(str::to_string);
        self.session.call(move |c| {
            Ok(c.query(
                "SELECT host, resource_id, kind, label, task, key, action, fingerprint, run_id, \
                 applied_at, holds_secrets FROM nexus.last_applied \
                 WHERE project = $1 AND ($2::text IS NULL OR host = $2) ORDER BY host, resource_id",
                &[&project, &host],
            )?
            .iter()
            .filter_map(|r| {
                Some(LastApplied {
                    host: r.get(0),
                    resource_id: r.get(1),
                    kind: r.get(2),
                    label: r.get(3),
                    task: r.get(4),
                    key: r.get(5),
                    action: enum_of(r.get(6))?,
                    fingerprint: r.get(7),
                    run: RunId(r.get(8)),
                    applied_at: r.get(9),
                    holds_secrets: r.get(10),
                })
            })
            .collect())
        })
    }

    fn secret_holders(&self) -> Result<Vec<(String, String)>, StateError> {
        let project = self.settings.project.clone();
        self.session.call(move |c| {
            Ok(c.query(
                "SELECT host, resource_id FROM nexus.last_applied \
                 WHERE project = $1 AND holds_secrets ORDER BY host, resource_id",
                &[&project],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn prune(&self, keep_runs: usize) -> Result<u64, StateError> {
        let keep = i64::try_from(keep_runs).unwrap_or(i64::MAX);
        let project = self.settings.project.clone();
        self.session.call(move |c| {
            let mut tx = c.transaction()?;
            // Runs still recorded as running keep their rows: they may be executing right now.
            let ids: Vec<i64> = tx
                .query(
                    "SELECT id FROM nexus.runs WHERE project = $1 AND status != 'running' \
                     AND NOT pruned AND id NOT IN (SELECT id FROM nexus.runs WHERE project = $1 \
                     ORDER BY id DESC LIMIT $2)",
                    &[&project, &keep],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let deleted =
                tx.execute("DELETE FROM nexus.actions WHERE run_id = ANY($1)", &[&ids])?;
            tx.execute(
                "UPDATE nexus.runs SET pruned = TRUE WHERE id = ANY($1)",
                &[&ids],
            )?;
            tx.commit()?;
            Ok(deleted)
        })
    }

    fn record_drift(&self, c: &NewDriftCheck) -> Result<i64, StateError> {
        let project = self.settings.project.clone();
        let c = c.clone();
        let hostname = Identity::current().hostname.clone();
        self.session.call(move |db| {
            let row = db.query_one(
                "INSERT INTO nexus.drift_checks (project, checked_at, plan_hash, config, hosts, \
                 drifted, changes, nexus_version, hostname) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[
                    &project,
                    &c.checked_at,
                    &c.plan_hash,
                    &c.config,
                    &serde_json::to_string(&c.hosts).expect("strings serialize"),
                    &serde_json::to_string(&c.drifted).expect("strings serialize"),
                    &i64::try_from(c.changes).unwrap_or(i64::MAX),
                    &env!("CARGO_PKG_VERSION"),
                    &hostname,
                ],
            )?;
            Ok(row.get(0))
        })
    }

    fn drift_checks(&self, limit: usize) -> Result<Vec<DriftCheck>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let project = self.settings.project.clone();
        self.session.call(move |c| {
            Ok(c.query(
                "SELECT id, checked_at, plan_hash, config, hosts, drifted, changes, nexus_version, \
                 hostname FROM nexus.drift_checks WHERE project = $1 ORDER BY id DESC LIMIT $2",
                &[&project, &limit],
            )?
            .iter()
            .map(|r| DriftCheck {
                id: r.get(0),
                checked_at: r.get(1),
                plan_hash: r.get(2),
                config: r.get(3),
                hosts: list(r.get(4)),
                drifted: list(r.get(5)),
                changes: r.get::<_, i64>(6).max(0) as u64,
                nexus_version: r.get(7),
                hostname: r.get(8),
            })
            .collect())
        })
    }

    fn record_generation(&self, run: RunId, g: &NewGeneration) -> Result<(), StateError> {
        let project = self.settings.project.clone();
        let g = g.clone();
        self.session.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO nexus.run_plans (run_id, plan, rollback_of) VALUES ($1, $2, $3)",
                &[&run.0, &g.plan, &g.rollback_of.map(|r| r.0)],
            )?;
            for b in &g.blobs {
                tx.execute(
                    "INSERT INTO nexus.blobs (project, hash, sealed, data) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (project, hash) DO NOTHING",
                    &[&project, &b.hash, &b.sealed, &b.data],
                )?;
            }
            for p in &g.preimages {
                tx.execute(
                    "INSERT INTO nexus.preimages (run_id, host, key, seq, resource_id, image, blob, \
                     fingerprint_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &run.0,
                        &p.host,
                        &p.key,
                        &p.seq,
                        &p.resource_id,
                        &serde_json::to_string(&p.image).expect("images serialize"),
                        &p.blob,
                        &p.fingerprint_after,
                    ],
                )?;
            }
            tx.commit()
        })
    }

    fn record_fingerprints_after(
        &self,
        run: RunId,
        after: &[(String, String, String)],
    ) -> Result<(), StateError> {
        let after = after.to_vec();
        self.session.call(move |c| {
            let mut tx = c.transaction()?;
            for (host, key, fp) in &after {
                tx.execute(
                    "UPDATE nexus.preimages SET fingerprint_after = $4 WHERE run_id = $1 \
                     AND host = $2 AND key = $3",
                    &[&run.0, host, key, fp],
                )?;
            }
            tx.commit()
        })
    }

    fn preimages(&self, host: &str, after: RunId) -> Result<Vec<Preimage>, StateError> {
        let project = self.settings.project.clone();
        let host = host.to_string();
        let db = self.db.clone();
        let rows = self.session.call(move |c| {
            Ok(c.query(
                "SELECT p.run_id, p.host, p.key, p.seq, p.resource_id, p.image, p.blob, \
                 p.fingerprint_after FROM nexus.preimages p JOIN nexus.runs r ON r.id = p.run_id \
                 WHERE r.project = $1 AND p.host = $2 AND p.run_id > $3 \
                 AND p.fingerprint_after IS NOT NULL ORDER BY p.run_id, p.seq",
                &[&project, &host, &after.0],
            )?
            .iter()
            .map(|r| {
                (
                    Preimage {
                        run: RunId(r.get(0)),
                        host: r.get(1),
                        key: r.get(2),
                        seq: r.get(3),
                        resource_id: r.get(4),
                        image: super::Image::Absent,
                        blob: r.get(6),
                        fingerprint_after: r.get(7),
                    },
                    r.get::<_, String>(5),
                )
            })
            .collect::<Vec<_>>())
        })?;
        rows.into_iter()
            .map(|(p, image)| {
                let image = serde_json::from_str(&image).map_err(|e| StateError::Invalid {
                    db: db.clone(),
                    message: format!("pre-image of {} on {}: {e}", p.key, p.host),
                })?;
                Ok(Preimage { image, ..p })
            })
            .collect()
    }

    fn run_plan(&self, run: RunId) -> Result<Option<RunPlan>, StateError> {
        let project = self.settings.project.clone();
        self.session.call(move |c| {
            Ok(c.query_opt(
                "SELECT p.plan, p.rollback_of FROM nexus.run_plans p JOIN nexus.runs r \
                 ON r.id = p.run_id WHERE r.project = $1 AND p.run_id = $2",
                &[&project, &run.0],
            )?
            .map(|r| RunPlan {
                run,
                plan: r.get(0),
                rollback_of: r.get::<_, Option<i64>>(1).map(RunId),
            }))
        })
    }

    fn blob(&self, hash: &str) -> Result<Option<Blob>, StateError> {
        let project = self.settings.project.clone();
        let hash = hash.to_string();
        self.session.call(move |c| {
            Ok(c.query_opt(
                "SELECT hash, sealed, data FROM nexus.blobs WHERE project = $1 AND hash = $2",
                &[&project, &hash],
            )?
            .map(|r| Blob {
                hash: r.get(0),
                sealed: r.get(1),
                data: r.get(2),
            }))
        })
    }

    fn gc_generations(&self, keep: usize) -> Result<u64, StateError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let project = self.settings.project.clone();
        self.session.call(move |c| {
            let mut tx = c.transaction()?;
            // A host's generations are the runs that changed something on it.
            let deleted = tx.execute(
                "DELETE FROM nexus.preimages p USING nexus.runs r WHERE r.id = p.run_id \
                 AND r.project = $1 AND (SELECT COUNT(DISTINCT n.run_id) FROM nexus.preimages n \
                 JOIN nexus.runs nr ON nr.id = n.run_id WHERE nr.project = $1 AND n.host = p.host \
                 AND n.fingerprint_after IS NOT NULL AND n.run_id > p.run_id) >= $2",
                &[&project, &keep],
            )?;
            tx.execute(
                "DELETE FROM nexus.run_plans p USING nexus.runs r WHERE r.id = p.run_id \
                 AND r.project = $1 AND p.run_id NOT IN (SELECT run_id FROM nexus.preimages)",
                &[&project],
            )?;
            tx.execute(
                "DELETE FROM nexus.blobs b WHERE b.project = $1 AND b.hash NOT IN \
                 (SELECT p.blob FROM nexus.preimages p JOIN nexus.runs r ON r.id = p.run_id \
                 WHERE r.project = $1 AND p.blob IS NOT NULL)",
                &[&project],
            )?;
            tx.commit()?;
            Ok(deleted)
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.session.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_and_query_in_messages() {
        assert_eq!(
            redact_url("postgresql://ci:s3cret@db.example:5432/nexus?sslmode=verify-full"),
            "postgresql://ci@db.example:5432/nexus"
        );
        assert_eq!(redact_url("postgres://db/nexus"), "postgres://db/nexus");
        assert_eq!(redact_url("not a url"), "invalid URL");
    }

    #[test]
    fn sslmode_and_root_are_taken_out_of_the_url() {
        let s = PgSettings {
            url: "postgresql://ci@127.0.0.1:5432/nexus?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3".into(),
            password: Some("pw".into()),
            project: "web".into(),
        };
        let (config, mode, root) = parse(&s).unwrap();
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
        let bad = PgSettings {
            url: "postgresql://h/db?sslmode=maybe".into(),
            ..s.clone()
        };
        assert!(parse(&bad).unwrap_err().to_string().contains("maybe"));
        let mysql = PgSettings {
            url: "mysql://h/db".into(),
            ..s
        };
        assert!(
            parse(&mysql)
                .unwrap_err()
                .to_string()
                .contains("postgresql://")
        );
    }

    #[test]
    fn projects_have_distinct_lock_keys() {
        assert_ne!(lock_key("web"), lock_key("api"));
        assert_eq!(lock_key("web"), lock_key("web"));
    }
}
