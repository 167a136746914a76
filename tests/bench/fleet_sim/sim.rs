//! The simulated hosts: one russh server in this process, with one listener per host.
//!
//! Two kinds of connection:
//! - recording ([`serve_recorder`]): a transparent proxy to one real sshd of the test harness;
//!   every exec channel is relayed byte for byte and kept as a [`Raw`] exchange;
//! - replaying ([`serve_fleet`]): each request is recognised by nexus's wire protocol
//!   ([`Request`]) and answered with what the real host answered to the same request, in the
//!   same order. A request never recorded is answered with a failure and counted, so a run
//!   that meets one fails instead of passing on made-up output.
//!
//! Requests are identical across the simulated hosts (same workload, same facts script, no
//! per-host value in any script or input), so they are keyed by their bytes as they are; the
//! bench checks that every host's requests were found.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, client};
use tokio::net::TcpListener;

/// One exec channel as the real host saw it.
#[derive(Default, Clone)]
pub struct Raw {
    pub line: Vec<u8>,
    pub stdin: Vec<u8>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<u32>,
}

/// What the host sends back for one request.
pub struct Answer {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// `None` for the first script of a chained session, which the shell outlives.
    exit: Option<u32>,
}

/// A request in nexus's protocol (src/transport/wrap.rs): every command runs under the
/// watchdog, whose stdin is a length line and that many bytes; a chained session (facts, then
/// the probe) answers its first script at once, then reads a length line and a script, which
/// is itself a watched command.
enum Request<'a> {
    /// The first script of a chained session: the exec line alone.
    ChainedFirst { line: &'a [u8] },
    /// The script sent after it (empty: none) and that script's framed input.
    ChainedThen {
        line: &'a [u8],
        script: &'a [u8],
        input: &'a [u8],
    },
    /// A watched command and its framed input.
    Watched { line: &'a [u8], input: &'a [u8] },
}

type Key = [u8; 32];

impl Request<'_> {
    fn key(&self) -> Key {
        let parts: &[&[u8]] = match self {
            Request::ChainedFirst { line } => &[&b"first"[..], line],
            Request::ChainedThen {
                line,
                script,
                input,
            } => &[&b"then"[..], line, script, input],
            Request::Watched { line, input } => &[&b"watched"[..], line, input],
        };
        let mut h = blake3::Hasher::new();
        for p in parts {
            let p = match nonce(p) {
                Some(_) => std::borrow::Cow::Owned(replace_nonce(p, &[b'0'; NONCE_LEN])),
                None => std::borrow::Cow::Borrowed(*p),
            };
            let p = zero_temp_names(&p);
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(&p);
        }
        *h.finalize().as_bytes()
    }

    /// The request's marker of [`nonce`], if it has one.
    fn nonce(&self) -> Option<&[u8]> {
        match self {
            Request::ChainedFirst { line } => nonce(line),
            Request::ChainedThen {
                line,
                script,
                input,
            } => nonce(line).or(nonce(script)).or(nonce(input)),
            Request::Watched { line, input } => nonce(line).or(nonce(input)),
        }
    }

    /// Writes the request to `$NEXUS_FLEET_DUMP/NAME` when that is set, to compare by hand with
    /// what was recorded.
    fn dump(&self, name: &str) {
        let Some(dir) = std::env::var_os("NEXUS_FLEET_DUMP") else {
            return;
        };
        let text = match self {
            Request::ChainedFirst { line } => line.to_vec(),
            Request::ChainedThen {
                line,
                script,
                input,
            } => [*line, b"\n--script--\n", script, b"\n--input--\n", input].concat(),
            Request::Watched { line, input } => [*line, b"\n--input--\n", input].concat(),
        };
        let _ = std::fs::write(Path::new(&dir).join(name), text);
    }
}

/// The marker pre-image capture puts around file contents (src/exec/preimage.rs): `NEXUSPRE`
/// and 16 hex digits hashed from the clock and nexus's pid, so it differs between runs, and the
/// host echoes it. It is the only part of a request that differs between the recorded host and
/// a simulated one: requests are keyed with it zeroed, and an answer carries the asker's marker
/// in place of the recorded one.
const NONCE: &[u8] = b"NEXUSPRE";
const NONCE_LEN: usize = NONCE.len() + 16;

fn nonce_at(b: &[u8], i: usize) -> bool {
    b[i..].starts_with(NONCE)
        && b.len() >= i + NONCE_LEN
        && b[i + NONCE.len()..i + NONCE_LEN]
            .iter()
            .all(u8::is_ascii_hexdigit)
}

fn nonce(b: &[u8]) -> Option<&[u8]> {
    (0..b.len())
        .find(|&i| nonce_at(b, i))
        .map(|i| &b[i..i + NONCE_LEN])
}

/// `b` with every marker replaced by `with`.
fn replace_nonce(b: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if nonce_at(b, i) {
            out.extend_from_slice(with);
            i += NONCE_LEN;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Batched file writes name their temporary files `.nexus-$$-` and 12 random hex digits, one
/// draw per command (src/resources/file_write.rs); the host never echoes them, so requests are
/// keyed with them zeroed.
const TEMP: &[u8] = b".nexus-$$-";
const TEMP_RANDOM: usize = 12;

fn zero_temp_names(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let at = |i: usize| {
        b[i..].starts_with(TEMP)
            && b.len() >= i + TEMP.len() + TEMP_RANDOM
            && b[i + TEMP.len()..i + TEMP.len() + TEMP_RANDOM]
                .iter()
                .all(u8::is_ascii_hexdigit)
    };
    if !(0..b.len()).any(at) {
        return std::borrow::Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if at(i) {
            out.extend_from_slice(TEMP);
            out.extend_from_slice(&[b'0'; TEMP_RANDOM]);
            i += TEMP.len() + TEMP_RANDOM;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The marker token of a chained session's exec line (`wrap::chained`), which makes it one.
fn chained_token(line: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(line).ok()?;
    if !s.contains("exec sh -c \"$_nx_s\"") {
        return None;
    }
    let at = s.find("@@NEXUSC")? + 2;
    Some(
        s[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect(),
    )
}

/// A length line and that many bytes at the start of `buf`: the bytes and where they end;
/// `None` until all of it arrived.
fn frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let bad = || {
        format!(
            "stdin does not start with a length line: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        )
    };
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > 20 || !buf.iter().all(u8::is_ascii_digit) {
            Err(bad())
        } else {
            Ok(None)
        };
    };
    let n: usize = std::str::from_utf8(&buf[..nl])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let end = nl + 1 + n;
    Ok((buf.len() >= end).then(|| (&buf[nl + 1..end], end)))
}

/// The request after the first script of a chained session, once its input is complete.
fn chained_then<'a>(line: &'a [u8], stdin: &'a [u8]) -> Result<Option<Request<'a>>, String> {
    let Some((script, used)) = frame(stdin)? else {
        return Ok(None);
    };
    if script.is_empty() {
        return Ok(Some(Request::ChainedThen {
            line,
            script,
            input: &[],
        }));
    }
    Ok(
        frame(&stdin[used..])?.map(|(input, _)| Request::ChainedThen {
            line,
            script,
            input,
        }),
    )
}

fn watched<'a>(line: &'a [u8], stdin: &'a [u8]) -> Result<Option<Request<'a>>, String> {
    Ok(frame(stdin)?.map(|(input, _)| Request::Watched { line, input }))
}

/// The answers recorded for one nexus command, by request, in the order the host gave them.
#[derive(Default)]
pub struct Table {
    answers: HashMap<Key, Vec<Arc<Answer>>>,
    /// Requests per host (one connection).
    pub requests: usize,
}

impl Table {
    /// Turns recorded exchanges into answers by request (`name` names their dumps).
    pub fn from_raw(name: &str, raws: &[Raw]) -> Result<Table, String> {
        let mut t = Table::default();
        for r in raws {
            let exit = r.exit;
            if let Some(token) = chained_token(&r.line) {
                let split = |s: &[u8]| {
                    nexus::transport::wrap::chained_split(s, &token).map(|(_, _, end)| end)
                };
                let (Some(o), Some(e)) = (split(&r.stdout), split(&r.stderr)) else {
                    return Err("a chained session without its markers".into());
                };
                t.add(
                    name,
                    Request::ChainedFirst { line: &r.line },
                    Answer {
                        stdout: r.stdout[..o].to_vec(),
                        stderr: r.stderr[..e].to_vec(),
                        exit: None,
                    },
                );
                let then = chained_then(&r.line, &r.stdin)?
                    .ok_or("a chained session's input ended early")?;
                t.add(
                    name,
                    then,
                    Answer {
                        stdout: r.stdout[o..].to_vec(),
                        stderr: r.stderr[e..].to_vec(),
                        exit,
                    },
                );
            } else {
                let req = watched(&r.line, &r.stdin)?.ok_or("a command's input ended early")?;
                t.add(
                    name,
                    req,
                    Answer {
                        stdout: r.stdout.clone(),
                        stderr: r.stderr.clone(),
                        exit,
                    },
                );
            }
        }
        Ok(t)
    }

    fn add(&mut self, name: &str, req: Request<'_>, a: Answer) {
        req.dump(&format!("{name}-{}", self.requests));
        self.answers.entry(req.key()).or_default().push(Arc::new(a));
        self.requests += 1;
    }
}

/// What every connection shares: the table being replayed, what was recorded, and counts.
pub struct Shared {
    pub table: RwLock<Arc<Table>>,
    pub recorded: Mutex<Vec<Raw>>,
    /// Requests answered from the table, per host.
    pub answered: Vec<AtomicU64>,
    /// Requests not in the table (each one failed on purpose).
    pub unknown: AtomicU64,
    /// The public key nexus must log in with.
    pub user_key: PublicKey,
}

impl Shared {
    pub fn new(hosts: usize, user_key: PublicKey) -> Arc<Shared> {
        Arc::new(Shared {
            table: RwLock::new(Arc::new(Table::default())),
            recorded: Mutex::new(Vec::new()),
            answered: (0..hosts).map(|_| AtomicU64::new(0)).collect(),
            unknown: AtomicU64::new(0),
            user_key,
        })
    }

    /// Replays `t` from now on, with the counts at zero.
    pub fn replay(&self, t: Arc<Table>) {
        *self.table.write().expect("table lock") = t;
        for a in &self.answered {
            a.store(0, Ordering::Relaxed);
        }
        self.unknown.store(0, Ordering::Relaxed);
    }
}

pub fn server_config(host_key: PrivateKey) -> Arc<server::Config> {
    Arc::new(server::Config {
        keys: vec![host_key],
        // Rejections are not part of what is measured: do not slow them down.
        auth_rejection_time: std::time::Duration::ZERO,
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        // nexus keeps each connection for the whole run, idle while others are worked on.
        inactivity_timeout: None,
        nodelay: true,
        ..server::Config::default()
    })
}

/// Host `i`'s loopback address: 127.100.0.1 upwards, skipping the .0 and .255 of each /24.
pub fn host_ip(i: usize) -> Ipv4Addr {
    let (net, last) = (i / 254, (i % 254) as u8 + 1);
    Ipv4Addr::new(127, 100 + (net / 256) as u8, (net % 256) as u8, last)
}

/// Binds one listener per host on `host_ip(i):port`, all on one port as real hosts share 22:
/// `port`, or one free on every address (a port taken on any address is given up for another).
pub async fn bind_fleet(n: usize, port: Option<u16>) -> Vec<TcpListener> {
    'attempt: for _ in 0..20 {
        let first = TcpListener::bind((host_ip(0), port.unwrap_or(0)))
            .await
            .expect("bind the first simulated host");
        let port = first.local_addr().expect("local address").port();
        let mut all = vec![first];
        for i in 1..n {
            match TcpListener::bind((host_ip(i), port)).await {
                Ok(l) => all.push(l),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port == 0 => {
                    continue 'attempt;
                }
                Err(e) => panic!("bind {}:{port}: {e}", host_ip(i)),
            }
        }
        return all;
    }
    panic!("no port was free on every simulated host's address in 20 tries");
}

/// Serves host `i` on `listeners[i]` for one nexus run. nexus holds a host's connection only
/// while it works there (a plan closes it once the host is planned; a large apply may connect
/// twice, for its re-probe and for its steps), so the simulator holds one listener per host and
/// a descriptor per connection nexus has open. Abort the returned tasks after the run.
pub fn serve_fleet(
    listeners: Vec<TcpListener>,
    config: &Arc<server::Config>,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let table = shared.table.read().expect("table lock").clone();
    listeners
        .into_iter()
        .enumerate()
        .map(|(host, listener)| {
            let (config, shared, table) = (config.clone(), shared.clone(), table.clone());
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let _ = socket.set_nodelay(true);
                    let handler = Replayer {
                        host,
                        shared: shared.clone(),
                        table: table.clone(),
                        seen: HashMap::new(),
                        chans: HashMap::new(),
                    };
                    let config = config.clone();
                    tokio::spawn(async move {
                        if let Ok(session) = server::run_stream(config, socket, handler).await {
                            let _ = session.await;
                        }
                    });
                }
            })
        })
        .collect()
}

/// An exec channel waiting for its input.
struct Pending {
    line: Vec<u8>,
    stdin: Vec<u8>,
    chained: bool,
}

/// One replayed connection (one host, one nexus run).
struct Replayer {
    host: usize,
    shared: Arc<Shared>,
    table: Arc<Table>,
    /// How often each request was answered on this connection: its next answer is the next
    /// one recorded (a command that runs twice may get two different answers).
    seen: HashMap<Key, usize>,
    chans: HashMap<ChannelId, Pending>,
}

impl Replayer {
    /// Sends the recorded answer to `req`; false when the channel is closed after it.
    fn answer(&mut self, id: ChannelId, req: Request<'_>, session: &mut Session) -> bool {
        let key = req.key();
        let next = self.seen.get(&key).copied().unwrap_or_default();
        let Some(a) = self
            .table
            .answers
            .get(&key)
            .and_then(|v| v.get(next))
            .cloned()
        else {
            let (what, line) = match req {
                Request::ChainedFirst { line } => ("first script of a chained session", line),
                Request::ChainedThen { line, .. } => {
                    ("script after a chained session's first", line)
                }
                Request::Watched { line, .. } => ("command", line),
            };
            req.dump(&format!("unknown-{}", self.host));
            self.fail(
                id,
                &format!("no recorded answer for this {what}"),
                line,
                session,
            );
            return false;
        };
        self.seen.insert(key, next + 1);
        self.shared.answered[self.host].fetch_add(1, Ordering::Relaxed);
        let with = |b: &[u8]| match req.nonce() {
            Some(n) => replace_nonce(b, n),
            None => b.to_vec(),
        };
        if !a.stdout.is_empty() {
            let _ = session.data(id, with(&a.stdout));
        }
        if !a.stderr.is_empty() {
            let _ = session.extended_data(id, 1, with(&a.stderr));
        }
        if let Some(code) = a.exit {
            let _ = session.exit_status_request(id, code);
            let _ = session.eof(id);
            let _ = session.close(id);
            return false;
        }
        true
    }

    /// Fails the channel loudly: a request the sim cannot answer truthfully.
    fn fail(&self, id: ChannelId, why: &str, line: &[u8], session: &mut Session) {
        self.shared.unknown.fetch_add(1, Ordering::Relaxed);
        let line = String::from_utf8_lossy(&line[..line.len().min(120)]);
        eprintln!("fleet sim: host {}: {why} ({line}…)", self.host);
        let _ = session.extended_data(id, 1, format!("fleet sim: {why}\n").into_bytes());
        let _ = session.exit_status_request(id, 97);
        let _ = session.eof(id);
        let _ = session.close(id);
    }
}

impl server::Handler for Replayer {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(
            if key.public_key.key_data() == self.shared.user_key.key_data() {
                Auth::Accept
            } else {
                Auth::reject()
            },
        )
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(id)?;
        let chained = chained_token(data).is_some();
        self.chans.insert(
            id,
            Pending {
                line: data.to_vec(),
                stdin: Vec::new(),
                chained,
            },
        );
        if chained && !self.answer(id, Request::ChainedFirst { line: data }, session) {
            self.chans.remove(&id);
        }
        Ok(())
    }

    async fn data(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(mut p) = self.chans.remove(&id) else {
            return Ok(());
        };
        p.stdin.extend_from_slice(data);
        let parsed = if p.chained {
            chained_then(&p.line, &p.stdin)
        } else {
            watched(&p.line, &p.stdin)
        };
        match parsed {
            Ok(Some(req)) => {
                self.answer(id, req, session);
            }
            Ok(None) => {
                self.chans.insert(id, p);
            }
            Err(why) => self.fail(id, &why, &p.line, session),
        }
        Ok(())
    }
}

/// Accepts connections on `listener` and relays each to the sshd at `upstream`, logging in as
/// `user` with `key`; every exec channel ends up in `shared.recorded`.
pub fn serve_recorder(
    listener: TcpListener,
    config: Arc<server::Config>,
    shared: Arc<Shared>,
    upstream: SocketAddr,
    user: String,
    key: &Path,
) {
    let key = Arc::new(russh::keys::load_secret_key(key, None).expect("load the user key"));
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let handler = Recorder {
                shared: shared.clone(),
                upstream,
                user: user.clone(),
                key: key.clone(),
                up: None,
                chans: HashMap::new(),
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, socket, handler).await {
                    let _ = session.await;
                }
            });
        }
    });
}

/// Trusts the harness's own sshd, which this process just started on loopback.
struct Upstream;

impl client::Handler for Upstream {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

struct Recorder {
    shared: Arc<Shared>,
    upstream: SocketAddr,
    user: String,
    key: Arc<PrivateKey>,
    up: Option<client::Handle<Upstream>>,
    chans: HashMap<ChannelId, (russh::ChannelWriteHalf<client::Msg>, Arc<Mutex<Raw>>)>,
}

impl Recorder {
    async fn upstream(&mut self) -> Result<&client::Handle<Upstream>, russh::Error> {
        if self.up.is_none() {
            let config = Arc::new(client::Config::default());
            let mut h = client::connect(config, self.upstream, Upstream).await?;
            let auth = h
                .authenticate_publickey(
                    self.user.clone(),
                    PrivateKeyWithHashAlg::new(self.key.clone(), None),
                )
                .await?;
            assert!(
                auth.success(),
                "the harness sshd refused the recorder's login"
            );
            self.up = Some(h);
        }
        Ok(self.up.as_ref().expect("connected above"))
    }
}

impl server::Handler for Recorder {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ch = self.upstream().await?.channel_open_session().await?;
        ch.exec(true, data).await?;
        let (mut read, write) = ch.split();
        let raw = Arc::new(Mutex::new(Raw {
            line: data.to_vec(),
            ..Raw::default()
        }));
        let (handle, shared, log) = (session.handle(), self.shared.clone(), raw.clone());
        tokio::spawn(async move {
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        log.lock().expect("raw").stdout.extend_from_slice(&data);
                        let _ = handle.data(id, data).await;
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        log.lock().expect("raw").stderr.extend_from_slice(&data);
                        let _ = handle.extended_data(id, 1, data).await;
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        log.lock().expect("raw").exit = Some(exit_status);
                        let _ = handle.exit_status_request(id, exit_status).await;
                    }
                    ChannelMsg::Eof => {
                        let _ = handle.eof(id).await;
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            let _ = handle.close(id).await;
            let raw = log.lock().expect("raw").clone();
            shared.recorded.lock().expect("recorded").push(raw);
        });
        self.chans.insert(id, (write, raw));
        session.channel_success(id)?;
        Ok(())
    }

    async fn data(
        &mut self,
        id: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((write, raw)) = self.chans.get(&id) {
            raw.lock().expect("raw").stdin.extend_from_slice(data);
            write.data_bytes(data.to_vec()).await?;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((write, _)) = self.chans.get(&id) {
            let _ = write.eof().await;
        }
        Ok(())
    }
}
