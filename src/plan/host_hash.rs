//! Which program hashes a large file on a host: the one place that decides it.
//!
//! coreutils' `sha256sum` has no code path for the CPU's SHA instructions; OpenSSL's does. On
//! the benchmark machine (AMD EPYC with SHA-NI) `sha256sum` takes 3.9 s per GiB and
//! `openssl dgst -sha256` 1.2 s. Both the check of a staged upload before its rename
//! (`plan::file_write`) and the probe's hash of a large managed file (`plan::probe`, and the
//! `file` resource's own snippet for paths the probe does not batch) pay that on every plan and
//! apply, so they all hash a large file with [`FUNCTION`]: OpenSSL where the host has it and it
//! answers sanely, `sha256sum` otherwise. A host needs either.

/// Files larger than this (in bytes) are hashed each by [`FUNCTION`]; smaller ones stay in the
/// probe's one batched `sha256sum`. OpenSSL costs more to start than `sha256sum` (3.1 ms against
/// 1.4 ms per run here: it loads libcrypto and its configuration) and then saves about 2.7 ms
/// per MiB, so a file of its own pays for its `openssl` (and the shell's fork that runs it) from
/// about 1.2 MiB; a small file is better off sharing the batch's single start-up. At 1 MiB
/// either choice is within a millisecond of the other, and the same bound as
/// [`crate::plan::STREAM_OVER`] means a streamed upload is hashed the same way when it is
/// written and when it is probed.
pub const LARGE_OVER: u64 = 1 << 20;

/// Defines the shell function `_nx_sha256 FILE [WANT]`, which sets `_nx_sum` to the sha256 of
/// FILE in lower-case hex (empty, and a failing status, if it cannot be read).
///
/// OpenSSL reads the file on its stdin, so no name is parsed back from its output, whatever the
/// name holds; its answer counts only if it is exactly `HASH *stdin` with 64 lower-case hex
/// digits (an `openssl` that fails, is too old for `-r`, or prints anything else is passed
/// over) and, when WANT is given, equal to WANT: a sum other than the expected one is taken again
/// from `sha256sum`, so a wrong `openssl` costs time, never a false refusal of a write. The
/// probe gives no WANT: without an expected sum, a well-formed answer is taken as it is.
/// FILE must not be a FIFO (opening one blocks): callers test `-f` first.
pub const FUNCTION: &str = "_nx_sha256() {
_nx_sum=
if command -v openssl >/dev/null 2>&1; then _nx_sum=$(openssl dgst -sha256 -r 2>/dev/null < \"$1\") || _nx_sum=; fi
_nx_h=${_nx_sum%' *stdin'}
case $_nx_h in \"$_nx_sum\" | *[!0123456789abcdef]*) _nx_h= ;; esac
if [ \"${#_nx_h}\" -eq 64 ] && { [ $# -lt 2 ] || [ \"$_nx_h\" = \"$2\" ]; }; then _nx_sum=$_nx_h; return 0; fi
_nx_sum=$(sha256sum 2>/dev/null < \"$1\") || _nx_sum=
_nx_sum=${_nx_sum%% *}
[ -n \"$_nx_sum\" ]
}
";

/// A directory of programs for tests of host scripts: every program of /usr/bin linked, but
/// `openssl` only as `openssl` says: `None` leaves it out, `Some(body)` makes it a script of
/// that body. Meant to be the whole `PATH`, so the host's own `openssl` cannot be found.
#[cfg(test)]
pub(crate) fn bin_with_openssl(openssl: Option<&str>) -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir("/usr/bin").unwrap() {
        let e = e.unwrap();
        if e.file_name() != "openssl" {
            std::os::unix::fs::symlink(e.path(), bin.path().join(e.file_name())).unwrap();
        }
    }
    if let Some(body) = openssl {
        crate::shell::stand_in(&bin.path().join("openssl"), body);
    }
    bin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::file_write::sha256_hex;

    /// Runs `_nx_sha256` on `file` (with `want`) with the programs of `bin` only; returns its
    /// status and `_nx_sum`.
    fn hash(bin: &std::path::Path, file: &std::path::Path, want: Option<&str>) -> (bool, String) {
        let call = match want {
            Some(w) => format!("_nx_sha256 \"$0\" {w}"),
            None => "_nx_sha256 \"$0\"".into(),
        };
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "{FUNCTION}{call}; s=$?; printf '%s %s' \"$s\" \"$_nx_sum\""
            ))
            .arg(file)
            .env("PATH", bin)
            .output()
            .unwrap();
        assert!(out.stderr.is_empty(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (status, sum) = text.split_once(' ').unwrap();
        (status == "0", sum.to_string())
    }

    #[test]
    fn every_openssl_gives_the_sum_sha256sum_gives() {
        let dir = tempfile::tempdir().unwrap();
        // A name OpenSSL would print back escaped, were it given the name.
        let file = dir.path().join("a \\ name\nwith 'quotes'");
        std::fs::write(&file, b"content\n").unwrap();
        let right = sha256_hex(b"content\n");
        let wrong = sha256_hex(b"other\n");
        let used = "touch \"$(dirname \"$0\")/used\"; ";
        // What `openssl` is; only the last, well-formed but wrong, is believed without a WANT.
        let cases: [Option<String>; 7] = [
            None,
            Some(format!("{used}exec /usr/bin/openssl \"$@\"")),
            Some(format!("{used}exit 1")),
            Some(format!("{used}echo 'SHA2-256(stdin)= {right}'")),
            Some(format!("{used}echo '{right}  -'")),
            Some(format!("{used}echo '{} *stdin'", right.to_uppercase())),
            Some(format!("{used}echo '{wrong} *stdin'")),
        ];
        for (i, openssl) in cases.into_iter().enumerate() {
            let bin = bin_with_openssl(openssl.as_deref());
            let used = bin.path().join("used");
            // With the expected sum, every case gives the file's own.
            assert_eq!(
                hash(bin.path(), &file, Some(&right)),
                (true, right.clone()),
                "case {i}"
            );
            assert_eq!(used.exists(), openssl.is_some(), "case {i}");
            // Without, a well-formed answer is taken as it is; anything else is sha256sum's.
            let want = if i == 6 { &wrong } else { &right };
            assert_eq!(
                hash(bin.path(), &file, None),
                (true, want.clone()),
                "case {i}"
            );
        }
        // Neither can read it: a failure, and no sum.
        let bin = bin_with_openssl(Some("exec /usr/bin/openssl \"$@\""));
        assert_eq!(
            hash(bin.path(), &dir.path().join("missing"), None),
            (false, String::new())
        );
    }
}
