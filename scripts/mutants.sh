#!/usr/bin/env bash
# Mutation testing of decide(): cargo-mutants changes one operator, condition or return value at a
# time in shield-core/src/decide/ and checks that some test fails. A mutant that survives is a
# change of behaviour no test notices. Results and the survivors: docs/simulator.md, "Mutation
# testing".
#
#   scripts/mutants.sh                       every file under shield-core/src/decide/
#   scripts/mutants.sh leader.rs outcomes.rs  only these files of it
#
# Environment:
#   MUTANTS_JOBS      parallel build/test jobs (default 1; each job builds with every core)
#   MUTANTS_TIMEOUT   seconds allowed for one mutant's tests (default 180)
#   SHIELD_SIM_SEEDS  seeds of the simulation soak per mutant (default 100, not CI's 2,000)
#   MUTANTS_ARGS      more cargo-mutants arguments, e.g. "--re 'outcomes.rs:59'" for a few mutants
#
# Only shield-core is built and tested (`cargo test -p shield-core`). Builds go to
# target/mutants-build, so a run does not hold the lock on the main target directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null 2>&1; then
    echo "== installing cargo-mutants"
    cargo install --locked cargo-mutants
fi

files=()
if [ "$#" -eq 0 ]; then
    files=(--file 'shield-core/src/decide/**')
else
    for f in "$@"; do
        files+=(--file "shield-core/src/decide/${f#shield-core/src/decide/}")
    done
fi

extra=()
if [ -n "${MUTANTS_ARGS:-}" ]; then
    eval "extra=(${MUTANTS_ARGS})"
fi

root="$(pwd)"
export CARGO_TARGET_DIR="${root}/target/mutants-build"
export SHIELD_SIM_SEEDS="${SHIELD_SIM_SEEDS:-100}"
out="${root}/target/mutants"
mkdir -p "$out"

echo "== cargo mutants ${files[*]} (sim seeds per mutant: ${SHIELD_SIM_SEEDS})"
set +e
cargo mutants \
    --package shield-core \
    --test-package shield-core \
    --exclude 'shield-core/src/decide/tests/*' \
    "${files[@]}" \
    --jobs "${MUTANTS_JOBS:-1}" \
    --timeout "${MUTANTS_TIMEOUT:-180}" \
    --build-timeout 900 \
    --no-shuffle \
    --output "$out" \
    ${MUTANTS_ARGS:+"${extra[@]}"}
status=$?
set -e

dir="$out/mutants.out"
count() { if [ -f "$dir/$1.txt" ]; then grep -c . "$dir/$1.txt" || true; else echo 0; fi; }
caught=$(count caught)
missed=$(count missed)
timeout=$(count timeout)
unviable=$(count unviable)
echo "== mutants: caught ${caught}, missed ${missed}, timeout ${timeout}, unviable ${unviable}"
if [ "$missed" -gt 0 ]; then
    echo "== missed (survivors):"
    cat "$dir/missed.txt"
fi
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts, 4 when the baseline failed.
exit "$status"
