//! Text that nexus did not write itself (host output, errors, labels and names from the
//! configuration) on its way to a terminal: control characters are shown, never sent. An escape
//! sequence in a command's output could otherwise retitle the window, clear the screen, move the
//! cursor to overwrite an earlier `[fail]`, or write to the clipboard; bidirectional overrides
//! could make a label read differently from what it is.
//!
//! Every text rendering passes outside text through [`escape`]; machine formats (JSON) do not, as
//! serde escapes control characters itself and their consumers need the exact strings.

use std::borrow::Cow;

/// `s` with each control character (C0 except newline and tab, DEL, C1) written as `\xNN` and
/// each bidirectional formatting character as `\u{NNNN}`. Newlines and tabs stay, so multi-line
/// output keeps its shape. Applying it twice changes nothing more.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_and_layout_kept() {
        assert_eq!(escape("\u{1b}]0;X\u{7}\u{1b}[2J"), r"\x1b]0;X\x07\x1b[2J");
        assert_eq!(escape("a\r\nb\u{7f}\u{0}"), "a\\x0d\nb\\x7f\\x00");
        assert_eq!(escape("\u{9b}31m"), r"\u{009b}31m");
        assert_eq!(escape("abc\u{202e}cba"), r"abc\u{202e}cba");
        let plain = "line one\n\tline two → ü";
        assert!(matches!(escape(plain), Cow::Borrowed(p) if p == plain));
        let once = escape("\u{1b}[2J\u{9b}").into_owned();
        assert_eq!(escape(&once), once);
    }
}
