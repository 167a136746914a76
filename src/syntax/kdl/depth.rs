//! How deep a text nests its blocks, found before parsing so that no input can exhaust a parser's
//! stack.

/// Deeper than any real configuration, far shallower than what overflows the parser's stack.
pub const MAX_DEPTH: usize = 64;

/// The byte offset of the first `{` that opens a block deeper than `max`, skipping strings
/// (quoted, multi-line and raw) and comments. Block comments are taken as not nested, which can
/// only over-count braces inside them (and only matters past the limit). Strings must be skipped
/// exactly: a quote taken for the start of a string would hide the braces after it.
pub fn too_deep(text: &str, max: usize) -> Option<usize> {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => {
                // A raw string, #"..."# or #"""..."""#, ends at the same number of '#'.
                let open = i + b[i..].iter().take_while(|&&c| c == b'#').count();
                if b.get(open) == Some(&b'"') {
                    let quotes = if b[open..].starts_with(b"\"\"\"") {
                        3
                    } else {
                        1
                    };
                    let mut close = vec![b'"'; quotes];
                    close.resize(quotes + open - i, b'#');
                    i = open + quotes;
                    while i < b.len() && !b[i..].starts_with(&close) {
                        i += 1;
                    }
                    i += close.len() - 1;
                } else {
                    i = open - 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            c => {
                if brace(&mut depth, c, max) {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Follows one byte's effect on the block depth; true when a '{' goes deeper than `max`.
fn brace(depth: &mut usize, c: u8, max: usize) -> bool {
    match c {
        b'{' => {
            *depth += 1;
            *depth > max
        }
        b'}' => {
            *depth = depth.saturating_sub(1);
            false
        }
        _ => false,
    }
}

/// The offset of the first '{' deeper than `max`, counting every brace, in strings and comments
/// too: an upper bound on the depth any parser can reach, whatever it takes for a string.
pub(crate) fn too_deep_raw(text: &str, max: usize) -> Option<usize> {
    let mut depth = 0usize;
    text.bytes().position(|c| brace(&mut depth, c, max))
}
