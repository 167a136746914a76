#!/usr/bin/env bash
# The one test command: sets up this machine, builds, runs every test, then checks formatting and
# lints. Idempotent; works from a fresh clone with no standard input (CI runs it as .ci/run).
#
#   tests/run.sh              # as root on Debian: installs what the tests need, then tests
#   NEXUS_SKIP_SETUP=1 tests/run.sh   # not root, machine already prepared: skip the set-up
#   NEXUS_FRESH_CHECK=1 tests/run.sh  # also .ci/fresh-check (on by default when CI=true;
#                                     # NEXUS_FRESH_CHECK=0 turns it off there)
#
# Set-up (root): tests/setup.sh (openssh-server, sudo, test users), a C compiler for the crypto
# crates, and Debian's nix-bin for the Nix expression test when apt offers it. It never
# downloads a Rust toolchain: cargo must already be installed (rustup's, in ~/.cargo/bin).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

section() {
    printf '\n==== %s ====\n' "$*"
}

apt_updated=0
apt_update() {
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update -qq || echo "tests/run.sh: apt-get update failed; using the existing package lists" >&2
        apt_updated=1
    fi
}

# True when apt has an installation candidate for package $1.
apt_has_candidate() {
    local c
    c="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
    [ -n "$c" ] && [ "$c" != "(none)" ]
}

section "set-up"
if [ "${NEXUS_SKIP_SETUP:-}" = "1" ]; then
    echo "NEXUS_SKIP_SETUP=1: skipping machine set-up"
elif [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: the set-up needs root (it installs packages and creates test users)." >&2
    echo "Run it as root, or set NEXUS_SKIP_SETUP=1 on a machine that is already prepared." >&2
    exit 1
else
    if [ -f tests/setup.sh ]; then
        bash tests/setup.sh
    else
        echo "tests/setup.sh not found: skipping sshd/test-user set-up"
    fi

    # The crypto crates (ring) compile C code.
    if ! command -v cc >/dev/null 2>&1; then
        echo "installing a C compiler (gcc, libc6-dev)"
        apt_update
        apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
    fi

    # Optional: nix-instantiate for tests/nix.rs. Without a candidate the test skips itself.
    if command -v nix-instantiate >/dev/null 2>&1; then
        echo "nix-instantiate: present"
    else
        apt_update
        if apt_has_candidate nix-bin; then
            echo "installing nix-bin (for the nix/default.nix test)"
            if ! apt-get install -y -qq --no-install-recommends nix-bin >/dev/null; then
                echo "tests/run.sh: could not install nix-bin; tests/nix.rs will report it" >&2
            fi
        else
            echo "apt has no nix-bin candidate: tests/nix.rs will skip"
        fi
    fi
fi

section "toolchain"
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "tests/run.sh: cargo is not on PATH and not in ~/.cargo/bin." >&2
    echo "Install a Rust toolchain (rustup, Rust 1.95 or newer, with rustfmt and clippy) and re-run." >&2
    exit 1
fi
cargo --version
rustc --version
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "tests/run.sh: 'cargo $tool' is missing; add it with: rustup component add ${tool/fmt/rustfmt}" >&2
        exit 1
    fi
done

section "build: cargo build --all-targets"
cargo build --all-targets --locked

section "test: cargo test --all-targets"
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
# --no-fail-fast: every test binary runs even after one fails; format and lints run after failed
# tests too, and the end of the output lists every failure, so one run reports everything.
test_rc=0
cargo test --all-targets --locked --no-fail-fast 2>&1 | tee "$test_log" || test_rc=$?

section "format: cargo fmt --check"
fmt_rc=0
cargo fmt --all --check || fmt_rc=$?

section "lint: cargo clippy --all-targets -- -D warnings"
clippy_rc=0
cargo clippy --all-targets --locked -- -D warnings || clippy_rc=$?

# The README's two commands on a fresh clone, empty target dir and no Nix store (.ci/fresh-check):
# in CI (CI=true) or when NEXUS_FRESH_CHECK=1, never inside the check itself.
fresh_rc=0
fresh_ran=0
if [ -z "${NEXUS_FRESH_CHILD:-}" ] && [ "${NEXUS_FRESH_CHECK:-}" != "0" ] &&
    { [ "${CI:-}" = "true" ] || [ "${NEXUS_FRESH_CHECK:-}" = "1" ]; }; then
    section "fresh machine: .ci/fresh-check"
    if [ "$(id -u)" -ne 0 ] || ! unshare --mount true 2>/dev/null; then
        echo "SKIPPED: .ci/fresh-check needs root and mount namespaces (unshare --mount)"
    else
        fresh_ran=1
        NEXUS_FRESH_CHILD=1 .ci/fresh-check || fresh_rc=$?
    fi
fi

section "summary"
# One line with the totals of every test binary, then each failed test and check.
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^passed/) p += $(i - 1)
            if ($(i) ~ /^failed/) f += $(i - 1)
            if ($(i) ~ /^ignored/) s += $(i - 1)
        }
    }
    END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$test_log"
grep -E '^test .* \.\.\. FAILED$' "$test_log" | sed 's/^test /failed test: /; s/ \.\.\. FAILED$//' || true
# A binary that did not build or crashed has no "test result" line: cargo names it.
grep -E '^error: (test failed|could not compile|[0-9]+ targets? failed)' "$test_log" || true
[ "$test_rc" -eq 0 ] || echo "FAILED: cargo test (exit $test_rc)"
[ "$fmt_rc" -eq 0 ] || echo "FAILED: cargo fmt --check"
[ "$clippy_rc" -eq 0 ] || echo "FAILED: cargo clippy"
[ "$fresh_rc" -eq 0 ] || echo "FAILED: .ci/fresh-check (the README's commands on a fresh clone)"
[ "$fresh_ran" -eq 0 ] || [ "$fresh_rc" -ne 0 ] || echo "fresh-check: passed"
if [ "$test_rc" -ne 0 ] || [ "$fmt_rc" -ne 0 ] || [ "$clippy_rc" -ne 0 ] || [ "$fresh_rc" -ne 0 ]; then
    exit 1
fi
echo "done: build, tests, format and lints passed"
