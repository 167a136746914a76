//! Builds the shell text and stdin stream that carry a [`CommandSpec`] to a host.
//!
//! Pure functions, tested by equality; both transports use them, so local and SSH commands
//! behave the same. Secrets (env values, the sudo password) are placed on stdin, ahead of the
//! command's own stdin, and never into the command line, which other users can read in `ps`.

use super::CommandSpec;
use crate::shell::quote;

/// Why a [`CommandSpec`] cannot be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    #[error(
        "a script of {len} bytes is too long for a command line and cannot share stdin with the command's input"
    )]
    ScriptTooLong { len: usize },
    #[error("environment variable name {name:?} is not a valid shell identifier")]
    EnvName { name: String },
    #[error("environment variable {name} contains a NUL byte")]
    EnvNul { name: String },
    #[error("become user is empty")]
    EmptyBecomeUser,
    #[error("sudo password contains a newline or NUL byte")]
    SudoPassword,
}

/// What to hand to `sh -c` and what to write to its stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// Script for `sh -c` (no secrets in it).
    pub script: String,
    /// Bytes for stdin: sudo password line, env prelude, then the command's own stdin.
    pub stdin: Vec<u8>,
    /// A word that names the command's shells on the host (their `$0`), so that what it
    /// started can be found and killed when it times out ([`kill_tagged`]).
    pub tag: Option<String>,
}

impl Wrapped {
    /// The exec request for an SSH server, whose login shell may not be POSIX: start `sh`.
    /// `exec` makes it the process sshd watches, so a signal death is reported as such.
    pub fn ssh_command_line(&self) -> String {
        match &self.tag {
            Some(tag) => format!("exec sh -c {} {tag}", quote(&self.script)),
            None => format!("exec sh -c {}", quote(&self.script)),
        }
    }

    /// Whether [`Wrapped::ssh_command_line`] stays within [`COMMAND_LINE_MAX`]. Quoting makes
    /// a byte at most four (`\` alone between bytes single quotes must hold becomes `"\\"`),
    /// so a script under a quarter of the limit is not quoted only to be measured: a plan's
    /// chained sessions send their scripts unquoted and never build that line. (A script with a
    /// NUL quotes to a fixed refusal of under a hundred bytes: it fits either way.)
    fn fits_command_line(&self) -> bool {
        let tag = self.tag.as_ref().map_or(0, |t| t.len() + 1);
        let bound = 4 * self.script.len() + "exec sh -c ''".len() + tag;
        bound <= COMMAND_LINE_MAX || self.ssh_command_line().len() <= COMMAND_LINE_MAX
    }
}

// Reads `NAME=\ooo\ooo...` lines until an empty one. Values are octal-escaped printf formats
// so any byte but NUL survives `read`; the trailing "." keeps `$(...)` from eating newlines.
const ENV_READER: &str = r#"while IFS= read -r _nx_l && [ -n "$_nx_l" ]; do _nx_v=$(printf "${_nx_l#*=}."); export "${_nx_l%%=*}=${_nx_v%.}"; done; unset _nx_l _nx_v"#;

/// The longest command line nexus builds. A single argument may not exceed 128 KiB on Linux
/// (MAX_ARG_STRLEN), and the command line reaches the host's shell as one; the rest is headroom.
pub const COMMAND_LINE_MAX: usize = 120 * 1024;

/// Wraps `cmd` into a script plus stdin. Errors describe an invalid spec.
///
/// A probe of a few hundred resources makes a script too long for one argument, once quoted
/// (twice under sudo). Such scripts travel on stdin, after the env prelude, and the command line
/// only loads them; shorter ones stay on the command line, which saves the host a `head` and an
/// `eval` of the whole text.
pub fn wrap(cmd: &CommandSpec) -> Result<Wrapped, WrapError> {
    wrap_tagged(cmd, None)
}

/// [`wrap`], with `tag` as the `$0` of the command's shells (the one sshd starts and, under
/// sudo, the one sudo starts, which may be in a session of its own). `tag` must be a plain word.
pub fn wrap_tagged(cmd: &CommandSpec, tag: Option<&str>) -> Result<Wrapped, WrapError> {
    wrap_as(cmd, tag, None)
}

/// What a watchdog kills when its client is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillScope {
    /// Every process in the command's session: sshd starts each channel's command in a session
    /// of its own, and this also reaches what sudo runs in a new process group.
    Session,
    /// The command's process group: a local command shares nexus's session (and terminal), so
    /// the local transport starts it in a process group of its own and the watchdog kills that.
    ProcessGroup,
}

/// [`wrap_tagged`] under a watchdog (see [`watched`]): for a transport that keeps the command's
/// stdin open until it has ended, so that the command dies with the connection.
pub fn wrap_watched(cmd: &CommandSpec, tag: Option<&str>) -> Result<Wrapped, WrapError> {
    wrap_as(cmd, tag, Some(KillScope::Session))
}

/// [`wrap_watched`] for a command run on this machine in a process group of its own.
pub fn wrap_watched_local(cmd: &CommandSpec) -> Result<Wrapped, WrapError> {
    wrap_as(cmd, None, Some(KillScope::ProcessGroup))
}

fn wrap_as(
    cmd: &CommandSpec,
    tag: Option<&str>,
    watch: Option<KillScope>,
) -> Result<Wrapped, WrapError> {
    // Quoting never shortens a script: one already over the limit goes on stdin without being
    // wrapped and quoted inline first (a cold converge's write batches are hundreds of KiB).
    if cmd.script.len() > COMMAND_LINE_MAX {
        return wrap_with(cmd, true, tag, watch);
    }
    let inline = wrap_with(cmd, false, tag, watch)?;
    if inline.fits_command_line() {
        return Ok(inline);
    }
    wrap_with(cmd, true, tag, watch)
}

/// Seconds between TERM and KILL when a command is killed on its host.
pub const KILL_GRACE_SECS: u32 = 1;

// Defines `_nx_kill`: sends signal `$_nx_sig` to every process in the sessions `$_nx_ss`, except
// `$_nx_me`. Builtins only (no fork per process): it runs on every host a watchdog fires on.
const KILL_SESSIONS: &str = r#"_nx_kill() {
  for _nx_d in /proc/[0-9]*; do
    IFS= read -r _nx_st 2>/dev/null < "$_nx_d/stat" || continue
    set -- ${_nx_st##*\)}
    for _nx_s in $_nx_ss; do
      [ "${4:-}" = "$_nx_s" ] && [ "${_nx_d#/proc/}" != "${_nx_me:-}" ] && kill -"$_nx_sig" "${_nx_d#/proc/}" 2>/dev/null
    done
  done
}"#;

/// [`KILL_SESSIONS`], or for [`KillScope::ProcessGroup`] the same over process groups: `$_nx_ss`
/// then holds process group ids, compared with field 3 of each process's stat instead of 4.
fn kill_fn(scope: KillScope) -> String {
    match scope {
        KillScope::Session => KILL_SESSIONS.to_string(),
        KillScope::ProcessGroup => KILL_SESSIONS.replace("${4:-}", "${3:-}"),
    }
}

/// TERM, a grace period, then KILL, to what [`KILL_SESSIONS`] selects.
fn term_then_kill(grace_secs: u32) -> String {
    format!("_nx_sig=TERM; _nx_kill; sleep {grace_secs}; _nx_sig=KILL; _nx_kill")
}

/// A script that kills, TERM and then after `grace_secs` KILL, every process in the sessions of
/// the processes whose last argument is `tag`: a timed-out command and all it started, even
/// what sudo runs in a session of its own. It never names `tag` whole, so it does not find
/// itself.
pub fn kill_tagged(tag: &str, grace_secs: u32) -> String {
    let (head, rest) = tag.split_at(tag.len() / 2);
    format!(
        r#"_nx_t={head}; _nx_t="$_nx_t"{rest}; _nx_ss=
for _nx_d in /proc/[0-9]*; do
  [ "$(tr '\0' '\n' < "$_nx_d/cmdline" 2>/dev/null | tail -n 1)" = "$_nx_t" ] || continue
  set -- $(cut -d')' -f2- "$_nx_d/stat" 2>/dev/null)
  [ -n "${{4:-}}" ] && _nx_ss="$_nx_ss $4"
done
[ -n "$_nx_ss" ] || exit 0
{KILL_SESSIONS}
{}; exit 0"#,
        term_then_kill(grace_secs)
    )
}

/// Wraps `inner` (a script reading its input from stdin) in a watchdog for a transport that
/// keeps the command's stdin open until the command has ended. Stdin then carries a length
/// line and that many bytes, which are `inner`'s whole input (it sees end of file after them);
/// end of file on the rest means the client is gone (nexus was killed, the connection dropped,
/// or nexus closed the channel), and the watchdog kills everything in its session, TERM then
/// KILL. A dropped SSH connection does not stop a command without a terminal; this does.
///
/// The watchdog is the left side of a pipe into `inner`: it hands `inner` its bytes, then
/// blocks on a read (no polling, no CPU). It sends its pid first, so that the right side stops
/// it once `inner` has ended. Under sudo it runs as the target user, so it may kill all that
/// `inner` started. Only `inner` writes to stderr: the shell's own notice that the watchdog
/// was killed ("Killed") goes nowhere.
fn watched(inner: &str, scope: KillScope) -> String {
    // Field 3 after the command name in /proc/PID/stat is the process group, 4 the session.
    let field = match scope {
        KillScope::Session => 4,
        KillScope::ProcessGroup => 3,
    };
    let kill = kill_fn(scope);
    format!(
        "IFS= read -r _nx_n || exit 125\n\
         case $_nx_n in '' | *[!0-9]*) exit 125 ;; esac\n\
         {{ {{ IFS= read -r _nx_st < /proc/self/stat; _nx_me=${{_nx_st%% *}}; set -- ${{_nx_st##*\\)}}; _nx_ss=${field}\n\
         printf '%s\\n' \"$_nx_me\"; head -c \"$_nx_n\"; exec >&-\n\
         while IFS= read -r _nx_x; do :; done\n\
         trap '' TERM\n\
         {kill}\n\
         {}; }} | {{ IFS= read -r _nx_w; ( {inner}\n\
         ) 2>&3 3>&-; _nx_rc=$?; kill -KILL \"$_nx_w\" 2>/dev/null; exit \"$_nx_rc\"; }}; }} 3>&2 2>/dev/null",
        term_then_kill(KILL_GRACE_SECS)
    )
}

fn wrap_with(
    cmd: &CommandSpec,
    script_on_stdin: bool,
    tag: Option<&str>,
    watch: Option<KillScope>,
) -> Result<Wrapped, WrapError> {
    let mut stdin = Vec::new();

    // `head -c` may read past the script, so a loaded script needs a command that reads nothing
    // else from stdin.
    let (script_text, script_on_stdin) = if script_on_stdin {
        if cmd.stdin.is_some() {
            return Err(WrapError::ScriptTooLong {
                len: cmd.script.len(),
            });
        }
        let loader = format!(
            "_nx_s=$(head -c {}) || exit 125\neval \"$_nx_s\"",
            cmd.script.len()
        );
        (loader, Some(cmd.script.as_bytes()))
    } else {
        (cmd.script.to_string(), None)
    };

    let inner = if cmd.env.is_empty() {
        script_text
    } else {
        let mut prelude = Vec::new();
        for (name, value) in &cmd.env {
            if !crate::shell::is_name(name) {
                return Err(WrapError::EnvName { name: name.clone() });
            }
            if value.contains('\0') {
                return Err(WrapError::EnvNul { name: name.clone() });
            }
            prelude.extend_from_slice(name.as_bytes());
            prelude.push(b'=');
            prelude.extend_from_slice(escape_printf(value.as_bytes()).as_bytes());
            prelude.push(b'\n');
        }
        prelude.push(b'\n');
        stdin.extend_from_slice(&prelude);
        format!("{ENV_READER}\n{script_text}")
    };
    if let Some(text) = script_on_stdin {
        stdin.extend_from_slice(text);
    }
    if let Some(own) = &cmd.stdin {
        stdin.extend_from_slice(own);
    }
    let inner = if let Some(scope) = watch {
        let mut framed = format!("{}\n", stdin.len()).into_bytes();
        framed.extend_from_slice(&stdin);
        stdin = framed;
        watched(&inner, scope)
    } else {
        inner
    };

    let script = match &cmd.sudo {
        None => inner,
        Some(b) => {
            if b.user.is_empty() {
                return Err(WrapError::EmptyBecomeUser);
            }
            let user = quote(&b.user);
            let run = match tag {
                Some(tag) => format!("-H -u {user} -- sh -c {} {tag}", quote(&inner)),
                None => format!("-H -u {user} -- sh -c {}", quote(&inner)),
            };
            match &b.password {
                None => format!("exec sudo -n {run}"),
                Some(pw) => {
                    if pw.contains('\n') || pw.contains('\0') {
                        return Err(WrapError::SudoPassword);
                    }
                    // The password line goes first on stdin, twice. If sudo turns out not to
                    // need it (NOPASSWD or a cached timestamp), the shell consumes both lines so
                    // the command never sees them. Otherwise the first copy is checked by a sudo
                    // of its own, whose stdin ends after it: a wrong password must not make sudo
                    // read more attempts from a stdin that stays open (see [`wrap_watched`]).
                    // `sudo -S -k` then reads exactly the second line.
                    let mut with_pw = Vec::new();
                    for _ in 0..2 {
                        with_pw.extend_from_slice(pw.as_bytes());
                        with_pw.push(b'\n');
                    }
                    with_pw.extend_from_slice(&stdin);
                    stdin = with_pw;
                    format!(
                        "IFS= read -r _nx_pw || exit 125\n\
                         if sudo -n -u {user} true 2>/dev/null; then IFS= read -r _nx_pw; exec sudo -n {run}; fi\n\
                         printf '%s\\n' \"$_nx_pw\" | sudo -S -k -p '' -u {user} true || exit 1\n\
                         exec sudo -S -k -p '' {run}"
                    )
                }
            }
        }
    };

    Ok(Wrapped {
        script,
        stdin,
        tag: tag.map(str::to_string),
    })
}

/// The host side of [`super::Transport::run_chained`] over one session: `first` (a plain script:
/// no stdin, environment or sudo; it must not `exit` or `cd`, as it runs in the session's own
/// shell, which saves a fork) with no input, its status after a marker line on
/// stdout and a marker on stderr, then a length line on stdin and that many bytes of a script
/// ([`Wrapped::script`]), which `sh -c` runs in place of the shell; the rest of stdin is that
/// script's. The script is passed as it is, not quoted and `eval`ed, so the host parses it once.
/// A length of 0 ends the session.
pub fn chained(first: &str, token: &str) -> String {
    format!(
        "{{ {first}\n}} </dev/null\n_nx_rc=$?\n\
         printf '\\n@@{token} %s\\n' \"$_nx_rc\"; printf '\\n@@{token}\\n' >&2\n\
         IFS= read -r _nx_n || exit 0\n\
         case $_nx_n in '' | *[!0-9]* | 0) exit 0 ;; esac\n\
         _nx_s=$(head -c \"$_nx_n\") || exit 125\n\
         exec sh -c \"$_nx_s\""
    )
}

/// The exec request that starts a chained session ([`chained`] under `sh -c`) and its token,
/// kept for the last first command seen: every host of a plan starts with the same facts
/// script, so it is hashed and quoted once per run rather than once per host.
#[derive(Default)]
pub struct ChainedLines(std::sync::Mutex<Option<std::sync::Arc<ChainedLine>>>);

pub struct ChainedLine {
    first: String,
    /// Marks the end of the first command's output ([`chained_split`]).
    pub token: String,
    /// The exec request.
    pub line: String,
}

impl ChainedLines {
    pub fn get(&self, first: &str) -> std::sync::Arc<ChainedLine> {
        let mut last = self.0.lock().expect("poisoned");
        if let Some(l) = last.as_ref().filter(|l| l.first == first) {
            return l.clone();
        }
        let token = format!("NEXUSC{}", &blake3::hash(first.as_bytes()).to_hex()[..16]);
        let line = format!("exec sh -c {}", quote(&chained(first, &token)));
        let l = std::sync::Arc::new(ChainedLine {
            first: first.to_string(),
            token,
            line,
        });
        *last = Some(l.clone());
        l
    }
}

/// Finds the end of `first`'s output in a chained session's stream: what came before the marker
/// (without the newline the marker's printf adds), the status the stdout marker carries (`None`
/// on stderr), and the offset where the rest begins. `None` until the whole marker line arrived.
pub fn chained_split<'a>(stream: &'a [u8], token: &str) -> Option<(&'a [u8], Option<i32>, usize)> {
    let needle = format!("\n@@{token}");
    // Only a newline can start the marker: comparing there alone, not at every offset, matters
    // because each arrival of output searches the whole stream again.
    let at = stream
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .find(|&i| stream[i..].starts_with(needle.as_bytes()))?;
    let eol = at + 1 + stream[at + 1..].iter().position(|&b| b == b'\n')?;
    let marker = String::from_utf8_lossy(&stream[at + needle.len()..eol]);
    let status = marker.trim().parse().ok();
    Some((&stream[..at], status, eol + 1))
}

fn escape_printf(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' || b == b'/' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_tag_names_the_shells_and_the_kill_script_never_names_it_whole() {
        let mut cmd = CommandSpec::new("sleep 9");
        let w = wrap_tagged(&cmd, Some("nexus-42")).unwrap();
        assert_eq!(w.ssh_command_line(), "exec sh -c 'sleep 9' nexus-42");
        cmd.sudo = Some(super::super::Become::user("root"));
        let w = wrap_tagged(&cmd, Some("nexus-42")).unwrap();
        assert_eq!(
            w.script,
            "exec sudo -n -H -u root -- sh -c 'sleep 9' nexus-42"
        );
        assert_eq!(wrap(&cmd).unwrap().tag, None);
        let k = kill_tagged("nexus-42", 1);
        assert!(!k.contains("nexus-42"), "{k}");
        assert!(k.contains("_nx_t=nexu; _nx_t=\"$_nx_t\"s-42"), "{k}");
    }

    use super::*;

    /// Starts `w` under `sh` in a session of its own (the watchdog kills its whole session), with
    /// its stdin written and left open.
    fn spawn_watched(w: &Wrapped) -> (std::process::Child, std::process::ChildStdin) {
        use std::io::Write as _;
        let mut child = std::process::Command::new("setsid")
            .args(["sh", "-c", &w.script, "nexus-test-watch"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&w.stdin).unwrap();
        (child, stdin)
    }

    #[test]
    fn a_watched_command_gets_its_input_and_dies_with_the_client() {
        use std::io::{BufRead as _, Read as _};
        // While the client holds stdin open, the command reads exactly its own input and ends
        // on its own, with its status.
        let cmd = CommandSpec::new("cat; echo \"|$A\"; echo oops >&2; exit 3")
            .env("A", "from env")
            .stdin(b"input".to_vec());
        let w = wrap_watched(&cmd, None).unwrap();
        let (mut child, stdin) = spawn_watched(&w);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "input|from env\n");
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(err, "oops\n", "only the command writes to stderr");
        assert_eq!(child.wait().unwrap().code(), Some(3));
        drop(stdin);

        // End of file on stdin while it runs: everything it started is killed.
        let dir = tempfile::tempdir().unwrap();
        let late = dir.path().join("late");
        let cmd = CommandSpec::new(format!(
            "(sleep 3; touch {}) & echo started; sleep 3",
            late.display()
        ));
        let (mut child, stdin) = spawn_watched(&wrap_watched(&cmd, None).unwrap());
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "started\n");
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(!status.success(), "{status:?}");
        std::thread::sleep(std::time::Duration::from_millis(3500));
        assert!(
            !late.exists(),
            "a process of the command outlived the client"
        );
    }

    #[test]
    fn long_scripts_travel_on_stdin_and_still_see_env() {
        let body: String = (0..4000)
            .map(|i| format!("x{i}=1 # padding padding padding\n"))
            .collect();
        let script = format!("{body}printf '%s|%s' \"$GREETING\" \"$x3999\"\n");
        assert!(script.len() > COMMAND_LINE_MAX);
        let cmd = CommandSpec::new(script.clone()).env("GREETING", "it's $(not) run");
        let w = wrap(&cmd).unwrap();
        assert!(
            w.script.len() < 4096,
            "the command line only loads the script"
        );
        // A shorter script stays on the command line; one that only quoting (a backslash
        // becomes two characters) or sudo (quoted twice) makes too long does not.
        let short = script[..script.len() / 4].to_string();
        assert!(
            wrap(&CommandSpec::new(short.clone()))
                .unwrap()
                .script
                .contains("x1=1")
        );
        let backslashes = format!("# {}", "\\".repeat(COMMAND_LINE_MAX * 2 / 3));
        assert!(backslashes.len() < COMMAND_LINE_MAX);
        assert!(wrap(&CommandSpec::new(backslashes)).unwrap().script.len() < 4096);
        let sudo = CommandSpec::new(short).sudo(Become::root());
        assert!(wrap(&sudo).unwrap().ssh_command_line().len() <= COMMAND_LINE_MAX);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&w.script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&w.stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $(not) run|1");
        // A long script cannot share stdin with the command's own input.
        let both = CommandSpec::new("#".repeat(COMMAND_LINE_MAX + 1)).stdin(b"data".to_vec());
        assert!(wrap(&both).is_err());
    }
    use crate::transport::Become;

    #[test]
    fn chained_commands_share_one_shell() {
        let first = "echo facts; echo note >&2; false";
        let second = wrap(&CommandSpec::new("cat; echo \"$X\"").env("X", "from env")).unwrap();
        let line = &second.script;
        let mut input = format!("{}\n{line}", line.len()).into_bytes();
        input.extend_from_slice(&second.stdin);
        input.extend_from_slice(b"rest of stdin\n");
        let run = |input: &[u8]| {
            use std::io::Write as _;
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(chained(first, "TOK"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            child.wait_with_output().unwrap()
        };
        let out = run(&input);
        let (before, status, rest) = chained_split(&out.stdout, "TOK").unwrap();
        assert_eq!((before, status), (&b"facts\n"[..], Some(1)));
        assert_eq!(&out.stdout[rest..], b"rest of stdin\nfrom env\n");
        let (before, status, rest) = chained_split(&out.stderr, "TOK").unwrap();
        assert_eq!(
            (before, status, &out.stderr[rest..]),
            (&b"note\n"[..], None, &b""[..])
        );
        // A zero length ends the session after the first command.
        let out = run(b"0\n");
        assert!(out.status.success());
        let (_, _, rest) = chained_split(&out.stdout, "TOK").unwrap();
        assert_eq!(out.stdout.len(), rest);
        // Half a marker is not one yet.
        assert!(chained_split(b"x\n@@TOK 0", "TOK").is_none());
    }

    #[test]
    fn plain_command_is_untouched() {
        let w = wrap(&CommandSpec::new("echo hi").stdin(b"in".to_vec())).unwrap();
        assert_eq!(w.script, "echo hi");
        assert_eq!(w.stdin, b"in");
        assert_eq!(w.ssh_command_line(), "exec sh -c 'echo hi'");
    }

    #[test]
    fn env_values_go_over_stdin() {
        let w = wrap(&CommandSpec::new("echo \"$A\"").env("A", "x y\n%")).unwrap();
        assert_eq!(w.script, format!("{ENV_READER}\necho \"$A\""));
        assert_eq!(w.stdin, b"A=x\\040y\\012\\045\n\n");
        assert!(!w.script.contains("x y"));
    }

    #[test]
    fn bad_env_is_rejected() {
        assert!(wrap(&CommandSpec::new("true").env("1A", "x")).is_err());
        assert!(wrap(&CommandSpec::new("true").env("A;B", "x")).is_err());
        assert!(wrap(&CommandSpec::new("true").env("A", "x\0")).is_err());
    }

    #[test]
    fn sudo_without_password_uses_non_interactive_sudo() {
        let w = wrap(&CommandSpec::new("id -u").sudo(Become::root())).unwrap();
        assert_eq!(w.script, "exec sudo -n -H -u root -- sh -c 'id -u'");
        assert!(w.stdin.is_empty());
    }

    #[test]
    fn sudo_password_goes_first_on_stdin() {
        let w = wrap(
            &CommandSpec::new("cat")
                .stdin(b"data".to_vec())
                .env("K", "v")
                .sudo(Become::user("app").with_password("pw")),
        )
        .unwrap();
        assert_eq!(w.stdin, b"pw\npw\nK=v\n\ndata");
        assert!(!w.script.contains("pw\n"));
        assert!(w.script.contains("\nif sudo -n -u app true 2>/dev/null; then IFS= read -r _nx_pw; exec sudo -n -H -u app -- sh -c "));
        assert!(
            w.script
                .contains("\nexec sudo -S -k -p '' -H -u app -- sh -c ")
        );
        assert!(wrap(&CommandSpec::new("x").sudo(Become::root().with_password("a\nb"))).is_err());
    }
}
