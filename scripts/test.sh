#!/usr/bin/env bash
# Shield's one test command: installs what the tests need, then fmt check, clippy -D warnings,
# and every test (unit, property, simulation, and real-server integration tests).
# Idempotent; downloads are cached under .cache/ (see scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh

# Integration tests may skip under plain `cargo test` when a server binary is missing; here every
# server is provided, so a skip is a failure.
export SHIELD_REQUIRE_SERVERS=1

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the simulator is not in the daemon; no serde_yaml / serde_yml"
if cargo tree -p shield-bin -e normal --locked | grep -q rand_chacha; then
    echo "shield-bin depends on rand_chacha: shield-core's sim feature is on for the daemon" >&2
    exit 1
fi
if cargo tree --workspace --locked | grep -Eq '^[^a-z]*serde_(yaml|yml) '; then
    echo "serde_yaml / serde_yml in the dependency tree (use serde_yaml_ng)" >&2
    exit 1
fi
echo "== cargo test"
cargo test --workspace --locked -- --nocapture 2>&1 | tee target/test-output.txt

# The README's second command, checked: the demo cluster starts, the drill reports a new primary
# and the old node rejoining, and the cluster stops. (The debug build the tests just made.)
echo "== demo"
export SHIELD_DEMO_DIR="${TMPDIR:-/tmp}/shield-demo-ci-$$"
trap 'SHIELD_DEMO_DIR="$SHIELD_DEMO_DIR" bash scripts/demo.sh --stop >/dev/null 2>&1 || true' EXIT
SHIELD_DEMO_PROFILE=debug bash scripts/demo.sh 2>&1 | tee target/demo-output.txt
grep -Eq '^demo: node[0-9] is the new primary, [0-9.]+ s after the kill$' target/demo-output.txt
grep -Eq '^demo: node[0-9] rejoined as a replica$' target/demo-output.txt
grep -q '| Leader ' target/demo-output.txt
echo "== demo: ok"
