//! Creating a directory with its mode and owner on a host, alone or many in one command.
//!
//! Alone, [`MakeDir::script`] is `mkdir` and `chown`: two programs per directory. Consecutive
//! creations in one command (exec/batch.rs) share one `mkdir` per run of directories of the same
//! mode and one `chown` per owner ([`run_prepare`]), when builtins show beforehand that each
//! can be made (nothing is at its path; its parent is made just before it, or is, or will be made
//! by `mkdir -p` under, a writable directory). Should a shared command fail nonetheless, the directories it made are removed again
//! and each member runs its own script in its frame ([`run_member`]), so each resource still
//! gets its own status and error, and none is made that its resource does not report.

use serde::{Deserialize, Serialize};

use crate::shell::quote as q;

/// A directory to create (a step's `mkdir` in the plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MakeDir {
    pub path: String,
    /// Octal, four digits, given to mkdir: a directory meant to be 0700 never exists with the
    /// umask's wider mode. Without it, the umask decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl MakeDir {
    /// The program and argument that give the directory its owner and group, if any.
    fn chown(&self) -> Option<(&'static str, String)> {
        super::file_write::chown_of(self.owner.as_deref(), self.group.as_deref())
    }

    /// The creation alone.
    pub fn script(&self) -> String {
        let p = q(&self.path);
        let mut s = match &self.mode {
            Some(m) => format!("set -e\nmkdir -p -m {} -- {p}", q(m)),
            None => format!("set -e\nmkdir -p -- {p}"),
        };
        // A new directory's owner is the login user's: set whatever was asked for, after the
        // directory exists with its final mode.
        if let Some((program, who)) = self.chown() {
            s.push_str(&format!("\n{program} -- {} {p}", q(&who)));
        }
        s
    }

    fn parent(&self) -> &str {
        super::file_write::parent_dir(&self.path)
    }
}

/// The shell text that starts a run of directory creations in a shared command, before the
/// first member's frame (indices as in the command, `dirs` in order). It prints nothing and
/// leaves `$_nx_ok` set when the shared commands made every directory.
pub fn run_prepare(dirs: &[(usize, &MakeDir)]) -> String {
    let mut s = String::from("_nx_ok=1\n");
    // Parents no member makes. As alone (`mkdir -p`), missing ones are made with the login
    // user's defaults; a builtin walk up counts how many levels are missing, to undo them,
    // and the nearest existing one must be a writable directory.
    let mut parents: Vec<&str> = Vec::new();
    for (n, (_, d)) in dirs.iter().enumerate() {
        let p = q(&d.path);
        s.push_str(&format!("if [ -e {p} ] || [ -L {p} ]; then _nx_ok=; fi\n"));
        let parent = d.parent();
        if !dirs[..n].iter().any(|(_, e)| e.path == parent) && !parents.contains(&parent) {
            let k = parents.len();
            s.push_str(&format!(
                "_nx_p={}; _nx_up{k}=0\n\
                 while [ ! -e \"$_nx_p\" ] && [ ! -L \"$_nx_p\" ]; do _nx_up{k}=$((_nx_up{k} + 1)); _nx_q=${{_nx_p%/*}}; [ \"$_nx_q\" != \"$_nx_p\" ] || break; _nx_p=${{_nx_q:-/}}; done\n\
                 [ -d \"$_nx_p\" ] && [ -w \"$_nx_p\" ] || _nx_ok=\n",
                q(parent)
            ));
            parents.push(parent);
        }
    }
    s.push_str("_nx_made=$_nx_ok\n");
    // In order, one mkdir per stretch of the same mode: a directory is made after its parent.
    let mut made: Vec<&str> = Vec::new();
    let mut n = 0;
    while n < dirs.len() {
        let mode = &dirs[n].1.mode;
        let stretch: Vec<&MakeDir> = dirs[n..]
            .iter()
            .map(|(_, d)| *d)
            .take_while(|d| &d.mode == mode)
            .collect();
        let paths: Vec<String> = stretch.iter().map(|d| q(&d.path)).collect();
        let m = mode
            .as_ref()
            .map(|m| format!("-m {} ", q(m)))
            .unwrap_or_default();
        // -p for the parents counted above; the members themselves were checked absent.
        s.push_str(&format!(
            "[ -z \"$_nx_ok\" ] || mkdir -p {m}-- {} 2>/dev/null || _nx_ok=\n",
            paths.join(" ")
        ));
        made.extend(stretch.iter().map(|d| d.path.as_str()));
        n += stretch.len();
    }
    let mut owners: std::collections::BTreeMap<(&str, String), Vec<String>> = Default::default();
    for (_, d) in dirs {
        if let Some(key) = d.chown() {
            owners.entry(key).or_default().push(q(&d.path));
        }
    }
    for ((program, who), paths) in owners {
        s.push_str(&format!(
            "[ -z \"$_nx_ok\" ] || {program} -- {} {} 2>/dev/null || _nx_ok=\n",
            q(&who),
            paths.join(" ")
        ));
    }
    // A shared command failed: what it made goes, newest first, then the parents it made,
    // deepest first, and each member runs alone.
    let undo: Vec<String> = made.iter().rev().map(|p| q(p)).collect();
    let mut undo_parents = String::new();
    let mut order: Vec<usize> = (0..parents.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(parents[k].len()));
    for k in order {
        undo_parents.push_str(&format!(
            " _nx_p={}; while [ \"$_nx_up{k}\" -gt 0 ]; do rmdir -- \"$_nx_p\" 2>/dev/null || :; _nx_p=${{_nx_p%/*}}; _nx_up{k}=$((_nx_up{k} - 1)); done;",
            q(parents[k])
        ));
    }
    s.push_str(&format!(
        "if [ -n \"$_nx_made\" ] && [ -z \"$_nx_ok\" ]; then for _nx_x in {}; do [ ! -d \"$_nx_x\" ] || rmdir -- \"$_nx_x\" 2>/dev/null || :; done;{undo_parents} fi\n",
        undo.join(" ")
    ));
    s
}

pub fn run_member(d: &MakeDir) -> String {
    format!("if [ -z \"$_nx_ok\" ]; then\n{}\nfi", d.script())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Runs `run_prepare` alone in sh; what `$_nx_ok` says: whether the shared commands made
    /// every directory (else each member runs its own script).
    fn shared(dirs: &[MakeDir]) -> bool {
        let indexed: Vec<(usize, &MakeDir)> = dirs.iter().enumerate().collect();
        let script = format!("{}printf %s \"$_nx_ok\"", run_prepare(&indexed));
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        out.stdout == b"1"
    }

    fn dir(path: &std::path::Path, mode: &str) -> MakeDir {
        MakeDir {
            path: path.to_str().unwrap().into(),
            mode: Some(mode.into()),
            owner: None,
            group: None,
        }
    }

    #[test]
    fn missing_parents_do_not_send_each_directory_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        let mode = |n: &str| std::fs::metadata(p(n)).unwrap().permissions().mode() & 0o7777;
        assert!(shared(&[
            dir(&p("new/a"), "0750"),
            dir(&p("new/deeper/b"), "0700"),
            dir(&p("other/c"), "0711"),
        ]));
        assert_eq!(
            [mode("new/a"), mode("new/deeper/b"), mode("other/c")],
            [0o750, 0o700, 0o711]
        );
        // What stands in the way of a parent is each member's to report.
        std::fs::write(p("file"), b"").unwrap();
        assert!(!shared(&[dir(&p("file/a"), "0755"), dir(&p("z"), "0755")]));
        assert!(!p("z").exists());
    }
}
