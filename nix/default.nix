# Builds the nexus binary from this repository with nixpkgs' Rust tooling.
#
#   nix-build nix/                     # result/bin/nexus
#   nix-build nix/ --arg pkgs 'import <nixpkgs> { }'
#   nix-build nix/ --arg doCheck true  # also runs the unit tests (cargo test --lib)
#
# The root flake.nix uses this file for its packages, apps and checks.
#
# Dependencies come from Cargo.lock (no network access beyond fetching the locked crates).
# The crate needs Rust 1.95 (edition 2024): use a nixpkgs whose rustc is at least that.
# Only the unit tests can run in the build sandbox: the integration tests start sshd servers and
# need root (tests/run.sh runs them).
{
  pkgs ? import <nixpkgs> { },
  doCheck ? false,
}:

let
  inherit (pkgs) lib;
  root = ./..;
  manifest = builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"));
in
pkgs.rustPlatform.buildRustPackage {
  pname = manifest.package.name;
  version = manifest.package.version;

  # Only what the build reads: the manifest, the lock file and the sources (src/ includes the
  # `nexus init` starter file). Tests, benchmarks, docs and examples stay out, so editing them
  # does not rebuild the package.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/Cargo.toml")
      (root + "/Cargo.lock")
      (root + "/src")
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  inherit doCheck;
  cargoTestFlags = [ "--lib" ];
  # A few unit tests start process groups with setsid (util-linux), which stdenv lacks.
  nativeCheckInputs = lib.optionals pkgs.stdenv.hostPlatform.isLinux [ pkgs.util-linux ];

  meta = {
    description = manifest.package.description;
    license = lib.licenses.mit;
    mainProgram = "nexus";
    platforms = lib.platforms.unix;
  };
}
