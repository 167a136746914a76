//! Checks that a plan's stored diff shows exactly what its write step's blob writes.
//!
//! A plan stores a file's diff for review and the new content as a blob for apply. Both are
//! covered by the plan's hash, but the hash only says the file is intact, not that its parts
//! agree: a hand-made plan could show one content and write another. So a reader derives the
//! old side from the diff and the blob, diffs them again the way planning does, and requires
//! the stored diff to be that diff byte for byte. Then every line the blob writes is either shown
//! (as `+` or context) or unchanged from the old side the diff itself presents.

/// Why a stored diff does not describe its blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffMismatch {
    #[error("its diff is not a unified diff nexus writes ({0})")]
    Malformed(&'static str),
    #[error("its diff names {shown:?}, but the resource is {id:?}")]
    OtherPath { shown: String, id: String },
    #[error("its diff does not show the content its write step sends (blob {blob})")]
    Differs { blob: String },
    #[error("it creates the file, but its diff shows existing content")]
    NotCreated,
}

/// Checks `diff`, stored for resource `id` (`file:/etc/motd`), against `new`, the content its
/// write step sends (blob `blob`). `create`: the file does not exist yet, so the old side must
/// be empty.
pub fn verify(
    id: &str,
    diff: &str,
    blob: &str,
    new: &[u8],
    create: bool,
) -> Result<(), DiffMismatch> {
    let differs = || DiffMismatch::Differs { blob: blob.into() };
    if diff.is_empty() {
        // What planning stores for a new empty file: the only content an empty diff can show.
        return if create && new.is_empty() {
            Ok(())
        } else {
            Err(differs())
        };
    }
    let path = diff
        .strip_prefix("--- ")
        .and_then(|d| d.split_once('\n'))
        .map(|(p, _)| p)
        .ok_or(DiffMismatch::Malformed("no `---` line"))?;
    let target = id.split_once(':').map_or("", |(_, p)| p);
    if path != target {
        return Err(DiffMismatch::OtherPath {
            shown: path.into(),
            id: id.into(),
        });
    }
    let new_text = std::str::from_utf8(new).map_err(|_| differs())?;
    let old = old_side(diff, new_text).ok_or_else(differs)?;
    if create && !old.is_empty() {
        return Err(DiffMismatch::NotCreated);
    }
    // The stored diff must be exactly what planning derives from that old side and the blob.
    match text_diff(path, old.as_bytes(), new) {
        Some(d) if d == diff => Ok(()),
        _ => Err(differs()),
    }
}

/// The sha256 (hex) of the old content `diff` shows for new content `new`: what the file on the
/// host must hold for the diff to be true. Apply compares it with the re-probe, so a plan cannot
/// show one old content while the host has another (the plan's hash does not tell: anyone can
/// re-hash an edited plan).
pub fn old_side_sha256(diff: &str, new: &[u8]) -> Option<String> {
    let new = std::str::from_utf8(new).ok()?;
    old_side(diff, new).map(|old| crate::plan::file_write::sha256_hex(old.as_bytes()))
}

/// The old content a diff implies for new content `new`: the lines outside its hunks taken
/// from `new`, each hunk's context from `new` and its removed lines from the diff. `None` when
/// the hunks do not fit `new`. A wrong guess cannot pass [`verify`]: the diff is recomputed.
fn old_side(diff: &str, new: &str) -> Option<String> {
    let new_lines: Vec<&str> = new.split_inclusive('\n').collect();
    let mut lines = diff.split_inclusive('\n');
    lines.next()?.strip_prefix("--- ")?;
    lines.next()?.strip_prefix("+++ ")?;
    let mut old = String::new();
    let mut cursor = 0;
    let mut after_removed = false;
    for line in lines {
        let mut removed = false;
        if let Some(h) = line.strip_prefix("@@ -") {
            let plus = h.split(' ').nth(1)?.strip_prefix('+')?;
            let (start, count) = match plus.split_once(',') {
                Some((s, c)) => (s.parse::<usize>().ok()?, c.parse::<usize>().ok()?),
                None => (plus.parse::<usize>().ok()?, 1),
            };
            // "+c,0" is an empty new side after line c; otherwise the hunk starts at line c.
            let first = if count == 0 {
                start
            } else {
                start.checked_sub(1)?
            };
            if first < cursor || first > new_lines.len() {
                return None;
            }
            new_lines[cursor..first]
                .iter()
                .for_each(|l| old.push_str(l));
            cursor = first;
        } else if let Some(rest) = line.strip_prefix('-') {
            old.push_str(rest);
            removed = true;
        } else if line.starts_with(' ') || line.starts_with('+') {
            let l = new_lines.get(cursor)?;
            if line.starts_with(' ') {
                old.push_str(l);
            }
            cursor += 1;
        } else if line.starts_with('\\') {
            // "\ No newline at end of file" after a removed line: the old side's last line
            // had none. After context or an added line the line came from `new` as it is.
            if after_removed && old.ends_with('\n') {
                old.pop();
            }
        } else {
            return None;
        }
        after_removed = removed;
    }
    new_lines[cursor..].iter().for_each(|l| old.push_str(l));
    Some(old)
}

/// A unified diff of two contents when both are text, else `None`.
pub fn text_diff(path: &str, old: &[u8], new: &[u8]) -> Option<String> {
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .filter(|s| !s.contains('\0'))
            .map(str::to_string)
    };
    let (old, new) = (text(old)?, text(new)?);
    let diff = similar::TextDiff::from_lines(old.as_str(), new.as_str());
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header(path, path)
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(old: &str, new: &str) {
        let diff = text_diff("/f", old.as_bytes(), new.as_bytes()).unwrap();
        assert_eq!(old_side(&diff, new).as_deref(), Some(old), "{diff}");
        assert_eq!(
            old_side_sha256(&diff, new.as_bytes()),
            Some(crate::plan::file_write::sha256_hex(old.as_bytes()))
        );
        assert_eq!(
            verify("file:/f", &diff, "b", new.as_bytes(), old.is_empty()),
            Ok(())
        );
    }

    #[test]
    fn honest_diffs_verify() {
        check("", "a\n");
        check("a\n", "b\n");
        check("a\nb\nc\n", "a\nc\n");
        check("a", "a\nb");
        check("a\nb", "a\n");
        check("x\n", "");
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let edited = long.replace("line 3\n", "three\n").replace("line 30\n", "");
        check(&long, &edited);
        check(&edited, &long);
    }

    #[test]
    fn an_empty_diff_only_creates_an_empty_file() {
        assert_eq!(text_diff("/f", b"", b"").as_deref(), Some(""));
        assert_eq!(verify("file:/f", "", "b", b"", true), Ok(()));
        for (new, create) in [(&b"x\n"[..], true), (b"", false), (b"x\n", false)] {
            assert!(matches!(
                verify("file:/f", "", "b", new, create),
                Err(DiffMismatch::Differs { .. })
            ));
        }
    }

    #[test]
    fn a_diff_hiding_content_is_refused() {
        let diff = text_diff("/f", b"", b"a\n").unwrap();
        for new in [&b"a\nrm -rf /\n"[..], b"b\n", b"\xff\n"] {
            assert!(matches!(
                verify("file:/f", &diff, "b", new, true),
                Err(DiffMismatch::Differs { .. } | DiffMismatch::NotCreated)
            ));
        }
        assert!(matches!(
            verify("file:/g", &diff, "b", b"a\n", true),
            Err(DiffMismatch::OtherPath { .. })
        ));
        // An old side the file is said not to have.
        let diff = text_diff("/f", b"old\n", b"a\n").unwrap();
        assert_eq!(
            verify("file:/f", &diff, "b", b"a\n", true),
            Err(DiffMismatch::NotCreated)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_honest_diff_verifies(
            old in proptest::collection::vec("[abc]{0,3}", 0..12),
            new in proptest::collection::vec("[abc]{0,3}", 0..12),
            old_nl: bool,
            new_nl: bool,
        ) {
            let join = |v: &[String], nl: bool| {
                let mut s = v.join("\n");
                if nl && !s.is_empty() { s.push('\n'); }
                s
            };
            let (old, new) = (join(&old, old_nl), join(&new, new_nl));
            // Planning stores no diff when the content is unchanged.
            proptest::prop_assume!(old != new);
            let diff = text_diff("/f", old.as_bytes(), new.as_bytes()).unwrap();
            proptest::prop_assert_eq!(verify("file:/f", &diff, "b", new.as_bytes(), false), Ok(()));
        }
    }
}
