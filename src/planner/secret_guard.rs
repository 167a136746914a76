//! Host content that holds a secret is never shown. A file's current content travels back with
//! the probe so the plan can show a diff; when that content holds any vault value (whether the
//! configuration uses it or not), held a secret when nexus last wrote it, or cannot be checked,
//! the plan records no old content, no size, and only a sealed (keyed) hash of it. The decision
//! is kept in the plan (the probe batch becomes `sealed`), so apply's re-probe seals the same
//! hash and the fingerprints agree.

use base64::Engine as _;

use crate::resources::{Change, Observed, ProbeBatch};
use crate::secrets::Resolved;

/// Hides what the probe saw of a file's current content when it may hold a secret.
pub fn guard(
    observed: &mut Observed,
    batch: Option<&mut ProbeBatch>,
    secrets: &Resolved,
    held_before: bool,
) {
    let Some(sha) = observed.get("sha256").map(str::to_string) else {
        return;
    };
    if sha.starts_with("sealed:") {
        return;
    }
    if let Some(b) = &batch
        && b.old_unless.as_deref() == Some(sha.as_str())
    {
        // The host holds exactly the desired content, which the plan carries anyway.
        return;
    }
    let old = observed
        .get("_old_b64")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let holds = held_before
        || match &old {
            Some(bytes) => secrets.recognises(bytes),
            // Not sent back (large, binary, or a file to remove): it cannot be checked.
            None => secrets.knows_any() || secrets.is_blind(),
        }
        || secrets.is_blind();
    if !holds {
        return;
    }
    observed.0.remove("_old_b64");
    observed.0.remove("size");
    if let (Some(b), Some(key)) = (batch, secrets.seal_key()) {
        observed.0.insert("sha256".into(), key.seal(&sha));
        b.sealed = true;
    }
}

/// Replaces every known vault value in what the plan shows of a change.
pub fn redact_change(c: &mut Change, secrets: &Resolved) {
    if !secrets.knows_any() {
        return;
    }
    c.reason = secrets.redact(&c.reason);
    if let Some(d) = &c.diff {
        c.diff = Some(secrets.redact(d));
    }
    for f in &mut c.fields {
        f.from = f.from.as_deref().map(|v| secrets.redact(v));
        f.to = f.to.as_deref().map(|v| secrets.redact(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(sha: &str, old: Option<&[u8]>) -> Observed {
        let mut o = Observed::default();
        o.0.insert("sha256".into(), sha.into());
        o.0.insert("size".into(), "12".into());
        if let Some(old) = old {
            o.0.insert(
                "_old_b64".into(),
                base64::engine::general_purpose::STANDARD.encode(old),
            );
        }
        o
    }

    fn batch() -> ProbeBatch {
        ProbeBatch {
            old_unless: Some("wanted".into()),
            ..ProbeBatch::for_path("/etc/app.conf", true).unwrap()
        }
    }

    fn vault() -> Resolved {
        Resolved::from_pairs(&[("TOKEN", "hunter2-xyz")], [7; 32])
    }

    #[test]
    fn old_content_holding_a_value_is_sealed_without_size_or_content() {
        let mut o = observed("abc", Some(b"token=hunter2-xyz\n"));
        let mut b = batch();
        guard(&mut o, Some(&mut b), &vault(), false);
        assert!(b.sealed);
        assert!(o.get("sha256").unwrap().starts_with("sealed:"));
        assert_eq!(o.get("size"), None);
        assert_eq!(o.get("_old_b64"), None);
    }

    #[test]
    fn clean_old_content_keeps_its_diff() {
        let mut o = observed("abc", Some(b"token=public\n"));
        let mut b = batch();
        guard(&mut o, Some(&mut b), &vault(), false);
        assert!(!b.sealed);
        assert_eq!(o.get("sha256"), Some("abc"));
        assert!(o.get("_old_b64").is_some());
        // Without any vault, nothing is hidden.
        let mut o = observed("abc", None);
        guard(&mut o, Some(&mut b), &Resolved::default(), false);
        assert_eq!(o.get("size"), Some("12"));
    }

    #[test]
    fn content_written_with_a_secret_stays_hidden_after_the_secret_rotates() {
        let mut o = observed("abc", Some(b"token=the-old-value\n"));
        let mut b = batch();
        guard(&mut o, Some(&mut b), &vault(), true);
        assert!(b.sealed);
        assert_eq!(o.get("_old_b64"), None);
    }

    #[test]
    fn content_that_cannot_be_checked_is_hidden_when_a_vault_exists() {
        let mut o = observed("abc", None);
        let mut b = batch();
        guard(&mut o, Some(&mut b), &vault(), false);
        assert!(b.sealed);
        let mut blind = Resolved::default();
        blind.set_blind();
        let mut o = observed("abc", Some(b"anything"));
        let mut b = batch();
        guard(&mut o, Some(&mut b), &blind, false);
        // No key to seal with: the content and size are hidden, the hash is kept for staleness.
        assert!(!b.sealed);
        assert_eq!(o.get("_old_b64"), None);
        assert_eq!(o.get("size"), None);
    }

    #[test]
    fn the_desired_content_on_the_host_is_not_hidden() {
        let mut o = observed("wanted", None);
        let mut b = batch();
        guard(&mut o, Some(&mut b), &vault(), true);
        assert!(!b.sealed);
        assert_eq!(o.get("sha256"), Some("wanted"));
    }
}
