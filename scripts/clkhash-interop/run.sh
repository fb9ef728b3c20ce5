#!/usr/bin/env bash
# Interop test: ttp-agent's CLKs must equal clkhash 0.18.3's, bit for bit, on random schemas
# and records (synthetic data only).
#
#   scripts/clkhash-interop/run.sh [VENV_DIR]
#
#   VENV_DIR                  virtualenv for clkhash (default: .venv-clkhash at the repo root);
#                             created and filled with `pip install clkhash==0.18.3` when needed
#   TTP_AGENT_BIN             binary to test (default: target/release/ttp-agent)
#   CLKHASH_INTEROP_SEED      seed for gen_cases.py (default: its own); vary it to explore
#   CLKHASH_INTEROP_SCHEMAS   number of schemas (default 10, at least 8)
#   CLKHASH_INTEROP_RECORDS   records per schema (default 40)
#
# For each case, gen_cases.py writes schema.json, secret.txt, records.csv (with a header row of
# feature identifiers) and clkhash's CLKs; this script runs
#   $TTP_AGENT_BIN encode --clk-schema schema.json --secret-file secret.txt records.csv
# and compare.py checks every CLK. The last line is `clkhash-interop: N passed, M failed`;
# the exit status is 1 if a single bit differs (the cases are then kept for inspection).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.venv-clkhash}"
bin="${TTP_AGENT_BIN:-$root/target/release/ttp-agent}"

if [[ ! -x "$bin" ]]; then
    echo "clkhash-interop: $bin is not an executable; run 'cargo build --release' or set TTP_AGENT_BIN" >&2
    exit 2
fi

if ! "$venv/bin/python" -c 'import sys, clkhash; sys.exit(clkhash.__version__ != "0.18.3")' 2>/dev/null; then
    echo "clkhash-interop: installing clkhash 0.18.3 into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'clkhash==0.18.3'
fi
# Keep the virtualenv out of git status (Python >= 3.13 writes this file itself).
[[ -e "$venv/.gitignore" ]] || printf '*\n' >"$venv/.gitignore"

work="$(mktemp -d "${TMPDIR:-/tmp}/clkhash-interop.XXXXXX")"
keep_on_failure() {
    local status=$?
    if [[ $status -eq 0 ]]; then
        rm -rf "$work"
    else
        echo "clkhash-interop: cases kept in $work" >&2
    fi
    exit "$status"
}
trap keep_on_failure EXIT

gen_args=(--schemas "${CLKHASH_INTEROP_SCHEMAS:-10}" --records "${CLKHASH_INTEROP_RECORDS:-40}")
if [[ -n "${CLKHASH_INTEROP_SEED:-}" ]]; then
    gen_args+=(--seed "$CLKHASH_INTEROP_SEED")
fi
"$venv/bin/python" "$here/gen_cases.py" "$work" "${gen_args[@]}"

for case in "$work"/case-*; do
    if ! "$bin" encode --clk-schema "$case/schema.json" --secret-file "$case/secret.txt" \
        "$case/records.csv" >"$case/actual.json" 2>"$case/stderr.txt"; then
        echo "$(basename "$case"): ttp-agent encode failed:" >&2
        sed 's/^/    /' "$case/stderr.txt" >&2
        rm -f "$case/actual.json"
    fi
done

"$venv/bin/python" "$here/compare.py" "$work"
