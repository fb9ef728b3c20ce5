#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]      default 60 seconds per target
#
# Targets: parse_tasks (ttp_proto::task::parse_tasks on arbitrary bodies) and read_records
# (ttp_agent::submit::read_records_from on arbitrary bytes). Each starts from the seed corpus
# in fuzz/corpus/<target>; what it finds on top goes to a scratch directory, not into git.
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, coverage instrumentation). A nightly
# toolchain is used when rustup has one (FUZZ_TOOLCHAIN=stable skips it); otherwise the stable
# compiler with RUSTC_BOOTSTRAP=1.
# When neither can build the targets (or cargo-fuzz cannot be installed), the script says why
# and exits 0: fuzzing is extra assurance, not a reason to fail CI on a machine without it.
# A crash found exits 1; the input is kept in fuzz/artifacts/<target>/ -- turn it into a unit
# test next to the code it broke before fixing it.
#
# Prints, per target, the number of executions (libFuzzer's stat::number_of_executed_units).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

seconds="${1:-60}"
case "$seconds" in '' | *[!0-9]*)
  echo "usage: scripts/fuzz.sh [SECONDS]" >&2
  exit 2
  ;;
esac

skip() {
  echo "fuzz: skipped: $*"
  exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked || skip "cargo-fuzz could not be installed (no access to crates.io?)"
fi

toolchain=()
# FUZZ_TOOLCHAIN=stable forces the stable compiler (what a machine without nightly does).
if [ "${FUZZ_TOOLCHAIN:-}" != "stable" ] && rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=(+nightly)
  echo "fuzz: using $(rustup run nightly rustc --version)"
else
  # The stable compiler accepts -Z flags when told it is building itself.
  export RUSTC_BOOTSTRAP=1
  echo "fuzz: using $(rustc --version) with RUSTC_BOOTSTRAP=1 (no nightly toolchain, or FUZZ_TOOLCHAIN=stable)"
fi

build_log="$(mktemp)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch" "$build_log"' EXIT

targets="$(cd fuzz && cargo "${toolchain[@]}" fuzz list)"
echo "fuzz: building $(echo "$targets" | tr '\n' ' ')"
if ! (cd fuzz && cargo "${toolchain[@]}" fuzz build -O >"$build_log" 2>&1); then
  tail -n 20 "$build_log"
  skip "this toolchain cannot build the fuzz targets (see the build output above)"
fi

status=0
summary=()
for target in $targets; do
  mkdir -p "$scratch/$target"
  dict=()
  if [ -f "fuzz/dicts/$target.dict" ]; then
    dict=(-dict="$root/fuzz/dicts/$target.dict")
  fi
  log="$scratch/$target.log"
  echo "fuzz: $target for ${seconds}s"
  set +e
  (cd fuzz && cargo "${toolchain[@]}" fuzz run -O "$target" "$scratch/$target" "$root/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    "${dict[@]}") >"$log" 2>&1
  rc=$?
  set -e
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1 || true)"
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz: $target FAILED (exit $rc); a crashing input is kept in fuzz/artifacts/$target/"
    status=1
    summary+=("$target: FAILED after ${execs:-?} executions")
  else
    summary+=("$target: ${execs:-?} executions in ${seconds}s, no crash")
  fi
done

echo "fuzz: summary"
for line in "${summary[@]}"; do
  echo "  $line"
done
exit "$status"
