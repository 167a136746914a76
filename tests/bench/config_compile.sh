#!/usr/bin/env bash
# Times the whole binary on the benchmark's generated configuration (1,000 hosts, 50 groups,
# 10,000 resources): process start, loading, validation and output of `nexus validate`.
# Needs hyperfine (Debian package hyperfine). Figures are recorded in docs/benchmarks.md.
#
#   tests/bench/config_compile.sh            # extra arguments go to hyperfine, e.g. --runs 50
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! command -v hyperfine >/dev/null 2>&1; then
    echo "tests/bench/config_compile.sh: hyperfine not found (apt-get install hyperfine)" >&2
    exit 1
fi

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT

cargo build --release --bin nexus
# The benchmark binary writes the same configuration it times in-process.
cargo bench --bench config_compile -- --emit "$dir" >/dev/null
config="$dir/nexus.kdl"
echo "config: $(wc -c <"$config") bytes, $(wc -l <"$config") lines"

hyperfine --warmup 3 --min-runs 20 -N "$@" \
    "target/release/nexus -q -c $config validate"
