//! OpenSSH's wildcard patterns (`*`, `?`) and pattern lists (comma-separated; a matching
//! `!pattern` excludes), as known_hosts host patterns, certificate principals and
//! allowed_signers namespaces use them.

/// Whether `text` matches `pattern`, with `*` for any run of bytes and `?` for one byte.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| matches(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && matches(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && matches(rest, &text[1..]),
    }
}

/// OpenSSH's `match_pattern_list`: some pattern of `list` matches `text` and no negated one does.
pub fn list_matches(list: &str, text: &str) -> bool {
    let mut found = false;
    for pattern in list.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if matches(negated.as_bytes(), text.as_bytes()) => return false,
            Some(_) => {}
            None => found |= matches(pattern.as_bytes(), text.as_bytes()),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_lists() {
        assert!(matches(b"*.example.com", b"web1.example.com"));
        assert!(matches(b"web?", b"web1"));
        assert!(!matches(b"web?", b"web10"));
        assert!(matches(b"*", b""));
        assert!(!matches(b"", b"x"));
        assert!(list_matches("nexus-*,!nexus-test", "nexus-plan"));
        assert!(!list_matches("nexus-*,!nexus-test", "nexus-test"));
        assert!(
            !list_matches("!nexus-test", "other"),
            "only exclusions match nothing"
        );
    }
}
