//! Readers for fields that configuration nodes and resource types share: local and remote paths,
//! and account names. Each reports its own diagnostic, so a field is checked the same way wherever
//! it appears.

use std::path::{Path, PathBuf};

use super::diagnostic::{Diag, FileId, Spanned};
use super::files;
use super::reader::{Cx, NodeR};
use super::values;

/// The file a node is in: where its relative local paths resolve, and what its spans name.
pub struct FileCtx<'p> {
    pub file: FileId,
    pub dir: &'p Path,
}

pub fn local_path(fc: &FileCtx<'_>, p: &str) -> PathBuf {
    // `~/` means the invoking user's home, as in ssh and shells; everything else is relative to
    // the config file that names it.
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = crate::local_user::home_dir()
    {
        return home.join(rest);
    }
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        fc.dir.join(p)
    }
}

/// Says where a missing local file was looked for, relative to the working directory when possible
/// (never an absolute path the user did not write, so messages stay short and goldens stable).
fn missing_file_help(p: &Path) -> String {
    format!(
        "looked for {}; local paths are relative to the directory of the file that names them",
        display_path(p)
    )
}

/// A local `source`, `template` or upload file: it must exist and be a regular file (a FIFO would
/// block the read, a device never end it), and a template at most the size of a configuration.
pub fn local_file(cx: &mut Cx, fc: &FileCtx<'_>, s: &Spanned<String>, what: &str) -> PathBuf {
    let p = local_path(fc, s);
    let limit = (what == "template").then_some(files::MAX_TEXT_BYTES);
    let d = match files::check_regular(&p, limit) {
        Ok(_) => return p,
        Err(e @ files::ReadError::Io(_)) => Diag::new(
            "config::missing-file",
            format!("{what} file {:?} not found", s.value),
        )
        .at(s.span, e.to_string())
        .help(missing_file_help(&p)),
        Err(e) => Diag::new(e.code(), e.about(&format!("{what} {:?}", s.value)))
            .at(s.span, "here")
            .help("local files are read whole when planning: name a regular file"),
    };
    cx.push(d);
    p
}

pub fn remote_path(cx: &mut Cx, s: Option<Spanned<String>>) -> Option<String> {
    let s = s?;
    match values::check_remote_path(&s) {
        Ok(()) => Some(s.value),
        Err(e) => {
            cx.value_error(s.span, e, "config::invalid-path");
            None
        }
    }
}

/// A remote path given as the node's argument `i`.
pub fn remote_arg(cx: &mut Cx, r: &NodeR<'_>, i: usize) -> Option<String> {
    let v = r.arg_str(cx, i);
    remote_path(cx, v)
}

/// A remote path given as the node's option `key`.
pub fn remote_option(cx: &mut Cx, r: &mut NodeR<'_>, key: &'static str) -> Option<String> {
    let v = r.str(cx, key);
    remote_path(cx, v)
}

/// User and group names (see [`values::check_account_name`]): nothing odd reaches a command line.
pub fn account_name(cx: &mut Cx, s: Spanned<String>, what: &str) -> Option<String> {
    match values::check_account_name(&s) {
        Ok(()) => Some(s.value),
        Err(e) => {
            cx.push(
                Diag::new(
                    "config::invalid-name",
                    format!("invalid {what} name {:?}", s.value),
                )
                .at(s.span, "invalid name")
                .help(e.help),
            );
            None
        }
    }
}

/// Shows a path relative to the working directory when it lies beneath it.
pub fn display_path(p: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let rel = cwd.as_deref().and_then(|c| p.strip_prefix(c).ok());
    rel.unwrap_or(p).display().to_string()
}
