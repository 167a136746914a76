//! Which SSH ciphers nexus asks a host for, in order: russh's own, with AES-256-GCM first where
//! this CPU has AES instructions, or what ssh_config's `Ciphers` makes of that list (OpenSSH's
//! syntax, applied by the ssh2-config crate: a list, `+` to append, `-` to remove, `^` to put
//! first). A host whose own CPU lacks AES instructions (a Raspberry Pi 4, a VM with AES-NI
//! masked) is better served by ChaCha20: `Ciphers ^chacha20-poly1305@openssh.com` for it.

use russh::Preferred;
use russh::cipher::{self, Name};

/// The order for a host ssh_config says nothing about.
pub fn default_order() -> Vec<Name> {
    order(aes_in_hardware())
}

/// The ciphers of `names` (ssh_config's `Ciphers` for a host, applied to [`default_order`])
/// that nexus can use, in order. An error names them when none is left; `none` is never used,
/// whatever ssh_config says: nexus does not send plans and secrets in clear.
pub fn configured(names: &[String]) -> Result<Vec<Name>, String> {
    let mut usable: Vec<Name> = Vec::new();
    for c in names.iter().filter_map(|n| Name::try_from(n.as_str()).ok()) {
        // `^` puts a cipher first that the list has further on too.
        if c != cipher::NONE && c != cipher::CLEAR && !usable.contains(&c) {
            usable.push(c);
        }
    }
    match usable.is_empty() {
        true => Err(format!(
            "ssh_config's Ciphers leaves no cipher nexus can use (it lists: {}; nexus has: {})",
            names.join(","),
            Preferred::DEFAULT
                .cipher
                .iter()
                .map(|c| c.as_ref())
                .collect::<Vec<_>>()
                .join(",")
        )),
        false => Ok(usable),
    }
}

/// russh's ciphers, in its order, but AES-256-GCM first where this CPU has AES instructions:
/// there it costs both ends a fraction of ChaCha20-Poly1305 (OpenSSH's sshd decrypts a 1 GiB
/// upload in half the CPU time), and it is no weaker. Without them ChaCha20 stays first, as
/// software AES is slow. The same ciphers either way, only their order differs.
fn order(aes_in_hardware: bool) -> Vec<Name> {
    let mut order = Preferred::DEFAULT.cipher.to_vec();
    if let (true, Some(i)) = (
        aes_in_hardware,
        order.iter().position(|c| *c == cipher::AES_256_GCM),
    ) {
        let gcm = order.remove(i);
        order.insert(0, gcm);
    }
    order
}

/// Whether this CPU has AES and carry-less multiplication instructions (what GCM runs on).
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_comes_first_only_where_the_cpu_has_aes() {
        let default = Preferred::DEFAULT.cipher.to_vec();
        assert_eq!(order(false), default);
        let hw = order(true);
        assert_eq!(hw[0], cipher::AES_256_GCM);
        // The same ciphers, only reordered: nothing the defaults do not offer.
        let (mut a, mut b) = (hw.clone(), default);
        a.sort_by_key(|c| c.as_ref().to_string());
        b.sort_by_key(|c| c.as_ref().to_string());
        assert_eq!(a, b);
    }

    #[test]
    fn configured_ciphers_keep_their_order_and_never_none() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            configured(&names(&[
                "aes128-ctr",
                "nosuch",
                "aes128-ctr",
                "chacha20-poly1305@openssh.com"
            ])),
            Ok(vec![cipher::AES_128_CTR, cipher::CHACHA20_POLY1305])
        );
        let refused = configured(&names(&["none", "nosuch"])).unwrap_err();
        assert!(refused.contains("lists: none,nosuch"), "{refused}");
        assert!(configured(&[]).is_err());
    }
}
