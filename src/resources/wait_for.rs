//! `wait-for`: polls a TCP port, an HTTP URL or a command from the host itself until it succeeds
//! or the deadline passes. It always plans as a run: there is no state to compare, and waiting is
//! only meaningful at apply. The whole loop is one step, so the deadline is measured on the host.

use std::time::Duration;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "lowercase")]
pub enum WaitCheck {
    Tcp { address: String, port: u16 },
    Http { url: String, status: u16 },
    Command { command: String },
}

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub check: WaitCheck,
    pub timeout: Duration,
    pub interval: Duration,
}

/// `timeout` is the common option, read by the caller: a wait takes it as its deadline.
pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>, timeout: Option<Duration>) -> Option<Spec> {
    r.expect_args(cx, 0, 0, "wait-for (tcp=\"host:port\" | http=\"http://...\" | command=\"...\") [timeout=\"60s\"] [interval=\"2s\"]");
    let tcp = r.str(cx, "tcp");
    let http = r.str(cx, "http");
    let command = r.str(cx, "command");
    let status = r.int(cx, "status", 100, 599).map(|v| v as u16);
    let interval = r.duration(cx, "interval").unwrap_or(Duration::from_secs(2));
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
    Some(Spec {
        check,
        timeout: timeout.unwrap_or(Duration::from_secs(60)),
        interval,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitFor {
    pub spec: Spec,
    pub sudo: bool,
}

pub fn resolve(w: &Spec, ctx: &ResolveCtx<'_>) -> Result<WaitFor, ResourceError> {
    Ok(WaitFor {
        spec: w.clone(),
        sudo: ctx.sudo,
    })
}

/// Python fallback for HTTP checks: prints the final status code (0 when unreachable).
const PY_HTTP: &str = "import sys, urllib.request, urllib.error
try:
    c = urllib.request.urlopen(sys.argv[1], timeout=10).status
except urllib.error.HTTPError as e:
    c = e.code
except Exception:
    c = 0
print(c)";

const PY_TCP: &str =
    "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()";

/// Whole seconds, rounded up, at least 1: what `date +%s` arithmetic can use.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// An argument for `sleep`: `2`, `0.5`.
fn sleep_arg(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        return d.as_secs().max(1).to_string();
    }
    let s = format!("{:.3}", d.as_secs_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

impl WaitFor {
    /// How messages name the check: `tcp 127.0.0.1:5432`, `http http://x/ (status 200)`.
    pub fn describe(&self) -> String {
        match &self.spec.check {
            WaitCheck::Tcp { address, port } => format!("tcp {}", host_port(address, *port)),
            WaitCheck::Http { url, status } => format!("http {url} (status {status})"),
            WaitCheck::Command { command } => format!("command `{command}`"),
        }
    }

    /// Shell text defining `check`, a function that succeeds once the condition holds and may
    /// print why it did not (the last attempt's output is shown on timeout).
    fn check_function(&self) -> String {
        let missing = |what: &str| {
            format!(
                "printf '%s\\n' {} >&2; exit 1",
                q(&format!("wait-for: {what}"))
            )
        };
        match &self.spec.check {
            WaitCheck::Tcp { address, port } => {
                let (a, p) = (q(address), port);
                format!(
                    "if command -v nc >/dev/null 2>&1; then check() {{ nc -z -w 2 {a} {p} >/dev/null 2>&1; }}\n\
                     elif command -v bash >/dev/null 2>&1; then check() {{ $to bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' {a} {p} >/dev/null 2>&1; }}\n\
                     elif command -v python3 >/dev/null 2>&1; then check() {{ $to python3 -c {} {a} {p} >/dev/null 2>&1; }}\n\
                     else {}; fi",
                    q(PY_TCP),
                    missing("cannot test a TCP port: this host has none of nc, bash and python3"),
                )
            }
            WaitCheck::Http { url, status } => {
                let u = q(url);
                format!(
                    "if command -v curl >/dev/null 2>&1; then get() {{ curl -sS -L -o /dev/null -w '%{{http_code}}' --max-time 10 {u} 2>/dev/null; }}\n\
                     elif command -v wget >/dev/null 2>&1; then get() {{ $to wget -S -O /dev/null -T 10 {u} 2>&1 | awk '$1 ~ /^HTTP\\// {{ c = $2 }} END {{ print c }}'; }}\n\
                     elif command -v python3 >/dev/null 2>&1; then get() {{ $to python3 -c {} {u} 2>/dev/null; }}\n\
                     else {}; fi\n\
                     check() {{ code=$(get); [ \"$code\" = {status} ] || {{ echo \"HTTP status ${{code:-none}}\"; return 1; }}; }}",
                    q(PY_HTTP),
                    missing("cannot fetch a URL: this host has none of curl, wget and python3"),
                )
            }
            WaitCheck::Command { command } => {
                format!("check() {{ sh -c {} </dev/null 2>&1; }}", q(command))
            }
        }
    }

    fn script(&self) -> String {
        let secs = whole_secs(self.spec.timeout).max(1);
        let failed = format!(
            "wait-for: {} did not succeed within {secs}s",
            self.describe()
        );
        format!(
            "to=; if timeout 1 true >/dev/null 2>&1; then to='timeout 10'; fi\n\
             {}\n\
             deadline=$(( $(date +%s) + {secs} ))\n\
             while :; do\n\
             if last=$(check); then exit 0; fi\n\
             if [ \"$(date +%s)\" -gt \"$deadline\" ]; then\n\
             printf '%s\\n' {} >&2\n\
             if [ -n \"$last\" ]; then printf 'last attempt: %s\\n' \"$last\" | tail -n 5 >&2; fi\n\
             exit 1\n\
             fi\n\
             sleep {}\n\
             done",
            self.check_function(),
            q(&failed),
            sleep_arg(self.spec.interval),
        )
    }
}

/// How long a wait's command may run: it polls until its own timeout and reports why it gave
/// up, so the transport must not cut it off first.
pub fn deadline(w: &Spec) -> std::time::Duration {
    w.timeout + w.interval + std::time::Duration::from_secs(15)
}

/// How plans name the wait, planned or skipped.
pub fn label(w: &Spec) -> String {
    match &w.check {
        WaitCheck::Tcp { address, port } => format!("wait-for {}", host_port(address, *port)),
        WaitCheck::Http { url, .. } => format!("wait-for {url}"),
        WaitCheck::Command { command } => {
            let line = command.lines().next().unwrap_or("");
            let cut: String = line.chars().take(60).collect();
            let more = if cut.len() < command.len() { "…" } else { "" };
            format!("wait-for {cut}{more}")
        }
    }
}

impl Resource for WaitFor {
    fn id(&self) -> String {
        match &self.spec.check {
            WaitCheck::Tcp { address, port } => format!("wait-for:tcp:{address}:{port}"),
            WaitCheck::Http { url, status } => format!("wait-for:http:{url}#{status}"),
            WaitCheck::Command { command } => {
                let head: String = command
                    .chars()
                    .take(60)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                format!(
                    "wait-for:command:{head}#{}",
                    &blake3::hash(command.as_bytes()).to_hex()[..8]
                )
            }
        }
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    fn probe(&self) -> String {
        String::new()
    }

    fn plan(&self, _observed: &Observed) -> Result<Change, ResourceError> {
        let reason = format!(
            "waits up to {} for {}",
            humantime::format_duration(self.spec.timeout),
            self.describe()
        );
        Ok(Change::new(
            Action::Run,
            reason,
            vec![Step::new(self.script(), self.sudo)],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(check: WaitCheck, timeout: u64) -> WaitFor {
        WaitFor {
            spec: Spec {
                check,
                timeout: Duration::from_secs(timeout),
                interval: Duration::from_millis(200),
            },
            sudo: false,
        }
    }

    fn run(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    #[test]
    fn tcp_script_by_equality() {
        let w = WaitFor {
            spec: Spec {
                check: WaitCheck::Tcp {
                    address: "127.0.0.1".into(),
                    port: 5432,
                },
                timeout: Duration::from_secs(30),
                interval: Duration::from_secs(2),
            },
            sudo: false,
        };
        let c = w.plan(&Observed::default()).unwrap();
        assert_eq!(c.action, Action::Run);
        assert_eq!(c.reason, "waits up to 30s for tcp 127.0.0.1:5432");
        assert_eq!(w.id(), "wait-for:tcp:127.0.0.1:5432");
        assert_eq!(w.label(), "wait-for 127.0.0.1:5432");
        assert_eq!(w.probe(), "");
        assert_eq!(
            c.steps[0].script,
            r#"to=; if timeout 1 true >/dev/null 2>&1; then to='timeout 10'; fi
if command -v nc >/dev/null 2>&1; then check() { nc -z -w 2 127.0.0.1 5432 >/dev/null 2>&1; }
elif command -v bash >/dev/null 2>&1; then check() { $to bash -c 'exec 3<>"/dev/tcp/$0/$1"' 127.0.0.1 5432 >/dev/null 2>&1; }
elif command -v python3 >/dev/null 2>&1; then check() { $to python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()' 127.0.0.1 5432 >/dev/null 2>&1; }
else printf '%s\n' 'wait-for: cannot test a TCP port: this host has none of nc, bash and python3' >&2; exit 1; fi
deadline=$(( $(date +%s) + 30 ))
while :; do
if last=$(check); then exit 0; fi
if [ "$(date +%s)" -gt "$deadline" ]; then
printf '%s\n' 'wait-for: tcp 127.0.0.1:5432 did not succeed within 30s' >&2
if [ -n "$last" ]; then printf 'last attempt: %s\n' "$last" | tail -n 5 >&2; fi
exit 1
fi
sleep 2
done"#
        );
    }

    #[test]
    fn http_check_compares_the_status() {
        let w = wait(
            WaitCheck::Http {
                url: "http://localhost:4000/health?a=1&b='x'".into(),
                status: 204,
            },
            60,
        );
        let s = w.script();
        assert!(
            s.contains(r#"curl -sS -L -o /dev/null -w '%{http_code}' --max-time 10 "http://localhost:4000/health?a=1&b='x'" 2>/dev/null"#),
            "{s}"
        );
        assert!(s.contains(r#"check() { code=$(get); [ "$code" = 204 ] || { echo "HTTP status ${code:-none}"; return 1; }; }"#), "{s}");
        assert_eq!(w.label(), "wait-for http://localhost:4000/health?a=1&b='x'");
        assert_eq!(
            w.id(),
            "wait-for:http:http://localhost:4000/health?a=1&b='x'#204"
        );
    }

    #[test]
    fn command_check_succeeds_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ready $(touch pwned)");
        let cmd = format!("test -e {}", q(flag.to_str().unwrap()));
        let w = wait(
            WaitCheck::Command {
                command: cmd.clone(),
            },
            1,
        );
        assert_eq!(w.label(), format!("wait-for {cmd}"));
        assert!(w.id().starts_with("wait-for:command:test -e "));
        let out = run(&w.script());
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("wait-for: command `{cmd}` did not succeed within 1s\n")
        );
        std::fs::write(&flag, "").unwrap();
        assert!(run(&w.script()).status.success());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // The last attempt's output explains a failure.
        let w = wait(
            WaitCheck::Command {
                command: "echo not yet; exit 3".into(),
            },
            1,
        );
        let err = String::from_utf8(run(&w.script()).stderr).unwrap();
        assert!(err.ends_with("within 1s\nlast attempt: not yet\n"), "{err}");
    }

    #[test]
    fn tcp_check_against_a_local_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let w = wait(
            WaitCheck::Tcp {
                address: "127.0.0.1".into(),
                port,
            },
            5,
        );
        assert!(run(&w.script()).status.success());
        drop(listener);
        let w = wait(
            WaitCheck::Tcp {
                address: "127.0.0.1".into(),
                port,
            },
            1,
        );
        let out = run(&w.script());
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("did not succeed within 1s"));
    }

    /// A directory of links to `tools` only, for a PATH without nc, bash or curl.
    fn only(tools: &[&str]) -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir().unwrap();
        for t in tools
            .iter()
            .chain(&["sh", "date", "sleep", "timeout", "tail", "awk"])
        {
            let found = ["/usr/bin", "/bin", "/usr/local/bin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(t))
                .find(|p| p.exists())?;
            std::os::unix::fs::symlink(found, dir.path().join(t)).unwrap();
        }
        Some(dir)
    }

    fn run_with_path(script: &str, path: &std::path::Path) -> std::process::Output {
        std::process::Command::new(path.join("sh"))
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    /// A server answering every request with `status`, for `n` requests.
    fn http_server(status: u16, n: usize) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for s in listener.incoming().take(n) {
                let Ok(mut s) = s else { continue };
                let _ = s.read(&mut [0u8; 4096]);
                let _ = write!(s, "HTTP/1.0 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        port
    }

    #[test]
    fn fallbacks_without_nc_bash_or_curl() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = wait(
            WaitCheck::Tcp {
                address: "127.0.0.1".into(),
                port,
            },
            3,
        );
        if let Some(py) = only(&["python3"]) {
            assert!(run_with_path(&tcp.script(), py.path()).status.success());
            let http = wait(
                WaitCheck::Http {
                    url: format!("http://127.0.0.1:{}/", http_server(503, 1000)),
                    status: 503,
                },
                3,
            );
            assert!(run_with_path(&http.script(), py.path()).status.success());
        }
        if let Some(wget) = only(&["wget"]) {
            let http = wait(
                WaitCheck::Http {
                    url: format!("http://127.0.0.1:{}/", http_server(200, 1000)),
                    status: 200,
                },
                3,
            );
            assert!(run_with_path(&http.script(), wget.path()).status.success());
            let http = wait(
                WaitCheck::Http {
                    url: format!("http://127.0.0.1:{}/", http_server(404, 1000)),
                    status: 200,
                },
                1,
            );
            let out = run_with_path(&http.script(), wget.path());
            assert!(
                String::from_utf8_lossy(&out.stderr).ends_with("last attempt: HTTP status 404\n")
            );
        }
        let none = only(&[]).unwrap();
        let out = run_with_path(&tcp.script(), none.path());
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "wait-for: cannot test a TCP port: this host has none of nc, bash and python3\n"
        );
    }

    #[test]
    fn durations_for_the_shell() {
        assert_eq!(whole_secs(Duration::from_millis(1500)), 2);
        assert_eq!(whole_secs(Duration::from_secs(60)), 60);
        assert_eq!(sleep_arg(Duration::from_secs(2)), "2");
        assert_eq!(sleep_arg(Duration::from_millis(500)), "0.5");
        assert_eq!(sleep_arg(Duration::from_millis(1250)), "1.25");
        assert_eq!(host_port("::1", 5432), "[::1]:5432");
        let w = wait(
            WaitCheck::Tcp {
                address: "::1".into(),
                port: 22,
            },
            1,
        );
        assert_eq!(w.label(), "wait-for [::1]:22");
    }
}
