//! The Nix package expression (nix/default.nix) parses, and evaluates to the package we mean.
//!
//! Needs `nix-instantiate` (Debian package nix-bin, installed by tests/run.sh). Without it the
//! tests pass with a skip message, except under CI=true when Debian offers nix-bin: there
//! tests/run.sh should have installed it, so its absence is a failure.
//!
//! Building the package needs nixpkgs and the network, so it is not done here; the evaluation
//! test passes a stub `pkgs` that records what the expression hands to `buildRustPackage`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Whether apt can install nix-bin here (`apt-cache policy nix-bin` shows a candidate).
fn nix_bin_installable() -> bool {
    let Ok(out) = Command::new("apt-cache")
        .args(["policy", "nix-bin"])
        .output()
    else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        l.trim()
            .strip_prefix("Candidate:")
            .is_some_and(|c| c.trim() != "(none)" && !c.trim().is_empty())
    })
}

/// `nix-instantiate`, or `None` after printing why the test is skipped. Panics under CI=true
/// when it could have been installed.
fn nix_instantiate() -> Option<PathBuf> {
    if let Some(p) = on_path("nix-instantiate") {
        return Some(first_use(p));
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if ci && nix_bin_installable() {
        panic!(
            "nix-instantiate is not on PATH, but apt offers nix-bin: tests/run.sh installs it \
             (apt-get install -y nix-bin); run tests/run.sh as root"
        );
    }
    eprintln!(
        "SKIPPED: nix-instantiate not found{}; install Debian's nix-bin to check nix/default.nix",
        if ci {
            " and apt has no nix-bin candidate"
        } else {
            ""
        }
    );
    None
}

/// `bin` once the store's first-use set-up is done. Nix creates its state directories and
/// symlinks on first use without tolerating a concurrent first use ("creating symlink ... File
/// exists"), so the tests of this file, run in parallel, would race on a fresh machine: one
/// evaluation of a constant does the set-up while the other tests wait.
fn first_use(bin: PathBuf) -> PathBuf {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        // A failure here is reported by the test's own invocation, with its message.
        let _ = Command::new(&bin).args(["--eval", "-E", "1"]).output();
    });
    bin
}

/// Runs the other tests of this file in a private mount namespace whose /nix is an empty tmpfs, as
/// on a machine where Nix never ran, several times: their first use of the store must not race
/// ("creating symlink from '/nix/var/nix/gcroots/profiles' ... File exists").
#[test]
fn first_use_of_an_empty_nix_store_does_not_race() {
    if std::env::var_os("NEXUS_NIX_FRESH_CHILD").is_some() || nix_instantiate().is_none() {
        return;
    }
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    if !root || !Path::new("/nix").is_dir() || on_path("unshare").is_none() {
        eprintln!("SKIPPED: needs root, an existing /nix to mount over, and unshare");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    for round in 1..=8 {
        let home = tempfile::tempdir().expect("temp home");
        let script = format!(
            "mount -t tmpfs tmpfs /nix && exec {} --exact nix_expression_parses \
             nix_expression_evaluates_to_the_nexus_package flake_outputs_are_the_package_its_app_and_its_unit_tests \
             --test-threads=3",
            exe.display()
        );
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("NEXUS_NIX_FRESH_CHILD", "1")
            .env("HOME", home.path())
            .output()
            .expect("run unshare");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("3 passed"),
            "round {round} on an empty /nix failed:\n{text}"
        );
    }
}

#[test]
fn nix_expression_parses() {
    let Some(bin) = nix_instantiate() else { return };
    let file = repo().join("nix/default.nix");
    let out = Command::new(bin)
        .arg("--parse")
        .arg(&file)
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "nix-instantiate --parse {} failed:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stub nixpkgs, as Nix bindings: `lib` with what the expressions use, and `pkgsFor SYSTEM`,
/// whose buildRustPackage returns its arguments (and a store path, for interpolation) and
/// fileset.toSource its inputs. Only strings leave an evaluation: nothing is copied into the store.
const STUB_NIXPKGS: &str = r#"
  lib = {
    fileset = {
      toSource = { root, fileset }: { inherit root fileset; };
      unions = l: l;
    };
    licenses.mit = "MIT";
    platforms.unix = [ "x86_64-linux" ];
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    optionals = cond: l: if cond then l else [ ];
  };
  pkgsFor = system: {
    inherit lib;
    stdenv.hostPlatform = { inherit system; isLinux = builtins.match ".*-linux" system != null; };
    util-linux = "util-linux";
    rustPlatform.buildRustPackage = args: args // { outPath = "/nix/store/stub-${args.pname}-${system}"; };
  };
  bool = b: if b then "true" else "false";
"#;

/// Evaluates `let STUB_NIXPKGS BINDINGS in BODY` strictly; returns what it printed.
fn eval_with_stub(bin: &Path, bindings: &str, body: &str) -> String {
    let expr = format!("let\n{STUB_NIXPKGS}{bindings}\nin\n{body}\n");
    let out = Command::new(bin)
        .args(["--eval", "--strict", "-E"])
        .arg(&expr)
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "nix-instantiate --eval failed:\n{}\n{expr}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn nix_expression_evaluates_to_the_nexus_package() {
    let Some(bin) = nix_instantiate() else { return };
    let bindings = format!(
        r#"
  drv = import {} {{ pkgs = pkgsFor "x86_64-linux"; }};
  files = drv.src.fileset;
  names = map (p: baseNameOf (toString p)) files;"#,
        repo().join("nix/default.nix").display()
    );
    let body = r#"
  builtins.concatStringsSep " " [
    drv.pname
    drv.version
    "lock-exists=${if builtins.pathExists drv.cargoLock.lockFile then "yes" else "no"}"
    "lock=${baseNameOf (toString drv.cargoLock.lockFile)}"
    "src-exists=${toString (builtins.length (builtins.filter builtins.pathExists files))}/${toString (builtins.length files)}"
    "src=${builtins.concatStringsSep "," names}"
    "doCheck=${bool drv.doCheck}"
    "tests=${builtins.concatStringsSep "," drv.cargoTestFlags}"
    "license=${drv.meta.license}"
    "main=${drv.meta.mainProgram}"
  ]"#;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        eval_with_stub(&bin, &bindings, body),
        format!(
            "\"nexus {version} lock-exists=yes lock=Cargo.lock src-exists=3/3 \
             src=Cargo.toml,Cargo.lock,src doCheck=false tests=--lib license=MIT main=nexus\""
        )
    );
}

/// flake.nix, evaluated with a stub nixpkgs (this machine cannot fetch nixpkgs): for every system
/// it offers the package of nix/default.nix as `packages.default`, an app running its
/// `bin/nexus`, and a check that builds it with the unit tests on; the overlay adds `nexus`.
#[test]
fn flake_outputs_are_the_package_its_app_and_its_unit_tests() {
    let Some(bin) = nix_instantiate() else { return };
    let bindings = format!(
        r#"
  flake = import {};
  nixpkgs = {{
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] pkgsFor;
  }};
  out = flake.outputs {{ self = out; inherit nixpkgs; }};
  sys = "x86_64-linux";"#,
        repo().join("flake.nix").display()
    );
    let body = r#"
  builtins.concatStringsSep " " [
    "url=${flake.inputs.nixpkgs.url}"
    "systems=${builtins.concatStringsSep "," (builtins.attrNames out.packages)}"
    "default=${out.packages.${sys}.default.pname}"
    "doCheck=${bool out.packages.${sys}.default.doCheck}"
    "app=${out.apps.${sys}.default.type}:${out.apps.${sys}.default.program}"
    "check=${out.checks.${sys}.unit.pname}:${bool out.checks.${sys}.unit.doCheck}:${builtins.concatStringsSep "," out.checks.${sys}.unit.cargoTestFlags}"
    "checkInputs-linux=${toString out.checks.${sys}.unit.nativeCheckInputs}"
    "checkInputs-darwin=${toString (builtins.length out.checks.aarch64-darwin.unit.nativeCheckInputs)}"
    "overlay=${(out.overlays.default (pkgsFor sys) { }).nexus.pname}"
  ]"#;
    assert_eq!(
        eval_with_stub(&bin, &bindings, body),
        "\"url=github:NixOS/nixpkgs/nixos-unstable \
         systems=aarch64-darwin,aarch64-linux,x86_64-darwin,x86_64-linux default=nexus \
         doCheck=false app=app:/nix/store/stub-nexus-x86_64-linux/bin/nexus \
         check=nexus:true:--lib checkInputs-linux=util-linux checkInputs-darwin=0 overlay=nexus\""
    );
}
