//! `file`: a file's exact content (inline, a local file, or a rendered template), owner, group and
//! mode; or its absence. Contents are compared by sha256 on the host; when they differ and the old
//! content is small, the probe returns it so the plan can show a unified diff. Writes are atomic
//! (a temporary file in the same directory, renamed over the path) and read the content from stdin.

use super::*;
pub use crate::plan::diff_check::text_diff;
pub use crate::plan::file_write::sha256_hex;
use crate::plan::host_hash;
pub use crate::plan::probe::DIFF_LIMIT;
use crate::secrets::placeholder;

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum FileContent {
    Inline {
        value: Value,
    },
    /// A local file, relative to the config file that names it.
    Source {
        path: PathBuf,
    },
    /// A local minijinja template rendered with facts and vars.
    Template {
        path: PathBuf,
    },
    /// A remote URL pinned by blake3 in nexus.lock.
    Url {
        url: String,
        blake3: Option<String>,
    },
}

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub path: String,
    pub state: Presence,
    pub content: Option<FileContent>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    pub backup: bool,
    pub vars: BTreeMap<String, Value>,
}

pub fn parse(cx: &mut Cx, fc: &FileCtx<'_>, r: &mut NodeR<'_>) -> Option<Spec> {
    let usage = "file PATH (content=\"...\" | source=\"local/file\" | template=\"local.j2\") [owner=..] [group=..] [mode=\"0644\"]";
    r.expect_args(cx, 1, 1, usage);
    let path = remote_arg(cx, r, 0);
    let state = presence(cx, r);
    let content = r.value(cx, "content");
    let source = r.str(cx, "source");
    let template = r.str(cx, "template");
    let source_url = r.str(cx, "source-url");
    let blake3 = r.str(cx, "blake3");
    let (owner, group, mode) = ownership(cx, r);
    let backup = r.bool(cx, "backup").unwrap_or(false);
    let vars = r.map(cx, "vars");
    let given: Vec<Span> = [
        content.as_ref().map(|c| c.span),
        source.as_ref().map(|c| c.span),
        template.as_ref().map(|c| c.span),
        source_url.as_ref().map(|c| c.span),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        cx.push(
            Diag::new(
                "config::conflicting-options",
                "a file takes one of content, source, template and source-url",
            )
            .at(given[1], "second content source")
            .also(given[0], "first content source")
            .help("keep exactly one"),
        );
    }
    if state == Presence::Absent && !given.is_empty() {
        cx.push(
            Diag::new(
                "config::conflicting-options",
                "an absent file has no content",
            )
            .at(given[0], "content for an absent file")
            .help("remove the content, or state=\"absent\""),
        );
    }
    let written = ["content", "source", "template", "source-url"]
        .iter()
        .any(|k| r.option_span(k).is_some());
    if state == Presence::Present && !written {
        cx.push(
            Diag::new("config::missing-option", "file needs content, source, template or source-url")
                .at(r.name_span(), "no content")
                .help("add content=\"...\", source=\"files/app.conf\" or template=\"templates/app.conf.j2\"; use `directory` for directories"),
        );
    }
    if let Some(b) = &blake3 {
        if source_url.is_none() {
            cx.push(
                Diag::new(
                    "config::conflicting-options",
                    "`blake3` pins a `source-url` and needs one",
                )
                .at(b.span, "nothing to pin")
                .help("add source-url=\"https://...\" or remove blake3"),
            );
        } else if b.len() != 64 || !b.chars().all(|c| c.is_ascii_hexdigit()) {
            cx.push(
                Diag::new(
                    "config::invalid-hash",
                    "`blake3` must be 64 hexadecimal digits",
                )
                .at(b.span, "invalid hash"),
            );
        }
    }
    if !vars.is_empty() && template.is_none() {
        cx.push(
            Diag::new(
                "config::conflicting-options",
                "`vars` are only used by templates",
            )
            .at(r.name_span(), "vars without a template")
            .help("add template=\"...\" or remove vars"),
        );
    }
    let content = if let Some(c) = content {
        Some(FileContent::Inline { value: c.value })
    } else if let Some(s) = &source {
        Some(FileContent::Source {
            path: crate::syntax::fields::local_file(cx, fc, s, "source"),
        })
    } else if let Some(t) = &template {
        Some(FileContent::Template {
            path: crate::syntax::fields::local_file(cx, fc, t, "template"),
        })
    } else if let Some(u) = source_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            cx.push(
                Diag::new(
                    "config::invalid-url",
                    format!("source-url {:?} is not an http(s) URL", u.value),
                )
                .at(u.span, "invalid URL"),
            );
        }
        Some(FileContent::Url {
            url: u.value,
            blake3: blake3.map(|b| b.value.to_ascii_lowercase()),
        })
    } else {
        None
    };
    Some(Spec {
        path: path?,
        state,
        content,
        owner,
        group,
        mode,
        backup,
        vars,
    })
}

impl Spec {
    /// Local files, contents and URLs a file reads: see [`InputNeeds`].
    pub fn input_needs<'a>(&'a self, needs: &mut InputNeeds<'a>) {
        needs.content_values.extend(self.vars.values());
        match &self.content {
            Some(FileContent::Source { path }) => needs.files.push((path, None)),
            Some(FileContent::Template { path }) => {
                needs
                    .files
                    .push((path, Some(crate::syntax::files::MAX_TEXT_BYTES)));
            }
            Some(FileContent::Inline { value }) => needs.content_values.push(value),
            Some(FileContent::Url { url, blake3 }) => {
                needs.urls.push((url, blake3.as_deref()));
            }
            None => {}
        }
        needs.values.extend(needs.content_values.iter().copied());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// As configured: path, presence, owner, group, mode, `backup` (copy the previous content
    /// to `PATH.<sha256 prefix>.bak` before replacing or removing it); its content is `content`.
    pub spec: Spec,
    /// The desired content; `None` for an absent file.
    pub content: Option<Content>,
    pub sudo: bool,
    /// Set when the content holds secrets: `content` then has placeholders for them.
    pub secret: Option<SecretContent>,
    /// sha256 of `content` (with placeholders, if any), computed once: probes and plans ask often.
    pub content_sha256: String,
}

/// The content a present file is to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Held, and carried in the plan.
    Bytes(Vec<u8>),
    /// A large local file copied byte for byte: pinned by the plan, streamed when applying.
    Streamed {
        blake3: String,
        pinned: crate::plan::StreamedContent,
    },
}

/// What the plan may know about content that holds secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretContent {
    /// The secrets it holds, substituted by the executor.
    pub names: Vec<String>,
    /// The sealed sha256 of the real content, compared with the host's sealed hash.
    pub sealed_sha256: String,
}

pub fn resolve(f: &Spec, ctx: &ResolveCtx<'_>) -> Result<File, ResourceError> {
    let content = match (&f.content, f.state) {
        (_, Presence::Absent) => None,
        (None, Presence::Present) => {
            return Err(ResourceError::Invalid(format!(
                "file {} has no content",
                f.path
            )));
        }
        (Some(FileContent::Inline { value }), _) => Some(ctx.content_value(value)?.into_bytes()),
        (Some(FileContent::Source { path }), _) => match ctx.inputs.large_file(path) {
            Some(d) => return Ok(streamed(f, ctx, path, d)),
            None => Some(local_file(ctx, path, "source")?.to_vec()),
        },
        (Some(FileContent::Template { path }), _) => {
            Some(render_template(f, path, ctx, false)?.into_bytes())
        }
        (Some(FileContent::Url { url, .. }), _) => Some(
            ctx.inputs
                .url(url)
                .ok_or_else(|| {
                    ResourceError::Invalid(format!(
                        "source-url {url} was not fetched (missing input; see nexus.lock)"
                    ))
                })?
                .to_vec(),
        ),
    };
    // Only inline and template contents come from configuration values; a source file or URL is
    // taken byte for byte, whatever it holds. A template that can see a secret var is checked
    // even when its output shows no placeholder: a filter may have changed the placeholder.
    let digest = content.as_deref().map(|bytes| {
        ctx.inputs.content_digest(bytes, |bytes| {
            #[cfg(test)]
            tests::HASHED.with(|n| n.set(n.get() + 1));
            crate::inputs::ContentDigest {
                sha256: sha256_hex(bytes),
                placeholders: placeholder::has_placeholders(bytes),
            }
        })
    });
    let placeholders = digest.as_ref().is_some_and(|d| d.placeholders);
    let secret = match (&content, &f.content) {
        (Some(bytes), Some(FileContent::Inline { .. })) if placeholders => {
            secret_content(f, ctx, bytes)?
        }
        (Some(bytes), Some(FileContent::Template { .. }))
            if placeholders || template_sees_secrets(f, ctx) =>
        {
            secret_content(f, ctx, bytes)?
        }
        _ => None,
    };
    if secret.is_some() && ProbeBatch::for_path(&f.path, true).is_none() {
        // Such a path keeps its own probe snippet, which hashes unsealed and sends old content.
        return Err(ResourceError::Unsupported(format!(
            "file {:?} holds secrets: its path must not contain a newline or a backslash",
            f.path
        )));
    }
    let content_sha256 = digest.map_or_else(|| sha256_hex(b""), |d| d.sha256);
    Ok(File {
        spec: f.clone(),
        content: content.map(Content::Bytes),
        sudo: ctx.sudo,
        secret,
        content_sha256,
    })
}

/// A large source file: pinned by the digest its inputs took, never held. Copied byte for
/// byte, it is never a template of secrets.
fn streamed(
    f: &Spec,
    ctx: &ResolveCtx<'_>,
    path: &std::path::Path,
    d: &crate::syntax::files::Digest,
) -> File {
    File {
        spec: f.clone(),
        content: Some(Content::Streamed {
            blake3: d.blake3.clone(),
            pinned: crate::plan::StreamedContent {
                source: ctx.inputs.relative(path),
                size: d.size,
                sha256: d.sha256.clone(),
            },
        }),
        sudo: ctx.sudo,
        secret: None,
        content_sha256: d.sha256.clone(),
    }
}

/// The real content is made here only to be hashed and sealed, then wiped; the plan keeps the
/// placeholders. A template that transforms a secret (a filter, a test) would see the placeholder
/// instead of the value, so its output with values is checked against the substitution.
fn secret_content(
    f: &Spec,
    ctx: &ResolveCtx<'_>,
    with_placeholders: &[u8],
) -> Result<Option<SecretContent>, ResourceError> {
    let secrets = ctx.inputs.secret_values();
    let lookup = |n: &str| secrets.get(n).map(str::to_string);
    let real = placeholder::substitute(with_placeholders, &lookup)
        .map_err(|e| ResourceError::Invalid(e.to_string()))?;
    if let Some(FileContent::Template { path }) = &f.content {
        let rendered = zeroize::Zeroizing::new(render_template(f, path, ctx, true)?.into_bytes());
        if *rendered != *real {
            return Err(ResourceError::Invalid(format!(
                "template {}: a secret variable must be inserted as it is ({{{{ vars.NAME }}}}); \
                 filters and tests on secret values are not supported",
                ctx.inputs.relative(path)
            )));
        }
    }
    let names = placeholder::names_in(with_placeholders);
    if names.is_empty() {
        // A template that could see secrets but inserted none.
        return Ok(None);
    }
    let key = secrets.seal_key().ok_or_else(|| {
        ResourceError::Invalid("the content holds secrets but the vault was not opened".into())
    })?;
    Ok(Some(SecretContent {
        names,
        sealed_sha256: key.seal(&sha256_hex(&real)),
    }))
}

/// Whether any var a template sees (global, host or the file's own) is a secret.
fn template_sees_secrets(f: &Spec, ctx: &ResolveCtx<'_>) -> bool {
    ctx.vars
        .values()
        .any(|v| placeholder::has_placeholders(v.as_bytes()))
        || f.vars.values().any(|v| matches!(v, Value::Secret(_)))
}

/// The bytes of a local file that was read before planning.
pub(crate) fn local_file<'a>(
    ctx: &ResolveCtx<'a>,
    path: &std::path::Path,
    what: &str,
) -> Result<&'a [u8], ResourceError> {
    ctx.inputs.file(path).ok_or_else(|| {
        ResourceError::Invalid(format!(
            "{what} file {} was not read (missing input)",
            ctx.inputs.relative(path)
        ))
    })
}

/// Renders a minijinja template with facts, vars (the file's own `vars` take precedence) and host.
/// Secret vars are placeholders, or with `real` their values (only ever to hash the result).
fn render_template(
    f: &Spec,
    path: &std::path::Path,
    ctx: &ResolveCtx<'_>,
    real: bool,
) -> Result<String, ResourceError> {
    let name = ctx.inputs.relative(path);
    let bytes = local_file(ctx, path, "template")?;
    let source = std::str::from_utf8(bytes)
        .map_err(|e| ResourceError::Invalid(format!("template {name} is not UTF-8 text: {e}")))?;
    let mut vars = ctx.vars.clone();
    for (k, v) in &f.vars {
        vars.insert(k.clone(), ctx.content_value(v)?);
    }
    if real {
        let secrets = ctx.inputs.secret_values();
        let lookup = |n: &str| secrets.get(n).map(str::to_string);
        for v in vars.values_mut() {
            if placeholder::has_placeholders(v.as_bytes()) {
                let real = placeholder::substitute(v.as_bytes(), &lookup)
                    .map_err(|e| ResourceError::Invalid(e.to_string()))?;
                *v = String::from_utf8_lossy(&real).into_owned();
            }
        }
    }
    let merged = ResolveCtx {
        vars: &vars,
        ..*ctx
    };
    let mut env = crate::syntax::expr::environment();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Configuration files, not web pages: no HTML escaping whatever the extension, the final
    // newline kept, and block tags swallow their own line (as Ansible's templates do).
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    let fail = |e: minijinja::Error| {
        let at = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
        let what = crate::syntax::expr::describe(&e);
        ResourceError::Invalid(format!("template {name}{at}: {what}"))
    };
    if let Err(e) = crate::syntax::expr::check_template(source) {
        let line = source[..e.offset].matches('\n').count() + 1;
        return Err(ResourceError::Invalid(format!(
            "template {name} line {line}: {e}"
        )));
    }
    let template = env.template_from_named_str(&name, source).map_err(fail)?;
    template.render(merged.template_context()).map_err(fail)
}

/// `512 B`, `1.2 KiB`, `3.4 MiB`.
pub fn human_size(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    for unit in ["KiB", "MiB", "GiB"] {
        if v < 1024.0 || unit == "GiB" {
            return format!("{v:.1} {unit}");
        }
        v /= 1024.0;
    }
    unreachable!()
}

/// The step that atomically replaces `path` with the bytes on its stdin: a temporary file in the
/// same directory gets the content, the mode (explicit, else the existing file's, else 0644), the
/// existing owner unless another is asked for, then is renamed over `path`. With a `backup_to`, an
/// existing file is first copied there (`cp -p`). Shared by `file` and `upload`.
pub fn write_step(
    path: &str,
    content: WriteContent<'_>,
    owner: Option<&str>,
    group: Option<&str>,
    mode: Option<Mode>,
    over: Over<'_>,
    sudo: bool,
) -> Step {
    let (backup_to, replaces_link) = match over {
        Over::File { backup_to } => (backup_to, false),
        Over::Link => (None, true),
    };
    let mut write = crate::plan::file_write::FileWrite {
        path: path.to_string(),
        owner: owner.map(str::to_string),
        group: group.map(str::to_string),
        mode: mode.map(|m| m.to_string()),
        replaces_link,
        backup_to: backup_to.map(str::to_string),
        sha256: String::new(),
    };
    match content {
        WriteContent::Bytes(b) => {
            write.sha256 = sha256_hex(b);
            let mut step = Step::new(write.script(), sudo);
            step.stdin = Some(blake3::hash(b).to_hex().to_string());
            step.write = Some(write);
            step
        }
        // Only the executor knows the sha256 of what it sends: the step is run alone.
        WriteContent::WithSecrets { blob, names } => {
            let mut step = Step::new(write.script_checked_by("\"$NEXUS_CONTENT_SHA256\""), sudo);
            step.stdin = Some(blake3::hash(blob).to_hex().to_string());
            step.stdin_secrets = names.to_vec();
            step
        }
        WriteContent::Streamed { blake3, sha256 } => {
            write.sha256 = sha256.to_string();
            let mut step = Step::new(write.script(), sudo);
            step.stdin = Some(blake3.to_string());
            step.write = Some(write);
            step
        }
    }
}

/// What a write step replaces, as the plan saw it.
#[derive(Debug, Clone, Copy)]
pub enum Over<'a> {
    /// A regular file or nothing; an existing file is first copied to `backup_to`, if given. A
    /// symbolic link found there instead appeared since planning, and is refused.
    File { backup_to: Option<&'a str> },
    /// A symbolic link, replaced itself (never what it points to).
    Link,
}

/// What a write step sends.
#[derive(Debug, Clone, Copy)]
pub enum WriteContent<'a> {
    /// These exact bytes; the step checks their sha256, written into the script.
    Bytes(&'a [u8]),
    /// A blob with secret placeholders the executor fills in; the plan cannot know the sha256 of
    /// the result, so the executor passes it as `NEXUS_CONTENT_SHA256`.
    WithSecrets { blob: &'a [u8], names: &'a [String] },
    /// A content the plan pins but does not carry, by its blake3 and sha256.
    Streamed { blake3: &'a str, sha256: &'a str },
}

impl File {
    /// The desired bytes when the plan carries them (not for a streamed content).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.content {
            Some(Content::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    fn desired_size(&self) -> u64 {
        match &self.content {
            Some(Content::Bytes(b)) => b.len() as u64,
            Some(Content::Streamed { pinned, .. }) => pinned.size,
            None => 0,
        }
    }

    /// The desired bytes when small enough to diff.
    fn diffable(&self) -> Option<&[u8]> {
        self.bytes()
            .filter(|b| self.secret.is_none() && b.len() as u64 <= DIFF_LIMIT)
    }

    /// Where `backup` keeps the content whose sha256 is `old_sha`.
    fn backup_path(&self, old_sha: &str) -> String {
        let hex = old_sha.strip_prefix("sealed:").unwrap_or(old_sha);
        format!("{}.{}.bak", self.spec.path, &hex[..hex.len().min(12)])
    }

    /// The hash the probe's `sha256` is compared with: plain, or sealed for secret content.
    fn desired_sha256(&self) -> String {
        match &self.secret {
            Some(s) => s.sealed_sha256.clone(),
            None => self.content_sha256.clone(),
        }
    }

    /// `old` is the host's hash and size; no size when the old content may hold secrets.
    fn content_field(&self, old: Option<(&str, Option<u64>)>) -> FieldChange {
        // Sealed hashes tell versions apart; sizes would tell a secret's length.
        let held = |sha: &str| match sha.starts_with("sealed:") {
            true => format!("{} (holds secrets)", &sha[..sha.len().min(19)]),
            // Planned without the vault key: no keyed hash to show (docs/secrets.md).
            false => "hidden (may hold secrets)".to_string(),
        };
        let show = |sha: &str, n: Option<u64>| match n {
            Some(n) => format!("sha256:{} ({})", &sha[..sha.len().min(12)], human_size(n)),
            None => held(sha),
        };
        if self.secret.is_some() {
            return FieldChange {
                field: "content".into(),
                from: old.map(|(sha, _)| held(sha)),
                to: Some(held(&self.desired_sha256())),
            };
        }
        FieldChange {
            field: "content".into(),
            from: old.map(|(sha, n)| show(sha, n)),
            to: Some(show(&self.content_sha256, Some(self.desired_size()))),
        }
    }

    fn write(&self, over: Over<'_>) -> Step {
        let bytes = self.bytes().unwrap_or_default();
        let content = match (&self.secret, &self.content) {
            (Some(s), _) => WriteContent::WithSecrets {
                blob: bytes,
                names: &s.names,
            },
            (None, Some(Content::Streamed { blake3, pinned })) => WriteContent::Streamed {
                blake3,
                sha256: &pinned.sha256,
            },
            (None, _) => WriteContent::Bytes(bytes),
        };
        write_step(
            &self.spec.path,
            content,
            self.spec.owner.as_deref(),
            self.spec.group.as_deref(),
            self.spec.mode,
            over,
            self.sudo,
        )
    }

    /// A regular file in place of the symbolic link `o` saw: the link itself is replaced (what
    /// it pointed to is left alone), and the plan says so.
    fn replace_link(&self, o: &Observed) -> Change {
        let (attrs, _) = ownership_changes(
            &self.spec.path,
            &Observed::default(),
            self.spec.owner.as_deref(),
            self.spec.group.as_deref(),
            self.spec.mode,
            self.sudo,
        );
        let label = link_label(o);
        let mut c = self.with_write(Change::new(
            Action::Update,
            format!("replace {label}"),
            vec![self.write(Over::Link)],
        ));
        c.fields
            .push(FieldChange::new("type", Some(&label), Some("regular file")));
        c.fields.push(self.content_field(None));
        c.fields.extend(attrs);
        c.diff = self
            .diffable()
            .and_then(|new| text_diff(&self.spec.path, b"", new));
        c
    }

    fn with_write(&self, mut c: Change) -> Change {
        match &self.content {
            Some(Content::Streamed { blake3, pinned }) => {
                c.streamed.push((blake3.clone(), pinned.clone()))
            }
            _ => c.blobs.push(self.bytes().unwrap_or_default().to_vec()),
        }
        c
    }
}

/// How plans name the file at `path`, planned or skipped.
pub fn label(path: &str) -> String {
    format!("file {path}")
}

impl Resource for File {
    fn id(&self) -> String {
        ResourceType::File.id(&self.spec.path)
    }

    fn path(&self) -> Option<&str> {
        Some(&self.spec.path)
    }

    fn label(&self) -> String {
        label(&self.spec.path)
    }

    fn probe(&self) -> String {
        let p = q(&self.spec.path);
        let want = &self.content_sha256;
        // Old content for the diff, only when the content differs and is small enough.
        let old_content = format!(
            "_nx_n=$(wc -c < {p} | tr -d ' '); \
             if [ \"$_nx_n\" -le {DIFF_LIMIT} ] && command -v base64 >/dev/null 2>&1; then \
             printf '_old_b64='; base64 < {p} | tr -d '\\n'; echo; fi"
        );
        let hashed = self.spec.state == Presence::Present || self.spec.backup;
        if self.probe_batch().is_some() {
            // The batch does it all: link target and old content for the diff included.
            return String::new();
        }
        let mut s = format!(
            "{}\n{}",
            stat_probe(&self.spec.path),
            link_probe(&self.spec.path)
        );
        if hashed {
            // A large file is hashed as the batched probe hashes one (OpenSSL where the host
            // has it), a small one by sha256sum as before.
            s.push_str(&format!(
                "\n{}if [ -f {p} ] && [ ! -L {p} ]; then if [ -r {p} ]; then \
                 _nx_n=$(wc -c < {p} | tr -d ' '); echo \"size=$_nx_n\"; \
                 if [ \"$_nx_n\" -gt {} ]; then _nx_sha256 {p}; _nx_s=$_nx_sum; \
                 else _nx_s=$(sha256sum < {p} | cut -d ' ' -f 1); fi; echo \"sha256=$_nx_s\"; \
                 if [ \"$_nx_s\" != {want} ]; then {old_content}; fi; \
                 else echo readable=false; fi; fi",
                host_hash::FUNCTION,
                host_hash::LARGE_OVER
            ));
        }
        s
    }

    fn probe_batch(&self) -> Option<ProbeBatch> {
        let batch = ProbeBatch::for_path(
            &self.spec.path,
            self.spec.state == Presence::Present || self.spec.backup,
        )
        .map(|b| ProbeBatch {
            link: true,
            ..b.wanting(self.spec.owner.as_deref(), self.spec.group.as_deref())
        });
        match (batch, &self.secret) {
            // The host's hash of a file holding secrets is sealed before the plan records it,
            // and its old content never travels back.
            (Some(b), Some(_)) => Some(ProbeBatch { sealed: true, ..b }),
            (Some(b), None) if self.spec.state == Presence::Present => Some(ProbeBatch {
                old_unless: Some(self.content_sha256.clone()),
                ..b
            }),
            (b, _) => b,
        }
    }

    fn probe_inline(&self) -> bool {
        self.probe_batch().is_some()
    }

    fn plan(&self, o: &Observed) -> Result<Change, ResourceError> {
        let exists = o.require("exists")? == "true";
        let kind = o.get("type").unwrap_or("");
        if exists && kind == "directory" {
            return Err(ResourceError::Unsupported(format!(
                "{} is a directory, not a file; remove it first or pick another path",
                self.spec.path
            )));
        }
        if self.spec.state == Presence::Absent {
            if !exists {
                return Ok(Change::no_op("absent"));
            }
            let p = q(&self.spec.path);
            let script = match o
                .get("sha256")
                .filter(|s| self.spec.backup && kind == "file" && !s.is_empty())
            {
                Some(sha) => format!("mv -f -- {p} {}", q(&self.backup_path(sha))),
                None => format!("rm -f -- {p}"),
            };
            // Removing a link removes only the link; the plan says which link it was.
            let reason = match kind {
                "link" => format!("exists ({})", link_label(o)),
                _ => "exists".to_string(),
            };
            return Ok(Change::new(
                Action::Delete,
                reason,
                vec![Step::new(script, self.sudo)],
            ));
        }
        if exists && kind == "link" {
            return Ok(self.replace_link(o));
        }
        if exists && kind != "file" {
            return Err(ResourceError::Unsupported(format!(
                "{} is a special file, not a regular file; nexus does not replace it: remove it first",
                self.spec.path,
            )));
        }
        let new_sha = self.desired_sha256();
        let secret = self.secret.is_some();
        let (owner, group) = (self.spec.owner.as_deref(), self.spec.group.as_deref());

        if !exists {
            let (attrs, _) = ownership_changes(
                &self.spec.path,
                &Observed::default(),
                owner,
                group,
                self.spec.mode,
                self.sudo,
            );
            let mut c = self.with_write(Change::new(
                Action::Create,
                "does not exist",
                vec![self.write(Over::File { backup_to: None })],
            ));
            c.fields.push(self.content_field(None));
            c.fields.extend(attrs);
            c.diff = self
                .diffable()
                .and_then(|new| text_diff(&self.spec.path, b"", new));
            return Ok(c);
        }

        let (attrs, attr_steps) =
            ownership_changes(&self.spec.path, o, owner, group, self.spec.mode, self.sudo);
        if o.get("readable") == Some("false") {
            // The probing user cannot read it: the content cannot be compared, so write it.
            let mut c = self.with_write(Change::new(
                Action::Update,
                "content unknown (not readable when probing)",
                vec![self.write(Over::File { backup_to: None })],
            ));
            c.fields = attrs;
            return Ok(c);
        }
        let old_sha = o.require("sha256")?;
        if old_sha == new_sha {
            if attr_steps.is_empty() {
                return Ok(Change::no_op("up to date"));
            }
            let mut c = Change::new(Action::Update, "attributes differ", attr_steps);
            c.fields = attrs;
            return Ok(c);
        }
        // No size means the planner hid the old content: it holds, or may hold, a secret
        // (plan/secret_guard.rs).
        let old_size: Option<u64> = o.get("size").and_then(|s| s.parse().ok());
        let old = o.get("_old_b64").and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        });
        let diff = old
            .as_deref()
            .zip(self.bytes())
            .filter(|_| !secret)
            .and_then(|(old, new)| text_diff(&self.spec.path, old, new));
        let reason = match (diff.as_ref(), old_size) {
            (Some(_), _) => "content differs".to_string(),
            _ if secret => "content differs (it holds secrets: no diff)".to_string(),
            (None, None) => "content differs (the old content may hold secrets: no diff)".into(),
            (None, Some(n)) => format!(
                "content differs ({} → {})",
                human_size(n),
                human_size(self.desired_size())
            ),
        };
        let backup = (self.spec.backup && !old_sha.is_empty()).then(|| self.backup_path(old_sha));
        let mut c = self.with_write(Change::new(
            Action::Update,
            reason,
            vec![self.write(Over::File {
                backup_to: backup.as_deref(),
            })],
        ));
        c.fields.push(self.content_field(Some((old_sha, old_size))));
        c.fields.extend(attrs);
        c.diff = diff;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::facts::Facts;
    use crate::inputs::Inputs;

    const FACTS: &str = "format=1\nkernel_name=Linux\nkernel=6.1.0\narch=x86_64\nhostname=web1\nfqdn=web1.example.com\n\
                         cpus=4\nmem_kb=2048000\npkg=apt-get\ninit=systemd\nuser=deploy\nuid=1000\ngid=1000\n\
                         home=/home/deploy\nshell=/bin/bash\nos_release.ID=debian\nos_release.VERSION_ID=12\n";

    fn file(content: &str) -> File {
        File {
            spec: Spec {
                path: "/etc/my app.conf".into(),
                state: Presence::Present,
                content: Some(FileContent::Inline {
                    value: Value::Literal(content.into()),
                }),
                owner: None,
                group: None,
                mode: None,
                backup: false,
                vars: Default::default(),
            },
            content: Some(Content::Bytes(content.as_bytes().to_vec())),
            sudo: true,
            secret: None,
            content_sha256: sha256_hex(content.as_bytes()),
        }
    }

    fn obs(s: &str) -> Observed {
        Observed::parse(s).unwrap()
    }

    fn present(content: &[u8], with_old: bool) -> Observed {
        use base64::Engine as _;
        let mut s = format!(
            "exists=true\ntype=file\nowner=root\nowner_id=0\ngroup=root\ngroup_id=0\nmode=0644\nsize={}\nsha256={}\n",
            content.len(),
            sha256_hex(content)
        );
        if with_old {
            s.push_str(&format!(
                "_old_b64={}\n",
                base64::engine::general_purpose::STANDARD.encode(content)
            ));
        }
        obs(&s)
    }

    /// The write script for `/etc/my app.conf` with the default mode, for `content`.
    fn write_default_mode(content: &str) -> String {
        WRITE_DEFAULT_MODE.replace(
            "cat > \"$tmp\"\n",
            &format!(
                "cat > \"$tmp\"\nsum=$(sha256sum < \"$tmp\") || sum=\n[ \"${{sum%% *}}\" = {} ] || {{ printf '%s\\n' 'nexus: the content written to /etc/my app.conf does not match the plan' >&2; exit 1; }}\n",
                sha256_hex(content.as_bytes())
            ),
        )
    }

    const WRITE_DEFAULT_MODE: &str = "set -e\n\
        if [ ! -d /etc ]; then { printf '%s\\n' 'nexus: directory /etc does not exist (add a directory resource for it)' >&2; exit 1; }; fi\n\
        if [ -d '/etc/my app.conf' ]; then { printf '%s\\n' 'nexus: /etc/my app.conf is a directory' >&2; exit 1; }; fi\n\
        if [ -L '/etc/my app.conf' ]; then { printf '%s\\n' 'nexus: /etc/my app.conf became a symbolic link since planning; nothing was replaced (plan again)' >&2; exit 1; }; fi\n\
        for _nx_o in /etc/.nexus-*; do [ -f \"$_nx_o\" ] || continue; _nx_p=${_nx_o##*/.nexus-}; _nx_p=${_nx_p%%-*}\n\
        case $_nx_p in '' | *[!0-9]*) find \"$_nx_o\" -mmin +60 -delete 2>/dev/null || : ;; *) [ -d \"/proc/$_nx_p\" ] || rm -f -- \"$_nx_o\" 2>/dev/null || : ;; esac; done\n\
        tmp=$(mktemp /etc/.nexus-$$-XXXXXXXX)\n\
        trap 'rm -f \"$tmp\"' EXIT\n\
        trap 'exit 143' TERM\n\
        cat > \"$tmp\"\n\
        if [ -e '/etc/my app.conf' ]; then chown \"$(stat -c %u:%g '/etc/my app.conf')\" \"$tmp\" 2>/dev/null || :; fi\n\
        if [ -e '/etc/my app.conf' ]; then chmod \"$(stat -c %a '/etc/my app.conf')\" \"$tmp\"; else chmod 0644 \"$tmp\"; fi\n\
        mv -f -- \"$tmp\" '/etc/my app.conf'\n\
        trap - EXIT";

    #[test]
    fn creates_a_missing_file() {
        let f = file("hello\n");
        let c = f.plan(&obs("exists=false")).unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.reason, "does not exist");
        assert_eq!(c.steps.len(), 1);
        assert_eq!(c.steps[0].script, write_default_mode("hello\n"));
        assert!(c.steps[0].sudo);
        assert_eq!(
            c.steps[0].stdin.as_deref(),
            Some(blake3::hash(b"hello\n").to_hex().as_str())
        );
        assert_eq!(c.blobs, vec![b"hello\n".to_vec()]);
        assert_eq!(
            c.diff.as_deref(),
            Some("--- /etc/my app.conf\n+++ /etc/my app.conf\n@@ -0,0 +1 @@\n+hello\n")
        );
        assert_eq!(c.fields[0].field, "content");
        assert_eq!(c.fields[0].from, None);
    }

    #[test]
    fn explicit_attributes_and_backup_in_the_write_step() {
        let mut f = file("new\n");
        f.spec.owner = Some("www-data".into());
        f.spec.group = Some("adm".into());
        f.spec.mode = Some(Mode(0o640));
        f.spec.backup = true;
        let old = b"old\n";
        let c = f.plan(&present(old, true)).unwrap();
        assert_eq!(c.action, Action::Update);
        let bak = format!("/etc/my app.conf.{}.bak", &sha256_hex(old)[..12]);
        let script = &c.steps[0].script;
        assert!(
            script.contains(&format!(
                "if [ -e '/etc/my app.conf' ]; then cp -p -- '/etc/my app.conf' '{bak}'; fi\n"
            )),
            "{script}"
        );
        assert!(script.contains("\nchmod 0640 \"$tmp\"\n"), "{script}");
        assert!(
            script.contains("\nchown -- www-data:adm \"$tmp\"\n"),
            "{script}"
        );
        // The backup is taken before anything else touches the file.
        assert!(script.find("cp -p").unwrap() < script.find("mktemp").unwrap());
        let fields: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["content", "owner", "group", "mode"]);
        // One step does it all: no separate chmod/chown.
        assert_eq!(c.steps.len(), 1);
    }

    #[test]
    fn a_symlink_is_replaced_and_the_plan_says_so() {
        let f = file("new\n");
        // readlink's "../sites-available/default\n", as the probe prints it.
        let target: String = b"../sites-available/default\n"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let o = obs(&format!(
            "exists=true\ntype=link\nowner=root\ngroup=root\nmode=0777\nlink_target={target}"
        ));
        let c = f.plan(&o).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "replace symlink -> ../sites-available/default");
        assert_eq!(
            c.fields[0],
            FieldChange::new(
                "type",
                Some("symlink -> ../sites-available/default"),
                Some("regular file")
            )
        );
        assert_eq!(c.fields[1].field, "content");
        assert!(c.diff.is_some());
        let script = &c.steps[0].script;
        // Only the link is replaced, never what it points to (a directory included).
        assert!(!script.contains("became a symbolic link"), "{script}");
        assert!(script.contains("if [ -L '/etc/my app.conf' ] && [ -d '/etc/my app.conf' ]; then rm -f -- '/etc/my app.conf'; fi\nmv -f"), "{script}");
        // A new file's mode, never the link's own (0777) or owner; and only over a link.
        assert!(script.contains("\nchmod 0644 \"$tmp\"\n"), "{script}");
        assert!(!script.contains("stat -c"), "{script}");
        assert!(
            script.contains("is no longer a symbolic link since planning"),
            "{script}"
        );
        // A file planned as a file refuses a link that appeared since.
        let plain = f.write(Over::File { backup_to: None }).script;
        assert!(
            plain.contains("became a symbolic link since planning"),
            "{plain}"
        );
    }

    #[test]
    fn group_only_and_root_directory() {
        let mut f = file("x");
        f.spec.path = "/x".into();
        f.spec.group = Some("adm".into());
        let s = f.write(Over::File { backup_to: None }).script;
        assert!(s.contains("if [ ! -d / ]; then"), "{s}");
        assert!(s.contains("tmp=$(mktemp /.nexus-$$-XXXXXXXX)\n"), "{s}");
        assert!(s.contains("\nchgrp -- adm \"$tmp\"\n"), "{s}");
    }

    #[test]
    fn unchanged_content_is_a_no_op_or_attribute_update() {
        let f = file("same\n");
        assert_eq!(
            f.plan(&present(b"same\n", false)).unwrap(),
            Change::no_op("up to date")
        );
        let mut g = f.clone();
        g.spec.mode = Some(Mode(0o600));
        g.spec.owner = Some("0".into());
        let c = g.plan(&present(b"same\n", false)).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "attributes differ");
        let scripts: Vec<&str> = c.steps.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(scripts, ["chmod -- 0600 '/etc/my app.conf'"]);
        assert!(c.blobs.is_empty());
    }

    #[test]
    fn text_change_has_a_unified_diff() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        let c = file(new).plan(&present(old.as_bytes(), true)).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "content differs");
        assert_eq!(
            c.diff.as_deref(),
            Some(
                "--- /etc/my app.conf\n+++ /etc/my app.conf\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
            )
        );
        assert_eq!(c.steps[0].script, write_default_mode(new));
        assert_eq!(c.blobs, vec![new.as_bytes().to_vec()]);
    }

    #[test]
    fn binary_or_large_content_has_sizes_instead_of_a_diff() {
        let old = vec![0u8, 1, 2, 3];
        let mut f = file("");
        f.content = Some(Content::Bytes(vec![0u8; 3 * 1024 + 512]));
        let c = f.plan(&present(&old, true)).unwrap();
        assert_eq!(c.diff, None);
        assert_eq!(c.reason, "content differs (4 B → 3.5 KiB)");
        // Too large for the probe to return the old content.
        let big = obs("exists=true\ntype=file\nmode=0644\nsize=1258291\nsha256=abc");
        let c = file("small\n").plan(&big).unwrap();
        assert_eq!(c.diff, None);
        assert_eq!(c.reason, "content differs (1.2 MiB → 6 B)");
    }

    #[test]
    fn absent_and_wrong_types() {
        let mut f = file("");
        f.spec.state = Presence::Absent;
        f.content = None;
        assert_eq!(
            f.plan(&obs("exists=false")).unwrap(),
            Change::no_op("absent")
        );
        let c = f
            .plan(&obs("exists=true\ntype=file\nsha256=0123456789abcdef"))
            .unwrap();
        assert_eq!(c.action, Action::Delete);
        assert_eq!(c.steps[0].script, "rm -f -- '/etc/my app.conf'");
        f.spec.backup = true;
        let c = f
            .plan(&obs("exists=true\ntype=file\nsha256=0123456789abcdef"))
            .unwrap();
        assert_eq!(
            c.steps[0].script,
            "mv -f -- '/etc/my app.conf' '/etc/my app.conf.0123456789ab.bak'"
        );
        assert!(f.plan(&obs("exists=true\ntype=directory")).is_err());
        let c = f
            .plan(&obs("exists=true\ntype=link\nlink_target=2f6f7074\n"))
            .unwrap();
        assert_eq!(c.steps[0].script, "rm -f -- '/etc/my app.conf'");
        assert_eq!(c.reason, "exists (symlink -> /opt)");

        let g = file("x");
        let e = g.plan(&obs("exists=true\ntype=directory")).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(g.plan(&obs("exists=true\ntype=other")).is_err());
        assert!(
            g.plan(&obs("exists=true\ntype=file")).is_err(),
            "sha256 is required"
        );
        let c = g
            .plan(&obs("exists=true\ntype=file\nreadable=false"))
            .unwrap();
        assert_eq!(c.action, Action::Update);
    }

    /// Issue 18: twenty files and twenty directories cost the host's batched sections only, not
    /// a section each for their link checks; the targets of those that are links come from one
    /// loop, exactly as each one's own `link_probe` printed them.
    #[test]
    fn link_checks_of_many_paths_share_one_loop() {
        use crate::plan::probe;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let target = d.join("target");
        std::fs::write(&target, "t").unwrap();
        let mut resources: Vec<AnyResource> = Vec::new();
        for i in 0..40 {
            let path = d.join(format!("p{i} it's $(x) *"));
            match i % 4 {
                0 => std::os::unix::fs::symlink(&target, &path).unwrap(),
                // Dangling, with a newline, a tab and a quote in the target.
                1 => std::os::unix::fs::symlink(format!("nowhere\n{i}\t'"), &path).unwrap(),
                2 if i < 20 => std::fs::write(&path, "x").unwrap(),
                2 => std::fs::create_dir(&path).unwrap(),
                _ => {}
            }
            let path = path.to_str().unwrap().to_string();
            if i < 20 {
                let mut f = file("wanted\n");
                f.spec.path = path;
                resources.push(Box::new(f));
            } else {
                resources.push(Box::new(crate::resources::directory::Directory {
                    spec: crate::resources::directory::Spec {
                        path,
                        state: Presence::Present,
                        owner: None,
                        group: None,
                        mode: None,
                        recursive: false,
                    },
                    sudo: false,
                }));
            }
        }
        let owned: Vec<probe::Owned> = resources.iter().map(|r| r.probe_owned()).collect();
        let specs: Vec<probe::Spec<'_>> = owned.iter().map(probe::Owned::spec).collect();
        let text = probe::script(&specs);
        // Path facts, old contents and link targets: three sections for forty resources.
        assert_eq!(text.matches(" begin\\n'").count(), 3, "{text}");
        let sections = probe::split(&specs, &probe::run_sh(&text), None).unwrap();
        assert_eq!(sections.len(), resources.len());
        for (r, section) in resources.iter().zip(&sections) {
            let path = r.path().unwrap();
            let got = Observed::parse(&section.output).unwrap();
            let alone = Observed::parse(&probe::run_sh(&link_probe(path))).unwrap();
            assert_eq!(got.get("link_target"), alone.get("link_target"), "{path}");
            let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
            assert_eq!(got.get("type") == Some("link"), is_link, "{path}");
            assert_eq!(got.get("link_target").is_some(), is_link, "{path}");
        }
        // Nothing in the odd names ran.
        assert!(!d.join("x").exists());
    }

    #[test]
    fn probe_embeds_the_desired_hash_and_runs_in_sh() {
        // A batched path, and one with a backslash that keeps its own stat snippet.
        for name in ["it's a $(file) `x` *.txt", "back\\slash \\n.txt"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(name);
            let mut f = file("wanted\n");
            f.spec.path = path.to_str().unwrap().to_string();
            assert_eq!(f.probe_batch().is_none(), name.contains('\\'));
            let want = sha256_hex(b"wanted\n");
            match f.probe_batch() {
                Some(b) => assert_eq!(b.old_unless, Some(want)),
                None => assert!(f.probe().contains(&want)),
            }
            let run = |f: &File| crate::resources::run_probe_locally(f);
            assert_eq!(run(&f).get("exists"), Some("false"));
            std::fs::write(&path, "old\ncontent\n").unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o4640))
                .unwrap();
            let o = run(&f);
            assert_eq!(o.get("type"), Some("file"));
            assert_eq!(o.get("mode"), Some("4640"));
            assert!(o.get("owner_id").unwrap().parse::<u32>().is_ok(), "{o:?}");
            assert!(
                o.get("group")
                    .is_some_and(|g| !g.is_empty() && !g.contains(' ')),
                "{o:?}"
            );
            assert_eq!(o.get("size"), Some("12"));
            assert_eq!(
                o.get("sha256"),
                Some(sha256_hex(b"old\ncontent\n").as_str())
            );
            let c = f.plan(&o).unwrap();
            assert!(c.diff.unwrap().contains("-old\n-content\n+wanted\n"));
            std::fs::write(&path, "wanted\n").unwrap();
            let o = run(&f);
            assert_eq!(o.get("_old_b64"), None, "no old content when it matches");
            assert_eq!(f.plan(&o).unwrap().action, Action::NoOp);
            // A file too large for a diff: the hash only.
            std::fs::write(&path, vec![b'x'; DIFF_LIMIT as usize + 1]).unwrap();
            let o = run(&f);
            assert_eq!(o.get("_old_b64"), None);
            assert_eq!(o.get("size"), Some((DIFF_LIMIT + 1).to_string().as_str()));
            // Only key=value lines, and nothing else was created.
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }

    /// A path the probe does not batch (a backslash in its name) is hashed by its own snippet,
    /// a large file with OpenSSL where the host has a sane one, a small one and any other by
    /// sha256sum; the sums are the same.
    #[test]
    fn an_unbatched_large_file_is_hashed_by_openssl_where_it_answers() {
        let over = crate::plan::host_hash::LARGE_OVER as usize;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("back\\slash big");
        let mut f = file("wanted\n");
        f.spec.path = path.to_str().unwrap().to_string();
        assert!(f.probe_batch().is_none());
        let owned = f.probe_owned();
        let specs = [owned.spec()];
        let text = crate::plan::probe::script(&specs);
        let log = dir.path().join("openssl.log");
        let logged = format!(
            "echo \"$*\" >> {}; exec /usr/bin/openssl \"$@\"",
            q(log.to_str().unwrap())
        );
        for (size, by_openssl) in [(over, false), (over + 1, true)] {
            std::fs::write(&path, vec![b'x'; size]).unwrap();
            let want = sha256_hex(&vec![b'x'; size]);
            for openssl in [
                Some(logged.as_str()),
                None,
                Some("exit 1"),
                Some("echo junk"),
            ] {
                let bin = crate::plan::host_hash::bin_with_openssl(openssl);
                let _ = std::fs::remove_file(&log);
                let out = std::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(&text)
                    .env("PATH", bin.path())
                    .output()
                    .unwrap();
                assert!(out.stderr.is_empty(), "{out:?}");
                let sections = crate::plan::probe::split(
                    &specs,
                    &String::from_utf8(out.stdout).unwrap(),
                    None,
                )
                .unwrap();
                let o = Observed::parse(&sections[0].output).unwrap();
                assert_eq!(o.get("sha256"), Some(want.as_str()), "{size} {openssl:?}");
                assert_eq!(o.get("size"), Some(size.to_string().as_str()));
                assert_eq!(o.get("_old_b64"), None);
                if openssl == Some(logged.as_str()) {
                    assert_eq!(log.exists(), by_openssl, "{size}");
                }
            }
        }
    }

    thread_local! {
        /// How many contents `resolve` hashed on this thread.
        pub(super) static HASHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Issue 18: a content is hashed (and searched for secret placeholders) once per plan, however
    /// many hosts and resources have it: a fleet usually has the same files on every host.
    #[test]
    fn each_distinct_content_is_hashed_once_per_plan() {
        let (facts, vars, inputs) = ctx_parts();
        let before = HASHED.with(std::cell::Cell::get);
        let mut files = Vec::new();
        for host in ["web1", "web2", "web3"] {
            let ctx = ResolveCtx {
                host,
                facts: &facts,
                sudo: false,
                inputs: &inputs,
                vars: &vars,
                host_tags: &[],
            };
            for (path, text) in [
                ("/etc/a", "same\n"),
                ("/etc/b", "same\n"),
                ("/etc/c", "c\n"),
            ] {
                let value = Value::Literal(text.into());
                let mut c = cfg(FileContent::Inline { value }, BTreeMap::new());
                c.path = path.into();
                files.push(resolve(&c, &ctx).unwrap());
            }
            // A local file: the same bytes for every host.
            let path = "/cfg/files/raw".into();
            files.push(resolve(&cfg(FileContent::Source { path }, BTreeMap::new()), &ctx).unwrap());
        }
        assert_eq!(HASHED.with(std::cell::Cell::get) - before, 3);
        // Each resource still has its own content's hash.
        for f in &files {
            assert_eq!(f.content_sha256, sha256_hex(f.bytes().unwrap()));
        }
        assert_eq!(files[0].content_sha256, files[1].content_sha256);
        assert_ne!(files[0].content_sha256, files[2].content_sha256);
    }

    fn ctx_parts() -> (Facts, BTreeMap<String, String>, Inputs) {
        let facts = Facts::parse(FACTS).unwrap();
        let vars = BTreeMap::from([
            ("app".to_string(), "shop".to_string()),
            ("port".to_string(), "80".to_string()),
        ]);
        let files = BTreeMap::from([
            (PathBuf::from("/cfg/t/app.conf.j2"), b"{% for i in range(2) %}\nw{{ i }}\n{% endfor %}app={{ vars.app }} port={{ vars.port }} on {{ facts.fqdn }} ({{ host.name }}, {{ host.tags | join(',') }}) cpus={{ facts.cpu_count * 2 }}\n".to_vec()),
            (PathBuf::from("/cfg/t/bad.j2"), b"ok\n{{ vars.nope }}\n".to_vec()),
            (PathBuf::from("/cfg/t/page.html.j2"), b"<{{ vars.app }}>&".to_vec()),
            (PathBuf::from("/cfg/files/raw"), b"\x00\x01raw".to_vec()),
        ]);
        let inputs = Inputs::from_parts(
            PathBuf::from("/cfg"),
            files,
            BTreeMap::from([("APP_PORT".to_string(), Some("8080".to_string()))]),
        );
        (facts, vars, inputs)
    }

    fn cfg(content: FileContent, vars: BTreeMap<String, Value>) -> Spec {
        Spec {
            path: "/etc/app.conf".into(),
            state: Presence::Present,
            content: Some(content),
            owner: None,
            group: None,
            mode: None,
            backup: false,
            vars,
        }
    }

    #[test]
    fn templates_render_with_facts_vars_and_host() {
        let (facts, vars, inputs) = ctx_parts();
        let tags = vec!["web".to_string(), "eu".to_string()];
        let ctx = ResolveCtx {
            host: "web1",
            facts: &facts,
            sudo: false,
            inputs: &inputs,
            vars: &vars,
            host_tags: &tags,
        };
        let own = BTreeMap::from([("port".to_string(), Value::Env("APP_PORT".into()))]);
        let f = resolve(
            &cfg(
                FileContent::Template {
                    path: "/cfg/t/app.conf.j2".into(),
                },
                own,
            ),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(f.bytes().unwrap().to_vec()).unwrap(),
            "w0\nw1\napp=shop port=8080 on web1.example.com (web1, web,eu) cpus=8\n"
        );
        let e = resolve(
            &cfg(
                FileContent::Template {
                    path: "/cfg/t/bad.j2".into(),
                },
                BTreeMap::new(),
            ),
            &ctx,
        )
        .unwrap_err();
        assert!(matches!(e, ResourceError::Invalid(_)));
        assert!(
            e.to_string()
                .starts_with("template t/bad.j2 line 2: undefined value"),
            "{e}"
        );
        let f = resolve(
            &cfg(
                FileContent::Template {
                    path: "/cfg/t/page.html.j2".into(),
                },
                BTreeMap::new(),
            ),
            &ctx,
        )
        .unwrap();
        assert_eq!(f.bytes().unwrap(), b"<shop>&", "no HTML escaping");
        let e = resolve(
            &cfg(
                FileContent::Template {
                    path: "/cfg/t/missing.j2".into(),
                },
                BTreeMap::new(),
            ),
            &ctx,
        )
        .unwrap_err();
        assert!(e.to_string().contains("t/missing.j2"), "{e}");
    }

    fn inline(value: Value, ctx: &ResolveCtx<'_>) -> Result<File, ResourceError> {
        resolve(&cfg(FileContent::Inline { value }, BTreeMap::new()), ctx)
    }

    #[test]
    fn contents_holding_secrets_plan_with_placeholders_and_sealed_hashes() {
        let (facts, mut vars, mut inputs) = ctx_parts();
        let secret = "pa55-w0rd!";
        inputs.set_secret_values(std::sync::Arc::new(crate::secrets::Resolved::from_pairs(
            &[("DB_PASSWORD", secret), ("API", "tok-123")],
            [7; 32],
        )));
        // A global var holding a secret, as the planner passes it: a placeholder.
        vars.insert("api".into(), placeholder::placeholder("API"));
        let ctx = ResolveCtx {
            host: "web1",
            facts: &facts,
            sudo: false,
            inputs: &inputs,
            vars: &vars,
            host_tags: &[],
        };
        let mut files = BTreeMap::new();
        files.insert(
            PathBuf::from("/cfg/t/db.j2"),
            b"user=app password={{ vars.pw }} api={{ vars.api }}\n".to_vec(),
        );
        files.insert(
            PathBuf::from("/cfg/t/upper.j2"),
            b"{{ vars.pw | upper }}\n".to_vec(),
        );
        let own = BTreeMap::from([("pw".to_string(), Value::Secret("DB_PASSWORD".into()))]);
        let mut with_templates = Inputs::from_parts(PathBuf::from("/cfg"), files, BTreeMap::new());
        with_templates.set_secret_values(std::sync::Arc::new(
            crate::secrets::Resolved::from_pairs(
                &[("DB_PASSWORD", secret), ("API", "tok-123")],
                [7; 32],
            ),
        ));
        let ctx_t = ResolveCtx {
            inputs: &with_templates,
            ..ctx
        };
        let template = |path: &str| {
            resolve(
                &cfg(FileContent::Template { path: path.into() }, own.clone()),
                &ctx_t,
            )
        };
        let f = template("/cfg/t/db.j2").unwrap();
        let s = f.secret.clone().expect("holds secrets");
        assert_eq!(s.names, ["API", "DB_PASSWORD"]);
        let real = format!("user=app password={secret} api=tok-123\n");
        let key = with_templates.secret_values().seal_key().unwrap();
        assert_eq!(s.sealed_sha256, key.seal(&sha256_hex(real.as_bytes())));
        let blob = f.bytes().unwrap().to_vec();
        assert!(!String::from_utf8_lossy(&blob).contains(secret));
        assert_eq!(
            blob,
            format!(
                "user=app password={} api={}\n",
                placeholder::placeholder("DB_PASSWORD"),
                placeholder::placeholder("API")
            )
            .into_bytes()
        );
        // The probe asks for a sealed hash and sends no old content back; only a link's target.
        assert_eq!(f.probe(), "");
        assert!(f.probe_batch().unwrap().sealed);
        assert!(f.probe_batch().unwrap().link);
        // Unchanged on the host: compared by sealed hash.
        let obs = |sha: &str| {
            Observed::parse(&format!(
                "exists=true\ntype=file\nowner=root\ngroup=root\nmode=0644\nsha256={sha}\n"
            ))
            .unwrap()
        };
        assert_eq!(f.plan(&obs(&s.sealed_sha256)).unwrap().action, Action::NoOp);
        // Changed: an update with sealed hashes, no diff, and a step that gets the values at apply.
        let c = f.plan(&obs(&key.seal("0000"))).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "content differs (it holds secrets: no diff)");
        assert!(c.diff.is_none());
        let rendered = format!("{:?} {:?}", c.fields, c.steps);
        assert!(!rendered.contains(secret), "{rendered}");
        assert!(
            !rendered.contains(&sha256_hex(real.as_bytes())),
            "{rendered}"
        );
        assert!(rendered.contains("(holds secrets)"), "{rendered}");
        assert_eq!(c.steps[0].stdin_secrets, ["API", "DB_PASSWORD"]);
        assert!(c.steps[0].script.contains("= \"$NEXUS_CONTENT_SHA256\" ]"));
        assert_eq!(c.blobs, [blob]);
        // A filter on a secret would have seen the placeholder: refused.
        let e = template("/cfg/t/upper.j2").unwrap_err();
        assert!(e.to_string().contains("must be inserted as it is"), "{e}");
        // Inline secret content.
        let f = inline(Value::Secret("API".into()), &ctx).unwrap();
        assert_eq!(
            f.secret.unwrap().sealed_sha256,
            key.seal(&sha256_hex(b"tok-123"))
        );
    }

    #[test]
    fn content_sources() {
        let (facts, vars, inputs) = ctx_parts();
        let ctx = ResolveCtx {
            host: "web1",
            facts: &facts,
            sudo: true,
            inputs: &inputs,
            vars: &vars,
            host_tags: &[],
        };
        let f = resolve(
            &cfg(
                FileContent::Source {
                    path: "/cfg/files/raw".into(),
                },
                BTreeMap::new(),
            ),
            &ctx,
        )
        .unwrap();
        assert_eq!(f.bytes(), Some(&b"\x00\x01raw"[..]));
        assert!(f.sudo);
        let e = resolve(
            &cfg(
                FileContent::Source {
                    path: "/cfg/files/gone".into(),
                },
                BTreeMap::new(),
            ),
            &ctx,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ResourceError::Invalid(m) if m.contains("files/gone")),
            "{e}"
        );
        let f = inline(Value::Literal("hi".into()), &ctx).unwrap();
        assert_eq!(f.bytes(), Some(&b"hi"[..]));
        let e = inline(Value::Secret("S".into()), &ctx).unwrap_err();
        // Without the vault's values (planning reads them when contents hold secrets).
        assert!(
            matches!(&e, ResourceError::Invalid(m) if m.contains("secret \"S\" was not read")),
            "{e}"
        );
        let e = resolve(
            &cfg(
                FileContent::Url {
                    url: "https://x".into(),
                    blake3: None,
                },
                BTreeMap::new(),
            ),
            &ctx,
        )
        .unwrap_err();
        assert_eq!(
            e,
            ResourceError::Invalid(
                "source-url https://x was not fetched (missing input; see nexus.lock)".into()
            )
        );
        assert_eq!(f.id(), "file:/etc/app.conf");
        assert_eq!(f.label(), "file /etc/app.conf");
    }

    #[test]
    fn sizes_and_dirs() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
