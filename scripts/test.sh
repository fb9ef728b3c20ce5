#!/usr/bin/env bash
# The project's test command (README.md, "Run the tests"). CI runs it through .ci/run.
#
#   scripts/test.sh          format + lint + all tests + clkhash interop
#   SKIP_INTEROP=1 scripts/test.sh   without the clkhash interop (no network to PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "module imports: no cycle in src/; task state assigned only by the domain"
scripts/check-imports.sh

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --locked

if [ "${SKIP_INTEROP:-0}" != "1" ] && [ -x scripts/clkhash-interop/run.sh ]; then
  step "clkhash 0.18.3 interoperability (every CLK compared bit for bit)"
  cargo build --release --locked --bin ttp-agent
  TTP_AGENT_BIN=target/release/ttp-agent scripts/clkhash-interop/run.sh
fi
