//! An OpenSSH certificate authority made by ssh-keygen: a key pair that signs user and host
//! certificates (`ssh-keygen -s`), for the certificate tests and for hosts started with
//! [`super::HostBuilder::host_certificate`] or [`super::HostBuilder::trusted_user_ca`].

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{KeyPair, run};

/// A CA key pair in a directory of the test's.
#[derive(Debug, Clone)]
pub struct Ca {
    /// The CA's key pair (`private` signs; `public` goes into known_hosts or TrustedUserCAKeys).
    pub key: KeyPair,
}

impl Ca {
    /// Generates a CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        Ca {
            key: KeyPair::generate(&dir.join(name), ""),
        }
    }

    /// The CA's public key file (`<name>.pub`).
    pub fn public_file(&self) -> PathBuf {
        self.key.private.with_extension("pub")
    }

    /// Signs `public_key_file` as a user certificate for `principals`, valid for `validity`
    /// (ssh-keygen's `-V`, e.g. `-5m:+1h` or `-2h:-1h`); returns the certificate file, which
    /// ssh-keygen names `<key>-cert.pub` beside the key.
    pub fn sign_user(
        &self,
        public_key_file: &Path,
        principals: &[&str],
        validity: &str,
    ) -> PathBuf {
        self.sign(public_key_file, false, principals, validity)
    }

    /// Like [`Ca::sign_user`], for a host certificate (`-h`).
    pub fn sign_host(
        &self,
        public_key_file: &Path,
        principals: &[&str],
        validity: &str,
    ) -> PathBuf {
        self.sign(public_key_file, true, principals, validity)
    }

    fn sign(&self, public: &Path, host: bool, principals: &[&str], validity: &str) -> PathBuf {
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-q").arg("-s").arg(&self.key.private);
        if host {
            cmd.arg("-h");
        }
        // `-V` values start with '-' for times in the past: pass them joined to the flag.
        cmd.args(["-I", "nexus-test-cert", "-n", &principals.join(",")])
            .arg(format!("-V{validity}"))
            .arg(public);
        run(&mut cmd);
        let stem = public.to_string_lossy();
        PathBuf::from(format!(
            "{}-cert.pub",
            stem.strip_suffix(".pub").unwrap_or(&stem)
        ))
    }
}
