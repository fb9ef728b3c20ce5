#!/usr/bin/env bash
# How much faster ttp-agent's CLK encoder is than clkhash 0.18.3, on the same records, schemas
# and secret, measured in the same run on this machine.
#
#   scripts/bench-clkhash-ratio.sh [N=100000]
#
#   CLKHASH_VENV   virtualenv for clkhash (default: .venv-clkhash at the repo root, shared with
#                  scripts/clkhash-interop/run.sh); created with `pip install clkhash==0.18.3`
#
# Steps: write two synthetic record sets as CSV (names from clkhash's bundled lists, and random
# strings), time clkhash's generate_clks on each with one process and with one per core, time
# `cargo bench --bench encode` on the same CSV files (one thread and all cores), check that
# every CLK is equal on both sides, and print records/s and the ratios. The target (issue 2)
# is ttp-agent ≥ 10× clkhash single-process, for blakeHash and doubleHash.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-100000}"
venv="${CLKHASH_VENV:-$root/.venv-clkhash}"
helper="$root/scripts/bench-clkhash-ratio.py"

if ! "$venv/bin/python" -c 'import sys, clkhash; sys.exit(clkhash.__version__ != "0.18.3")' 2>/dev/null; then
    echo "bench-clkhash-ratio: installing clkhash 0.18.3 into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'clkhash==0.18.3'
fi
[[ -e "$venv/.gitignore" ]] || printf '*\n' >"$venv/.gitignore"

work="$(mktemp -d "${TMPDIR:-/tmp}/clkhash-ratio.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== $(date -u +%FT%TZ), $n records per data set"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -m | awk '/^Mem:/ {print $2}') MiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"

"$venv/bin/python" "$helper" gen "$work" "$n"
(cd "$root" && cargo bench --bench encode --no-run --quiet)

results="$work/results.txt"
: >"$results"
for schema in blake doublehash; do
    "$venv/bin/python" "$helper" time "$work" "$root/benches/data/clkhash/schema-$schema.json" \
        | tee -a "$results"
    for data in names unique; do
        mkdir -p "$work/rust-$data"
        (cd "$root" && ENCODE_BENCH_CSV="$work/records-$data.csv" \
            ENCODE_BENCH_SECRET_FILE="$work/secret.txt" \
            ENCODE_BENCH_CLK_OUT="$work/rust-$data" \
            ENCODE_BENCH_ONLY="clk-$schema" ENCODE_BENCH_REPEAT=1 \
            cargo bench --quiet --bench encode 2>/dev/null) \
            | sed -n "s/^RESULT clk-$schema */ttp-agent  $schema data=$data /p" | tee -a "$results"
        "$venv/bin/python" "$helper" check "$work" "$schema" "$data" "$work/rust-$data/clks-$schema.json"
    done
done

# records/s per (side, schema, data, parallelism) → ratios.
echo
echo "== ratios (ttp-agent records/s ÷ clkhash records/s; target ≥ 10 against one clkhash process)"
awk '
    /^clkhash / {
        split($3, d, "="); split($4, p, "="); sub(":", "", p[2])
        rate[$2, d[2], "clk", p[2]] = $(NF - 1)
    }
    /^ttp-agent / {
        split($3, d, "="); split($4, t, "=")
        for (i = 5; i <= NF; i++) if ($i ~ /^records_per_sec=/) { split($i, r, "="); rate[$2, d[2], "rust", t[2]] = r[2] }
    }
    END {
        cores = 0
        for (k in rate) { split(k, f, SUBSEP); if (f[3] == "rust" && f[4] + 0 > cores) cores = f[4] + 0 }
        printf "%-11s %-7s %12s %12s %12s %12s %9s %9s %9s\n", "schema", "data", "clkhash 1p", "clkhash " cores "p", "ours 1t", "ours " cores "t", "1t/1p", cores "t/1p", cores "t/" cores "p"
        n = split("blake doublehash", schemas, " ")
        for (s = 1; s <= n; s++) for (m = 1; m <= 2; m++) {
            data = (m == 1) ? "names" : "unique"
            c1 = rate[schemas[s], data, "clk", 1]; cn = rate[schemas[s], data, "clk", cores]
            r1 = rate[schemas[s], data, "rust", 1]; rn = rate[schemas[s], data, "rust", cores]
            if (c1 == 0 || cn == 0) continue
            printf "%-11s %-7s %12.0f %12.0f %12.0f %12.0f %8.1fx %8.1fx %8.1fx\n", schemas[s], data, c1, cn, r1, rn, r1 / c1, rn / c1, rn / cn
        }
    }' "$results"
