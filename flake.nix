# nexus as a flake: `nix build` and `nix run` give the nexus binary, `nix flake check` builds it
# and runs its unit tests (`cargo test --lib`). The package itself is nix/default.nix, which
# also works without flakes (`nix-build nix/`).
#
# The integration tests are not part of `nix flake check`: they start sshd servers, systemd
# containers and PostgreSQL, and need root (tests/run.sh runs them).
{
  description = "nexus: reviewable plan/apply deploys and host convergence over SSH";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forEachSystem = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forEachSystem (pkgs: {
        nexus = import ./nix { inherit pkgs; };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.nexus;
      });

      apps = forEachSystem (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.nexus}/bin/nexus";
        };
      });

      checks = forEachSystem (pkgs: {
        unit = import ./nix {
          inherit pkgs;
          doCheck = true;
        };
      });

      overlays.default = final: _prev: { nexus = import ./nix { pkgs = final; }; };
    };
}
