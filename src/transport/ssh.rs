//! The SSH transport: one russh connection per host, opened lazily once per nexus invocation
//! and shared by every command, each on its own channel (up to a limit).
//!
//! Host keys are always checked against known_hosts; nothing is ever trusted silently.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{
    Algorithm, Certificate, HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, ChannelOpenFailure, Disconnect, Preferred, Sig};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::certificate;
use super::ciphers;
use super::feed::Feeder;
use super::known_hosts::{self, CertVerdict, KnownHosts, Verdict};
use super::sftp::{self, Failure};
use super::ssh_config::SshConfigFile;
use super::target::{AgentSource, HostKeyPolicy, ResolvedTarget, SshOptions, SshTarget, resolve};
use super::{
    BoxFuture, CommandSpec, ExitStatus, Fetched, Output, OutputChunk, OutputSender, OutputStream,
    Staged, Transport, TransportError, check_sudo_failure, wrap,
};

/// All SSH transports of one nexus invocation, one per host, sharing jump hosts.
pub struct SshPool {
    opts: Arc<SshOptions>,
    cfg: SshConfigFile,
    hosts: Mutex<HashMap<String, Arc<SshTransport>>>,
    connections: Arc<AtomicU64>,
    known_hosts: Arc<known_hosts::Cache>,
    chained_lines: Arc<wrap::ChainedLines>,
    keys: Arc<KeyCache>,
}

/// Identities read so far in this run, by path (see `SshTransport::load_key`).
type KeyCache = Mutex<HashMap<PathBuf, Arc<russh::keys::PrivateKey>>>;

impl SshPool {
    /// Reads ssh_config (per `opts.ssh_config`); connects nothing yet.
    pub fn new(opts: SshOptions) -> Result<Self, TransportError> {
        let cfg = SshConfigFile::load(&opts.ssh_config)?;
        Ok(SshPool {
            opts: Arc::new(opts),
            cfg,
            hosts: Mutex::new(HashMap::new()),
            connections: Arc::new(AtomicU64::new(0)),
            known_hosts: Arc::default(),
            chained_lines: Arc::default(),
            keys: Arc::default(),
        })
    }

    /// The settings `target` will connect with (for `nexus preflight` or debugging).
    pub fn resolve(&self, target: &SshTarget) -> Result<ResolvedTarget, TransportError> {
        resolve(target, &self.opts, &self.cfg)
    }

    /// The transport for `target`, created on first request and shared afterwards (keyed by
    /// `target.name`). Nothing connects until the first command or [`SshTransport::connect`].
    pub fn transport(&self, target: &SshTarget) -> Result<Arc<SshTransport>, TransportError> {
        if let Some(t) = self.lock_hosts().get(&target.name) {
            return Ok(t.clone());
        }
        let resolved = self.resolve(target)?;
        Ok(self.transport_for(resolved.name.clone(), resolved))
    }

    fn lock_hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SshTransport>>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn transport_for(&self, key: String, resolved: ResolvedTarget) -> Arc<SshTransport> {
        if let Some(t) = self.lock_hosts().get(&key) {
            return t.clone();
        }
        // Jump hosts are keyed by endpoint, so hosts behind one bastion share its connection.
        let jump = resolved.jump.as_ref().map(|j| {
            let key = format!("jump:{}@{}:{}", j.user, j.host_name, j.port);
            self.transport_for(key, (**j).clone())
        });
        let t = Arc::new(SshTransport {
            label: resolved.label(),
            target: resolved,
            jump,
            opts: self.opts.clone(),
            conn: tokio::sync::Mutex::new(None),
            commands: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            pool_connections: self.connections.clone(),
            known_hosts: self.known_hosts.clone(),
            chained_lines: self.chained_lines.clone(),
            keys: self.keys.clone(),
            no_sftp: AtomicBool::new(false),
        });
        self.lock_hosts().entry(key).or_insert(t).clone()
    }

    /// TCP (or jump-tunnelled) connections opened so far, over all hosts.
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Disconnects `name` and forgets its transport, so that its memory goes now rather than
    /// at the end of the run; asking for it again connects anew. Jump hosts stay.
    pub async fn release(&self, name: &str) {
        let t = self.lock_hosts().remove(name);
        if let Some(t) = t {
            t.disconnect().await;
        }
    }

    /// Disconnects every host cleanly (hosts before the jump hosts they go through).
    pub async fn close_all(&self) {
        let mut all: Vec<Arc<SshTransport>> = self.lock_hosts().values().cloned().collect();
        all.sort_by_key(|t| std::cmp::Reverse(t.depth()));
        for t in all {
            t.disconnect().await;
        }
    }
}

/// An SFTP session and the channel slot its channel holds.
type SftpChannel = (
    russh_sftp::client::SftpSession,
    tokio::sync::OwnedSemaphorePermit,
);

struct Connection {
    handle: Handle<Client>,
    channels: Arc<Semaphore>,
    // Keeps the jump host's connection alive while this one tunnels through it.
    _jump: Option<Arc<Connection>>,
}

/// Runs commands on one host over SSH; obtained from [`SshPool::transport`].
pub struct SshTransport {
    label: String,
    target: ResolvedTarget,
    jump: Option<Arc<SshTransport>>,
    opts: Arc<SshOptions>,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    commands: AtomicU64,
    connections: AtomicU64,
    pool_connections: Arc<AtomicU64>,
    known_hosts: Arc<known_hosts::Cache>,
    chained_lines: Arc<wrap::ChainedLines>,
    keys: Arc<KeyCache>,
    /// The host refused the SFTP subsystem once: it is not asked again in this run.
    no_sftp: AtomicBool,
}

impl fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTransport")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl SshTransport {
    /// The merged settings this transport connects with.
    pub fn resolved(&self) -> &ResolvedTarget {
        &self.target
    }

    /// Connections this host has opened (1 in a healthy run; more after reconnects).
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connects and authenticates now, if not connected yet (`nexus preflight`).
    pub async fn connect(&self) -> Result<(), TransportError> {
        self.connection().await.map(|_| ())
    }

    fn depth(&self) -> usize {
        self.jump.as_ref().map_or(0, |j| j.depth() + 1)
    }

    async fn disconnect(&self) {
        let conn = self.conn.lock().await.take();
        if let Some(conn) = conn {
            let _ = conn
                .handle
                .disconnect(Disconnect::ByApplication, "nexus done", "en")
                .await;
        }
    }

    // Boxed because a jump host connects through the same function.
    fn connection(&self) -> BoxFuture<'_, Result<Arc<Connection>, TransportError>> {
        Box::pin(async move {
            // Held across the handshake: concurrent first commands wait for one connection
            // rather than each opening their own.
            let mut slot = self.conn.lock().await;
            if let Some(c) = slot.as_ref()
                && !c.handle.is_closed()
            {
                return Ok(c.clone());
            }
            *slot = None;
            let jump = match &self.jump {
                Some(j) => Some(j.connection().await.map_err(|e| TransportError::Jump {
                    host: self.label.clone(),
                    source: Box::new(e),
                })?),
                None => None,
            };
            let limit = self.target.connect_timeout;
            let conn = match tokio::time::timeout(limit, self.open(jump)).await {
                Ok(r) => Arc::new(r?),
                Err(_) => {
                    return Err(TransportError::ConnectTimeout {
                        host: self.label.clone(),
                        after: limit,
                    });
                }
            };
            *slot = Some(conn.clone());
            Ok(conn)
        })
    }

    async fn open(&self, jump: Option<Arc<Connection>>) -> Result<Connection, TransportError> {
        let t = &self.target;
        let mut files = t.known_hosts_files.clone();
        files.extend(t.global_known_hosts_files.iter().cloned());
        let known =
            self.known_hosts
                .get(&files)
                .map_err(|(path, e)| TransportError::KnownHosts {
                    host: self.label.clone(),
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
        let preferred_keys = prefer_recorded(&known.recorded_algorithms(&t.host_name, t.port));
        // Host certificates are asked for only where a CA could vouch for one.
        let certificates = if known.has_authority_for(&t.host_name, t.port) {
            preferred_keys.clone()
        } else {
            Vec::new()
        };
        let ciphers = match &t.ciphers {
            None => ciphers::default_order(),
            Some(names) => ciphers::configured(names).map_err(|reason| TransportError::Config {
                host: self.label.clone(),
                reason,
            })?,
        };
        let config = Arc::new(client::Config {
            keepalive_interval: t.keepalive_interval,
            keepalive_max: self.opts.keepalive_max,
            nodelay: true,
            preferred: Preferred {
                key: Cow::Owned(preferred_keys),
                host_key_certificates: Cow::Owned(certificates),
                cipher: Cow::Owned(ciphers),
                ..Preferred::DEFAULT
            },
            ..client::Config::default()
        });
        let handler = Client {
            label: self.label.clone(),
            host_name: t.host_name.clone(),
            port: t.port,
            known,
            policy: t.host_key_policy,
            searched: files,
            record_file: t.known_hosts_files.first().cloned(),
        };
        let addr = format!("{}:{}", t.host_name, t.port);

        let connected = match &jump {
            None => {
                let stream = self.tcp_connect(&addr).await?;
                self.count_connection();
                client::connect_stream(config, stream, handler).await
            }
            Some(j) => {
                let channel = j
                    .handle
                    .channel_open_direct_tcpip(t.host_name.clone(), t.port as u32, "127.0.0.1", 0)
                    .await
                    .map_err(|e| match e {
                        russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed) => {
                            TransportError::ConnectionRefused {
                                host: self.label.clone(),
                                addr: format!("{addr} (as seen from the jump host)"),
                            }
                        }
                        other => TransportError::Unreachable {
                            host: self.label.clone(),
                            addr: addr.clone(),
                            reason: format!("jump host cannot open a tunnel: {other}"),
                        },
                    })?;
                self.count_connection();
                client::connect_stream(config, channel.into_stream(), handler).await
            }
        };
        let mut handle = connected.map_err(|e| match e {
            HandlerError::HostKey(e) => *e,
            HandlerError::Ssh(e) => TransportError::Handshake {
                host: self.label.clone(),
                reason: describe_ssh_error(&e),
            },
        })?;
        self.authenticate(&mut handle).await?;
        Ok(Connection {
            handle,
            channels: Arc::new(Semaphore::new(self.opts.max_channels.max(1))),
            _jump: jump,
        })
    }

    fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.pool_connections.fetch_add(1, Ordering::Relaxed);
    }

    async fn tcp_connect(&self, addr: &str) -> Result<tokio::net::TcpStream, TransportError> {
        let t = &self.target;
        let addrs: Vec<_> = tokio::net::lookup_host((t.host_name.as_str(), t.port))
            .await
            .map_err(|e| TransportError::Unreachable {
                host: self.label.clone(),
                addr: addr.to_string(),
                reason: format!("cannot resolve: {e}"),
            })?
            .collect();
        let mut last = None;
        for sa in addrs {
            match tokio::net::TcpStream::connect(sa).await {
                Ok(s) => {
                    // russh applies `Config::nodelay` only to streams it opens itself; without
                    // it, Nagle's algorithm holds back small packets behind delayed ACKs.
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                TransportError::ConnectionRefused {
                    host: self.label.clone(),
                    addr: addr.to_string(),
                }
            }
            Some(e) => TransportError::Unreachable {
                host: self.label.clone(),
                addr: addr.to_string(),
                reason: e.to_string(),
            },
            None => TransportError::Unreachable {
                host: self.label.clone(),
                addr: addr.to_string(),
                reason: "name resolves to no address".into(),
            },
        })
    }

    async fn authenticate(&self, handle: &mut Handle<Client>) -> Result<(), TransportError> {
        let user = self.target.user.clone();
        let rsa_hash = match handle.best_supported_rsa_hash().await {
            Ok(Some(h)) => h,
            _ => Some(HashAlg::Sha256),
        };
        let mut tried: Vec<String> = Vec::new();
        let mut encrypted: Option<PathBuf> = None;
        let mut offered: Vec<PublicKey> = Vec::new();
        let mut offered_certs: Vec<Certificate> = Vec::new();
        // CertificateFile certificates, each offered with the first key that it certifies.
        let mut configured = self.configured_certificates(&mut tried);

        for path in &self.target.identity_files {
            let key = match self.load_key(path) {
                Ok(k) => k,
                Err(KeyProblem::Encrypted) => {
                    encrypted.get_or_insert_with(|| path.clone());
                    tried.push(format!("{} (encrypted, no passphrase)", path.display()));
                    continue;
                }
                Err(KeyProblem::Other(why)) => {
                    tried.push(format!("{} ({why})", path.display()));
                    continue;
                }
            };
            offered.push(key.public_key().clone());
            // The certificate first, then the plain key, as OpenSSH does.
            let certs = certificates_for(path, key.public_key(), &mut configured, &mut tried);
            for (desc, cert) in certs {
                if offered_certs.contains(&cert) {
                    continue;
                }
                offered_certs.push(cert.clone());
                match handle
                    .authenticate_openssh_cert(&user, key.clone(), cert.clone())
                    .await
                {
                    Ok(client::AuthResult::Success) => return Ok(()),
                    Ok(client::AuthResult::Failure { .. }) => {
                        tried.push(refused_certificate(&desc, &cert, &user))
                    }
                    Err(e) => return Err(self.session_ended(user, tried, &desc, &e)),
                }
            }
            let key = PrivateKeyWithHashAlg::new(key, rsa_hash);
            match handle.authenticate_publickey(&user, key).await {
                Ok(client::AuthResult::Success) => return Ok(()),
                Ok(client::AuthResult::Failure { .. }) => {
                    tried.push(format!("publickey {}", path.display()))
                }
                // Typically sshd's MaxAuthTries: report what was tried rather than a bare
                // protocol error.
                Err(e) => {
                    let desc = format!("publickey {}", path.display());
                    return Err(self.session_ended(user, tried, &desc, &e));
                }
            }
        }

        let socket = match &self.opts.agent {
            AgentSource::Disabled => None,
            AgentSource::Socket(p) => Some(p.clone()),
            AgentSource::Env => std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        };
        if let Some(socket) = socket {
            match AgentClient::connect_uds(&socket).await {
                Err(e) => tried.push(format!(
                    "ssh-agent at {} (unreachable: {e})",
                    socket.display()
                )),
                Ok(mut agent) => match agent.request_identities().await {
                    Err(e) => tried.push(format!("ssh-agent (cannot list keys: {e})")),
                    Ok(ids) if ids.is_empty() => tried.push("ssh-agent (no keys)".into()),
                    Ok(ids) => {
                        for id in ids {
                            let (certs, key) = match id {
                                AgentIdentity::Certificate { certificate, .. } => {
                                    let desc = format!(
                                        "ssh-agent certificate {:?} of key {}",
                                        certificate.key_id(),
                                        certificate::fingerprint(certificate.public_key())
                                    );
                                    (vec![(desc, certificate)], None)
                                }
                                AgentIdentity::PublicKey { key, .. } => {
                                    (take_certified(&mut configured, &key), Some(key))
                                }
                            };
                            for (desc, cert) in certs {
                                if offered_certs.contains(&cert) {
                                    continue;
                                }
                                offered_certs.push(cert.clone());
                                match handle
                                    .authenticate_certificate_with(
                                        &user,
                                        cert.clone(),
                                        rsa_hash,
                                        &mut agent,
                                    )
                                    .await
                                {
                                    Ok(client::AuthResult::Success) => return Ok(()),
                                    Ok(client::AuthResult::Failure { .. }) => {
                                        tried.push(refused_certificate(&desc, &cert, &user))
                                    }
                                    Err(e) => tried.push(format!("{desc} (agent error: {e})")),
                                }
                            }
                            let Some(key) = key else {
                                continue;
                            };
                            if offered.iter().any(|k| k.key_data() == key.key_data()) {
                                continue;
                            }
                            let desc = format!(
                                "ssh-agent key {} {}",
                                key.algorithm().as_str(),
                                known_hosts::fingerprint(&key)
                            );
                            match handle
                                .authenticate_publickey_with(&user, key, rsa_hash, &mut agent)
                                .await
                            {
                                Ok(client::AuthResult::Success) => return Ok(()),
                                Ok(client::AuthResult::Failure { .. }) => tried.push(desc),
                                Err(e) => tried.push(format!("{desc} (agent error: {e})")),
                            }
                        }
                    }
                },
            }
        }
        for (path, cert) in configured {
            tried.push(format!(
                "certificate {} (not offered: it certifies the key {}, which is neither an identity nor in ssh-agent)",
                path.display(),
                certificate::fingerprint(cert.public_key())
            ));
        }

        if let Some(path) = encrypted {
            return Err(TransportError::EncryptedKeyNoPassphrase {
                host: self.label.clone(),
                path,
            });
        }
        Err(TransportError::AuthFailed {
            host: self.label.clone(),
            user,
            tried,
        })
    }

    /// Authentication failed because the server ended the session during `desc`.
    fn session_ended(
        &self,
        user: String,
        mut tried: Vec<String>,
        desc: &str,
        e: &russh::Error,
    ) -> TransportError {
        tried.push(format!(
            "{desc} (then the server ended the session: {})",
            describe_ssh_error(e)
        ));
        TransportError::AuthFailed {
            host: self.label.clone(),
            user,
            tried,
        }
    }

    /// The certificates of ssh_config's `CertificateFile` that can be read (the others are
    /// reported in `tried`).
    fn configured_certificates(&self, tried: &mut Vec<String>) -> Vec<(PathBuf, Certificate)> {
        let mut found = Vec::new();
        for path in &self.target.certificate_files {
            match certificate::read(path) {
                Ok(cert) => found.push((path.clone(), cert)),
                Err(why) => tried.push(format!("certificate {} ({why})", path.display())),
            }
        }
        found
    }

    /// The identity at `path`, read (and decrypted) once per run: a fleet shares its keys, and
    /// an encrypted key's KDF alone costs far more than a handshake. Kept, decrypted, as long as
    /// the pool (the run), as an agent would; hosts connecting at once may each read it before
    /// the first is cached. Failures are not kept: each host reports its own.
    fn load_key(&self, path: &Path) -> Result<Arc<russh::keys::PrivateKey>, KeyProblem> {
        if let Some(k) = self.keys.lock().expect("poisoned").get(path) {
            return Ok(k.clone());
        }
        let key = Arc::new(self.read_key(path)?);
        self.keys
            .lock()
            .expect("poisoned")
            .insert(path.to_path_buf(), key.clone());
        Ok(key)
    }

    fn read_key(&self, path: &Path) -> Result<russh::keys::PrivateKey, KeyProblem> {
        if !path.exists() {
            return Err(KeyProblem::Other("not found".into()));
        }
        match russh::keys::load_secret_key(path, None) {
            Ok(k) => Ok(k),
            Err(russh::keys::Error::KeyIsEncrypted) => match &self.opts.key_passphrase {
                None => Err(KeyProblem::Encrypted),
                Some(pass) => russh::keys::load_secret_key(path, Some(pass))
                    .map_err(|e| KeyProblem::Other(format!("cannot decrypt: {e}"))),
            },
            Err(e) => Err(KeyProblem::Other(format!("unreadable: {e}"))),
        }
    }

    /// The connection and one of its channel slots (a server allows only so many sessions per
    /// connection), counted as one command.
    async fn reserve(
        &self,
    ) -> Result<(Arc<Connection>, tokio::sync::OwnedSemaphorePermit), TransportError> {
        let conn = self.connection().await?;
        let permit = conn
            .channels
            .clone()
            .acquire_owned()
            .await
            .expect("the channel semaphore is never closed");
        self.commands.fetch_add(1, Ordering::Relaxed);
        Ok((conn, permit))
    }

    /// An SFTP session on a channel of its own, holding the channel's slot; `None` when the
    /// host has no SFTP subsystem (remembered, so the host is asked once per run).
    async fn sftp(&self) -> Result<Option<SftpChannel>, TransportError> {
        if self.no_sftp.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (conn, permit) = self.reserve().await?;
        let channel = self.open_channel(&conn).await?;
        match sftp::start(channel).await {
            Ok(Some(session)) => Ok(Some((session, permit))),
            Ok(None) => {
                self.no_sftp.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(_) if conn.handle.is_closed() => Err(self.lost("while starting SFTP")),
            Err(reason) => Err(TransportError::Channel {
                host: self.label.clone(),
                reason,
            }),
        }
    }

    async fn stage_inner(
        &self,
        dir: Option<&str>,
        content: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        progress: sftp::Progress<'_>,
    ) -> Result<Staged, TransportError> {
        let Some((session, _permit)) = self.sftp().await? else {
            return Ok(Staged::Unavailable);
        };
        let dir = match dir {
            Some(d) => d.to_string(),
            None => match sftp::home(&session).await {
                Ok(h) => h,
                Err(_) => return Ok(Staged::Unavailable),
            },
        };
        // Named as the scripts' own temporary files are, so that their clean-up of files
        // left by a writer that is gone (after an hour, as it has no pid) covers it too.
        let path = format!(
            "{}/.nexus-sftp-{}",
            dir.trim_end_matches('/'),
            kill_tag().trim_start_matches("nexus-")
        );
        let result = sftp::put(&session, &path, content, progress).await;
        let _ = session.close().await;
        match result {
            Ok(()) => Ok(Staged::At(path)),
            Err(Failure::NotStarted(_)) => Ok(Staged::Unavailable),
            Err(Failure::Broken(detail)) => Err(self.transfer_error(&path, detail)),
        }
    }

    async fn fetch_inner(
        &self,
        path: &str,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        progress: sftp::Progress<'_>,
    ) -> Result<Fetched, TransportError> {
        let Some((session, _permit)) = self.sftp().await? else {
            return Ok(Fetched::Unavailable);
        };
        let result = sftp::get(&session, path, out, progress).await;
        let _ = session.close().await;
        match result {
            Ok(n) => Ok(Fetched::Done(n)),
            Err(Failure::NotStarted(_)) => Ok(Fetched::Unavailable),
            Err(Failure::Broken(detail)) => Err(self.transfer_error(path, detail)),
        }
    }

    fn transfer_error(&self, path: &str, detail: String) -> TransportError {
        TransportError::Transfer {
            host: self.label.clone(),
            path: path.to_string(),
            detail,
        }
    }

    fn refused(&self) -> TransportError {
        TransportError::Channel {
            host: self.label.clone(),
            reason: "the server refused to run the command".into(),
        }
    }

    fn lost(&self, during: &str) -> TransportError {
        TransportError::Disconnected {
            host: self.label.clone(),
            during: during.to_string(),
        }
    }

    async fn open_channel(
        &self,
        conn: &Connection,
    ) -> Result<russh::Channel<client::Msg>, TransportError> {
        conn.handle.channel_open_session().await.map_err(|e| {
            if conn.handle.is_closed() {
                self.lost("while opening a channel")
            } else {
                TransportError::Channel {
                    host: self.label.clone(),
                    reason: describe_ssh_error(&e),
                }
            }
        })
    }

    async fn run_inner(
        &self,
        cmd: &CommandSpec,
        sink: Option<OutputSender>,
    ) -> Result<Output, TransportError> {
        // A command that may time out is tagged, so that what it started can be found and
        // killed on the host then. Every command runs under the watchdog, which kills it when
        // the session is gone (see `exec`: stdin stays open until the command has ended).
        let tag = cmd.timeout.map(|_| kill_tag());
        let wrapped = wrap::wrap_watched(cmd, tag.as_deref()).map_err(|reason| {
            TransportError::InvalidCommand {
                host: self.label.clone(),
                reason,
            }
        })?;
        let line = wrapped.ssh_command_line();
        let started = Instant::now();
        let (conn, _permit) = self.reserve().await?;

        let mut slot = Abandoned(None);
        let work = self.exec(&conn, &line, wrapped.stdin, sink, &mut slot.0);
        let result = match cmd.timeout {
            None => work.await,
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(channel) = slot.0.take() {
                        // OpenSSH signals the process group it started; that misses what sudo
                        // runs in a session of its own, so the tagged sessions are killed too.
                        let _ = channel.signal(Sig::KILL).await;
                        let _ = channel.close().await;
                    }
                    if let Some(tag) = &tag {
                        let kill = CommandSpec {
                            script: wrap::kill_tagged(tag, wrap::KILL_GRACE_SECS).into(),
                            sudo: cmd.sudo.clone(),
                            timeout: Some(Duration::from_secs(
                                u64::from(wrap::KILL_GRACE_SECS) + 10,
                            )),
                            ..CommandSpec::default()
                        };
                        // Best effort: the timeout is what the caller must hear about.
                        let _ = Box::pin(self.run_inner(&kill, None)).await;
                    }
                    return Err(TransportError::CommandTimeout {
                        host: self.label.clone(),
                        after: limit,
                    });
                }
            },
        };
        // It ended (or failed) on its own: nothing to close.
        slot.0 = None;
        let (exit, stdout, stderr) = result?;
        let output = Output {
            exit,
            stdout,
            stderr,
            duration: started.elapsed(),
        };
        check_sudo_failure(&self.label, cmd, &output)?;
        Ok(output)
    }

    async fn exec(
        &self,
        conn: &Connection,
        line: &str,
        stdin: Vec<u8>,
        sink: Option<OutputSender>,
        slot: &mut Option<russh::Channel<client::Msg>>,
    ) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), TransportError> {
        let lost = |during: &str| self.lost(during);
        let channel = slot.insert(self.open_channel(conn).await?);
        channel
            .exec(true, line.as_bytes())
            .await
            .map_err(|_| lost("while starting a command"))?;

        // Stops feeding on every way out, also when a timeout drops this future.
        let _feeder = Feeder::start(channel.make_writer(), stdin);

        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut exit = None;
        let emit = |stream, data: &[u8]| {
            if let Some(sink) = &sink {
                let _ = sink.send(OutputChunk {
                    stream,
                    data: data.to_vec(),
                });
            }
        };
        loop {
            let msg = channel.wait().await;
            match take(msg, &mut stdout, &mut stderr, &mut exit, emit) {
                Flow::More => {}
                Flow::Closed => break,
                Flow::Refused => {
                    let _ = channel.close().await;
                    return Err(self.refused());
                }
            }
        }
        match exit {
            Some(exit) => Ok((exit, stdout, stderr)),
            None if conn.handle.is_closed() => Err(lost("while running a command")),
            None => {
                // The session task may not have noticed the dead socket yet; give it a moment
                // so the message says what happened.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(lost(if conn.handle.is_closed() {
                    "while running a command"
                } else {
                    "while running a command (channel closed without an exit status)"
                }))
            }
        }
    }
}

impl SshTransport {
    /// [`Transport::run_chained`] in one session (see [`wrap::chained`]). A first command that
    /// needs stdin, environment or sudo runs the usual way, as does the second when it has a
    /// timeout.
    async fn chained_inner(
        &self,
        first: &CommandSpec,
        then: super::Then<'_>,
    ) -> Result<super::Chained, TransportError> {
        let plain = first.stdin.is_none()
            && first.env.is_empty()
            && first.sudo.is_none()
            && first.timeout.is_none()
            && first.script.len() < 64 * 1024;
        if !plain {
            let out = self.run_inner(first, None).await?;
            let second = match then(&out) {
                Some(cmd) => Some(self.run_inner(&cmd, None).await?),
                None => None,
            };
            return Ok((out, second));
        }
        let chained = self.chained_lines.get(&first.script);
        let token = &chained.token;
        let started = Instant::now();
        let (conn, _permit) = self.reserve().await?;
        let lost = |during: &str| self.lost(during);
        let mut channel = self.open_channel(&conn).await?;
        channel
            .exec(true, chained.line.as_bytes())
            .await
            .map_err(|_| lost("while starting a command"))?;

        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut exit = None;
        // Phase one: until both markers are in, the output is the first command's.
        let mut first_out: Option<(Output, usize, usize)> = None;
        let mut second: Option<CommandSpec> = None;
        let mut sent = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut then = Some(then);
        // Dropped on every way out, which stops feeding the second command's stdin.
        let mut _feeder: Option<Feeder> = None;
        loop {
            if first_out.is_none()
                && let (Some((out, status, o)), Some((err, _, e))) = (
                    wrap::chained_split(&stdout, token),
                    wrap::chained_split(&stderr, token),
                )
            {
                let out = Output {
                    exit: ExitStatus::Code(status.unwrap_or(-1)),
                    stdout: out.to_vec(),
                    stderr: err.to_vec(),
                    duration: started.elapsed(),
                };
                first_out = Some((out, o, e));
            }
            if let (Some((out, _, _)), false) = (&first_out, sent) {
                sent = true;
                let mut input = b"0\n".to_vec();
                let mut bad = None;
                if let Some(cmd) = then.take().and_then(|f| f(out)) {
                    match wrap::wrap_watched(&cmd, None) {
                        Ok(w) => {
                            let text = &w.script;
                            input = format!("{}\n{text}", text.len()).into_bytes();
                            input.extend_from_slice(&w.stdin);
                            deadline = cmd.timeout.map(|t| tokio::time::Instant::now() + t);
                            second = Some(cmd);
                        }
                        Err(reason) => bad = Some(reason),
                    }
                }
                let writer = channel.make_writer();
                _feeder = Some(match second {
                    // The second command runs under the watchdog: its stdin stays open.
                    Some(_) => Feeder::start(writer, input),
                    None => Feeder::wrap(tokio::spawn(async move {
                        let mut writer = writer;
                        let _ = writer.write_all(&input).await;
                        let _ = writer.shutdown().await;
                    })),
                });
                if let Some(reason) = bad {
                    return Err(TransportError::InvalidCommand {
                        host: self.label.clone(),
                        reason,
                    });
                }
            }
            let msg = match deadline {
                None => channel.wait().await,
                Some(at) => match tokio::time::timeout_at(at, channel.wait()).await {
                    Ok(m) => m,
                    Err(_) => {
                        let _ = channel.signal(Sig::KILL).await;
                        let _ = channel.close().await;
                        return Err(TransportError::CommandTimeout {
                            host: self.label.clone(),
                            after: second.and_then(|c| c.timeout).unwrap_or_default(),
                        });
                    }
                },
            };
            match take(msg, &mut stdout, &mut stderr, &mut exit, |_, _| {}) {
                Flow::More => {}
                Flow::Closed => break,
                Flow::Refused => {
                    let _ = channel.close().await;
                    return Err(self.refused());
                }
            }
        }
        let Some((out, o, e)) = first_out else {
            // The shell ended inside the first command (no markers): that is its outcome.
            let Some(exit) = exit else {
                return Err(lost("while running a command"));
            };
            let out = Output {
                exit,
                stdout,
                stderr,
                duration: started.elapsed(),
            };
            return Ok((out, None));
        };
        let Some(cmd) = second else {
            return Ok((out, None));
        };
        let Some(exit) = exit else {
            return Err(lost("while running a command"));
        };
        let then_out = Output {
            exit,
            stdout: stdout[o..].to_vec(),
            stderr: stderr[e..].to_vec(),
            duration: started.elapsed().saturating_sub(out.duration),
        };
        check_sudo_failure(&self.label, &cmd, &then_out)?;
        Ok((out, Some(then_out)))
    }
}

impl Transport for SshTransport {
    fn label(&self) -> &str {
        &self.label
    }

    fn run_chained<'a>(
        &'a self,
        first: &'a CommandSpec,
        then: super::Then<'a>,
    ) -> BoxFuture<'a, Result<super::Chained, TransportError>> {
        Box::pin(self.chained_inner(first, then))
    }

    fn run_streaming<'a>(
        &'a self,
        cmd: &'a CommandSpec,
        sink: Option<OutputSender>,
    ) -> BoxFuture<'a, Result<Output, TransportError>> {
        Box::pin(self.run_inner(cmd, sink))
    }

    fn commands_run(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.disconnect())
    }

    fn stage<'a>(
        &'a self,
        dir: Option<&'a str>,
        content: &'a mut (dyn tokio::io::AsyncRead + Unpin + Send),
        progress: sftp::Progress<'a>,
    ) -> BoxFuture<'a, Result<Staged, TransportError>> {
        Box::pin(self.stage_inner(dir, content, progress))
    }

    fn fetch<'a>(
        &'a self,
        path: &'a str,
        out: &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        progress: sftp::Progress<'a>,
    ) -> BoxFuture<'a, Result<Fetched, TransportError>> {
        Box::pin(self.fetch_inner(path, out, progress))
    }
}

/// The channel of a command in flight. Dropped while it still holds one, the command was
/// abandoned (a task timeout, an interrupted run dropped its future): the channel is closed so
/// that the command's watchdog kills it on the host.
struct Abandoned(Option<russh::Channel<client::Msg>>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let (Some(channel), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = channel.close().await;
            });
        }
    }
}

/// What a channel message means for the command it belongs to.
enum Flow {
    More,
    Closed,
    Refused,
}

/// Adds one channel message to a command's output and exit status; `emit` sees output as it
/// arrives.
fn take(
    msg: Option<ChannelMsg>,
    stdout: &mut Vec<u8>,
    stderr: &mut Vec<u8>,
    exit: &mut Option<ExitStatus>,
    emit: impl Fn(OutputStream, &[u8]),
) -> Flow {
    match msg {
        Some(ChannelMsg::Data { data }) => {
            stdout.extend_from_slice(&data);
            emit(OutputStream::Stdout, &data);
        }
        Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
            stderr.extend_from_slice(&data);
            emit(OutputStream::Stderr, &data);
        }
        Some(ChannelMsg::ExitStatus { exit_status }) => {
            *exit = Some(ExitStatus::Code(exit_status as i32))
        }
        Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
            *exit = Some(ExitStatus::Signal(sig_name(&signal_name)))
        }
        Some(ChannelMsg::Failure) => return Flow::Refused,
        Some(ChannelMsg::Close) | None => return Flow::Closed,
        Some(_) => {}
    }
    Flow::More
}

enum KeyProblem {
    Encrypted,
    Other(String),
}

/// The certificates to offer with the identity at `path` (public key `key`): `NAME-cert.pub`
/// beside it, then the configured ones (taken from `configured`) that certify the same key.
/// A certificate beside it that certifies another key is reported in `tried`, not offered.
fn certificates_for(
    path: &Path,
    key: &PublicKey,
    configured: &mut Vec<(PathBuf, Certificate)>,
    tried: &mut Vec<String>,
) -> Vec<(String, Certificate)> {
    let mut found = Vec::new();
    let beside = certificate::beside(path);
    if beside.exists() {
        let desc = format!("certificate {}", beside.display());
        match certificate::read(&beside) {
            Err(why) => tried.push(format!("{desc} ({why})")),
            Ok(cert) if cert.public_key() == key.key_data() => found.push((desc, cert)),
            Ok(cert) => tried.push(format!(
                "{desc} (not offered: it certifies the key {}, not the identity's key {})",
                certificate::fingerprint(cert.public_key()),
                known_hosts::fingerprint(key)
            )),
        }
    }
    found.extend(take_certified(configured, key));
    found
}

/// Removes from `configured` the certificates of `key`, described for `tried`.
fn take_certified(
    configured: &mut Vec<(PathBuf, Certificate)>,
    key: &PublicKey,
) -> Vec<(String, Certificate)> {
    let (mine, rest) = std::mem::take(configured)
        .into_iter()
        .partition(|(_, c)| c.public_key() == key.key_data());
    *configured = rest;
    mine.into_iter()
        .map(|(path, cert)| (format!("certificate {}", path.display()), cert))
        .collect()
}

/// The `tried` entry of a certificate the server refused, with what the client can see of why.
fn refused_certificate(desc: &str, cert: &Certificate, user: &str) -> String {
    match certificate::user_problem(cert, user, certificate::now()) {
        Some(why) => format!("{desc} (refused: {why})"),
        None => format!(
            "{desc} (refused by the server: does its TrustedUserCAKeys hold the CA {}?)",
            certificate::fingerprint(cert.signature_key())
        ),
    }
}

/// Asks the server for a key type already in known_hosts first.
fn prefer_recorded(recorded: &[Algorithm]) -> Vec<Algorithm> {
    let same = |a: &Algorithm, b: &Algorithm| a == b || (a.clone().is_rsa() && b.clone().is_rsa());
    let all = Preferred::DEFAULT.key.to_vec();
    let (mut first, rest): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|a| recorded.iter().any(|r| same(r, a)));
    first.extend(rest);
    first
}

fn sig_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(s) => s.clone(),
    }
}

fn describe_ssh_error(e: &russh::Error) -> String {
    match e {
        russh::Error::Disconnect | russh::Error::HUP => "the server closed the connection".into(),
        russh::Error::IO(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// The russh client callbacks: only host key verification needs us.
struct Client {
    label: String,
    host_name: String,
    port: u16,
    known: Arc<KnownHosts>,
    policy: HostKeyPolicy,
    searched: Vec<PathBuf>,
    record_file: Option<PathBuf>,
}

#[derive(Debug)]
enum HandlerError {
    Ssh(russh::Error),
    HostKey(Box<TransportError>),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

impl Client {
    fn verify_certificate(&self, cert: &Certificate) -> Result<(), TransportError> {
        let refuse = |reason| TransportError::HostCertificate {
            host: self.label.clone(),
            lookup: known_hosts::lookup_name(&self.host_name, self.port),
            reason,
        };
        let now = certificate::now();
        match self
            .known
            .check_certificate(&self.host_name, self.port, cert, now)
        {
            CertVerdict::Trusted => Ok(()),
            CertVerdict::Revoked(why) => Err(refuse(why)),
            // As with OpenSSH, the key inside may still be recorded by itself. A failed
            // certificate is never recorded under accept-new: the CA was meant to vouch here.
            CertVerdict::Untrusted(why) => {
                let key = PublicKey::new(cert.public_key().clone(), "");
                match self.known.check(&self.host_name, self.port, &key) {
                    Verdict::Trusted => Ok(()),
                    _ => Err(refuse(why)),
                }
            }
        }
    }

    fn verify(&self, key: &PublicKey) -> Result<(), TransportError> {
        let lookup = known_hosts::lookup_name(&self.host_name, self.port);
        let key_type = key.algorithm().as_str().to_string();
        let fingerprint = known_hosts::fingerprint(key);
        match self.known.check(&self.host_name, self.port, key) {
            Verdict::Trusted => Ok(()),
            Verdict::Revoked(location) => Err(TransportError::RevokedHostKey {
                host: self.label.clone(),
                fingerprint,
                location,
            }),
            Verdict::Changed(recorded) => Err(TransportError::ChangedHostKey {
                host: self.label.clone(),
                lookup,
                presented: format!("{key_type} {fingerprint}"),
                expected: recorded
                    .iter()
                    .map(|r| format!("{} {}", r.key_type, r.fingerprint))
                    .collect::<Vec<_>>()
                    .join(", "),
                location: recorded
                    .iter()
                    .map(|r| r.location.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            Verdict::Unknown => {
                let record = self
                    .record_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.ssh/known_hosts".into());
                match (self.policy, &self.record_file) {
                    (HostKeyPolicy::AcceptNew, Some(path)) => {
                        known_hosts::append(path, &self.host_name, self.port, key).map_err(|e| {
                            TransportError::KnownHosts {
                                host: self.label.clone(),
                                path: record,
                                reason: format!("cannot record the new host key: {e}"),
                            }
                        })
                    }
                    _ => Err(TransportError::UnknownHostKey {
                        host: self.label.clone(),
                        lookup,
                        key: format!("{key_type} {fingerprint}"),
                        known_hosts: self
                            .searched
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        record_file: record,
                    }),
                }
            }
        }
    }
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self
                .verify(key)
                .map(|()| true)
                .map_err(|e| HandlerError::HostKey(Box::new(e))),
            PublicKeyOrCertificate::Certificate(cert) => self
                .verify_certificate(cert)
                .map(|()| true)
                .map_err(|e| HandlerError::HostKey(Box::new(e))),
        }
    }
}

/// A word no other command line on the host carries: the `$0` of a command's shells.
fn kill_tag() -> String {
    let mut bytes = [0u8; 8];
    // The OS RNG failing is not worth failing a command over; the clock still separates tags.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .to_le_bytes();
    }
    format!("nexus-{}", u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_key_types_come_first() {
        let order = prefer_recorded(&[Algorithm::Rsa { hash: None }]);
        assert!(order[0].clone().is_rsa());
        assert_eq!(order.len(), Preferred::DEFAULT.key.len());
        assert_eq!(prefer_recorded(&[])[0], Algorithm::Ed25519);
    }
}
