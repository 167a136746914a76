//! The secrets vault: the library (src/secrets) and `nexus secret` run as a real binary, each test
//! in its own temporary directory. Covers round trips with every key source, fresh nonces, wrong
//! keys and passphrases, corrupted and tampered files (never overwritten), key file permissions,
//! salts created at `init`, and values never shown where only names belong.

mod harness;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use harness::project::{Project, Run};

use nexus::config;
use nexus::secrets::{self, Key, KeySource, NewKey, SecretError, Settings, Unlock, Vault};
use tempfile::TempDir;
use zeroize::Zeroizing;

const OK: i32 = 0;
const FAILED: i32 = 1;
const USAGE: i32 = 64;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER_KEY_HEX: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const PASSPHRASE: &str = "correct horse battery staple";

fn tmp() -> TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

fn lines(path: &Path) -> Vec<String> {
    String::from_utf8(read(path))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Library

/// An environment made of fixed pairs, so tests never depend on (or race on) the real one.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn settings(dir: &Path, key_file: Option<&str>) -> Settings {
    Settings {
        path: dir.join("secrets.vault"),
        key_file: key_file.map(|f| dir.join(f)),
        key_env: None,
    }
}

fn value(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_string())
}

#[test]
fn library_round_trip_with_a_generated_key_file() {
    let dir = tmp();
    let s = settings(dir.path(), Some("vault.key"));
    let no_env = env_of(&[]);
    let mut v = Vault::create(
        &s,
        NewKey::KeyFile(dir.path().join("vault.key")),
        &Unlock::env(&no_env),
    )
    .unwrap();
    assert_eq!(mode(&dir.path().join("vault.key")), 0o600);
    assert_eq!(mode(&s.path), 0o600);
    assert!(v.is_empty());
    assert!(!v.set("DB_PASSWORD", value("s3cret-db")).unwrap());
    assert!(v.set("DB_PASSWORD", value("s3cret-db-2")).unwrap());
    v.set("api.token", value("tok-123456")).unwrap();
    v.save().unwrap();
    drop(v);
    assert_eq!(mode(&s.path), 0o600);

    // What the planner and executor call: the configuration's `vault` node, no prompt.
    let cfg = config::Vault {
        path: s.path.clone(),
        key_file: s.key_file.clone(),
        key_env: None,
    };
    let mut v = Vault::open(Some(&cfg), dir.path(), &no_env).unwrap();
    assert_eq!(v.names(), ["DB_PASSWORD", "api.token"]);
    assert_eq!(v.get("DB_PASSWORD"), Some("s3cret-db-2"));
    assert_eq!(v.get("missing"), None);
    assert_eq!(
        v.key_source(),
        &KeySource::KeyFile(dir.path().join("vault.key"))
    );
    assert!(v.remove("DB_PASSWORD"));
    assert!(!v.remove("DB_PASSWORD"));
    v.save().unwrap();
    let v = Vault::open(Some(&cfg), dir.path(), &no_env).unwrap();
    assert_eq!(v.names(), ["api.token"]);
    // Debug output never shows values.
    assert!(!format!("{v:?}").contains("tok-123456"));
}

#[test]
fn library_round_trip_with_an_environment_key() {
    let dir = tmp();
    let s = settings(dir.path(), None);
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let mut v = Vault::create(&s, NewKey::Env, &Unlock::env(&env)).unwrap();
    v.set("TOKEN", value("abc-def-ghi")).unwrap();
    v.save().unwrap();
    // The same key as base64 opens it too.
    use base64::Engine;
    let raw: Vec<u8> = (0u8..32).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let env = env_of(&[("NEXUS_VAULT_KEY", &b64)]);
    let v = Vault::open_at(&s, &Unlock::env(&env)).unwrap();
    assert_eq!(v.get("TOKEN"), Some("abc-def-ghi"));
    assert_eq!(v.key_source(), &KeySource::Env("NEXUS_VAULT_KEY".into()));

    // `key-env` names another variable instead of NEXUS_VAULT_KEY.
    let s2 = Settings {
        key_env: Some("MY_KEY".into()),
        ..s.clone()
    };
    let env = env_of(&[("MY_KEY", KEY_HEX)]);
    assert_eq!(
        Vault::open_at(&s2, &Unlock::env(&env))
            .unwrap()
            .get("TOKEN"),
        Some("abc-def-ghi")
    );
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let err = Vault::open_at(&s2, &Unlock::env(&env)).unwrap_err();
    assert!(
        matches!(&err, SecretError::NoKey { env, .. } if env == "MY_KEY"),
        "{err}"
    );

    // A malformed key is reported without echoing it.
    let env = env_of(&[("NEXUS_VAULT_KEY", "not-a-key-at-all")]);
    let err = Vault::open_at(&s, &Unlock::env(&env))
        .unwrap_err()
        .to_string();
    assert!(err.contains("environment variable NEXUS_VAULT_KEY does not hold a vault key"));
    assert!(!err.contains("not-a-key-at-all"));
}

#[test]
fn library_key_file_falls_back_to_the_environment_only_when_missing() {
    let dir = tmp();
    let s = settings(dir.path(), Some("absent.key"));
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    Vault::create(&s, NewKey::Env, &Unlock::env(&env)).unwrap();
    // Configured key file missing, key in the environment: the environment is used (CI).
    assert!(Vault::open_at(&s, &Unlock::env(&env)).is_ok());
    // Missing everywhere: the error names the key file.
    let none = env_of(&[]);
    let err = Vault::open_at(&s, &Unlock::env(&none)).unwrap_err();
    assert!(matches!(err, SecretError::KeyFileMissing { .. }), "{err}");
    // A key file that exists but is unsafe is an error, not a reason to use the environment.
    let key = dir.path().join("absent.key");
    std::fs::write(&key, KEY_HEX).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Vault::open_at(&s, &Unlock::env(&env)).unwrap_err();
    assert!(
        matches!(err, SecretError::KeyFileMode { mode: 0o644, .. }),
        "{err}"
    );
}

#[test]
fn library_key_file_permissions() {
    let dir = tmp();
    let key = dir.path().join("vault.key");
    std::fs::write(&key, format!("{KEY_HEX}\n")).unwrap();
    let s = settings(dir.path(), Some("vault.key"));
    let none = env_of(&[]);
    for bad in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = Vault::create(&s, NewKey::KeyFile(key.clone()), &Unlock::env(&none))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("mode {bad:04o}")), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!s.path.exists(), "nothing is created with an unsafe key");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    Vault::create(&s, NewKey::KeyFile(key.clone()), &Unlock::env(&none)).unwrap();
    // The same key read from the file and from the environment opens the same vault.
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let s_env = settings(dir.path(), None);
    assert!(Vault::open_at(&s_env, &Unlock::env(&env)).is_ok());
    // Raw 32-byte key files are accepted too.
    let raw = dir.path().join("raw.key");
    std::fs::write(&raw, (0u8..32).collect::<Vec<_>>()).unwrap();
    std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Vault::open_at(&settings(dir.path(), Some("raw.key")), &Unlock::env(&none)).is_ok());
}

#[test]
fn library_passphrase_salt_wrong_passphrase_and_prompt() {
    let dir = tmp();
    let s = settings(dir.path(), None);
    let env = env_of(&[("NEXUS_VAULT_PASSPHRASE", PASSPHRASE)]);
    let mut v = Vault::create(
        &s,
        NewKey::Passphrase {
            passphrase: value(PASSPHRASE),
            env: Some("NEXUS_VAULT_PASSPHRASE".into()),
        },
        &Unlock::env(&env),
    )
    .unwrap();
    v.set("K", value("passphrase-protected")).unwrap();
    v.save().unwrap();
    drop(v);
    let header = &lines(&s.path)[1];
    assert!(
        header.contains("\"argon2id\"") && header.contains("\"salt\""),
        "{header}"
    );

    let v = Vault::open_at(&s, &Unlock::env(&env)).unwrap();
    assert_eq!(v.get("K"), Some("passphrase-protected"));

    let before = read(&s.path);
    let wrong = env_of(&[("NEXUS_VAULT_PASSPHRASE", "incorrect horse")]);
    let err = Vault::open_at(&s, &Unlock::env(&wrong)).unwrap_err();
    assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("wrong key or passphrase"));
    assert!(!err.to_string().contains("incorrect horse"));

    let none = env_of(&[]);
    let err = Vault::open_at(&s, &Unlock::env(&none)).unwrap_err();
    assert!(matches!(err, SecretError::NeedPassphrase { .. }), "{err}");

    // An interactive caller supplies a prompt.
    let prompt = |text: &str| {
        assert!(text.contains("Passphrase"));
        Ok(Zeroizing::new(PASSPHRASE.to_string()))
    };
    let v = Vault::open_at(
        &s,
        &Unlock {
            env: &none,
            prompt: Some(&prompt),
        },
    )
    .unwrap();
    assert_eq!(v.key_source(), &KeySource::Passphrase { env: None });
    assert_eq!(read(&s.path), before, "failed opens change nothing");

    // Too short a passphrase is refused at init.
    let err = Vault::create(
        &settings(&dir.path().join("other"), None),
        NewKey::Passphrase {
            passphrase: value("short"),
            env: None,
        },
        &Unlock::env(&none),
    )
    .unwrap_err();
    assert!(matches!(err, SecretError::WeakPassphrase { .. }), "{err}");
}

#[test]
fn library_every_write_uses_a_fresh_nonce_and_keeps_the_header() {
    let dir = tmp();
    let s = settings(dir.path(), None);
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let mut v = Vault::create(&s, NewKey::Env, &Unlock::env(&env)).unwrap();
    v.set("A", value("same-content")).unwrap();
    v.save().unwrap();
    let first = lines(&s.path);
    v.save().unwrap();
    let second = lines(&s.path);
    assert_eq!(first[..2], second[..2], "the header never changes");
    assert_ne!(first[2], second[2], "same plaintext, different ciphertext");
    assert_ne!(first[2][..16], second[2][..16], "different nonce");
    assert_eq!(
        Vault::open_at(&s, &Unlock::env(&env)).unwrap().get("A"),
        Some("same-content")
    );
}

#[test]
fn library_fingerprints_are_keyed_and_stable() {
    let dir = tmp();
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let s = settings(dir.path(), None);
    let mut v = Vault::create(&s, NewKey::Env, &Unlock::env(&env)).unwrap();
    v.set("DB", value("hunter22")).unwrap();
    v.set("DB2", value("hunter22")).unwrap();
    v.save().unwrap();
    let fp = v.fingerprint_of("DB").unwrap();
    assert_eq!(fp.len(), 64);
    assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!fp.contains("hunter22"));
    assert_eq!(fp, v.fingerprint("DB", "hunter22"));
    assert_ne!(fp, v.fingerprint("DB", "hunter23"), "a changed value shows");
    assert_ne!(
        fp,
        v.fingerprint_of("DB2").unwrap(),
        "equal values under two names cannot be told apart"
    );
    assert_ne!(
        fp,
        blake3::hash(b"hunter22").to_hex().to_string(),
        "not a plain hash"
    );
    // Stable across saves and reopening (the key does not change), different under another key.
    v.save().unwrap();
    let reopened = Vault::open_at(&s, &Unlock::env(&env)).unwrap();
    assert_eq!(reopened.fingerprint_of("DB").unwrap(), fp);
    let dir2 = tmp();
    let env2 = env_of(&[("NEXUS_VAULT_KEY", OTHER_KEY_HEX)]);
    let other = Vault::create(
        &settings(dir2.path(), None),
        NewKey::Env,
        &Unlock::env(&env2),
    )
    .unwrap();
    assert_ne!(other.fingerprint("DB", "hunter22"), fp);
}

#[test]
fn library_redaction() {
    let dir = tmp();
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let mut v =
        Vault::create(&settings(dir.path(), None), NewKey::Env, &Unlock::env(&env)).unwrap();
    v.set("TOKEN", value("tok-98765")).unwrap();
    v.set("PIN", value("42")).unwrap();
    let out = v.redact("curl -H 'Authorization: tok-98765' (pin 42)\ntok-98765\n");
    assert_eq!(
        out,
        "curl -H 'Authorization: [redacted:TOKEN]' (pin 42)\n[redacted:TOKEN]\n"
    );
    assert_eq!(
        secrets::redact(
            "a=secret-a b=secret-b",
            &[("A", "secret-a"), ("B", "secret-b")]
        ),
        "a=[redacted:A] b=[redacted:B]"
    );
}

/// Damages a vault in several ways; each open fails with a clear error and changes nothing.
#[test]
fn library_corrupted_and_tampered_files() {
    let dir = tmp();
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let s = settings(dir.path(), None);
    let mut v = Vault::create(&s, NewKey::Env, &Unlock::env(&env)).unwrap();
    v.set("A", value("some value here")).unwrap();
    v.save().unwrap();
    drop(v);
    let good = String::from_utf8(read(&s.path)).unwrap();
    for (what, bad, expect) in damaged(&good) {
        std::fs::write(&s.path, &bad).unwrap();
        let err = Vault::open_at(&s, &Unlock::env(&env)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expect), "{what}: {text}");
        assert_eq!(
            read(&s.path),
            bad.as_bytes(),
            "{what}: the file is unchanged"
        );
    }
    // The wrong key, on the intact file.
    std::fs::write(&s.path, &good).unwrap();
    let wrong = env_of(&[("NEXUS_VAULT_KEY", OTHER_KEY_HEX)]);
    let err = Vault::open_at(&s, &Unlock::env(&wrong)).unwrap_err();
    assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
    // A future format version is refused by name.
    std::fs::write(&s.path, good.replacen("nexus-vault 1", "nexus-vault 2", 1)).unwrap();
    let err = Vault::open_at(&s, &Unlock::env(&env)).unwrap_err();
    assert!(
        matches!(err, SecretError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
    std::fs::write(&s.path, "password=hunter2\n").unwrap();
    let err = Vault::open_at(&s, &Unlock::env(&env)).unwrap_err();
    assert!(matches!(err, SecretError::NotAVault { .. }), "{err}");
}

#[test]
fn library_create_refuses_an_existing_vault() {
    let dir = tmp();
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let s = settings(dir.path(), None);
    let mut v = Vault::create(&s, NewKey::Env, &Unlock::env(&env)).unwrap();
    v.set("A", value("kept-value")).unwrap();
    v.save().unwrap();
    drop(v);
    let before = read(&s.path);
    let err = Vault::create(&s, NewKey::Env, &Unlock::env(&env)).unwrap_err();
    assert!(matches!(err, SecretError::Exists { .. }), "{err}");
    assert_eq!(read(&s.path), before);
    let err = Vault::open_at(
        &settings(&dir.path().join("nope"), None),
        &Unlock::env(&env),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nexus secret init"), "{err}");
}

#[test]
fn library_names_and_values_are_checked() {
    let dir = tmp();
    let env = env_of(&[("NEXUS_VAULT_KEY", KEY_HEX)]);
    let mut v =
        Vault::create(&settings(dir.path(), None), NewKey::Env, &Unlock::env(&env)).unwrap();
    for bad in ["", "has space", "a/b", "x=y", "é"] {
        assert!(matches!(
            v.set(bad, value("v-v-v-v")),
            Err(SecretError::InvalidName { .. })
        ));
    }
    assert!(matches!(
        v.set("EMPTY", value("")),
        Err(SecretError::EmptyValue { .. })
    ));
    assert!(Key::parse_text(KEY_HEX).is_some());
}

/// Damaged copies of a good vault file: (what, contents, text the error must contain).
fn damaged(good: &str) -> Vec<(&'static str, String, &'static str)> {
    let lines: Vec<&str> = good.lines().collect();
    let body = lines[2];
    let flip = |at: usize| {
        let mut b = body.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        format!(
            "{}\n{}\n{}\n",
            lines[0],
            lines[1],
            String::from_utf8(b).unwrap()
        )
    };
    vec![
        (
            "a flipped byte in the ciphertext",
            flip(body.len() / 2),
            "corrupted or was tampered with",
        ),
        (
            "a flipped byte in the nonce",
            flip(2),
            "corrupted or was tampered with",
        ),
        (
            "truncated ciphertext",
            format!("{}\n{}\n{}\n", lines[0], lines[1], &body[..body.len() / 2]),
            "corrupted",
        ),
        (
            "truncated after the header",
            format!("{}\n{}\n", lines[0], lines[1]),
            "truncated",
        ),
        (
            "truncated inside the header",
            good[..lines[0].len() + 20].to_string(),
            "corrupted",
        ),
        ("empty", String::new(), "corrupted"),
        (
            "an edited header (whitespace: same key, different associated data)",
            good.replacen("{\"cipher\"", "{ \"cipher\"", 1),
            "corrupted or was tampered with",
        ),
        (
            "an edited key check value",
            {
                let i = good.find("\"key_check\":\"").unwrap() + 13;
                let mut s = good.to_string();
                let c = if &s[i..=i] == "0" { "1" } else { "0" };
                s.replace_range(i..=i, c);
                s
            },
            "wrong key or passphrase",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The `nexus secret` command

/// A project with a nexus.kdl (a trivial task, then `config_extra`), where nexus runs as a user
/// runs `nexus secret`: without `-c` and without `NO_COLOR`.
fn project(config_extra: &str) -> Project {
    let p = Project::new().no_config_arg().env_remove("NO_COLOR");
    p.config(&format!(
        "task \"t\" {{\n    command \"true\"\n}}\n{config_extra}"
    ));
    p
}

fn vault(p: &Project) -> PathBuf {
    p.path(".nexus/secrets.vault")
}

fn set(p: &Project, name: &str, value: &str) -> Run {
    p.nexus_with_stdin(&["secret", "set", name], value)
}

fn ok(r: &Run) {
    assert_eq!(r.code, OK, "{r:?}");
}

/// set / get / list / rm through the binary, values from stdin (not a terminal).
fn round_trip(p: &Project) {
    ok(&set(p, "DB_PASSWORD", "pa55-word-one\n"));
    ok(&set(p, "api.token", "tok-abcdef"));
    let r = p.nexus(&["secret", "get", "DB_PASSWORD"]);
    ok(&r);
    assert_eq!(
        r.stdout, "pa55-word-one",
        "one trailing newline is removed, none added"
    );
    // Replace, keeping the newline this time.
    let r = p.nexus_with(
        &["secret", "set", "--keep-newline", "DB_PASSWORD"],
        "pa55-word-two\n",
        &[],
    );
    ok(&r);
    assert!(r.stdout.contains("Updated"), "{r:?}");
    assert_eq!(
        p.nexus(&["secret", "get", "DB_PASSWORD"]).stdout,
        "pa55-word-two\n"
    );

    let r = p.nexus(&["secret", "list"]);
    ok(&r);
    assert_eq!(r.stdout, "DB_PASSWORD\napi.token\n");
    let r = p.nexus(&["secret", "list", "--format", "json"]);
    ok(&r);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        j["secrets"],
        serde_json::json!(["DB_PASSWORD", "api.token"])
    );
    for out in [&r.stdout, &r.stderr] {
        assert!(
            !out.contains("pa55") && !out.contains("tok-abcdef"),
            "{r:?}"
        );
    }

    ok(&p.nexus(&["secret", "rm", "DB_PASSWORD"]));
    assert_eq!(p.nexus(&["secret", "list"]).stdout, "api.token\n");
    let r = p.nexus(&["secret", "get", "DB_PASSWORD"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("no secret `DB_PASSWORD`"), "{r:?}");
    let r = p.nexus(&["secret", "rm", "api.tokn"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("did you mean `api.token`?"), "{r:?}");
    assert_eq!(mode(&vault(p)), 0o600);
}

#[test]
fn cli_round_trip_with_a_key_file() {
    let p = project("vault key-file=\"vault.key\"\n");
    let r = p.nexus(&["secret", "init"]);
    ok(&r);
    assert!(r.stdout.contains("Wrote a new random key"), "{r:?}");
    assert!(
        !r.stdout.contains("Add key-file"),
        "already configured: {r:?}"
    );
    assert_eq!(mode(&p.path("vault.key")), 0o600);
    assert_eq!(mode(&vault(&p)), 0o600);
    round_trip(&p);
}

#[test]
fn cli_init_with_a_key_file_flag_tells_how_to_configure_it() {
    let p = project("");
    let r = p.nexus(&["secret", "init", "--key-file", "my.key"]);
    ok(&r);
    assert!(r.stdout.contains("Add key-file=\"my.key\""), "{r:?}");
    // Without the configuration naming it, the key is found through the environment instead.
    let key = std::fs::read_to_string(p.path("my.key")).unwrap();
    let p = p.env("NEXUS_VAULT_KEY", key.trim());
    round_trip(&p);
}

#[test]
fn cli_round_trip_with_an_environment_key() {
    let p = project("").env("NEXUS_VAULT_KEY", KEY_HEX);
    ok(&p.nexus(&["secret", "init"]));
    assert!(lines(&vault(&p))[1].contains("\"kdf\":{\"name\":\"none\"}"));
    round_trip(&p);
    // `key-env` names another variable.
    let q = project("vault key-env=\"DEPLOY_VAULT_KEY\"\n").env("DEPLOY_VAULT_KEY", KEY_HEX);
    ok(&q.nexus(&["secret", "init"]));
    ok(&set(&q, "X", "value-x"));
    assert_eq!(q.nexus(&["secret", "get", "X"]).stdout, "value-x");
}

#[test]
fn cli_round_trip_with_a_passphrase() {
    let p =
        project("vault path=\"secrets/prod.vault\"\n").env("NEXUS_VAULT_PASSPHRASE", PASSPHRASE);
    let r = p.nexus(&["secret", "init", "--passphrase"]);
    ok(&r);
    let vault = p.path("secrets/prod.vault");
    let header = &lines(&vault)[1];
    assert!(header.contains("\"name\":\"argon2id\""), "{header}");
    assert!(header.contains("\"salt\":\""), "{header}");
    ok(&set(&p, "K", "passphrase-value"));
    assert_eq!(p.nexus(&["secret", "get", "K"]).stdout, "passphrase-value");

    // Wrong passphrase: a clear error, exit 1, and the file is byte for byte the same.
    let before = read(&vault);
    for args in [
        &["secret", "get", "K"][..],
        &["secret", "list"],
        &["secret", "rm", "K"],
        &["secret", "set", "K"],
    ] {
        let r = p.nexus_with(
            args,
            "new-value",
            &[("NEXUS_VAULT_PASSPHRASE", "not the passphrase")],
        );
        assert_eq!(r.code, FAILED, "{r:?}");
        assert!(
            r.stderr
                .contains("wrong key or passphrase (or the file is corrupted)"),
            "{r:?}"
        );
        assert!(!r.stderr.contains("not the passphrase"), "{r:?}");
        assert_eq!(read(&vault), before, "{args:?} changed the vault");
    }
    // No passphrase and no terminal: says what to do instead of waiting on a prompt.
    let r = p.nexus_with(
        &["secret", "get", "K"],
        "",
        &[("NEXUS_VAULT_PASSPHRASE", "")],
    );
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("set NEXUS_VAULT_PASSPHRASE"), "{r:?}");
}

#[test]
fn cli_passphrase_init_creates_a_new_salt_every_time() {
    let a = project("").env("NEXUS_VAULT_PASSPHRASE", PASSPHRASE);
    let b = project("").env("NEXUS_VAULT_PASSPHRASE", PASSPHRASE);
    ok(&a.nexus(&["secret", "init", "--passphrase"]));
    ok(&b.nexus(&["secret", "init", "--passphrase"]));
    let ha: serde_json::Value = serde_json::from_str(&lines(&vault(&a))[1]).unwrap();
    let hb: serde_json::Value = serde_json::from_str(&lines(&vault(&b))[1]).unwrap();
    let salt = |h: &serde_json::Value| h["kdf"]["salt"].as_str().unwrap().to_string();
    assert!(!salt(&ha).is_empty());
    assert_ne!(salt(&ha), salt(&hb), "a fresh salt per vault");
    assert_ne!(
        ha["key_check"], hb["key_check"],
        "same passphrase, different keys"
    );
    // Too short a passphrase is refused.
    let c = project("").env("NEXUS_VAULT_PASSPHRASE", "short");
    let r = c.nexus(&["secret", "init", "--passphrase"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("at least 8 characters"), "{r:?}");
    assert!(
        !c.path(".nexus").exists(),
        "a refused init leaves nothing behind"
    );
}

#[test]
fn cli_every_write_has_a_fresh_nonce() {
    let p = project("").env("NEXUS_VAULT_KEY", KEY_HEX);
    ok(&p.nexus(&["secret", "init"]));
    ok(&set(&p, "A", "same"));
    let first = read(&vault(&p));
    ok(&set(&p, "A", "same"));
    let second = read(&vault(&p));
    assert_ne!(first, second, "the same contents encrypt differently");
    assert_eq!(p.nexus(&["secret", "get", "A"]).stdout, "same");
}

#[test]
fn cli_wrong_key_changes_nothing() {
    let p = project("").env("NEXUS_VAULT_KEY", KEY_HEX);
    ok(&p.nexus(&["secret", "init"]));
    ok(&set(&p, "A", "value-a"));
    let before = read(&vault(&p));
    for args in [
        &["secret", "set", "B"][..],
        &["secret", "rm", "A"],
        &["secret", "get", "A"],
    ] {
        let r = p.nexus_with(args, "value-b", &[("NEXUS_VAULT_KEY", OTHER_KEY_HEX)]);
        assert_eq!(r.code, FAILED, "{r:?}");
        assert!(
            r.stderr.contains("cannot decrypt the vault")
                && r.stderr.contains("wrong key or passphrase"),
            "{r:?}"
        );
        assert!(
            r.stderr.contains("NEXUS_VAULT_KEY"),
            "names the key source: {r:?}"
        );
        assert!(!r.stderr.contains(OTHER_KEY_HEX), "{r:?}");
        assert_eq!(read(&vault(&p)), before, "{args:?}");
    }
    // No key at all.
    let r = p.nexus_with(&["secret", "list"], "", &[("NEXUS_VAULT_KEY", "")]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("set NEXUS_VAULT_KEY"), "{r:?}");
}

#[test]
fn cli_corrupted_vault_changes_nothing() {
    let p = project("").env("NEXUS_VAULT_KEY", KEY_HEX);
    ok(&p.nexus(&["secret", "init"]));
    ok(&set(&p, "A", "value-of-a"));
    let good = String::from_utf8(read(&vault(&p))).unwrap();
    for (what, bad, expect) in damaged(&good) {
        std::fs::write(vault(&p), &bad).unwrap();
        for args in [&["secret", "set", "B"][..], &["secret", "list"]] {
            let r = p.nexus_with(args, "value-b", &[]);
            assert_eq!(r.code, FAILED, "{what}: {r:?}");
            assert!(r.stderr.contains(expect), "{what}: {r:?}");
            assert!(r.stderr.contains("not changed"), "{what}: {r:?}");
            assert_eq!(read(&vault(&p)), bad.as_bytes(), "{what}: {args:?}");
        }
    }
    // `init` does not replace a damaged vault either.
    let r = p.nexus(&["secret", "init"]);
    assert_eq!(r.code, FAILED, "{r:?}");
}

#[test]
fn cli_key_file_with_open_permissions_is_refused() {
    let p = project("vault key-file=\"vault.key\"\n");
    ok(&p.nexus(&["secret", "init"]));
    ok(&set(&p, "A", "value-a"));
    let before = read(&vault(&p));
    std::fs::set_permissions(p.path("vault.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [&["secret", "get", "A"][..], &["secret", "set", "A"]] {
        let r = p.nexus_with(args, "other", &[]);
        assert_eq!(r.code, FAILED, "{r:?}");
        assert!(r.stderr.contains("has mode 0644"), "{r:?}");
        assert!(r.stderr.contains("chmod 600"), "{r:?}");
        assert_eq!(read(&vault(&p)), before);
    }
    // init with an existing unsafe key file is refused too, and creates no vault.
    let q = project("vault key-file=\"vault.key\"\n");
    std::fs::write(q.path("vault.key"), KEY_HEX).unwrap();
    std::fs::set_permissions(q.path("vault.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = q.nexus(&["secret", "init"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("has mode 0640"), "{r:?}");
    assert!(!vault(&q).exists());
    std::fs::set_permissions(q.path("vault.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&q.nexus(&["secret", "init"]));
}

#[test]
fn cli_init_twice_is_refused() {
    let p = project("").env("NEXUS_VAULT_KEY", KEY_HEX);
    ok(&p.nexus(&["secret", "init"]));
    ok(&set(&p, "A", "value-a"));
    let before = read(&vault(&p));
    for args in [
        &["secret", "init"][..],
        &["secret", "init", "--passphrase"],
        &["secret", "init", "--key-file", "k.key"],
    ] {
        let r = p.nexus_with(args, "", &[("NEXUS_VAULT_PASSPHRASE", PASSPHRASE)]);
        assert_eq!(r.code, FAILED, "{r:?}");
        assert!(r.stderr.contains("already exists"), "{r:?}");
        assert_eq!(read(&vault(&p)), before);
    }
    assert!(!p.path("k.key").exists(), "no key file for a refused init");
}

#[test]
fn cli_init_refuses_to_guess_between_a_missing_key_file_and_the_environment() {
    let p = project("vault key-file=\"vault.key\"\n").env("NEXUS_VAULT_KEY", KEY_HEX);
    let r = p.nexus(&["secret", "init"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    assert!(r.stderr.contains("--key-file"), "{r:?}");
    assert!(!p.path("vault.key").exists() && !vault(&p).exists());
    // Explicitly: a new key file, which then wins over the variable.
    ok(&p.nexus(&["secret", "init", "--key-file", "vault.key"]));
    ok(&set(&p, "A", "value-a"));
    let r = p.nexus_with(
        &["secret", "get", "A"],
        "",
        &[("NEXUS_VAULT_KEY", OTHER_KEY_HEX)],
    );
    assert_eq!(r.stdout, "value-a", "{r:?}");
}

#[test]
fn cli_usage_errors() {
    let p = project("");
    // No key source chosen.
    let r = p.nexus(&["secret", "init"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    assert!(
        r.stderr.contains("--passphrase") && r.stderr.contains("--key-file"),
        "{r:?}"
    );
    assert!(!vault(&p).exists());
    let p = p.env("NEXUS_VAULT_KEY", KEY_HEX);
    // No vault yet.
    let r = p.nexus(&["secret", "list"]);
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("nexus secret init"), "{r:?}");
    ok(&p.nexus(&["secret", "init"]));
    let r = set(&p, "bad name", "v");
    assert_eq!(r.code, USAGE, "{r:?}");
    assert!(r.stderr.contains("invalid secret name"), "{r:?}");
    let r = set(&p, "EMPTY", "\n");
    assert_eq!(r.code, FAILED, "{r:?}");
    assert!(r.stderr.contains("empty value"), "{r:?}");
    let r = p.nexus(&["secret", "get", "A", "--format", "json"]);
    assert_eq!(r.code, USAGE, "{r:?}");
    // An empty vault lists nothing.
    let r = p.nexus(&["secret", "list"]);
    ok(&r);
    assert_eq!(r.stdout, "");
}
