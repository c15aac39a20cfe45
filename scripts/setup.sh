#!/usr/bin/env bash
# Installs what Shield's build and tests need. Sourced by scripts/test.sh and scripts/demo.sh,
# or run on its own. Idempotent: every step checks before it acts.
set -euo pipefail
SHIELD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SHIELD_ROOT
export SHIELD_CACHE="${SHIELD_CACHE:-$SHIELD_ROOT/.cache}"
mkdir -p "$SHIELD_CACHE"

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not installed; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
