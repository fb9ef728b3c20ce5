#!/usr/bin/env bash
# Crash soak: the agent binary is killed with SIGKILL N times at random points while it
# submits and runs against the simulator with 20 % faulty responses, then a last daemon must
# finish with every record pseudonymised and every IDAT answer sent exactly once.
#
#   scripts/crash-soak.sh [N] [SEED]     default 200 kills; SEED varies the kill moments and
#                                        the fault sequence (default: a new one each run)
#
# This is tests/soak/agent/crash_faults.rs (20 kills in CI) with more kills and more records, built in
# release mode. Not part of CI: 200 kills take several minutes. The logs of every run are kept
# under target/tmp/test-logs/soak/agent/crash_faults/ (the last run's); a failure prints the
# final daemon's log tail and the seed to replay with.
set -euo pipefail
cd "$(dirname "$0")/.."

kills="${1:-200}"
seed="${2:-$(date +%s)}"
case "$kills$seed" in *[!0-9]*)
  echo "usage: scripts/crash-soak.sh [KILLS] [SEED]" >&2
  exit 2
  ;;
esac
records="${TTP_CRASH_RECORDS:-400}"

echo "crash soak: $kills kills, $records records, seed $seed"
TTP_CRASH_KILLS="$kills" TTP_CRASH_SEED="$seed" TTP_CRASH_RECORDS="$records" \
  cargo test --release --locked --test soak -- agent::crash_faults:: --nocapture --test-threads=1 ||
  {
    echo "crash soak FAILED; replay with: scripts/crash-soak.sh $kills $seed" >&2
    exit 1
  }
