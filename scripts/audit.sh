#!/usr/bin/env bash
# Supply chain: checks Cargo.lock against the RustSec advisory database snapshot beside the
# clone (../shared/advisory-db, or $ADVISORY_DB), offline (--no-fetch): the snapshot is what
# the run is judged by, and its date is printed so a reader knows how fresh the verdict is.
#
# Fails (exit 1) on a vulnerability in any locked dependency; unmaintained, unsound or yanked
# crates are reported as warnings and do not fail the run. Installs cargo-audit first when it
# is missing (`cargo install cargo-audit --locked`: about 8 minutes on a 2-core machine, so
# only when needed).
set -euo pipefail
cd "$(dirname "$0")/.."

db="${ADVISORY_DB:-../shared/advisory-db}"
if [ ! -d "$db/crates" ]; then
  echo "audit: no RustSec advisory database at $db (expected ../shared/advisory-db beside the clone)" >&2
  exit 1
fi
if [ -f "$db/SNAPSHOT" ]; then
  echo "audit: advisory database snapshot: $(head -n 1 "$db/SNAPSHOT")"
else
  echo "audit: advisory database at $db has no SNAPSHOT file; its date is unknown"
fi

if ! cargo audit --version >/dev/null 2>&1; then
  echo "==> installing cargo-audit (cargo install cargo-audit --locked)"
  cargo install cargo-audit --locked
fi
cargo audit --version

cargo audit --db "$db" --no-fetch
