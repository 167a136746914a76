//! One probe script per host, so a host's whole observed state costs a single round trip.
//!
//! Most resources of a typical host are files and directories, and what they need to know is the
//! same: does the path exist, its type, owner, group and mode, and for files the content hash.
//! Forking `stat` and `sha256sum` per resource cost about 10 processes per file, which dominated
//! planning time (see docs/benchmarks.md). So those facts are gathered for all of a host's paths by
//! one `stat` and one `sha256sum`, and each resource's section is completed from them here; the
//! rest of each resource's probe is its own snippet, framed by markers.

use std::collections::{BTreeMap, BTreeSet};

use crate::resources::{ProbeBatch, Resource, q};
use crate::secrets::SealKey;

/// How many paths one `stat` command line carries; far below any ARG_MAX.
const STAT_CHUNK: usize = 512;

/// One resource's probe: its snippet, the path facts it wants batched, and whether the snippet is
/// simple enough (builtins, no `exit`, no `cd`) to run in the probe's own shell instead of a
/// subshell, which costs a fork.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub snippet: &'a str,
    pub batch: Option<&'a ProbeBatch>,
    pub inline: bool,
}

/// A resource's probe, owned, for callers that hold resources rather than planned ones.
pub struct Owned {
    pub snippet: String,
    pub batch: Option<ProbeBatch>,
    pub inline: bool,
}

impl Owned {
    pub fn of(r: &dyn Resource) -> Owned {
        Owned {
            snippet: r.probe(),
            batch: r.probe_batch(),
            inline: r.probe_inline(),
        }
    }

    pub fn spec(&self) -> Spec<'_> {
        Spec {
            snippet: &self.snippet,
            batch: self.batch.as_ref(),
            inline: self.inline,
        }
    }
}

/// The paths to `stat`, and the subset to hash, each once, in first-seen order; a hashed path
/// comes with the sha256 below which its old content is sent for a diff, if any batch asks.
fn batched_paths<'a>(specs: &[Spec<'a>]) -> (Vec<&'a str>, Vec<(&'a str, Option<&'a str>)>) {
    let (mut stat, mut hash): (Vec<&str>, Vec<(&str, Option<&str>)>) = (Vec::new(), Vec::new());
    let mut seen_stat = BTreeSet::new();
    for b in specs.iter().filter_map(|s| s.batch) {
        if seen_stat.insert(b.path.as_str()) {
            stat.push(b.path.as_str());
        }
        if b.sha256 {
            match hash.iter_mut().find(|(p, _)| *p == b.path) {
                Some((_, want)) => *want = want.or(b.old_unless.as_deref()),
                None => hash.push((b.path.as_str(), b.old_unless.as_deref())),
            }
        }
    }
    (stat, hash)
}

/// Builds the host's probe script. The marker token is derived from the script's inputs, so
/// output cannot forge a frame by accident.
pub fn script(specs: &[Spec<'_>]) -> String {
    let token = token(specs);
    let mut s = String::from(
        "# nexus probe: batched path facts, then one framed section per resource\nexec </dev/null\n",
    );
    let (stat, hash) = batched_paths(specs);
    if specs.iter().any(|s| s.batch.is_some()) {
        // Raw mode in hex gives type and permissions; the name comes last, so it may hold tabs.
        // Missing paths print nothing (the error goes to /dev/null) and read as absent.
        s.push_str(&format!("printf '\\n@@{token} stat begin\\n'\n"));
        for chunk in stat.chunks(STAT_CHUNK) {
            let words: Vec<String> = chunk.iter().map(|p| q(p)).collect();
            s.push_str(&format!(
                "stat -c '%f\t%u\t%g\t%s\t%U\t%G\t%n' -- {} 2>/dev/null\n",
                words.join(" ")
            ));
        }
        s.push_str(&format!("printf '\\n@@{token} stat end 0\\n'\n"));
        // Only regular, readable files that are not links are hashed: a FIFO or a link to a
        // device would block or never end. The tests are builtins; one sha256sum reads them all.
        // The sums stay in a variable for the file snippets that decide whether to send a diff.
        s.push_str("_nx_sums=\nset --\n");
        if !hash.is_empty() {
            let words: Vec<String> = hash.iter().map(|(p, _)| q(p)).collect();
            s.push_str(&format!(
                "for _nx_p in {}; do if [ -f \"$_nx_p\" ] && [ ! -L \"$_nx_p\" ] && [ -r \"$_nx_p\" ]; then set -- \"$@\" \"$_nx_p\"; fi; done\n\
                 if [ $# -gt 0 ]; then _nx_sums=$(sha256sum -- \"$@\" 2>/dev/null); fi\n",
                words.join(" ")
            ));
        }
        s.push_str(&format!(
            "printf '\\n@@{token} sums begin\\n%s\\n@@{token} sums end 0\\n' \"$_nx_sums\"\n"
        ));
        // Old contents for diffs, in one pass: the sums list the hashed paths in the order they
        // were given (skipping unreadable ones), so walking it beside the (hash, path) pairs finds
        // each file's expected hash without searching. The lines are split by IFS, not `read`,
        // which reads a pipe one byte per system call. `-` means no diff is wanted (secrets).
        // Each old content is printed as `INDEX=BASE64`, INDEX counting the hashed paths from 0.
        s.push_str(&format!("printf '\\n@@{token} olds begin\\n'\n"));
        if hash.iter().any(|(_, want)| want.is_some()) {
            let pairs: Vec<String> = hash
                .iter()
                .map(|(p, want)| format!("{} {}", want.unwrap_or("-"), q(p)))
                .collect();
            s.push_str(&format!(
                "set -- {pairs}\n_nx_i=0\n\
                 _nx_ifs=$IFS; IFS='\n'; set -f\n\
                 for _nx_l in $_nx_sums; do\n\
                 _nx_h=${{_nx_l%%  *}}; _nx_q=${{_nx_l#*  }}\n\
                 while [ $# -gt 0 ] && [ \"$2\" != \"$_nx_q\" ]; do shift 2; _nx_i=$((_nx_i + 1)); done\n\
                 [ $# -gt 0 ] || break\n\
                 if [ \"$1\" != - ] && [ \"$1\" != \"$_nx_h\" ]; then\n\
                 _nx_n=$(wc -c < \"$2\" | tr -d ' ')\n\
                 if [ \"$_nx_n\" -le {limit} ] && command -v base64 >/dev/null 2>&1; then printf '%s=' \"$_nx_i\"; base64 < \"$2\" | tr -d '\\n'; echo; fi\n\
                 fi\n\
                 shift 2; _nx_i=$((_nx_i + 1))\n\
                 done\n\
                 IFS=$_nx_ifs; set +f\n",
                pairs = pairs.join(" "),
                limit = crate::resources::file::DIFF_LIMIT
            ));
        }
        s.push_str(&format!("printf '\\n@@{token} olds end 0\\n'\n"));
    }
    for (i, spec) in specs.iter().enumerate() {
        let snippet = spec.snippet.trim();
        if snippet.is_empty() {
            s.push_str(&format!(
                "printf '\\n@@{token} {i} begin\\n\\n@@{token} {i} end 0\\n'\n"
            ));
            continue;
        }
        let (open, close) = if spec.inline { ("{", "}") } else { ("(", ")") };
        s.push_str(&format!(
            "printf '\\n@@{token} {i} begin\\n'\n{open}\n{snippet}\n{close} 2>/dev/null\nprintf '\\n@@{token} {i} end %s\\n' \"$?\"\n"
        ));
    }
    s
}

fn token(specs: &[Spec<'_>]) -> String {
    let mut h = blake3::Hasher::new();
    for s in specs {
        h.update(s.snippet.as_bytes());
        h.update(b"\0");
        if let Some(b) = s.batch {
            h.update(b.path.as_bytes());
            h.update(if b.sha256 { b"\x01" } else { b"\x02" });
            h.update(b.old_unless.as_deref().unwrap_or("-").as_bytes());
        }
        h.update(if s.inline { b"i" } else { b"s" });
    }
    format!("NEXUS{}", &h.finalize().to_hex()[..16])
}

/// One resource's section of the probe output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub output: String,
    pub status: i32,
}

/// What `stat` said about one path.
struct Stat<'a> {
    raw_mode: u32,
    uid: &'a str,
    gid: &'a str,
    size: &'a str,
    user: &'a str,
    group: &'a str,
}

fn parse_stat(text: &str) -> Result<BTreeMap<&str, Stat<'_>>, String> {
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.splitn(7, '\t').collect();
        let [mode, uid, gid, size, user, group, name] = f[..] else {
            return Err(format!("unexpected stat output {line:?}"));
        };
        let raw_mode = u32::from_str_radix(mode, 16)
            .map_err(|_| format!("unexpected stat mode in {line:?}"))?;
        map.insert(
            name,
            Stat {
                raw_mode,
                uid,
                gid,
                size,
                user,
                group,
            },
        );
    }
    Ok(map)
}

fn parse_sums(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        // An escaped name (a leading backslash) is never one of ours: such paths are not batched.
        .filter(|l| !l.starts_with('\\'))
        .filter_map(|l| l.split_once("  "))
        .map(|(hash, name)| (name, hash))
        .collect()
}

/// The `key=value` lines the per-resource stat snippet ([`crate::resources::stat_probe`]) and the
/// file content check would have printed, so resources plan the same either way.
fn batch_lines(
    b: &ProbeBatch,
    stats: &BTreeMap<&str, Stat<'_>>,
    sums: &BTreeMap<&str, &str>,
    seal: Option<&SealKey>,
) -> Result<String, String> {
    let Some(st) = stats.get(b.path.as_str()) else {
        return Ok("exists=false\n".into());
    };
    let kind = match st.raw_mode & 0o170000 {
        0o120000 => "link",
        0o040000 => "directory",
        0o100000 => "file",
        _ => "other",
    };
    let mut out = format!(
        "exists=true\ntype={kind}\nowner={}\nowner_id={}\ngroup={}\ngroup_id={}\nmode={:04o}\n",
        st.user,
        st.uid,
        st.group,
        st.gid,
        st.raw_mode & 0o7777
    );
    if b.sha256 && kind == "file" {
        match (sums.get(b.path.as_str()), b.sealed) {
            (Some(hash), false) => out.push_str(&format!("size={}\nsha256={hash}\n", st.size)),
            (Some(hash), true) => {
                let key = seal.ok_or_else(|| {
                    format!(
                        "{} holds secrets: its hash can only be recorded sealed, and the vault is not open",
                        b.path
                    )
                })?;
                out.push_str(&format!("sha256={}\n", key.seal(hash)));
            }
            (None, _) => out.push_str("readable=false\n"),
        }
    }
    Ok(out)
}

/// Splits the output of [`script`] back into sections, one per spec, in order, each with the
/// batched path facts of its resource first. `seal` seals the hashes of batches marked sealed
/// (contents that hold secrets); without it such a batch is an error.
pub fn split(
    specs: &[Spec<'_>],
    output: &str,
    seal: Option<&SealKey>,
) -> Result<Vec<Section>, String> {
    let token = token(specs);
    let prefix = format!("@@{token} ");
    let mut frames: Vec<(String, Section)> = Vec::with_capacity(specs.len() + 2);
    let mut current: Option<(String, String)> = None;
    for line in output.split('\n') {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let mut parts = rest.split(' ');
            let (Some(label), Some(what)) = (parts.next(), parts.next()) else {
                return Err(format!("malformed probe marker {line:?}"));
            };
            match what {
                "begin" => {
                    if current.is_some() {
                        return Err(format!("probe section {label} began inside another"));
                    }
                    current = Some((label.to_string(), String::new()));
                }
                "end" => {
                    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
                    let Some((open, text)) = current.take() else {
                        return Err(format!("probe section {label} ended without beginning"));
                    };
                    if open != label {
                        return Err(format!("probe section {open} ended as {label}"));
                    }
                    // The framing printf adds a newline before each marker.
                    let output = text.strip_suffix('\n').unwrap_or(&text).to_string();
                    frames.push((open, Section { output, status }));
                }
                _ => return Err(format!("malformed probe marker {line:?}")),
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    let batched = specs.iter().any(|s| s.batch.is_some());
    let mut frames = frames.into_iter();
    let (mut stat_text, mut sums_text, mut olds_text) =
        (String::new(), String::new(), String::new());
    if batched {
        for (label, text) in [
            ("stat", &mut stat_text),
            ("sums", &mut sums_text),
            ("olds", &mut olds_text),
        ] {
            match frames.next() {
                Some((l, s)) if l == label => *text = s.output,
                _ => return Err(probe_cut(0, specs.len())),
            }
        }
    }
    let stats = parse_stat(&stat_text)?;
    let sums = parse_sums(&sums_text);
    let (_, hashed) = batched_paths(specs);
    let mut olds: BTreeMap<&str, &str> = BTreeMap::new();
    for line in olds_text.lines().filter(|l| !l.is_empty()) {
        let (i, b64) = line
            .split_once('=')
            .and_then(|(i, b)| Some((i.parse::<usize>().ok()?, b)))
            .ok_or_else(|| {
                format!(
                    "unexpected old content line in the probe output: {:.40}",
                    line
                )
            })?;
        let (path, _) = hashed
            .get(i)
            .ok_or_else(|| format!("old content for path {i} of {}", hashed.len()))?;
        olds.insert(path, b64);
    }
    let mut sections = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let Some((label, mut section)) = frames.next() else {
            return Err(probe_cut(i, specs.len()));
        };
        if label != i.to_string() {
            return Err(format!("probe section {label} out of order"));
        }
        if let Some(b) = spec.batch {
            let mut lines = batch_lines(b, &stats, &sums, seal)?;
            if let (Some(_), Some(old)) = (&b.old_unless, olds.get(b.path.as_str())) {
                lines.push_str(&format!("_old_b64={old}\n"));
            }
            section.output = lines + &section.output;
        }
        sections.push(section);
    }
    Ok(sections)
}

/// Runs one resource's probe through the local `sh`, as a host's probe would, for unit tests.
#[cfg(test)]
pub fn run_local(r: &dyn Resource) -> crate::resources::Observed {
    let owned = Owned::of(r);
    let specs = [owned.spec()];
    let sections = split(&specs, &run_sh(&script(&specs)), None).unwrap();
    assert_eq!(sections[0].status, 0, "{}", sections[0].output);
    crate::resources::Observed::parse(&sections[0].output).unwrap()
}

/// Runs a script with the local `sh` and returns its stdout; stderr must stay empty.
#[cfg(test)]
fn run_sh(script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn probe_cut(done: usize, of: usize) -> String {
    format!("probe output ended after {done} of {of} sections (was the probe interrupted?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(snippet: &str) -> Spec<'_> {
        Spec {
            snippet,
            batch: None,
            inline: false,
        }
    }

    #[test]
    fn runs_and_splits_through_sh() {
        let specs = [
            spec("echo a=1\necho b=2"),
            spec("echo x=$((1+1)); exit 3"),
            spec(""),
            spec("printf 'no_newline=1'"),
        ];
        let sections = split(&specs, &run_sh(&script(&specs)), None).unwrap();
        assert_eq!(
            sections[0],
            Section {
                output: "a=1\nb=2\n".into(),
                status: 0
            }
        );
        assert_eq!(
            sections[1],
            Section {
                output: "x=2\n".into(),
                status: 3
            }
        );
        assert_eq!(
            sections[2],
            Section {
                output: "".into(),
                status: 0
            }
        );
        assert_eq!(sections[3].output, "no_newline=1");
    }

    #[test]
    fn truncated_output_is_an_error() {
        let specs = [spec("echo a=1"), spec("echo b=2")];
        let text = run_sh(&script(&specs));
        let cut = &text[..text.rfind("@@").unwrap()];
        assert!(split(&specs, cut, None).is_err());
    }

    /// Probes batches only (no snippets) through the local `sh`.
    fn run_batches(batches: &[ProbeBatch]) -> Vec<Section> {
        let specs: Vec<Spec<'_>> = batches
            .iter()
            .map(|b| Spec {
                snippet: "",
                batch: Some(b),
                inline: true,
            })
            .collect();
        split(&specs, &run_sh(&script(&specs)), None).unwrap()
    }

    #[test]
    fn old_contents_go_to_the_right_files() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
        write("same", "same\n");
        write("diff one", "old one\n");
        write("no want", "whatever\n");
        write("diff two", "old two\n");
        let sha = |t: &str| crate::resources::file::sha256_hex(t.as_bytes());
        let batch = |name: &str, want: Option<String>| ProbeBatch {
            path: d.join(name).to_str().unwrap().to_string(),
            sha256: true,
            sealed: false,
            old_unless: want,
        };
        let batches = [
            batch("same", Some(sha("same\n"))),
            batch("missing", Some(sha("x"))),
            batch("diff one", Some(sha("new one\n"))),
            batch("no want", None),
            batch("diff two", Some(sha("new two\n"))),
        ];
        let sections = run_batches(&batches);
        let old = |i: usize| {
            crate::resources::Observed::parse(&sections[i].output)
                .unwrap()
                .get("_old_b64")
                .map(|b| {
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                        .unwrap()
                })
        };
        assert_eq!(old(0), None);
        assert_eq!(old(1), None);
        assert_eq!(old(2).as_deref(), Some("old one\n"));
        assert_eq!(old(3), None);
        assert_eq!(old(4).as_deref(), Some("old two\n"));
    }

    #[test]
    fn batched_paths_read_like_the_stat_snippet() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let file = d.join("a file\twith 'quotes' $(x) *");
        std::fs::write(&file, "hello\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4640)).unwrap();
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = d.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let missing = d.join("missing");
        let paths = [&file, &sub, &link, &fifo, &missing, &file];
        let batches: Vec<ProbeBatch> = paths
            .iter()
            .map(|p| ProbeBatch {
                path: p.to_str().unwrap().to_string(),
                sha256: true,
                sealed: false,
                old_unless: None,
            })
            .collect();
        let sections = run_batches(&batches);
        // The stat snippet per path, for comparison.
        for (b, section) in batches.iter().zip(&sections) {
            let mut alone = crate::resources::stat_probe(&b.path);
            if b.path.ends_with('*') {
                alone.push_str("\necho size=6\necho sha256=5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
            }
            let want = crate::resources::Observed::parse(&run_sh(&alone)).unwrap();
            let got = crate::resources::Observed::parse(&section.output).unwrap();
            assert_eq!(got, want, "{}", b.path);
            assert_eq!(section.status, 0);
        }
    }
}
