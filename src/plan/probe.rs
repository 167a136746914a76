//! One probe script per host, so a host's whole observed state costs a single round trip.
//!
//! Most resources of a typical host are files and directories, and what they need to know is the
//! same: does the path exist, its type, owner, group and mode, and for files the content hash.
//! Forking `stat` and `sha256sum` per resource cost about 10 processes per file, which dominated
//! planning time (see docs/benchmarks.md). So those facts are gathered for all of a host's paths by
//! one `find` and one `sha256sum` (or `stat` and a shell loop without GNU find), and each resource's
//! section is completed from them here. Files over 1 MiB are the exception: each is hashed on its
//! own, with OpenSSL where the host has it (`plan::host_hash`), three times as fast. Likewise the batched paths that may be links (a file's,
//! a directory's) are tested for it in one loop of builtins, and the paths whose existence
//! resources ask about (a command's `creates` and `removes`) in another. The rest of each
//! resource's probe is its own snippet, framed by markers. A resource without a snippet has no
//! section at all.

use std::collections::{BTreeMap, BTreeSet};

use super::host_hash::{self, LARGE_OVER};
use super::{ProbeBatch, ProbeExists};
use crate::secrets::SealKey;
use crate::shell::quote as q;

/// A shell word expanding to the target of the link the shell word `link` names, in hex (the
/// value of `link_target`). Runs programs: only for a path known to be a link.
pub fn link_target_hex(link: &str) -> String {
    format!("\"$(readlink -- {link} | od -An -tx1 -v | tr -d ' \\n')\"")
}

/// How many paths one `stat` command line carries; far below any ARG_MAX.
const STAT_CHUNK: usize = 512;

/// Old contents up to this size travel back with the probe for diffs.
pub const DIFF_LIMIT: u64 = 256 * 1024;

/// One resource's probe: its snippet, the path facts it wants batched, and whether the snippet is
/// simple enough (builtins, no `exit`, no `cd`) to run in the probe's own shell instead of a
/// subshell, which costs a fork.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub snippet: &'a str,
    pub batch: Option<&'a ProbeBatch>,
    /// Paths tested with `[ -e ]` for all resources at once.
    pub exists: &'a [ProbeExists],
    pub inline: bool,
}

/// A resource's probe, owned, for callers that hold resources rather than planned ones.
pub struct Owned {
    pub snippet: String,
    pub batch: Option<ProbeBatch>,
    pub exists: Vec<ProbeExists>,
    pub inline: bool,
}

impl Owned {
    pub fn spec(&self) -> Spec<'_> {
        Spec {
            snippet: &self.snippet,
            batch: self.batch.as_ref(),
            exists: &self.exists,
            inline: self.inline,
        }
    }
}

/// The batched paths whose link target is wanted, each once, in first-seen order.
fn link_paths<'a>(specs: &[Spec<'a>]) -> Vec<&'a str> {
    first_seen(
        specs
            .iter()
            .filter_map(|s| s.batch)
            .filter(|b| b.link)
            .map(|b| b.path.as_str()),
    )
}

/// The paths to test with `[ -e ]`, each once, in first-seen order.
fn exists_paths<'a>(specs: &[Spec<'a>]) -> Vec<&'a str> {
    first_seen(specs.iter().flat_map(|s| s.exists).map(|e| e.path.as_str()))
}

/// `paths` without repeats, in first-seen order.
fn first_seen<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    paths.filter(|p| seen.insert(*p)).collect()
}

/// The paths to `stat`, and the subset to hash, each once, in first-seen order; a hashed path
/// comes with the sha256 below which its old content is sent for a diff, if any batch asks.
fn batched_paths<'a>(specs: &[Spec<'a>]) -> (Vec<&'a str>, Vec<(&'a str, Option<&'a str>)>) {
    let (mut stat, mut hash): (Vec<&str>, Vec<(&str, Option<&str>)>) = (Vec::new(), Vec::new());
    let mut seen_stat = BTreeSet::new();
    // Where each hashed path sits in `hash`: a search per batch was quadratic in resources.
    let mut hashed: BTreeMap<&str, usize> = BTreeMap::new();
    for b in specs.iter().filter_map(|s| s.batch) {
        if seen_stat.insert(b.path.as_str()) {
            stat.push(b.path.as_str());
        }
        if b.sha256 {
            match hashed.get(b.path.as_str()) {
                Some(&i) => hash[i].1 = hash[i].1.or(b.old_unless.as_deref()),
                None => {
                    hashed.insert(b.path.as_str(), hash.len());
                    hash.push((b.path.as_str(), b.old_unless.as_deref()));
                }
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
    if specs.iter().any(|s| s.batch.is_some()) {
        path_facts(&mut s, specs, &token);
    }
    let links = link_paths(specs);
    if !links.is_empty() {
        link_targets(&mut s, &links, &token);
    }
    let exists = exists_paths(specs);
    if !exists.is_empty() {
        existence(&mut s, &exists, &token);
    }
    for (i, spec) in specs.iter().enumerate() {
        let snippet = spec.snippet.trim();
        // A resource whose facts all come from the batch has no section: `split` knows.
        if snippet.is_empty() {
            continue;
        }
        let (open, close) = if spec.inline { ("{", "}") } else { ("(", ")") };
        s.push_str(&format!(
            "printf '\\n@@{token} {i} begin\\n'\n{open}\n{snippet}\n{close} 2>/dev/null\nprintf '\\n@@{token} {i} end %s\\n' \"$?\"\n"
        ));
    }
    s
}

/// The `find` expression printing a path's stat line: type and permission bits, ids, size, owner
/// and group names, and the path last, so it may hold tabs. The leading `=` tells it from a
/// `sha256sum` line. A wanted owner or group is tested by id and printed as wanted; only other
/// ids are looked up by name (`%u`, `%g`), which costs a read of /etc/passwd or /etc/group.
fn find_printf(owners: &BTreeSet<&str>, groups: &BTreeSet<&str>) -> String {
    let names = |test: &str, wanted: &BTreeSet<&str>, fallback: &str| {
        let mut alternatives: Vec<String> = wanted
            .iter()
            .map(|name| {
                let format = name.replace('\\', "\\\\").replace('%', "%%");
                format!("-{test} {} -printf {}", q(name), q(&format))
            })
            .collect();
        alternatives.push(format!("-printf '{fallback}'"));
        if alternatives.len() == 1 {
            alternatives.remove(0)
        } else {
            format!("\\( {} \\)", alternatives.join(" -o "))
        }
    };
    format!(
        "-printf '=%y\\t%m\\t%U\\t%G\\t%s\\t' {} -printf '\\t' {} -printf '\\t%p\\n'",
        names("user", owners, "%u"),
        names("group", groups, "%g")
    )
}

/// A wanted owner or group worth testing by id: a name (ids are printed as such), one that
/// `find -printf` and our parsing carry verbatim.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.bytes().all(|b| b.is_ascii_digit())
        && !name.chars().any(|c| c.is_control())
}

/// The fallback without GNU find: `stat` prints the same facts (raw mode in hex), and a shell
/// loop picks the files to hash. Arguments: how many of the paths want hashing (they come
/// first), then the paths. The loop rotates the wanted small files to the end of the arguments
/// for one `sha256sum`, and prints each wanted large one as `>PATH` for [`LARGE_LOOP`]. Which
/// are large is read from `stat`'s own lines (a regular file's raw mode is 8xxx), only when a
/// number of 7 digits or more shows there may be one: a name misread there only sends a file
/// to the other program, never leaves it unhashed.
fn stat_fallback() -> String {
    format!(
        "_nx_fb() {{
_nx_k=$1; shift; _nx_n=$#
_nx_st=$(stat -c '%f\t%u\t%g\t%s\t%U\t%G\t%n' -- \"$@\" 2>/dev/null)
[ -z \"$_nx_st\" ] || printf '%s\\n' \"$_nx_st\"
_nx_bg=
case $_nx_k:$_nx_st in 0:*) ;; *'\t'[1-9][0-9][0-9][0-9][0-9][0-9][0-9]*)
_nx_ifs=$IFS; IFS='
'; set -f
for _nx_l in $_nx_st; do
_nx_z=${{_nx_l#*'\t'*'\t'*'\t'}}; _nx_z=${{_nx_z%%'\t'*}}
case ${{_nx_l%%'\t'*}}:$_nx_z in 8???:*[!0-9]* | 8???:) ;; 8???:*) [ \"$_nx_z\" -le {over} ] || _nx_bg=\"$_nx_bg
${{_nx_l#*'\t'*'\t'*'\t'*'\t'*'\t'*'\t'}}\" ;; esac
done
IFS=$_nx_ifs; set +f ;; esac
[ -z \"$_nx_bg\" ] || _nx_bg=\"$_nx_bg
\"
while [ \"$_nx_n\" -gt 0 ]; do
_nx_p=$1; shift; _nx_n=$((_nx_n - 1))
if [ \"$_nx_k\" -gt 0 ]; then _nx_k=$((_nx_k - 1)); if [ -f \"$_nx_p\" ] && [ ! -L \"$_nx_p\" ] && [ -r \"$_nx_p\" ]; then
case $_nx_bg in *\"
$_nx_p
\"*) printf '>%s\\n' \"$_nx_p\" ;; *) set -- \"$@\" \"$_nx_p\" ;; esac
fi; fi
done
if [ $# -gt 0 ]; then sha256sum -- \"$@\" 2>/dev/null; fi
return 0
}}
",
        over = LARGE_OVER
    )
}

/// Moves the `>PATH` lines of a chunk's output (`_nx_c`), the wanted large files, to `_nx_bp`
/// (one path a line), leaving the stat lines and sums.
const TAKE_LARGE: &str = "_nx_tl() {
_nx_ifs=$IFS; IFS='
'; set -f; _nx_x=
for _nx_l in $_nx_c; do case $_nx_l in '>'*) _nx_bp=\"$_nx_bp${_nx_l#>}
\" ;; *) _nx_x=\"$_nx_x$_nx_l
\" ;; esac; done
IFS=$_nx_ifs; set +f; _nx_c=${_nx_x%?}
}
";

/// Hashes the wanted large files of `_nx_bp`, each with `_nx_sha256` (OpenSSL where the host
/// has it, [`host_hash`]), and adds their sums to `_nx_o` as `sha256sum` prints them (batched
/// paths hold no newline or backslash, which it would escape). It runs after the last chunk:
/// the walk for old contents below relies on the batched sums coming in the order of the hashed
/// paths, and these come after all of them (the walk finds no more files once past them; a
/// large file's old content never travels anyway). A file replaced by a FIFO since `find`
/// looked is not opened.
const LARGE_LOOP: &str = "if [ -n \"$_nx_bp\" ]; then
_nx_ifs=$IFS; IFS='
'; set -f
for _nx_p in $_nx_bp; do
if [ -f \"$_nx_p\" ] && [ ! -L \"$_nx_p\" ] && _nx_sha256 \"$_nx_p\"; then _nx_o=\"$_nx_o$_nx_sum  $_nx_p
\"; fi
done
IFS=$_nx_ifs; set +f
fi
";

/// Most bytes of paths one `find` command line carries: far below any ARG_MAX.
const CHUNK_BYTES: usize = 64 * 1024;

/// The batched path facts, in one section: a `find` per chunk of paths prints each path's stat
/// line and runs one `sha256sum` for the regular, readable files (not links: a FIFO or a link to
/// a device would block or never end) among those that want a hash. Everything is done by
/// `find` and `sha256sum` themselves: no shell work per path. Where `find` is not GNU's (no
/// `-printf`), it fails without output and [`stat_fallback`] does the same with `stat`. Files
/// over [`LARGE_OVER`] are left out of the `sha256sum` and hashed each on its own by
/// [`LARGE_LOOP`], with OpenSSL where the host has it (three times as fast for a large file);
/// a host without a large file runs the same programs as before. Then the old contents of the
/// files whose hash is not the expected one, for the plan's diffs.
fn path_facts(s: &mut String, specs: &[Spec<'_>], token: &str) {
    let (stat, hash) = batched_paths(specs);
    let hashed: BTreeSet<&str> = hash.iter().map(|(p, _)| *p).collect();
    // The hashed paths first, so the sums come out in the order of `hash`.
    let others: Vec<&str> = stat
        .iter()
        .copied()
        .filter(|p| !hashed.contains(p))
        .collect();
    let paths: Vec<&str> = hash.iter().map(|(p, _)| *p).chain(others).collect();
    let batches = || specs.iter().filter_map(|s| s.batch);
    let owners = batches()
        .filter_map(|b| b.owner.as_deref())
        .filter(|n| is_plain_name(n))
        .collect();
    let groups = batches()
        .filter_map(|b| b.group.as_deref())
        .filter(|n| is_plain_name(n))
        .collect();
    let printf = find_printf(&owners, &groups);
    s.push_str(&stat_fallback());
    if !hash.is_empty() {
        s.push_str(host_hash::FUNCTION);
        s.push_str(TAKE_LARGE);
    }
    s.push_str(&format!(
        "printf '\\n@@{token} paths begin\\n'\n_nx_o=\n_nx_bp=\n"
    ));
    // Wanted and unwanted paths never share a `find`: telling them apart by name (`-path`)
    // costs a pattern match per file and excluded path, more than another `find` at ~50 files.
    for (group, hashing) in [(&paths[..hash.len()], true), (&paths[hash.len()..], false)] {
        let mut rest = group;
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len()
                && n < STAT_CHUNK
                && (n == 0 || bytes + rest[n].len() <= CHUNK_BYTES)
            {
                bytes += rest[n].len() + 3;
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let words: Vec<String> = chunk.iter().map(|p| q(p)).collect();
            // `-printf` is true: a large file goes no further. `-size +Nc` counts bytes.
            let (exec, wanted, take) = if hashing {
                (
                    format!(
                        " -type f -readable \\( -size +{LARGE_OVER}c -printf '>%p\\n' -o -exec sha256sum -- {{}} + \\)"
                    ),
                    n,
                    "case $_nx_c in '>'* | *'\n>'*) _nx_tl ;; esac\n",
                )
            } else {
                (String::new(), 0, "")
            };
            s.push_str(&format!(
                "set -- {}\n_nx_c=$(find \"$@\" -maxdepth 0 {printf}{exec} 2>/dev/null) || [ -n \"$_nx_c\" ] || _nx_c=$(_nx_fb {wanted} \"$@\")\n\
                 {take}[ -z \"$_nx_c\" ] || _nx_o=\"$_nx_o$_nx_c\n\"\n",
                words.join(" ")
            ));
        }
    }
    if !hash.is_empty() {
        s.push_str(LARGE_LOOP);
    }
    s.push_str(&format!(
        "printf '%s\\n@@{token} paths end 0\\n' \"$_nx_o\"\n"
    ));
    // Old contents for diffs. The expected sums are written as `sha256sum` prints them: when
    // every file is as wanted (a no-op plan), they appear verbatim in the output and one pattern
    // match settles it. Otherwise one pass: the sums list the hashed paths in the order they were
    // given (skipping unreadable ones; the large ones come last, [`LARGE_LOOP`]), so walking them beside the expected lines finds each
    // file's expected hash without searching. Stat lines are skipped: only a sum starts with 64
    // hex digits and two spaces. The lines are split by IFS, not `read`, which reads a pipe one
    // byte per system call. `-` means no diff is wanted (secrets). Each old content is printed as
    // `INDEX=BASE64`, INDEX counting the hashed paths from 0.
    // The paths whose old content was sent, one per line: apply's pre-image capture leaves
    // them out (exec::preimage).
    s.push_str(&format!("printf '\\n@@{token} olds begin\\n'\n_nx_sent=\n"));
    if hash.iter().any(|(_, want)| want.is_some()) {
        let expected: Vec<String> = hash
            .iter()
            .map(|(p, want)| format!("{}  {p}", want.unwrap_or("-")))
            .collect();
        s.push_str(&format!(
            "_nx_e={}\n\
             case $_nx_o in *\"\n$_nx_e\n\"*) ;; *)\n\
             _nx_i=0; _nx_ifs=$IFS; IFS='\n'; set -f\n\
             set -- $_nx_e\n\
             for _nx_l in $_nx_o; do\n\
             _nx_h=${{_nx_l%%  *}}; _nx_q=${{_nx_l#*  }}\n\
             case $_nx_h in '' | *[!0-9a-f]*) continue ;; esac\n\
             while [ $# -gt 0 ] && [ \"${{1#*  }}\" != \"$_nx_q\" ]; do shift; _nx_i=$((_nx_i + 1)); done\n\
             [ $# -gt 0 ] || break\n\
             _nx_w=${{1%%  *}}\n\
             if [ \"$_nx_w\" != - ] && [ \"$_nx_w\" != \"$_nx_h\" ]; then\n\
             _nx_n=$(wc -c < \"$_nx_q\" | tr -d ' ')\n\
             if [ \"$_nx_n\" -le {limit} ] && command -v base64 >/dev/null 2>&1; then printf '%s=' \"$_nx_i\"; base64 < \"$_nx_q\" | tr -d '\\n'; echo; _nx_sent=\"$_nx_sent$_nx_q\n\"; fi\n\
             fi\n\
             shift; _nx_i=$((_nx_i + 1))\n\
             done\n\
             IFS=$_nx_ifs; set +f ;;\n\
             esac\n",
            q(&expected.join("\n")),
            limit = DIFF_LIMIT
        ));
    }
    s.push_str(&format!("printf '\\n@@{token} olds end 0\\n'\n"));
}

/// The targets of those of `paths` that are symbolic links, in one section: one loop of
/// builtins (`[ -L ]`) printing `INDEX=HEX` for each link, INDEX counting `paths` from 0 and HEX
/// as [`crate::resources::link_probe`] prints it (the only programs run are for links).
fn link_targets(s: &mut String, paths: &[&str], token: &str) {
    let words: Vec<String> = paths.iter().map(|p| q(p)).collect();
    s.push_str(&format!(
        "printf '\\n@@{token} links begin\\n'\n_nx_li=0\n\
         for _nx_lp in {}; do if [ -L \"$_nx_lp\" ]; then printf '%s=%s\\n' \"$_nx_li\" {}; fi; _nx_li=$((_nx_li + 1)); done 2>/dev/null\n\
         printf '\\n@@{token} links end 0\\n'\n",
        words.join(" "),
        link_target_hex("\"$_nx_lp\"")
    ));
}

/// The existence of `paths`, in one section: one loop of builtins (`[ -e ]`, as a command's
/// `skip_if` tests them at apply) printing one line of `1` (exists) and `0`, a digit per path.
fn existence(s: &mut String, paths: &[&str], token: &str) {
    let words: Vec<String> = paths.iter().map(|p| q(p)).collect();
    s.push_str(&format!(
        "printf '\\n@@{token} exists begin\\n'\n_nx_ex=\n\
         for _nx_ep in {}; do if [ -e \"$_nx_ep\" ]; then _nx_ex=\"${{_nx_ex}}1\"; else _nx_ex=\"${{_nx_ex}}0\"; fi; done\n\
         printf '%s\\n@@{token} exists end 0\\n' \"$_nx_ex\"\n",
        words.join(" ")
    ));
}

fn token(specs: &[Spec<'_>]) -> String {
    // Gathered first and hashed in one call (the same hash as feeding the pieces one by one):
    // a host's few hundred short pieces cost blake3 more per call than per byte, and every
    // host's probe computes this twice, for its script and for its output.
    let mut h = Vec::with_capacity(specs.iter().map(|s| s.snippet.len() + 64).sum());
    for s in specs {
        h.extend_from_slice(s.snippet.as_bytes());
        h.push(0);
        if let Some(b) = s.batch {
            h.extend_from_slice(b.path.as_bytes());
            h.push(if b.sha256 { 1 } else { 2 });
            h.extend_from_slice(b.old_unless.as_deref().unwrap_or("-").as_bytes());
            h.push(if b.link { b'l' } else { b'-' });
        }
        for e in s.exists {
            h.push(3);
            h.extend_from_slice(e.key.as_bytes());
            h.push(0);
            h.extend_from_slice(e.path.as_bytes());
            h.push(0);
        }
        h.push(if s.inline { b'i' } else { b's' });
    }
    format!("NEXUS{}", &blake3::hash(&h).to_hex()[..16])
}

/// Why a probe's output cannot be split into sections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("unexpected {tool} output {line:?}")]
    PathLine { tool: &'static str, line: String },
    #[error("malformed probe marker {line:?}")]
    Marker { line: String },
    #[error("probe section {label} began inside another")]
    Nested { label: String },
    #[error("probe section {label} ended without beginning")]
    NotBegun { label: String },
    #[error("probe section {open} ended as {label}")]
    Mismatched { open: String, label: String },
    #[error("probe section {label} out of order")]
    OutOfOrder { label: String },
    #[error("probe output ended after {done} of {of} sections (was the probe interrupted?)")]
    Cut { done: usize, of: usize },
    #[error("unexpected old content line in the probe output: {line:.40}")]
    OldContentLine { line: String },
    #[error("old content for path {index} of {of}")]
    OldContentIndex { index: usize, of: usize },
    #[error("unexpected link target line in the probe output: {line:.40}")]
    LinkLine { line: String },
    #[error("link target for path {index} of {of}")]
    LinkIndex { index: usize, of: usize },
    #[error("unexpected existence line in the probe output for {of} paths: {line:.40}")]
    ExistsLine { line: String, of: usize },
    #[error("probe key {key:?} is not a lower-case name")]
    ExistsKey { key: String },
    #[error(
        "{path} holds secrets: its hash can only be recorded sealed, and the vault is not open"
    )]
    NotSealed { path: String },
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

/// Splits the paths section: `find` stat lines (a leading `=`), `sha256sum` lines (64 hex digits
/// and two spaces) and, from the fallback, `stat` lines (raw mode in hex).
#[allow(clippy::type_complexity)]
fn parse_paths(text: &str) -> Result<(BTreeMap<&str, Stat<'_>>, BTreeMap<&str, &str>), ProbeError> {
    let (mut stats, mut sums) = (BTreeMap::new(), BTreeMap::new());
    let unexpected = |tool, line: &str| ProbeError::PathLine {
        tool,
        line: line.to_string(),
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(find) = line.strip_prefix('=') {
            let (name, stat) = parse_find_line(find).ok_or_else(|| unexpected("find", line))?;
            stats.insert(name, stat);
        } else if let Some((hash, name)) = line.split_once("  ")
            && hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            sums.insert(name, hash);
        } else if line.starts_with('\\') {
            // An escaped sha256sum name is never one of ours: such paths are not batched.
        } else {
            let (name, stat) = parse_stat_line(line).ok_or_else(|| unexpected("stat", line))?;
            stats.insert(name, stat);
        }
    }
    Ok((stats, sums))
}

/// `%y\t%m\t%U\t%G\t%s\t%u\t%g\t%p` of `find -printf`: the type as a letter, the permission
/// bits in octal.
fn parse_find_line(line: &str) -> Option<(&str, Stat<'_>)> {
    let (kind, rest) = line.split_once('\t')?;
    let kind = match kind {
        "f" => 0o100000,
        "d" => 0o040000,
        "l" => 0o120000,
        "p" => 0o010000,
        "s" => 0o140000,
        "c" => 0o020000,
        "b" => 0o060000,
        _ => 0,
    };
    parse_stat_fields(rest, |perm| {
        Some(kind | (u32::from_str_radix(perm, 8).ok()? & 0o7777))
    })
}

/// `%f\t%u\t%g\t%s\t%U\t%G\t%n` of `stat -c`: the raw mode in hex.
fn parse_stat_line(line: &str) -> Option<(&str, Stat<'_>)> {
    parse_stat_fields(line, |mode| u32::from_str_radix(mode, 16).ok())
}

/// Mode, uid, gid, size, user, group and the name last (it may hold tabs).
fn parse_stat_fields(
    line: &str,
    raw_mode: impl Fn(&str) -> Option<u32>,
) -> Option<(&str, Stat<'_>)> {
    let f: Vec<&str> = line.splitn(7, '\t').collect();
    let [mode, uid, gid, size, user, group, name] = f[..] else {
        return None;
    };
    let stat = Stat {
        raw_mode: raw_mode(mode)?,
        uid,
        gid,
        size,
        user,
        group,
    };
    Some((name, stat))
}

/// The `key=value` lines the per-resource stat snippet ([`crate::resources::stat_probe`]) and the
/// file content check would have printed, so resources plan the same either way.
fn batch_lines(
    b: &ProbeBatch,
    stats: &BTreeMap<&str, Stat<'_>>,
    sums: &BTreeMap<&str, &str>,
    seal: Option<&SealKey>,
) -> Result<String, ProbeError> {
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
                let key = seal.ok_or_else(|| ProbeError::NotSealed {
                    path: b.path.clone(),
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
) -> Result<Vec<Section>, ProbeError> {
    let token = token(specs);
    let prefix = format!("@@{token} ");
    let mut frames: Vec<(String, Section)> = Vec::with_capacity(specs.len() + 2);
    let mut current: Option<(String, String)> = None;
    for line in output.split('\n') {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let mut parts = rest.split(' ');
            let malformed = || ProbeError::Marker {
                line: line.to_string(),
            };
            let (Some(label), Some(what)) = (parts.next(), parts.next()) else {
                return Err(malformed());
            };
            match what {
                "begin" => {
                    if current.is_some() {
                        return Err(ProbeError::Nested {
                            label: label.into(),
                        });
                    }
                    current = Some((label.to_string(), String::new()));
                }
                "end" => {
                    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
                    let Some((open, text)) = current.take() else {
                        return Err(ProbeError::NotBegun {
                            label: label.into(),
                        });
                    };
                    if open != label {
                        return Err(ProbeError::Mismatched {
                            open,
                            label: label.into(),
                        });
                    }
                    // The framing printf adds a newline before each marker.
                    let output = text.strip_suffix('\n').unwrap_or(&text).to_string();
                    frames.push((open, Section { output, status }));
                }
                _ => return Err(malformed()),
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    let batched = specs.iter().any(|s| s.batch.is_some());
    let links = link_paths(specs);
    let exists = exists_paths(specs);
    let mut frames = frames.into_iter();
    let (mut paths_text, mut olds_text, mut links_text, mut exists_text) =
        (String::new(), String::new(), String::new(), String::new());
    let mut wanted = Vec::new();
    if batched {
        wanted.extend([("paths", &mut paths_text), ("olds", &mut olds_text)]);
    }
    if !links.is_empty() {
        wanted.push(("links", &mut links_text));
    }
    if !exists.is_empty() {
        wanted.push(("exists", &mut exists_text));
    }
    for (label, text) in wanted {
        match frames.next() {
            Some((l, s)) if l == label => *text = s.output,
            _ => {
                return Err(ProbeError::Cut {
                    done: 0,
                    of: specs.len(),
                });
            }
        }
    }
    if exists_text.len() != exists.len() || !exists_text.bytes().all(|b| b == b'0' || b == b'1') {
        return Err(ProbeError::ExistsLine {
            line: exists_text,
            of: exists.len(),
        });
    }
    let found: BTreeMap<&str, bool> = exists
        .iter()
        .zip(exists_text.bytes())
        .map(|(p, b)| (*p, b == b'1'))
        .collect();
    let (stats, sums) = parse_paths(&paths_text)?;
    let (_, hashed) = batched_paths(specs);
    let mut olds: BTreeMap<&str, &str> = BTreeMap::new();
    for line in olds_text.lines().filter(|l| !l.is_empty()) {
        let (i, b64) = line
            .split_once('=')
            .and_then(|(i, b)| Some((i.parse::<usize>().ok()?, b)))
            .ok_or_else(|| ProbeError::OldContentLine {
                line: line.to_string(),
            })?;
        let (path, _) = hashed.get(i).ok_or(ProbeError::OldContentIndex {
            index: i,
            of: hashed.len(),
        })?;
        olds.insert(path, b64);
    }
    let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
    for line in links_text.lines().filter(|l| !l.is_empty()) {
        let (i, hex) = line
            .split_once('=')
            .and_then(|(i, h)| Some((i.parse::<usize>().ok()?, h)))
            .filter(|(_, h)| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ProbeError::LinkLine {
                line: line.to_string(),
            })?;
        let path = links.get(i).ok_or(ProbeError::LinkIndex {
            index: i,
            of: links.len(),
        })?;
        targets.insert(path, hex);
    }
    let mut sections = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let mut section = if spec.snippet.trim().is_empty() {
            Section {
                output: String::new(),
                status: 0,
            }
        } else {
            let Some((label, section)) = frames.next() else {
                return Err(ProbeError::Cut {
                    done: i,
                    of: specs.len(),
                });
            };
            if label != i.to_string() {
                return Err(ProbeError::OutOfOrder { label });
            }
            section
        };
        let mut lines = String::new();
        if let Some(b) = spec.batch {
            lines = batch_lines(b, &stats, &sums, seal)?;
            if let (Some(_), Some(old)) = (&b.old_unless, olds.get(b.path.as_str())) {
                lines.push_str(&format!("_old_b64={old}\n"));
            }
            if let (true, Some(hex)) = (b.link, targets.get(b.path.as_str())) {
                lines.push_str(&format!("link_target={hex}\n"));
            }
        }
        for e in spec.exists {
            // A key is planned by nexus; one that could forge other lines is refused.
            if !ProbeExists::valid_key(&e.key) {
                return Err(ProbeError::ExistsKey { key: e.key.clone() });
            }
            lines.push_str(&format!("{}={}\n", e.key, found[e.path.as_str()]));
        }
        if !lines.is_empty() {
            section.output = lines + &section.output;
        }
        sections.push(section);
    }
    Ok(sections)
}

/// Runs a script with the local `sh` and returns its stdout; stderr must stay empty.
#[cfg(test)]
pub(crate) fn run_sh(script: &str) -> String {
    run_sh_with_path(script, None)
}

/// [`run_sh`] with directories put first on `PATH`.
#[cfg(test)]
fn run_sh_with_path(script: &str, first: Option<&std::path::Path>) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match first {
        Some(dir) => run_sh_on_path(script, &format!("{}:{path}", dir.display())),
        None => run_sh_on_path(script, &path),
    }
}

/// [`run_sh`] with `PATH` set to `path`.
#[cfg(test)]
fn run_sh_on_path(script: &str, path: &str) -> String {
    // From a file: a script of a few hundred paths is longer than one argument may be.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg(file.path()).env("PATH", path);
    let out = cmd.output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(snippet: &str) -> Spec<'_> {
        Spec {
            snippet,
            batch: None,
            exists: &[],
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
        assert_eq!(
            split(&specs, cut, None),
            Err(ProbeError::Cut { done: 1, of: 2 })
        );
    }

    #[test]
    fn existence_answers_must_match_the_paths() {
        let exists = [
            ProbeExists::new("creates_exists", "/"),
            ProbeExists::new("removes_exists", "/nexus-no-such-path"),
        ];
        let specs = [Spec {
            snippet: "",
            batch: None,
            exists: &exists,
            inline: true,
        }];
        let text = run_sh(&script(&specs));
        let sections = split(&specs, &text, None).unwrap();
        assert_eq!(
            sections[0].output,
            "creates_exists=true\nremoves_exists=false\n"
        );
        // A line of the wrong length or with other characters is refused, not read as absent.
        for bad in ["1", "101", "1x", ""] {
            let forged = text.replace("\n10\n@@", &format!("\n{bad}\n@@"));
            assert_ne!(forged, text);
            assert!(
                matches!(
                    split(&specs, &forged, None),
                    Err(ProbeError::ExistsLine { of: 2, .. })
                ),
                "{bad:?}"
            );
        }
        let cut = &text[..text.find(" exists end").unwrap()];
        assert_eq!(
            split(&specs, cut, None),
            Err(ProbeError::Cut { done: 0, of: 1 })
        );
        // A key that could forge other lines is refused.
        let odd = [ProbeExists::new("x=1\ny", "/")];
        let specs = [Spec {
            exists: &odd,
            ..specs[0]
        }];
        assert!(matches!(
            split(&specs, &run_sh(&script(&specs)), None),
            Err(ProbeError::ExistsKey { .. })
        ));
    }

    #[test]
    fn link_targets_must_name_a_wanted_path() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/x", &link).unwrap();
        let batches = [ProbeBatch {
            link: true,
            ..ProbeBatch::for_path(link.to_str().unwrap(), false).unwrap()
        }];
        let specs = batch_specs(&batches);
        let text = run_sh(&script(&specs));
        let sections = split(&specs, &text, None).unwrap();
        assert!(
            sections[0].output.contains("\nlink_target=2f780a\n"),
            "{text}\n{sections:?}"
        );
        let forged = |line: &str| text.replace("\n0=2f780a\n", &format!("\n{line}\n"));
        assert!(matches!(
            split(&specs, &forged("1=2f780a"), None),
            Err(ProbeError::LinkIndex { index: 1, of: 1 })
        ));
        for bad in ["0=2f780a\nlink_target=0", "x=2f780a", "0=2f 78"] {
            assert!(
                matches!(
                    split(&specs, &forged(bad), None),
                    Err(ProbeError::LinkLine { .. })
                ),
                "{bad:?}"
            );
        }
    }

    /// Probes batches only (no snippets) through the local `sh`, with GNU find and with the
    /// fallback a `find` without `-printf` takes (a `find` that fails like BusyBox's does); both
    /// must give the same sections, which are returned.
    fn run_batches(batches: &[ProbeBatch]) -> Vec<Section> {
        let specs = batch_specs(batches);
        let text = script(&specs);
        let gnu = split(&specs, &run_sh(&text), None).unwrap();
        let fake = tempfile::tempdir().unwrap();
        let find = fake.path().join("find");
        std::fs::write(
            &find,
            "#!/bin/sh\necho \"find: unrecognized: -printf\" >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&find, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fallback = run_sh_with_path(&text, Some(fake.path()));
        assert!(
            !fallback.contains("\n="),
            "the fallback ran find: {fallback}"
        );
        assert_eq!(split(&specs, &fallback, None).unwrap(), gnu);
        gnu
    }

    fn batch_specs(batches: &[ProbeBatch]) -> Vec<Spec<'_>> {
        batches
            .iter()
            .map(|b| Spec {
                snippet: "",
                batch: Some(b),
                exists: &[],
                inline: true,
            })
            .collect()
    }

    #[test]
    fn only_wanted_files_are_hashed_in_any_chunking() {
        // Long names, so the paths need several `find` commands; some files want no hash, and
        // get commands of their own.
        for (count, every, chunks) in [(800, 2, 4), (1000, 5, 4)] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let mut batches = Vec::new();
            for i in 0..count {
                let name = format!("{i:04}-{}[*?]", "x".repeat(150));
                std::fs::write(d.join(&name), format!("{i}\n")).unwrap();
                batches.push(ProbeBatch {
                    path: d.join(&name).to_str().unwrap().to_string(),
                    sha256: i % every == 0,
                    sealed: false,
                    old_unless: None,
                    owner: None,
                    group: None,
                    link: false,
                });
            }
            let text = script(&batch_specs(&batches));
            assert_eq!(text.matches("find \"$@\"").count(), chunks);
            let sections = run_batches(&batches);
            for (i, (b, section)) in batches.iter().zip(&sections).enumerate() {
                let o = crate::plan::Observed::parse(&section.output).unwrap();
                assert_eq!(o.get("type"), Some("file"), "{}", b.path);
                let want = (i % every == 0)
                    .then(|| crate::plan::file_write::sha256_hex(format!("{i}\n").as_bytes()));
                assert_eq!(o.get("sha256").map(str::to_string), want, "{}", b.path);
            }
            // Unwanted files are not even read.
            let out = run_sh(&text);
            let sums = out
                .lines()
                .filter(|l| l.len() > 66 && &l[64..66] == "  ")
                .count();
            assert_eq!(sums, count / every);
        }
    }

    #[test]
    fn files_as_wanted_skip_the_walk_for_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let sha = |t: &str| crate::plan::file_write::sha256_hex(t.as_bytes());
        let mut batches = Vec::new();
        for (i, name) in ["a", "b  c", "d*"].iter().enumerate() {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{i}\n")).unwrap();
            let mut b = ProbeBatch::for_path(path.to_str().unwrap(), true).unwrap();
            b.old_unless = Some(sha(&format!("{i}\n")));
            batches.push(b);
        }
        // A prefix of another path must not pass for it.
        let b = batches[2].path.clone();
        std::fs::write(format!("{b}x"), "2\n").unwrap();
        let walked = |batches: &[ProbeBatch]| {
            let text = script(&batch_specs(batches));
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &text).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-x")
                .arg(file.path())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stderr).contains("_nx_i=0")
        };
        assert!(!walked(&batches));
        assert!(
            run_batches(&batches)
                .iter()
                .all(|s| !s.output.contains("_old_b64"))
        );
        let mut other = batches.clone();
        other[2].path.push('x');
        other[2].old_unless = Some(sha("other\n"));
        assert!(walked(&other));
        let mut missing = batches.clone();
        std::fs::remove_file(&batches[1].path).unwrap();
        assert!(walked(&missing));
        missing.remove(1);
        assert!(!walked(&missing));
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
        let sha = |t: &str| crate::plan::file_write::sha256_hex(t.as_bytes());
        let batch = |name: &str, want: Option<String>| ProbeBatch {
            path: d.join(name).to_str().unwrap().to_string(),
            sha256: true,
            sealed: false,
            old_unless: want,
            owner: None,
            group: None,
            link: false,
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
            crate::plan::Observed::parse(&sections[i].output)
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
        mkfifo(&fifo);
        let missing = d.join("missing");
        let paths = [&file, &sub, &link, &fifo, &missing, &file];
        let id = |flag: &str| {
            let out = std::process::Command::new("id").arg(flag).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let (user, group) = (id("-un"), id("-gn"));
        // Wanted owners by name (tested by id), by number (printed by name), another user's
        // name and none at all all read alike; a user the host does not know makes `find` fail,
        // and the fallback reads the same.
        let wanted: [(Option<&str>, Option<&str>); 4] = [
            (Some(&user), Some(&group)),
            (Some("0"), None),
            (Some("root"), Some("root")),
            (None, None),
        ];
        for (i, unknown) in [false, true].into_iter().enumerate() {
            let batches: Vec<ProbeBatch> = paths
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let (o, g) = wanted[(i + j) % wanted.len()];
                    let o = if unknown && j == 2 {
                        Some("nexus-no-such-user")
                    } else {
                        o
                    };
                    ProbeBatch {
                        // Links asked for by some: the others' sections must not get them.
                        link: (i + j) % 3 != 0,
                        ..ProbeBatch::for_path(p.to_str().unwrap(), true)
                            .unwrap()
                            .wanting(o, g)
                    }
                })
                .collect();
            let text = script(&batch_specs(&batches));
            assert_eq!(text.contains("-user nexus-no-such-user"), unknown);
            assert_eq!(run_sh(&text).contains("\n="), !unknown, "GNU find ran");
            check_like_stat_snippet(&batches);
        }
    }

    fn check_like_stat_snippet(batches: &[ProbeBatch]) {
        let sections = run_batches(batches);
        // The stat snippet per path, for comparison.
        for (b, section) in batches.iter().zip(&sections) {
            let mut alone = crate::resources::stat_probe(&b.path);
            if b.link {
                alone.push('\n');
                alone.push_str(&crate::resources::link_probe(&b.path));
            }
            if b.path.ends_with('*') {
                alone.push_str("\necho size=6\necho sha256=5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
            }
            let want = crate::plan::Observed::parse(&run_sh(&alone)).unwrap();
            let got = crate::plan::Observed::parse(&section.output).unwrap();
            assert_eq!(got, want, "{}", b.path);
            assert_eq!(section.status, 0);
        }
    }

    fn mkfifo(path: &std::path::Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.unwrap().success(), "mkfifo {}", path.display());
    }

    /// Writes an executable script `name` into `bin`.
    fn program(bin: &std::path::Path, name: &str, body: &str) {
        crate::shell::stand_in(&bin.join(name), body);
    }

    /// Large files go to OpenSSL one by one where the host has a sane one, small ones to the one
    /// batched `sha256sum`; whichever hashes, with GNU find or without, the sections are the
    /// same, and what is not a readable regular file is not opened.
    #[test]
    fn large_files_are_hashed_by_openssl_where_it_answers() {
        use std::os::unix::fs::PermissionsExt;
        let over = crate::plan::host_hash::LARGE_OVER as usize;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bytes =
            |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| (i % 251) as u8 ^ seed).collect() };
        // (name, content, the sum the plan wants: `None` for the content's own)
        let files: [(&str, Vec<u8>, Option<String>); 6] = [
            (
                "small",
                b"old\n".to_vec(),
                Some(crate::plan::file_write::sha256_hex(b"new\n")),
            ),
            ("at the limit", bytes(over, 1), None),
            ("over [the] limit*", bytes(over + 1, 2), None),
            ("big file two", bytes(3 * over, 3), Some("0".repeat(64))),
            ("unreadable big", bytes(over + 1, 4), None),
            ("no want", bytes(over + 1, 5), None),
        ];
        let mut batches = Vec::new();
        for (name, content, want) in &files {
            let path = d.join(name);
            std::fs::write(&path, content).unwrap();
            let mut b = ProbeBatch::for_path(path.to_str().unwrap(), true).unwrap();
            b.old_unless = match want {
                Some(w) => Some(w.clone()),
                None if *name == "no want" => None,
                None => Some(crate::plan::file_write::sha256_hex(content)),
            };
            batches.push(b);
        }
        std::fs::set_permissions(
            d.join("unreadable big"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        // Readable all the same to root.
        let readable = std::fs::File::open(d.join("unreadable big")).is_ok();
        let fifo = d.join("a fifo");
        mkfifo(&fifo);
        let link = d.join("link to big");
        std::os::unix::fs::symlink(d.join("big file two"), &link).unwrap();
        for p in [&fifo, &link, &d.join("missing")] {
            batches.push(ProbeBatch::for_path(p.to_str().unwrap(), true).unwrap());
        }
        let specs = batch_specs(&batches);
        let text = script(&specs);
        let check = |sections: &[Section], how: &str| {
            for (i, (name, content, _)) in files.iter().enumerate() {
                let o = crate::plan::Observed::parse(&sections[i].output).unwrap();
                assert_eq!(o.get("type"), Some("file"), "{how}: {name}");
                if *name == "unreadable big" && !readable {
                    assert_eq!(o.get("readable"), Some("false"), "{how}: {name}");
                    assert_eq!(o.get("sha256"), None, "{how}: {name}");
                    continue;
                }
                let sum = crate::plan::file_write::sha256_hex(content);
                assert_eq!(o.get("sha256"), Some(sum.as_str()), "{how}: {name}");
                assert_eq!(o.get("size"), Some(content.len().to_string().as_str()));
                // Only the small file that differs sends its old content.
                assert_eq!(o.get("_old_b64").is_some(), i == 0, "{how}: {name}");
            }
            for (section, kind) in sections[files.len()..].iter().zip(["other", "link"]) {
                let o = crate::plan::Observed::parse(&section.output).unwrap();
                assert_eq!(o.get("type"), Some(kind), "{how}");
                assert_eq!(o.get("sha256"), None, "{how}");
            }
            let o = crate::plan::Observed::parse(&sections.last().unwrap().output).unwrap();
            assert_eq!(o.get("exists"), Some("false"), "{how}");
        };
        let log = d.join("calls.log");
        let logged = |name: &str| {
            format!(
                "echo \"{name} $*\" >> {}; exec /usr/bin/{name} \"$@\"",
                q(log.to_str().unwrap())
            )
        };
        let large = if readable { 4 } else { 3 };
        // With GNU find and without: the host's own openssl, logged.
        let mut all = None;
        for gnu in [true, false] {
            let bin = crate::plan::host_hash::bin_with_openssl(Some(&logged("openssl")));
            program(bin.path(), "sha256sum", &logged("sha256sum"));
            if !gnu {
                program(
                    bin.path(),
                    "find",
                    "echo \"find: unrecognized: -printf\" >&2; exit 1",
                );
            }
            let _ = std::fs::remove_file(&log);
            let out = run_sh_on_path(&text, bin.path().to_str().unwrap());
            let sections = split(&specs, &out, None).unwrap();
            let how = if gnu { "GNU find" } else { "fallback" };
            check(&sections, how);
            let calls = std::fs::read_to_string(&log).unwrap();
            // One openssl per large file, each reading its stdin; one sha256sum for the rest,
            // naming exactly the small files.
            assert_eq!(
                calls.matches("openssl dgst -sha256 -r\n").count(),
                large,
                "{how}: {calls}"
            );
            let sums: Vec<&str> = calls
                .lines()
                .filter(|l| l.starts_with("sha256sum"))
                .collect();
            assert_eq!(
                sums,
                [format!(
                    "sha256sum -- {} {}",
                    batches[0].path, batches[1].path
                )],
                "{how}: {calls}"
            );
            assert_eq!(all.get_or_insert_with(|| sections.clone()), &sections);
        }
        // No openssl, one that fails and one that prints something else: sha256sum's sums.
        for openssl in [None, Some("exit 1"), Some("echo 'SHA2-256(stdin)= 00'")] {
            for gnu in [true, false] {
                let bin = crate::plan::host_hash::bin_with_openssl(openssl);
                if !gnu {
                    program(bin.path(), "find", "exit 1");
                }
                let out = run_sh_on_path(&text, bin.path().to_str().unwrap());
                let sections = split(&specs, &out, None).unwrap();
                check(&sections, &format!("{openssl:?}, GNU find {gnu}"));
                assert_eq!(all.as_ref(), Some(&sections));
            }
        }
    }
}
