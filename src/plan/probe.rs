//! One probe script per host: every resource's snippet in its own subshell, framed by markers, so
//! a host's whole observed state costs a single round trip.

/// Builds the host's probe script from `(index, snippet)` pairs. The marker token is derived from
/// the script itself, so output cannot forge a frame by accident.
pub fn script(snippets: &[&str]) -> String {
    let token = token(snippets);
    let mut s = String::from("# nexus probe: one framed section per resource\nexec </dev/null\n");
    for (i, snippet) in snippets.iter().enumerate() {
        // An empty subshell is a syntax error in sh; a resource with nothing to observe says so.
        let snippet = if snippet.trim().is_empty() {
            ":"
        } else {
            snippet
        };
        s.push_str(&format!(
            "printf '\\n@@{token} {i} begin\\n'\n(\n{snippet}\n) 2>/dev/null\nprintf '\\n@@{token} {i} end %s\\n' \"$?\"\n"
        ));
    }
    s
}

fn token(snippets: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for s in snippets {
        h.update(s.as_bytes());
        h.update(b"\0");
    }
    format!("NEXUS{}", &h.finalize().to_hex()[..16])
}

/// One resource's section of the probe output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub output: String,
    pub status: i32,
}

/// Splits the output of [`script`] back into sections, one per snippet, in order.
pub fn split(snippets: &[&str], output: &str) -> Result<Vec<Section>, String> {
    let token = token(snippets);
    let mut sections = Vec::with_capacity(snippets.len());
    let mut current: Option<(usize, String)> = None;
    for line in output.split('\n') {
        if let Some(rest) = line.strip_prefix(&format!("@@{token} ")) {
            let mut parts = rest.split(' ');
            let idx: usize = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("malformed probe marker {line:?}"))?;
            match parts.next() {
                Some("begin") => {
                    if idx != sections.len() || current.is_some() {
                        return Err(format!("probe section {idx} out of order"));
                    }
                    current = Some((idx, String::new()));
                }
                Some("end") => {
                    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
                    let Some((open, text)) = current.take() else {
                        return Err(format!("probe section {idx} ended without beginning"));
                    };
                    if open != idx {
                        return Err(format!("probe section {open} ended as {idx}"));
                    }
                    // The framing printf adds a newline before each marker.
                    let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
                    sections.push(Section {
                        output: text,
                        status,
                    });
                }
                _ => return Err(format!("malformed probe marker {line:?}")),
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if sections.len() != snippets.len() {
        return Err(format!(
            "probe output ended after {} of {} sections (was the probe interrupted?)",
            sections.len(),
            snippets.len()
        ));
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_splits_through_sh() {
        let snippets = [
            "echo a=1\necho b=2",
            "echo x=$((1+1)); exit 3",
            "",
            "printf 'no_newline=1'",
        ];
        let script = script(&snippets);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let sections = split(&snippets, &String::from_utf8(out.stdout).unwrap()).unwrap();
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
        let snippets = ["echo a=1", "echo b=2"];
        let script = script(&snippets);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let cut = &text[..text.rfind("@@").unwrap()];
        assert!(split(&snippets, cut).is_err());
    }
}
