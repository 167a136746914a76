//! Delivering a payload: one POST per attempt with a timeout, retries with exponential backoff,
//! and a [`Delivery`] record of what happened, whatever happened.
//!
//! Two rules shape this module:
//! - A delivery never fails the caller. Errors become `Delivery { ok: false, error }`, so a
//!   broken webhook is reported next to the run's result and never replaces it (the original
//!   tool only logged them, and users never saw them).
//! - Webhook URLs are secrets: Slack and Discord put the token in the path, Teams Workflows in
//!   the query. Only the scheme, host and port ever leave this module ([`redact_url`]); error
//!   texts (including response bodies that echo the request line) are scrubbed of the path and
//!   query, and header values are never shown either.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;

use super::{NotifyEvent, NotifyTemplate, RunEvent, payload, truncate, wants};
use crate::config::{Notifier, Value};

/// A notifier with its `(env)` and `(secret)` values resolved: ready to send.
#[derive(Clone)]
pub struct ResolvedNotifier {
    pub name: String,
    /// The webhook URL: a secret, never printed (see the `Debug` impl).
    pub url: String,
    pub template: NotifyTemplate,
    /// The events it is sent for ([`notify`] filters on them; [`deliver`] does not).
    pub on: Vec<NotifyEvent>,
    /// Extra headers, in the config's order; values may be secrets (`Authorization`).
    pub headers: Vec<(String, String)>,
    /// Time allowed per attempt, connecting and reading the response included.
    pub timeout: Duration,
    /// Retries after a failed attempt: at most `retries + 1` attempts.
    pub retries: u32,
}

/// Why an `(env)` or `(secret)` value of a notifier could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("secret {0:?} could not be read from the vault")]
    SecretUnavailable(String),
}

/// Why a notification could not be sent at all. Never contains the URL or a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// `what` is `url` or `header NAME`.
    #[error("{what}: {source}")]
    Unresolved { what: String, source: LookupError },
    /// `reason` is the whole chain of causes.
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid value for header {0}")]
    HeaderValue(String),
}

impl ResolvedNotifier {
    /// Resolves a configured notifier. `lookup` reads an `(env)` or `(secret)` value (the
    /// caller's environment and vault access); literals are used as written. The error names
    /// what could not be resolved and never contains a value.
    pub fn resolve(
        n: &Notifier,
        mut lookup: impl FnMut(&Value) -> Result<String, LookupError>,
    ) -> Result<ResolvedNotifier, NotifyError> {
        let mut get = |what: &str, v: &Value| match v {
            Value::Literal(s) => Ok(s.clone()),
            _ => lookup(v).map_err(|source| NotifyError::Unresolved {
                what: what.to_string(),
                source,
            }),
        };
        let url = get("url", &n.url)?;
        let mut headers = Vec::with_capacity(n.headers.len());
        for (k, v) in &n.headers {
            headers.push((k.clone(), get(&format!("header {k}"), v)?));
        }
        Ok(ResolvedNotifier {
            name: n.name.value.clone(),
            url,
            template: n.template,
            on: n.on.clone(),
            headers,
            timeout: n.timeout,
            retries: n.retries,
        })
    }
}

/// Shows the redacted URL and header names only, so a `{:?}` in a log leaks nothing.
impl fmt::Debug for ResolvedNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedNotifier")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("template", &self.template)
            .field("on", &self.on)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// When to retry and how long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base: Duration,
    /// Each further retry waits this many times longer.
    pub factor: u32,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Longest wait a server's `Retry-After` can ask for; longer requests wait this long.
    pub max_retry_after: Duration,
    /// Randomise each backoff delay to between half and all of it, so many nexus processes
    /// failing at once (a fleet of cron jobs) do not retry in lockstep.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            factor: 2,
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry `n` (1 for the first retry), without `Retry-After`.
    pub fn backoff(&self, n: u32) -> Duration {
        let mult = self.factor.max(1).saturating_pow(n.saturating_sub(1));
        let d = self.base.saturating_mul(mult).min(self.max_delay);
        if self.jitter {
            d.mul_f64(0.5 + 0.5 * unit_random())
        } else {
            d
        }
    }
}

/// What happened to one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub notifier: String,
    pub template: NotifyTemplate,
    /// Scheme, host and port only: the path and query hold the webhook's secret.
    pub url_redacted: String,
    pub ok: bool,
    /// Requests sent (0 when it could not be sent at all: bad URL, unresolved secret).
    pub attempts: u32,
    /// HTTP status of the last response, if any.
    pub status: Option<u16>,
    /// Why it failed, after the last attempt; `None` when delivered.
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Delivery {
    /// A notification that could not be sent at all, e.g. because its URL's `(secret)` could
    /// not be resolved. `error` must not contain the URL.
    pub fn not_sent(
        notifier: &str,
        template: NotifyTemplate,
        url: Option<&str>,
        error: impl Into<String>,
    ) -> Delivery {
        Delivery {
            notifier: notifier.to_string(),
            template,
            url_redacted: url.map_or_else(|| "unresolved".to_string(), redact_url),
            ok: false,
            attempts: 0,
            status: None,
            error: Some(error.into()),
            duration_ms: 0,
        }
    }

    /// One line for text output: `notify slack (https://hooks.slack.com): sent (HTTP 200, 120ms)`
    /// or `notify ops (https://hooks.example.com): FAILED after 4 attempts: HTTP 500 ...`.
    pub fn line(&self) -> String {
        let head = format!("notify {} ({})", self.notifier, self.url_redacted);
        let ms = crate::exec::human_ms(self.duration_ms);
        if self.ok {
            let status = self.status.map_or(String::new(), |s| format!("HTTP {s}, "));
            let tries = if self.attempts > 1 {
                format!(", {} attempts", self.attempts)
            } else {
                String::new()
            };
            format!("{head}: sent ({status}{ms}{tries})")
        } else {
            let err = self.error.as_deref().unwrap_or("failed");
            match self.attempts {
                0 => format!("{head}: NOT SENT: {err}"),
                1 => format!("{head}: FAILED: {err}"),
                n => format!("{head}: FAILED after {n} attempts: {err}"),
            }
        }
    }
}

/// `https://hooks.slack.com` for `https://hooks.slack.com/services/T0/B0/secret?x=y`: scheme,
/// host and port, without user info, path, query or fragment.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default();
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        _ => "invalid URL".to_string(),
    }
}

/// Sends `ev` to `n` with the default [`RetryPolicy`]. Never panics, never returns an error:
/// every outcome is in the [`Delivery`].
pub async fn deliver(n: &ResolvedNotifier, ev: &RunEvent) -> Delivery {
    deliver_with(n, ev, &RetryPolicy::default()).await
}

/// [`deliver`] with an explicit retry policy.
pub async fn deliver_with(n: &ResolvedNotifier, ev: &RunEvent, policy: &RetryPolicy) -> Delivery {
    match client() {
        Ok(c) => send(&c, n, ev, policy).await,
        Err(e) => Delivery::not_sent(&n.name, n.template, Some(&n.url), e.to_string()),
    }
}

/// Sends `ev` to every notifier concurrently (one slow webhook does not delay the others),
/// whatever their `on` lists say. Results are in the notifiers' order.
pub async fn deliver_all(notifiers: &[ResolvedNotifier], ev: &RunEvent) -> Vec<Delivery> {
    deliver_all_with(notifiers, ev, &RetryPolicy::default()).await
}

/// [`deliver_all`] with an explicit retry policy.
pub async fn deliver_all_with(
    notifiers: &[ResolvedNotifier],
    ev: &RunEvent,
    policy: &RetryPolicy,
) -> Vec<Delivery> {
    if notifiers.is_empty() {
        return Vec::new();
    }
    // One client (one TLS configuration, one connection pool) for all of them.
    let c = match client() {
        Ok(c) => c,
        Err(e) => {
            return notifiers
                .iter()
                .map(|n| Delivery::not_sent(&n.name, n.template, Some(&n.url), e.to_string()))
                .collect();
        }
    };
    futures::future::join_all(notifiers.iter().map(|n| send(&c, n, ev, policy))).await
}

/// Sends `ev` to the notifiers whose `on` list [`wants`] its outcome; the others are skipped
/// and have no `Delivery`.
pub async fn notify(notifiers: &[ResolvedNotifier], ev: &RunEvent) -> Vec<Delivery> {
    let chosen: Vec<ResolvedNotifier> = notifiers
        .iter()
        .filter(|n| wants(&n.on, ev.outcome))
        .cloned()
        .collect();
    deliver_all(&chosen, ev).await
}

fn client() -> Result<Client, NotifyError> {
    Client::builder()
        // A redirected POST may turn into a GET elsewhere and be dropped silently; a webhook
        // URL that redirects is misconfigured and reported as such.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| NotifyError::Client(chain(&e.without_url())))
}

/// How one attempt ended.
enum Attempt {
    Delivered(u16),
    /// Worth another try: connection errors, timeouts, 408, 429 and 5xx.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: other 4xx, redirects.
    Fatal {
        status: Option<u16>,
        error: String,
    },
}

async fn send(c: &Client, n: &ResolvedNotifier, ev: &RunEvent, policy: &RetryPolicy) -> Delivery {
    let start = Instant::now();
    let redacted = redact_url(&n.url);
    let mut d = Delivery {
        notifier: n.name.clone(),
        template: n.template,
        url_redacted: redacted.clone(),
        ok: false,
        attempts: 0,
        status: None,
        error: None,
        duration_ms: 0,
    };
    let url = match Url::parse(&n.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            d.error = Some("invalid webhook URL: it must start with https:// or http://".into());
            return d;
        }
    };
    let headers = match headers(n) {
        Ok(h) => h,
        Err(e) => {
            d.error = Some(e.to_string());
            return d;
        }
    };
    let body = match serde_json::to_vec(&payload(n.template, ev)) {
        Ok(b) => b,
        Err(e) => {
            d.error = Some(format!("cannot encode the payload: {e}"));
            return d;
        }
    };
    let secrets = secret_parts(&n.url, &url);
    let max_attempts = n.retries.saturating_add(1);
    loop {
        d.attempts += 1;
        let result = attempt(c, &url, &headers, &body, n.timeout, &redacted).await;
        let (status, error, retry_after, retryable) = match result {
            Attempt::Delivered(status) => {
                d.ok = true;
                d.status = Some(status);
                d.error = None;
                break;
            }
            Attempt::Retry {
                status,
                error,
                retry_after,
            } => (status, error, retry_after, true),
            Attempt::Fatal { status, error } => (status, error, None, false),
        };
        d.status = status;
        d.error = Some(scrub(&error, &secrets));
        if !retryable || d.attempts >= max_attempts {
            break;
        }
        let wait = match retry_after {
            Some(ra) => ra.min(policy.max_retry_after),
            None => policy.backoff(d.attempts),
        };
        tokio::time::sleep(wait).await;
    }
    d.duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    d
}

/// Content type and user agent first, then the configured headers, which may replace them.
fn headers(n: &ResolvedNotifier) -> Result<HeaderMap, NotifyError> {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let agent = concat!("nexus/", env!("CARGO_PKG_VERSION"));
    h.insert(USER_AGENT, HeaderValue::from_static(agent));
    for (k, v) in &n.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| NotifyError::HeaderName(k.clone()))?;
        // The value may be a token: name the header, never show the value.
        let mut value =
            HeaderValue::from_str(v).map_err(|_| NotifyError::HeaderValue(k.clone()))?;
        value.set_sensitive(true);
        h.insert(name, value);
    }
    Ok(h)
}

async fn attempt(
    c: &Client,
    url: &Url,
    headers: &HeaderMap,
    body: &[u8],
    timeout: Duration,
    redacted: &str,
) -> Attempt {
    let exchange = async {
        let resp = c
            .post(url.clone())
            .headers(headers.clone())
            .body(body.to_vec())
            .send()
            .await?;
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(parse_retry_after);
        // The body of an error explains it (Slack: `invalid_payload`, `no_service`); a success
        // body carries nothing nexus needs.
        let text = if status.is_success() {
            String::new()
        } else {
            snippet(resp).await
        };
        Ok::<_, reqwest::Error>((status, retry_after, text))
    };
    // One deadline for the whole exchange: connecting, sending, and reading the response.
    let (status, retry_after, text) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Attempt::Retry {
                status: None,
                error: format!("timed out after {}", human_duration(timeout)),
                retry_after: None,
            };
        }
        Ok(Err(e)) => return request_error(&e.without_url(), redacted),
        Ok(Ok(r)) => r,
    };
    let code = status.as_u16();
    if status.is_success() {
        return Attempt::Delivered(code);
    }
    let mut error = format!("HTTP {status}");
    if !text.is_empty() {
        error.push_str(&format!(": {text}"));
    }
    if status.is_redirection() {
        error.push_str(" (webhook URLs must not redirect)");
        return Attempt::Fatal {
            status: Some(code),
            error,
        };
    }
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Attempt::Retry {
            status: Some(code),
            error,
            retry_after,
        }
    } else {
        Attempt::Fatal {
            status: Some(code),
            error,
        }
    }
}

fn request_error(e: &reqwest::Error, redacted: &str) -> Attempt {
    let detail = chain(e);
    if e.is_builder() {
        return Attempt::Fatal {
            status: None,
            error: format!("cannot build the request: {detail}"),
        };
    }
    let error = if e.is_timeout() {
        format!("timed out: {detail}")
    } else if e.is_connect() {
        format!("cannot connect to {redacted}: {detail}")
    } else {
        format!("request to {redacted} failed: {detail}")
    };
    // Connection refused or reset, a dropped connection: the kind of trouble that passes.
    Attempt::Retry {
        status: None,
        error,
        retry_after: None,
    }
}

/// An error's sources, `a: b`, which say what went wrong (`tcp connect error: Connection refused
/// (os error 111)`); reqwest's own `error sending request` and hyper's `client error (Connect)`
/// wrappers say nothing the caller's prefix does not. Falls back to the error itself.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !m.is_empty()
            && !m.starts_with("client error (")
            && !parts.iter().any(|p| p.contains(&m))
        {
            parts.push(m);
        }
        src = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// The first 1 KiB of a response body, as one line of at most 200 characters.
async fn snippet(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < 1024 {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    buf.truncate(1024);
    let text = String::from_utf8_lossy(&buf);
    truncate(&super::one_line(&text), 200)
}

/// `Retry-After` in seconds (Discord sends decimals). The HTTP-date form is rare for webhooks
/// and falls back to the backoff.
fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The parts of a webhook URL that must never appear in output: the URL as written and
/// normalised, its path (unless just `/`) and its query, each also percent-decoded, because
/// servers echo them (`Cannot POST /hooks/...`).
fn secret_parts(raw: &str, url: &Url) -> Vec<String> {
    let mut parts = vec![raw.to_string(), url.as_str().to_string()];
    let path = url.path();
    if path.len() > 1 {
        parts.push(path.to_string());
        // The path without its first segment: a server may echo only part of it.
        if let Some(rest) = path[1..].split_once('/').map(|(_, r)| r)
            && rest.len() > 1
        {
            parts.push(rest.to_string());
        }
    }
    if let Some(q) = url.query()
        && !q.is_empty()
    {
        parts.push(q.to_string());
    }
    let decoded: Vec<String> = parts.iter().map(|p| percent_decode(p)).collect();
    parts.extend(decoded);
    // Longest first, so a whole URL is replaced before its path would be.
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    parts.dedup();
    parts.retain(|p| p.len() > 1);
    parts
}

fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `300ms`, `5s`, `1m 30s`.
fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        humantime::format_duration(Duration::from_millis(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        ))
        .to_string()
    }
}

/// A number in [0, 1) for jitter. Randomness quality hardly matters here; std's randomly keyed
/// hasher gives a fresh value per call without another dependency.
fn unit_random() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_keeps_scheme_host_and_port_only() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/XyZ?x=1#f"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8080/hook"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(redact_url("http://[::1]:9/x"), "http://[::1]:9");
        assert_eq!(redact_url("not a url /secret"), "invalid URL");
    }

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        let p = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        let ms = |n| p.backoff(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4)], [500, 1000, 2000, 4000]);
        assert_eq!(ms(10), 30_000);
        assert_eq!(ms(u32::MAX), 30_000);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let p = RetryPolicy::default();
        for n in 1..=6 {
            for _ in 0..50 {
                let d = p.backoff(n);
                let full = RetryPolicy { jitter: false, ..p }.backoff(n);
                assert!(d >= full / 2 && d <= full, "{d:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn retry_after_parses_seconds() {
        let v = |s: &'static str| parse_retry_after(&HeaderValue::from_static(s));
        assert_eq!(v("2"), Some(Duration::from_secs(2)));
        assert_eq!(v("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(v("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(v("-1"), None);
    }

    #[test]
    fn scrub_removes_path_and_query_in_all_spellings() {
        let raw = "https://h.example/hooks/T0%2FB0/s3cr3t?sig=abc%3D";
        let url = Url::parse(raw).unwrap();
        let parts = secret_parts(raw, &url);
        let text =
            format!("Cannot POST /hooks/T0%2FB0/s3cr3t?sig=abc%3D; T0/B0/s3cr3t; sig=abc=; {raw}");
        let out = scrub(&text, &parts);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(!out.contains("sig=abc"), "{out}");
        assert!(out.contains("[redacted]"));
    }

    #[test]
    fn root_path_is_not_scrubbed_everywhere() {
        let url = Url::parse("http://127.0.0.1:1/").unwrap();
        let parts = secret_parts("http://127.0.0.1:1/", &url);
        assert_eq!(
            scrub("HTTP 404 Not Found: a/b", &parts),
            "HTTP 404 Not Found: a/b"
        );
    }

    #[test]
    fn debug_hides_url_and_header_values() {
        let n = ResolvedNotifier {
            name: "ops".into(),
            url: "https://h.example/secret-path?token=t0k".into(),
            template: NotifyTemplate::Generic,
            on: vec![NotifyEvent::Failure],
            headers: vec![("Authorization".into(), "Bearer hunter2".into())],
            timeout: Duration::from_secs(1),
            retries: 0,
        };
        let s = format!("{n:?}");
        assert!(!s.contains("secret-path") && !s.contains("t0k") && !s.contains("hunter2"));
        assert!(s.contains("https://h.example") && s.contains("Authorization"));
    }

    #[test]
    fn resolve_uses_lookup_for_env_and_secret_only() {
        use crate::config::Spanned;
        let n = Notifier {
            name: Spanned::new("ops".to_string(), crate::config::Span::new(0, 0, 0)),
            url: Value::Env("HOOK".into()),
            template: NotifyTemplate::Generic,
            on: vec![NotifyEvent::Failure],
            headers: [
                ("X-Source".to_string(), Value::Literal("nexus".into())),
                ("Authorization".to_string(), Value::Secret("TOKEN".into())),
            ]
            .into_iter()
            .collect(),
            timeout: Duration::from_secs(5),
            retries: 2,
        };
        let r = ResolvedNotifier::resolve(&n, |v| match v {
            Value::Env(k) if k == "HOOK" => Ok("https://h.example/x".into()),
            Value::Secret(k) if k == "TOKEN" => Ok("Bearer t".into()),
            _ => Err(LookupError::EnvUnset("unexpected".into())),
        })
        .unwrap();
        assert_eq!(r.url, "https://h.example/x");
        assert_eq!(
            r.headers,
            vec![
                ("Authorization".to_string(), "Bearer t".to_string()),
                ("X-Source".to_string(), "nexus".to_string())
            ]
        );
        let err = ResolvedNotifier::resolve(&n, |_| Err(LookupError::EnvUnset("HOOK".into())))
            .unwrap_err();
        assert_eq!(err.to_string(), "url: environment variable HOOK is not set");
    }

    #[test]
    fn delivery_lines() {
        let mut d =
            Delivery::not_sent("ops", NotifyTemplate::Generic, None, "url: HOOK is not set");
        assert_eq!(
            d.line(),
            "notify ops (unresolved): NOT SENT: url: HOOK is not set"
        );
        d.url_redacted = "https://h.example".into();
        d.attempts = 4;
        d.error = Some("HTTP 500 Internal Server Error".into());
        assert_eq!(
            d.line(),
            "notify ops (https://h.example): FAILED after 4 attempts: HTTP 500 Internal Server Error"
        );
        d.ok = true;
        d.error = None;
        d.status = Some(200);
        d.attempts = 1;
        d.duration_ms = 120;
        assert_eq!(
            d.line(),
            "notify ops (https://h.example): sent (HTTP 200, 120ms)"
        );
    }
}
