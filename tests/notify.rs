//! Webhook delivery against a real HTTP server on 127.0.0.1, written here on tokio's TcpListener:
//! it parses each request (method, target, headers, JSON body), records it, and answers as the
//! test scripts it (a status, 429 with Retry-After, an echo of the request target, or nothing at
//! all). Covers payload shapes per template, retries with backoff, timeouts, no retry on 4xx,
//! custom headers, concurrency, and that the webhook URL's secret path never leaks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus::config::{NotifyEvent, NotifyTemplate};
use nexus::notify::{
    Changes, Delivery, EventKind, Outcome, ResolvedNotifier, RetryPolicy, RunEvent, TaskLine,
    TaskState, deliver, deliver_all_with, deliver_with, notify,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers one request.
#[derive(Debug, Clone)]
enum Reply {
    Status(u16),
    /// 429 with this `Retry-After` value.
    TooMany(&'static str),
    /// This status, with `Cannot POST <target>` as the body, as many frameworks answer.
    Echo(u16),
    /// Read the request, then never answer (until the test ends, or 30 s at most).
    Hang,
}

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Value,
    at: Instant,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Answers the n-th request with `script[n]`; the last reply repeats.
    async fn start(script: Vec<Reply>) -> Server {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let next = Arc::new(AtomicUsize::new(0));
        let log2 = log.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, script, next) = (log2.clone(), script.clone(), next.clone());
                tokio::spawn(async move {
                    let _ = handle(stream, &log, &script, &next).await;
                });
            }
        });
        Server { addr, log, accept }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn handle(
    mut s: TcpStream,
    log: &Mutex<Vec<Recorded>>,
    script: &[Reply],
    next: &AtomicUsize,
) -> std::io::Result<()> {
    // Headers: read until the blank line (bounded, as a real server would).
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    log.lock().unwrap().push(Recorded {
        method,
        target: target.clone(),
        headers,
        body,
        at: Instant::now(),
    });

    let i = next.fetch_add(1, Ordering::SeqCst);
    let reply = script[i.min(script.len() - 1)].clone();
    let (code, extra, text) = match reply {
        Reply::Status(c) => (c, String::new(), String::new()),
        Reply::TooMany(ra) => (429, format!("Retry-After: {ra}\r\n"), String::new()),
        Reply::Echo(c) => (c, String::new(), format!("Cannot POST {target}")),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Ok(());
        }
    };
    let resp = format!(
        "HTTP/1.1 {code} {}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
        reason(code),
        text.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

/// Short delays so retry tests take milliseconds; one test below checks the real default.
fn fast() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        factor: 2,
        max_delay: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(5),
        jitter: false,
    }
}

fn notifier(name: &str, url: String, template: NotifyTemplate) -> ResolvedNotifier {
    ResolvedNotifier {
        name: name.into(),
        url,
        template,
        on: vec![NotifyEvent::Always],
        headers: vec![],
        timeout: Duration::from_secs(5),
        retries: 3,
    }
}

fn event(outcome: Outcome) -> RunEvent {
    RunEvent {
        kind: EventKind::Apply,
        outcome,
        config: "nexus.kdl".into(),
        title: "nexus apply failed".into(),
        summary: "1 of 2 tasks succeeded; failed hosts: web2".into(),
        duration_ms: Some(4200),
        tasks: vec![
            TaskLine {
                name: "build".into(),
                status: TaskState::Succeeded,
            },
            TaskLine {
                name: "deploy".into(),
                status: TaskState::Failed,
            },
        ],
        hosts_failed: vec!["web2".into()],
        changes: Changes {
            create: 1,
            update: 2,
            delete: 0,
            run: 1,
        },
        run_id: Some(9),
        plan_hash: Some("feedfacefeedface".into()),
    }
}

/// Everything a user or a log could see of a delivery.
fn visible(d: &Delivery) -> String {
    format!("{}\n{}\n{d:?}", serde_json::to_string(d).unwrap(), d.line())
}

fn assert_no_secret(d: &Delivery, secrets: &[&str]) {
    let v = visible(d);
    for s in secrets {
        assert!(!v.contains(s), "{s:?} leaked in:\n{v}");
    }
}

#[tokio::test]
async fn slack_payload_shape() {
    let srv = Server::start(vec![Reply::Status(200)]).await;
    let n = notifier("slack", srv.url("/services/T/B/x"), NotifyTemplate::Slack);
    let d = deliver(&n, &event(Outcome::Failure)).await;
    assert!(d.ok, "{d:?}");
    assert_eq!((d.attempts, d.status), (1, Some(200)));
    let r = &srv.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/services/T/B/x");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("user-agent").unwrap().starts_with("nexus/"));
    assert!(
        r.body["text"]
            .as_str()
            .unwrap()
            .starts_with("nexus apply failed")
    );
    let blocks = r.body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[1]["type"], "section");
    assert!(blocks[2]["fields"].is_array());
    assert_eq!(blocks.last().unwrap()["type"], "context");
}

#[tokio::test]
async fn discord_payload_shape() {
    // Discord answers an execute-webhook call with 204 No Content.
    let srv = Server::start(vec![Reply::Status(204)]).await;
    let n = notifier(
        "discord",
        srv.url("/api/webhooks/1/tok"),
        NotifyTemplate::Discord,
    );
    let d = deliver(&n, &event(Outcome::Failure)).await;
    assert!(d.ok, "{d:?}");
    assert_eq!(d.status, Some(204));
    let b = &srv.requests()[0].body;
    assert!(b["content"].is_string());
    assert_eq!(b["allowed_mentions"]["parse"], serde_json::json!([]));
    let e = &b["embeds"][0];
    assert_eq!(e["title"], "nexus apply failed");
    assert!(e["description"].is_string());
    assert_eq!(e["color"], 0xE01E5A);
    let fields = e["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .all(|f| f["name"].is_string() && f["value"].is_string())
    );
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "deploy" && f["value"] == "failed")
    );
}

#[tokio::test]
async fn teams_payload_shape() {
    // Teams Workflows answers 202 Accepted.
    let srv = Server::start(vec![Reply::Status(202)]).await;
    let n = notifier(
        "teams",
        srv.url("/workflows/abc/triggers/manual/paths/invoke?sig=s"),
        NotifyTemplate::Teams,
    );
    let d = deliver(&n, &event(Outcome::Drift)).await;
    assert!(d.ok, "{d:?}");
    let b = &srv.requests()[0].body;
    assert_eq!(b["type"], "message");
    let a = &b["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(a["content"]["type"], "AdaptiveCard");
    assert_eq!(a["content"]["version"], "1.4");
    let body = a["content"]["body"].as_array().unwrap();
    assert_eq!(body[0]["type"], "TextBlock");
    assert_eq!(body[0]["color"], "Warning");
    assert_eq!(body[2]["type"], "FactSet");
}

#[tokio::test]
async fn generic_payload_shape() {
    let srv = Server::start(vec![Reply::Status(200)]).await;
    let n = notifier("ops", srv.url("/nexus"), NotifyTemplate::Generic);
    let d = deliver(&n, &event(Outcome::Failure)).await;
    assert!(d.ok, "{d:?}");
    let b = &srv.requests()[0].body;
    assert_eq!(b["event"], "failure");
    assert_eq!(b["format_version"], "1.0");
    assert_eq!(b["nexus_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(b["kind"], "apply");
    assert_eq!(b["config"], "nexus.kdl");
    assert_eq!(b["tasks"][1]["name"], "deploy");
    assert_eq!(b["tasks"][1]["status"], "failed");
    assert_eq!(b["hosts_failed"], serde_json::json!(["web2"]));
    assert_eq!(b["changes"]["update"], 2);
    assert_eq!(b["run_id"], 9);
    assert_eq!(b["plan_hash"], "feedfacefeedface");
    assert_eq!(b["duration_ms"], 4200);
}

#[tokio::test]
async fn retries_on_500_then_succeeds() {
    let srv = Server::start(vec![
        Reply::Status(500),
        Reply::Status(503),
        Reply::Status(200),
    ])
    .await;
    let n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert!(d.ok, "{d:?}");
    assert_eq!(d.attempts, 3);
    assert_eq!(d.status, Some(200));
    assert_eq!(d.error, None);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3);
    // Every attempt sends the same payload.
    assert_eq!(reqs[0].body, reqs[2].body);
}

#[tokio::test]
async fn default_backoff_waits_longer_between_later_attempts() {
    let srv = Server::start(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(200),
    ])
    .await;
    let n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    let d = deliver(&n, &event(Outcome::Failure)).await;
    assert!(d.ok, "{d:?}");
    assert_eq!(d.attempts, 3);
    let r = srv.requests();
    // Base 500 ms then 1 s, each jittered to between half and all of it: lower bounds only.
    assert!(r[1].at - r[0].at >= Duration::from_millis(240));
    assert!(r[2].at - r[1].at >= Duration::from_millis(490));
}

#[tokio::test]
async fn gives_up_after_retries_and_reports_the_error() {
    let srv = Server::start(vec![Reply::Status(500)]).await;
    let mut n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    n.retries = 2;
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert!(!d.ok);
    assert_eq!(d.attempts, 3);
    assert_eq!(d.status, Some(500));
    let err = d.error.as_deref().unwrap();
    assert!(err.contains("HTTP 500"), "{err}");
    assert_eq!(srv.requests().len(), 3);
    assert!(
        d.line().contains("FAILED after 3 attempts: HTTP 500"),
        "{}",
        d.line()
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for code in [400, 404] {
        let srv = Server::start(vec![Reply::Status(code)]).await;
        let n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
        let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
        assert!(!d.ok);
        assert_eq!(d.attempts, 1, "{code}");
        assert_eq!(d.status, Some(code));
        assert_eq!(srv.requests().len(), 1);
    }
}

#[tokio::test]
async fn redirects_are_neither_followed_nor_retried() {
    let srv = Server::start(vec![Reply::Status(302)]).await;
    let n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert!(!d.ok);
    assert_eq!((d.attempts, d.status), (1, Some(302)));
    assert!(d.error.unwrap().contains("must not redirect"));
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let srv = Server::start(vec![Reply::TooMany("1"), Reply::Status(200)]).await;
    let n = notifier("discord", srv.url("/h"), NotifyTemplate::Discord);
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert!(d.ok, "{d:?}");
    assert_eq!(d.attempts, 2);
    let r = srv.requests();
    // The backoff alone would have waited 20 ms.
    assert!(r[1].at - r[0].at >= Duration::from_millis(900));
}

#[tokio::test]
async fn retry_after_is_capped() {
    let srv = Server::start(vec![Reply::TooMany("3600"), Reply::Status(200)]).await;
    let n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    let policy = RetryPolicy {
        max_retry_after: Duration::from_millis(100),
        ..fast()
    };
    let start = Instant::now();
    let d = deliver_with(&n, &event(Outcome::Failure), &policy).await;
    assert!(d.ok, "{d:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn times_out_on_a_server_that_never_answers() {
    let srv = Server::start(vec![Reply::Hang]).await;
    let mut n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    n.timeout = Duration::from_millis(300);
    n.retries = 1;
    let start = Instant::now();
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    let took = start.elapsed();
    assert!(!d.ok);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.status, None);
    let err = d.error.as_deref().unwrap();
    assert!(err.contains("timed out after 300ms"), "{err}");
    // timeout × attempts + backoff, with generous slack for a loaded machine.
    assert!(took >= Duration::from_millis(550), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(srv.requests().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_retried_and_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/services/T0/B0/ClosedPortSecret");
    let mut n = notifier("ops", url, NotifyTemplate::Slack);
    n.retries = 1;
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert!(!d.ok);
    assert_eq!(d.attempts, 2);
    let err = d.error.as_deref().unwrap();
    assert!(
        err.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{err}"
    );
    assert_no_secret(&d, &["ClosedPortSecret", "/services"]);
}

#[tokio::test]
async fn custom_headers_are_sent() {
    let srv = Server::start(vec![Reply::Status(200)]).await;
    let mut n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    n.headers = vec![
        ("Authorization".into(), "Bearer t0ken".into()),
        ("X-Source".into(), "nexus".into()),
    ];
    let d = deliver(&n, &event(Outcome::Success)).await;
    assert!(d.ok, "{d:?}");
    let r = &srv.requests()[0];
    assert_eq!(r.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(r.header("x-source"), Some("nexus"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_no_secret(&d, &["t0ken"]);
}

#[tokio::test]
async fn bad_header_or_url_is_reported_without_sending() {
    let srv = Server::start(vec![Reply::Status(200)]).await;
    let mut n = notifier("ops", srv.url("/h"), NotifyTemplate::Generic);
    n.headers = vec![("X-Token".into(), "line1\nS3cretValue".into())];
    let d = deliver(&n, &event(Outcome::Failure)).await;
    assert!(!d.ok);
    assert_eq!(d.attempts, 0);
    assert_eq!(d.error.as_deref(), Some("invalid value for header X-Token"));
    assert_no_secret(&d, &["S3cretValue"]);

    for url in ["ftp://127.0.0.1/UrlSecret", "127.0.0.1/UrlSecret", ""] {
        let n = notifier("ops", url.into(), NotifyTemplate::Generic);
        let d = deliver(&n, &event(Outcome::Failure)).await;
        assert!(!d.ok);
        assert_eq!(d.attempts, 0);
        assert!(d.error.as_deref().unwrap().contains("invalid webhook URL"));
        assert_no_secret(&d, &["UrlSecret"]);
    }
    assert!(srv.requests().is_empty());
}

#[tokio::test]
async fn url_path_and_query_never_appear_in_a_delivery() {
    let path = "/services/T000/B000/PaThSeCrEt?sig=QuErYsEcReT&x=1";
    let secrets = ["PaThSeCrEt", "QuErYsEcReT", "/services/T000"];

    // A server that echoes the request target in its error body.
    let srv = Server::start(vec![Reply::Echo(404)]).await;
    let n = notifier("ops", srv.url(path), NotifyTemplate::Slack);
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert_eq!(srv.requests()[0].target, path);
    assert!(!d.ok);
    assert_eq!(d.url_redacted, format!("http://{}", srv.addr));
    let err = d.error.as_deref().unwrap();
    assert!(
        err.starts_with("HTTP 404 Not Found: Cannot POST [redacted]"),
        "{err}"
    );
    assert_no_secret(&d, &secrets);

    // The same through retries of a 500 that echoes.
    let srv = Server::start(vec![Reply::Echo(500)]).await;
    let mut n = notifier("ops", srv.url(path), NotifyTemplate::Discord);
    n.retries = 1;
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert_eq!(d.attempts, 2);
    assert_no_secret(&d, &secrets);

    // And through a timeout.
    let srv = Server::start(vec![Reply::Hang]).await;
    let mut n = notifier("ops", srv.url(path), NotifyTemplate::Teams);
    n.timeout = Duration::from_millis(200);
    n.retries = 0;
    let d = deliver_with(&n, &event(Outcome::Failure), &fast()).await;
    assert!(!d.ok);
    assert_no_secret(&d, &secrets);
}

#[tokio::test]
async fn deliver_all_sends_concurrently_in_order() {
    let slow1 = Server::start(vec![Reply::Hang]).await;
    let slow2 = Server::start(vec![Reply::Hang]).await;
    let ok = Server::start(vec![Reply::Status(200)]).await;
    let mut a = notifier("a", slow1.url("/a"), NotifyTemplate::Generic);
    let mut b = notifier("b", slow2.url("/b"), NotifyTemplate::Generic);
    let c = notifier("c", ok.url("/c"), NotifyTemplate::Slack);
    for n in [&mut a, &mut b] {
        n.timeout = Duration::from_secs(1);
        n.retries = 0;
    }
    let start = Instant::now();
    let ds = deliver_all_with(&[a, b, c], &event(Outcome::Failure), &fast()).await;
    let took = start.elapsed();
    let names: Vec<&str> = ds.iter().map(|d| d.notifier.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(!ds[0].ok && !ds[1].ok && ds[2].ok, "{ds:?}");
    // One after the other would take at least 2 s.
    assert!(took < Duration::from_millis(1900), "{took:?}");
}

#[tokio::test]
async fn notify_sends_only_to_notifiers_that_want_the_outcome() {
    let srv = Server::start(vec![Reply::Status(200)]).await;
    let with = |name: &str, on: Vec<NotifyEvent>| ResolvedNotifier {
        on,
        ..notifier(name, srv.url(&format!("/{name}")), NotifyTemplate::Generic)
    };
    let ns = [
        with("on-failure", vec![NotifyEvent::Failure]),
        with("on-success", vec![NotifyEvent::Success]),
        with("always", vec![NotifyEvent::Always]),
        with("drift", vec![NotifyEvent::Drift]),
    ];
    let ds = notify(&ns, &event(Outcome::Success)).await;
    let names: Vec<&str> = ds.iter().map(|d| d.notifier.as_str()).collect();
    assert_eq!(names, ["on-success", "always"]);
    let ds = notify(&ns, &event(Outcome::Drift)).await;
    let names: Vec<&str> = ds.iter().map(|d| d.notifier.as_str()).collect();
    assert_eq!(names, ["drift"]);
    let mut targets: Vec<String> = srv.requests().into_iter().map(|r| r.target).collect();
    targets.sort();
    assert_eq!(targets, ["/always", "/drift", "/on-success"]);
}
