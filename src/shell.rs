//! The one way nexus turns a value into a word for a shell.
//!
//! Every command line nexus builds (resource steps, probes, the `sh -c` wrapper, sudo) quotes
//! through [`quote`], so a value means the same thing wherever it lands. It uses the shlex crate,
//! whose output is also safe for a non-POSIX login shell (fish, for example, which reads the SSH
//! exec request before `sh` starts): it avoids backslashes inside single quotes.

/// Whether `name` is a shell variable name (`[A-Za-z_][A-Za-z0-9_]*`): what a command's
/// environment and a template's `vars` may be called.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes `s` as one shell word.
///
/// Config validation rejects NUL in every value that reaches a command line, so quoting cannot
/// fail on validated input. A NUL still yields a word that stops the script where it is
/// expanded, with a message (`${NAME:?}` of an unset name exits a non-interactive shell), rather
/// than one that silently means something else.
pub fn quote(s: &str) -> String {
    match shlex::try_quote(s) {
        Ok(w) => w.into_owned(),
        Err(_) => "\"${_nx_refused_nul:?nexus: refusing a value with a NUL byte}\"".to_string(),
    }
}

/// Writes `body` as an executable `sh` script at `path`, replacing what is there (a link into
/// /usr/bin is replaced, not written through): tests' stand-ins for a host's programs.
#[cfg(test)]
pub(crate) fn stand_in(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn plain_words_stay_unquoted() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote("/tmp/x.y"), "/tmp/x.y");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn every_word_round_trips_through_sh() {
        let nasty = [
            "a b",
            "it's",
            "$(rm -rf /)",
            "`id`",
            "*.conf",
            "x\ny",
            "\"q\"",
            "$HOME",
            "a;b|c&d",
            "-n",
            "",
            "tab\there",
            "back\\slash",
            "!bang",
            "^caret",
            "{a,b}",
            "~user",
            "é ü",
            "'",
            "''\\''",
        ];
        for word in nasty {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                word,
                "quoted as {}",
                quote(word)
            );
        }
    }

    /// transport/wrap.rs skips quoting a script only to measure it when four times its length
    /// fits: no byte may quote to more than four. Every pair of the bytes that change the
    /// quoting, repeated, is the worst case of chunk switches.
    #[test]
    fn quoting_at_most_quadruples_a_word() {
        let special = ["\\", "$", "'", "\"", "^", "!", "`", " ", "a", "\n", "é"];
        for a in special {
            for b in special {
                let word = format!("{a}{b}").repeat(50);
                let q = quote(&word);
                assert!(q.len() <= 4 * word.len(), "{word:?} quoted as {q}");
            }
        }
        // The one exception: a NUL quotes to a fixed refusal, short enough for any command line.
        assert!(quote("\0").len() < 100);
    }

    #[test]
    fn a_nul_byte_makes_the_command_fail() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {}; echo went on", quote("a\0b")))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("NUL"));
    }
}
