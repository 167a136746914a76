//! Replacing a file with new content, atomically, on a host: the one place that knows how.
//!
//! A write runs alone as [`FileWrite::script`], its content on stdin: checks, a temporary file
//! beside the target, the content, a sha256 check of what landed, mode and owner, a rename. Every
//! one of those is a program on the host, seven per file, which made files the dearest resource
//! of a cold apply. When several writes share one command (exec/batch.rs), [`run_prepare`] and
//! [`run_member`] do the same with the contents written by the shell's own `printf` from the
//! script, one `sha256sum`, one `chmod` per mode and one `chown` per owner for all of them, and
//! one `mv` each, or for new files one util-linux `rename.ul` for all (each rename atomic still).
//! Whatever the shared commands cannot settle (a file that keeps its existing mode or owner, a
//! failure in a shared command) falls back, member by member, to the lines of the script alone,
//! so each resource still gets its own status and error.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::host_hash;
use crate::shell::quote as q;
use sha2::{Digest, Sha256};

/// A file replaced by the content on the step's stdin, as data (a step's `write` in the plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileWrite {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Octal, four digits; without it a file keeps its existing mode, a new one gets 0644.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The plan saw a symbolic link at `path`: the link itself is replaced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaces_link: bool,
    /// An existing file is first copied here (`cp -p`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_to: Option<String>,
    /// sha256 of the content, checked on the host before the rename.
    pub sha256: String,
}

/// The program and argument that give a new file or directory `owner` and `group`, if either
/// is asked for: `chown O:G`, `chown O` or `chgrp G`.
pub(super) fn chown_of(owner: Option<&str>, group: Option<&str>) -> Option<(&'static str, String)> {
    match (owner, group) {
        (Some(o), Some(g)) => Some(("chown", format!("{o}:{g}"))),
        (Some(o), None) => Some(("chown", o.to_string())),
        (None, Some(g)) => Some(("chgrp", g.to_string())),
        (None, None) => None,
    }
}

/// Shell text that prints `msg` to stderr and fails.
fn fail_with(msg: &str) -> String {
    format!("{{ printf '%s\\n' {} >&2; exit 1; }}", q(msg))
}

/// The directory holding `path` (absolute, validated): `/a/b` → `/a`, `/b` → `/`.
pub fn parent_dir(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

/// `dir` as the shell word a path under it starts with: empty for `/`, so that `WORD/NAME` is
/// never `//NAME`.
fn dir_word(dir: &str) -> String {
    match dir {
        "/" => String::new(),
        d => q(d),
    }
}

impl FileWrite {
    fn dir(&self) -> &str {
        parent_dir(&self.path)
    }

    /// The directory as a word to put before `/.nexus-…`: empty for `/`.
    fn dir_word(&self) -> String {
        dir_word(self.dir())
    }

    /// What must hold before anything is written: (a condition that fails the write, its
    /// message), in order.
    fn refusals(&self) -> Vec<(String, String)> {
        let (p, path, dir) = (q(&self.path), &self.path, self.dir());
        let mut r = vec![(
            format!("[ ! -d {} ]", q(dir)),
            format!("nexus: directory {dir} does not exist (add a directory resource for it)"),
        )];
        if self.replaces_link {
            // What was a link when planning and is something else now (a package earlier in
            // this apply replaced it) is not what the plan showed: leave it.
            r.push((
                format!("[ -e {p} ] && [ ! -L {p} ]"),
                format!(
                    "nexus: {path} is no longer a symbolic link since planning; nothing was replaced (plan again)"
                ),
            ));
        } else {
            r.push((
                format!("[ -d {p} ]"),
                format!("nexus: {path} is a directory"),
            ));
            // A link the plan did not show appeared since (a package earlier in this apply made
            // it): replacing it unannounced would silently change what it pointed to.
            r.push((
                format!("[ -L {p} ]"),
                format!(
                    "nexus: {path} became a symbolic link since planning; nothing was replaced (plan again)"
                ),
            ));
        }
        r
    }

    /// As [`FileWrite::verify`], for a large staged content: hashed by
    /// [`host_hash::FUNCTION`] (OpenSSL where the host has it: three times as fast as
    /// coreutils' for a large file, and the host's check is most of what a large write costs
    /// beyond the transfer). Given the plan's sum, it takes any other answer of OpenSSL again
    /// from `sha256sum` before the write is refused, so an `openssl` that prints something else
    /// costs time, never a false refusal.
    fn verify_large(&self, sha_word: &str) -> String {
        format!(
            "{}_nx_sha256 \"$tmp\" {sha_word} || :\n[ \"$_nx_sum\" = {sha_word} ] || {}\n",
            host_hash::FUNCTION,
            fail_with(&format!(
                "nexus: the content written to {} does not match the plan",
                self.path
            ))
        )
    }

    /// Checks the content in `$tmp` against `sha_word` (a shell word).
    fn verify(&self, sha_word: &str) -> String {
        // `${h%% *}` rather than `| cut`: each program started costs the host about a millisecond.
        format!(
            "sum=$(sha256sum < \"$tmp\") || sum=\n[ \"${{sum%% *}}\" = {sha_word} ] || {}\n",
            fail_with(&format!(
                "nexus: the content written to {} does not match the plan",
                self.path
            ))
        )
    }

    /// Gives `$tmp` its owner and mode, one file at a time. Owners first: a chown clears the
    /// set-user-ID and set-group-ID bits a chmod gave.
    fn attributes(&self) -> String {
        let p = q(&self.path);
        let mut s = String::new();
        // Replacing a file keeps its owner unless another is asked for; only root may give a
        // file away, and anyone else already owns what they create, so a failure here is harmless.
        if !self.replaces_link && (self.owner.is_none() || self.group.is_none()) {
            s.push_str(&format!(
                "if [ -e {p} ]; then chown \"$(stat -c %u:%g {p})\" \"$tmp\" 2>/dev/null || :; fi\n"
            ));
        }
        if let Some((program, who)) = self.chown() {
            s.push_str(&format!("{program} -- {} \"$tmp\"\n", q(&who)));
        }
        // A link's own mode (0777) and owner are not a file's: a file in its place is a new file.
        match &self.mode {
            Some(m) => s.push_str(&format!("chmod {} \"$tmp\"\n", q(m))),
            None if self.replaces_link => s.push_str("chmod 0644 \"$tmp\"\n"),
            None => s.push_str(&format!(
                "if [ -e {p} ]; then chmod \"$(stat -c %a {p})\" \"$tmp\"; else chmod 0644 \"$tmp\"; fi\n"
            )),
        }
        s
    }

    /// The name of the target in its directory when the shared rename may take this write
    /// ([`shared_rename`]): not when it replaces a link or keeps a backup (each needs its own
    /// steps first), nor when the temporary file's longer name might not fit NAME_MAX.
    fn shared_rename_name(&self) -> Option<&str> {
        let base = self.path.trim_end_matches('/').rsplit('/').next()?;
        // sha256sum escapes a name with a backslash or newline, which would fail the shared check.
        (!self.replaces_link
            && self.backup_to.is_none()
            && !base.is_empty()
            && base.len() <= 200
            && !base.contains(['\\', '\n']))
        .then_some(base)
    }

    /// The program and argument that give the file its explicit owner and group, if any.
    fn chown(&self) -> Option<(&'static str, String)> {
        chown_of(self.owner.as_deref(), self.group.as_deref())
    }

    /// The backup copy, if asked for.
    fn backup(&self) -> String {
        match &self.backup_to {
            Some(b) => {
                let p = q(&self.path);
                format!("if [ -e {p} ]; then cp -p -- {p} {}; fi\n", q(b))
            }
            None => String::new(),
        }
    }

    /// The rename of `$tmp` over the path.
    fn rename(&self) -> String {
        let p = q(&self.path);
        let mut s = String::new();
        if self.replaces_link {
            // mv would move the file into a directory the link points to, instead of over the link.
            s.push_str(&format!(
                "if [ -L {p} ] && [ -d {p} ]; then rm -f -- {p}; fi\n"
            ));
        }
        s.push_str(&format!("mv -f -- \"$tmp\" {p}\n"));
        s
    }

    /// The write alone, its content on stdin, checked against its `sha256`.
    pub fn script(&self) -> String {
        self.script_checked_by(&self.sha256)
    }

    /// [`FileWrite::script`], checking the content against `sha_word`, a shell word (for
    /// a content whose sha256 only the executor knows, `"$NEXUS_CONTENT_SHA256"`).
    pub fn script_checked_by(&self, sha_word: &str) -> String {
        self.script_filled_by(sha_word, None)
    }

    /// [`FileWrite::script_checked_by`], the content taken from a file the transport staged
    /// on the host (`staged`, absolute) rather than from stdin. It is removed however the
    /// script ends. With `copy` its bytes are copied into the temporary file, which the script's
    /// user made as for stdin (so a new file's owner is the same either way); without, it is the
    /// temporary file itself: it must then be beside the target and owned by the script's user.
    pub fn script_from_staged(&self, sha_word: &str, staged: &str, copy: bool) -> String {
        self.script_filled_by(sha_word, Some((staged, copy)))
    }

    fn script_filled_by(&self, sha_word: &str, staged: Option<(&str, bool)>) -> String {
        let mut s = String::from("set -e\n");
        if let Some((path, _)) = staged {
            s.push_str(&format!(
                "trap {} EXIT\n",
                q(&format!("rm -f -- {}", q(path)))
            ));
        }
        for (cond, msg) in self.refusals() {
            s.push_str(&format!("if {cond}; then {}; fi\n", fail_with(&msg)));
        }
        s.push_str(&self.backup());
        match staged {
            None => {
                s.push_str(&temp_beside(&self.dir_word(), "tmp"));
                s.push_str("cat > \"$tmp\"\n");
            }
            Some((path, true)) => {
                s.push_str(&temp_beside(&self.dir_word(), "tmp"));
                let p = q(path);
                s.push_str(&format!(
                    "trap {} EXIT\n",
                    q(&format!("rm -f -- \"$tmp\" {p}"))
                ));
                // Staged beside nothing that is ever written (the login user's home): what a
                // killed run left there is cleaned here, as `temp_beside` does for its own.
                s.push_str(&stale_temps(&dir_word(parent_dir(path))));
                s.push_str(&format!("cat -- {p} > \"$tmp\"\nrm -f -- {p}\n"));
            }
            Some((path, false)) => {
                // The staged file is the temporary file: beside the target, made anew (SFTP's
                // exclusive create) by the script's user, readable by it alone, as `mktemp`
                // makes one. Renamed onto a `mktemp` file first, ext4 would write out all of it
                // then and there (its replace-by-rename rule: 0.6 s per new GiB here), and a new
                // target would wait for that; it is checked and renamed into place as it is.
                s.push_str(&stale_temps(&self.dir_word()));
                s.push_str(&format!(
                    "tmp={}\ntrap 'rm -f -- \"$tmp\"' EXIT\ntrap 'exit 143' TERM\n",
                    q(path)
                ));
            }
        }
        s.push_str(&match staged {
            Some(_) => self.verify_large(sha_word),
            None => self.verify(sha_word),
        });
        s.push_str(&self.attributes());
        s.push_str(&self.rename());
        s.push_str("trap - EXIT");
        s
    }

    /// Whether a write of this kind can settle its mode and owner in a shared command when its
    /// target does not exist yet; an existing target's mode or owner it keeps is read one by one.
    fn keeps_existing(&self) -> bool {
        !self.replaces_link && (self.mode.is_none() || self.owner.is_none() || self.group.is_none())
    }

    /// The mode a shared `chmod` gives it (when it does not keep an existing one).
    fn shared_mode(&self) -> String {
        self.mode.clone().unwrap_or_else(|| "0644".into())
    }
}

/// `bytes` as a `printf` format that prints exactly them: printable ASCII as it is (`%` and `\`
/// doubled, `'` escaped), newlines as they are, every other byte as a three-digit octal escape.
/// The script stays ASCII, and a NUL byte survives, which no shell word can hold.
pub fn printf_format(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + bytes.len() / 8 + 2);
    s.push('\'');
    for &b in bytes {
        match b {
            b'%' => s.push_str("%%"),
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\047"),
            b'\n' | 0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s.push('\'');
    s
}

/// One write of a run in a shared command: its index in the command (names its variables),
/// what it writes, and its content.
pub struct RunMember<'a> {
    pub index: usize,
    pub write: &'a FileWrite,
    pub content: &'a [u8],
}

/// The shell text that starts a run of writes in a shared command, before the first member's
/// frame: for each, the refusals, a temporary file with its content, and then, for all at once,
/// the sha256 check, modes and owners. It prints nothing; per member it leaves `$_nx_tI` (the
/// temporary file), `$_nx_eI` (why it cannot be written, `-` when no temporary file could be
/// made), `$_nx_sI` (set: it keeps an existing mode or owner), and `$_nx_ok`, empty when a shared
/// command failed, for [`run_member`] to finish. `nonce` (random, one per command) makes the
/// temporary files' names unknown in advance.
pub fn run_prepare(members: &[RunMember<'_>], nonce: &str) -> String {
    let mut s = String::from("_nx_nl='\n'\n");
    let temps: Vec<String> = members
        .iter()
        .map(|m| format!("\"$_nx_t{}\"", m.index))
        .collect();
    // The temporary files are gone once renamed: only a write that stopped short leaves one,
    // and only then does the trap start a program.
    s.push_str(&format!(
        "trap {} EXIT\ntrap 'exit 143' TERM\n",
        q(&format!(
            "for _nx_x in {}; do [ -z \"$_nx_x\" ] || [ ! -e \"$_nx_x\" ] || rm -f -- \"$_nx_x\"; done",
            temps.join(" ")
        ))
    ));
    let mut cleaned = BTreeSet::new();
    for m in members {
        let (i, w) = (m.index, m.write);
        let dir = w.dir_word();
        s.push_str(&format!(
            "_nx_t{i}=; _nx_e{i}=; _nx_s{i}=; _nx_n{i}=; _nx_r{i}=\n"
        ));
        for (n, (cond, msg)) in w.refusals().iter().enumerate() {
            let kw = if n == 0 { "if" } else { "elif" };
            s.push_str(&format!("{kw} {cond}; then _nx_e{i}={}\n", q(msg)));
        }
        s.push_str("else\n");
        if cleaned.insert(dir.clone()) {
            s.push_str(&stale_temps(&dir));
        }
        // In a sticky directory (/tmp) others may create files: there mktemp picks a name no
        // one made. Elsewhere only the directory's owners may, and the name is random: the
        // shell creates it, refusing one that exists (noclobber), which starts no program.
        // A write the shared rename may take has its target's name after a common prefix,
        // which the rename removes ([`shared_rename`]).
        let made = |var: &str| {
            format!(
                "[ ! -e \"${var}\" ] && [ ! -L \"${var}\" ] && {{ set -C; printf '' 2>/dev/null >\"${var}\"; }}"
            )
        };
        let plain = format!(
            "_nx_t{i}={dir}/.nexus-$$-{nonce}{i}; {} || _nx_t{i}=",
            made(&format!("_nx_t{i}"))
        );
        // The longer name may not fit a filesystem with short names: then the plain one.
        let create = match w.shared_rename_name() {
            Some(base) => format!(
                "_nx_n{i}=1; _nx_t{i}={dir}/.nexus-$$-{nonce}-{}; {} || {{ _nx_n{i}=; {plain}; }}",
                q(base),
                made(&format!("_nx_t{i}"))
            ),
            None => plain,
        };
        s.push_str(&format!(
            "if [ -k {d} ]; then _nx_t{i}=$(mktemp {dir}/.nexus-$$-XXXXXXXX 2>/dev/null) || _nx_t{i}=\n\
             else {create}; set +C; fi\n\
             if [ -z \"$_nx_t{i}\" ]; then _nx_e{i}=-\n\
             elif ! printf -- {} 2>/dev/null >|\"$_nx_t{i}\"; then _nx_e{i}={}\n\
             fi\n",
            printf_format(m.content),
            q(&format!(
                "nexus: could not write the content of {} to a temporary file in {}",
                w.path,
                w.dir()
            )),
            d = q(w.dir()),
        ));
        if w.keeps_existing() {
            s.push_str(&format!("[ ! -e {} ] || _nx_s{i}=1\n", q(&w.path)));
        }
        s.push_str("fi\n");
    }
    // One check of every content that landed, then one chmod per mode and one chown per owner
    // over the files that do not keep an existing mode or owner.
    s.push_str("_nx_ok=1; _nx_want=; set --\n");
    for m in members {
        let i = m.index;
        s.push_str(&format!(
            "[ -n \"$_nx_e{i}\" ] || {{ set -- \"$@\" \"$_nx_t{i}\"; _nx_want=\"$_nx_want\"{}'  '\"$_nx_t{i}$_nx_nl\"; }}\n",
            m.write.sha256
        ));
    }
    // sha256sum escapes a name with a backslash or newline: such a name compares unequal, and
    // its write is checked alone.
    s.push_str(
        "if [ $# -gt 0 ]; then _nx_got=$(sha256sum -- \"$@\" 2>/dev/null) || _nx_ok=; [ \"$_nx_got$_nx_nl\" = \"$_nx_want\" ] || _nx_ok=; fi\n",
    );
    // Owners before modes: a chown clears the set-user-ID and set-group-ID bits a chmod gave.
    let mut owners: BTreeMap<(&str, String), Vec<usize>> = BTreeMap::new();
    let mut modes: BTreeMap<(&str, String), Vec<usize>> = BTreeMap::new();
    for m in members {
        if let Some((program, who)) = m.write.chown() {
            owners.entry((program, who)).or_default().push(m.index);
        }
        modes
            .entry(("chmod", m.write.shared_mode()))
            .or_default()
            .push(m.index);
    }
    let mut shared = String::new();
    for ((program, value), indices) in owners.iter().chain(&modes) {
        shared.push_str("set --\n");
        for i in indices {
            shared.push_str(&format!(
                "[ -n \"$_nx_e{i}$_nx_s{i}\" ] || set -- \"$@\" \"$_nx_t{i}\"\n"
            ));
        }
        shared.push_str(&format!(
            "[ $# -eq 0 ] || {program} -- {} \"$@\" 2>/dev/null || _nx_ok=\n",
            q(value)
        ));
    }
    s.push_str(&format!("if [ -n \"$_nx_ok\" ]; then\n{shared}fi\n"));
    s.push_str(&shared_rename(members, nonce));
    s
}

/// The shell text that renames the new files of a run into place with one program instead of
/// one `mv` each: util-linux's `rename.ul` (Debian's name for it, so never Perl's `rename`,
/// whose arguments mean something else), where the host has it, removing the temporary files'
/// common prefix `.nexus-PID-NONCE-`. Each rename is still atomic (rename(2) per file).
///
/// It takes the members from the first on, while each is settled (its content checked, its
/// mode and owner given), renamed by nothing else first (no backup), and its target does not
/// exist: a new name in a directory just written to, which nothing but a race makes fail. The
/// batch reports each member in order and stops at the first failure, so if the rename fails
/// for one of them, those it renamed after that one are put back (their targets did not exist)
/// and each is left to its own frame. A member it renamed has `$_nx_rI` set.
fn shared_rename(members: &[RunMember<'_>], nonce: &str) -> String {
    let mut s = String::from(
        "_nx_go=; set --\n\
         if [ -n \"$_nx_ok\" ] && command -v rename.ul >/dev/null 2>&1; then _nx_go=1; fi\n",
    );
    let mut taken = Vec::new();
    for m in members {
        if m.write.shared_rename_name().is_none() {
            break;
        }
        let (i, p) = (m.index, q(&m.write.path));
        s.push_str(&format!(
            "if [ -n \"$_nx_go\" ] && [ -n \"$_nx_n{i}\" ] && [ -z \"$_nx_e{i}$_nx_s{i}\" ] && [ ! -e {p} ] && [ ! -L {p} ]; then set -- \"$@\" \"$_nx_t{i}\"; _nx_r{i}=1; else _nx_go=; fi\n"
        ));
        taken.push((i, p));
    }
    if taken.len() < 2 {
        // One file costs one program either way.
        return String::new();
    }
    // Whatever its exit status says (util-linux's rename succeeds when any name was renamed),
    // a temporary file still there was not renamed.
    s.push_str(&format!(
        "if [ $# -gt 1 ]; then\n\
         rename.ul -- .nexus-$$-{nonce}- '' \"$@\" 2>/dev/null || :\n\
         _nx_x=\n"
    ));
    for (i, p) in &taken {
        s.push_str(&format!(
            "if [ -n \"$_nx_r{i}\" ]; then if [ -e \"$_nx_t{i}\" ] || [ ! -e {p} ]; then _nx_x=1; _nx_r{i}=; elif [ -n \"$_nx_x\" ]; then mv -f -- {p} \"$_nx_t{i}\" 2>/dev/null && _nx_r{i}=; fi; fi\n"
        ));
    }
    s.push_str("else\n");
    // Fewer than two were taken: each renames its own.
    for (i, _) in &taken {
        s.push_str(&format!("_nx_r{i}=\n"));
    }
    s.push_str("fi\n");
    s
}

/// The member `index`'s part of a run, in its own frame (a subshell) after [`run_prepare`]:
/// its refusal, or what the shared commands left to it, then its backup and rename (unless the
/// shared rename did it).
pub fn run_member(index: usize, w: &FileWrite) -> String {
    let i = index;
    let mut s = String::from("set -e\n");
    s.push_str(&format!(
        "if [ -n \"$_nx_e{i}\" ]; then\n\
         if [ \"$_nx_e{i}\" = - ]; then _nx_x=$(mktemp {}/.nexus-$$-XXXXXXXX) && rm -f -- \"$_nx_x\"; _nx_e{i}={}; fi\n\
         printf '%s\\n' \"$_nx_e{i}\" >&2; exit 1\n\
         fi\n\
         tmp=$_nx_t{i}\n\
         if [ -z \"$_nx_ok\" ] || [ -n \"$_nx_s{i}\" ]; then\n",
        w.dir_word(),
        q(&format!(
            "nexus: could not create a temporary file in {}",
            w.dir()
        )),
    ));
    s.push_str(&w.verify(&w.sha256));
    s.push_str(&w.attributes());
    s.push_str("fi\n");
    s.push_str(&format!("if [ -z \"$_nx_r{i}\" ]; then\n"));
    s.push_str(&w.backup());
    s.push_str(&w.rename());
    s.push_str("fi\n");
    s
}

/// Lowercase hex sha256, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Shell text that sets `var` to a new temporary file in the directory `dir` (a shell word,
/// quoted or expanded; empty for `/`), removed when the script exits or is sent TERM (what the
/// watchdog sends first). The same directory as the target, so the final rename is atomic.
///
/// Its name carries the pid of the writing shell, `.nexus-PID-XXXXXXXX`: a writer killed
/// outright (KILL, a reboot) leaves it behind, and the next write to that directory removes the
/// `.nexus-*` files whose writer is gone. One whose writer lives (another apply writing now) is
/// kept; names without a pid (from earlier versions of nexus) are removed once an hour old.
pub fn temp_beside(dir: &str, var: &str) -> String {
    format!(
        "{}{var}=$(mktemp {dir}/.nexus-$$-XXXXXXXX)\n\
         trap 'rm -f \"${var}\"' EXIT\n\
         trap 'exit 143' TERM\n",
        stale_temps(dir)
    )
}

/// Shell text that removes the `.nexus-*` files in `dir` (as for [`temp_beside`]) whose writer
/// is gone. Builtins only, unless there is one to remove. One it may not remove (another user's,
/// in a sticky directory such as /tmp) is left: it must not stop this write.
pub fn stale_temps(dir: &str) -> String {
    format!(
        "for _nx_o in {dir}/.nexus-*; do [ -f \"$_nx_o\" ] || continue; _nx_p=${{_nx_o##*/.nexus-}}; _nx_p=${{_nx_p%%-*}}\n\
         case $_nx_p in '' | *[!0-9]*) find \"$_nx_o\" -mmin +60 -delete 2>/dev/null || : ;; *) [ -d \"/proc/$_nx_p\" ] || rm -f -- \"$_nx_o\" 2>/dev/null || : ;; esac; done\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_dirs() {
        assert_eq!(parent_dir("/a/b c/d"), "/a/b c");
        assert_eq!(parent_dir("/d"), "/");
    }

    #[test]
    fn printf_format_prints_every_byte_back() {
        let all: Vec<u8> = (0..=255u8).chain(*b"%s %% \\n \\0 '' -n\n").collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf -- {}", printf_format(&all)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, all);
        assert_eq!(printf_format(b"a b\n"), "'a b\n'");
    }

    /// Under sudo a large content is staged in the login user's home, which no write ever
    /// targets: the write that copies a staged file in also removes what earlier staging left
    /// there when nexus was killed (a `.nexus-*` file over an hour old), not a fresh one.
    #[test]
    fn a_copied_staged_write_removes_stale_staged_files_beside_it() {
        let home = tempfile::tempdir().unwrap();
        let target_dir = tempfile::tempdir().unwrap();
        let left = home.path().join(".nexus-sftp-killedrun");
        let fresh = home.path().join(".nexus-sftp-otherrun");
        let staged = home.path().join(".nexus-sftp-thisrun");
        for p in [&left, &fresh, &staged] {
            std::fs::write(p, b"content\n").unwrap();
        }
        let old = std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(&left)
            .status()
            .unwrap();
        assert!(old.success());
        let w = FileWrite {
            path: target_dir
                .path()
                .join("app.conf")
                .to_str()
                .unwrap()
                .to_string(),
            owner: None,
            group: None,
            mode: Some("0640".into()),
            replaces_link: false,
            backup_to: None,
            sha256: sha256_hex(b"content\n"),
        };
        let script = w.script_from_staged(&w.sha256, staged.to_str().unwrap(), true);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read(target_dir.path().join("app.conf")).unwrap(),
            b"content\n"
        );
        assert!(!staged.exists(), "the staged file was consumed");
        assert!(!left.exists(), "a staged file left by a killed run stays");
        assert!(
            fresh.exists(),
            "another run's fresh staged file was removed"
        );
    }

    /// Runs the write of `content\n` to `target` from the file staged beside it, with `mode`,
    /// with the programs of `bin` only.
    fn run_staged(
        target: &std::path::Path,
        staged: &std::path::Path,
        mode: Option<&str>,
        bin: &std::path::Path,
    ) -> std::process::Output {
        let w = FileWrite {
            path: target.to_str().unwrap().to_string(),
            owner: None,
            group: None,
            mode: mode.map(str::to_string),
            replaces_link: false,
            backup_to: None,
            sha256: sha256_hex(b"content\n"),
        };
        let script = w.script_from_staged(&w.sha256, staged.to_str().unwrap(), false);
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", bin)
            .output()
            .unwrap()
    }

    /// Staged beside its target, the staged file is the script's temporary file: checked and
    /// renamed into place once, never renamed over a `mktemp` file first (on ext4 that rename
    /// wrote a large new file out before the write could go on).
    #[test]
    fn a_staged_file_beside_its_target_is_renamed_into_place_once() {
        let bin = host_hash::bin_with_openssl(None);
        let log = bin.path().join("calls.log");
        for tool in ["mv", "mktemp"] {
            crate::shell::stand_in(
                &bin.path().join(tool),
                &format!(
                    "echo {tool} \"$@\" >> {}\nexec /usr/bin/{tool} \"$@\"",
                    log.display()
                ),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join(".nexus-sftp-staged");
        let target = dir.path().join("app.conf");
        for (bytes, lands) in [(&b"tampered\n"[..], false), (&b"content\n"[..], true)] {
            std::fs::write(&staged, bytes).unwrap();
            let _ = std::fs::remove_file(&log);
            let out = run_staged(&target, &staged, Some("0640"), bin.path());
            assert_eq!(out.status.success(), lands, "{out:?}");
            assert!(!staged.exists(), "the staged file stays");
            let calls = std::fs::read_to_string(&log).unwrap_or_default();
            match lands {
                true => {
                    assert_eq!(std::fs::read(&target).unwrap(), b"content\n");
                    let mode = std::os::unix::fs::PermissionsExt::mode(
                        &std::fs::metadata(&target).unwrap().permissions(),
                    );
                    assert_eq!(mode & 0o7777, 0o640);
                    assert_eq!(
                        calls,
                        format!("mv -f -- {} {}\n", staged.display(), target.display())
                    );
                }
                false => {
                    assert!(!target.exists());
                    assert_eq!(calls, "");
                }
            }
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                usize::from(lands),
                "something was left beside the target"
            );
        }
    }

    /// A staged content is checked by OpenSSL's sha256 where there is one, by sha256sum where
    /// there is none or OpenSSL says something else; what neither vouches for is refused.
    #[test]
    fn a_staged_write_is_checked_whichever_sha256_the_host_has() {
        // (what `openssl` is, the staged bytes, whether the write lands)
        let cases: [(Option<&str>, &[u8], bool); 6] = [
            (None, b"content\n", true),
            (
                Some("touch \"$0.used\"; exec /usr/bin/openssl \"$@\""),
                b"content\n",
                true,
            ),
            (Some("echo 'SHA2-256(stdin)= 00'"), b"content\n", true),
            (Some("exit 1"), b"content\n", true),
            // Well-formed, but not the plan's: sha256sum has the last word.
            (
                Some(
                    "echo '0000000000000000000000000000000000000000000000000000000000000000 *stdin'",
                ),
                b"content\n",
                true,
            ),
            (Some("exec /usr/bin/openssl \"$@\""), b"tampered\n", false),
        ];
        for (i, (openssl, bytes, lands)) in cases.into_iter().enumerate() {
            let bin = host_hash::bin_with_openssl(openssl);
            let dir = tempfile::tempdir().unwrap();
            let staged = dir.path().join(".nexus-sftp-staged");
            std::fs::write(&staged, bytes).unwrap();
            let target = dir.path().join("app.conf");
            let out = run_staged(&target, &staged, None, bin.path());
            assert_eq!(out.status.success(), lands, "case {i}: {out:?}");
            match lands {
                true => assert_eq!(std::fs::read(&target).unwrap(), b"content\n", "case {i}"),
                false => assert!(!target.exists(), "case {i}"),
            }
            assert!(!staged.exists(), "case {i}: the staged file stays");
            if i == 1 {
                assert!(
                    bin.path().join("openssl.used").exists(),
                    "openssl was not used"
                );
            }
        }
    }

    /// A stale temporary file the sweep may not remove (another user's, in a sticky directory)
    /// is left, and the write goes on; the others are removed.
    #[test]
    fn a_stale_temporary_file_that_cannot_be_removed_does_not_stop_the_write() {
        let bin = host_hash::bin_with_openssl(None);
        crate::shell::stand_in(
            &bin.path().join("rm"),
            "case \"$*\" in *99999999*) echo \"rm: Operation not permitted\" >&2; exit 1;; esac\nexec /usr/bin/rm \"$@\"",
        );
        let dir = tempfile::tempdir().unwrap();
        let (stuck, gone) = (
            dir.path().join(".nexus-99999999-x"),
            dir.path().join(".nexus-99999998-y"),
        );
        for f in [&stuck, &gone] {
            std::fs::write(f, "left").unwrap();
        }
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "set -e\n{}echo reached",
                stale_temps(&dir_word(dir.path().to_str().unwrap()))
            ))
            .env("PATH", bin.path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "reached\n", "{out:?}");
        assert!(stuck.exists() && !gone.exists());
    }
}
