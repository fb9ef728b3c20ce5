#!/usr/bin/env bash
# Checks systemd/ttp-agent.service offline, without a running systemd:
#
#   1. `systemd-analyze verify`: the unit parses, every key is known, the command exists;
#   2. `systemd-analyze security --offline=yes`: the sandbox's exposure score must be at
#      most MAX_EXPOSURE (default 2.0; systemd rates 0.0 = locked down … 10.0 = exposed).
#
# Exit status: 0 both pass, 1 a check failed, 2 systemd-analyze is missing or too old to
# analyse offline (needs systemd ≥ 250) — .ci/run reports that as a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

UNIT=systemd/ttp-agent.service
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-systemd-unit: systemd-analyze not found (apt-get install systemd)" >&2
  exit 2
fi
if ! systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  echo "check-systemd-unit: this systemd-analyze cannot analyse offline (systemd $(systemd-analyze --version | head -1)); needs systemd 250 or newer" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# `verify` insists that ExecStart= names an executable. The unit names the installed path
# (/usr/bin/ttp-agent), which a build machine does not have, so a copy points at a stand-in;
# everything else is checked as written.
sed 's#^ExecStart=/usr/bin/ttp-agent #ExecStart=/bin/true #' "$UNIT" > "$work/ttp-agent.service"
echo "==> systemd-analyze verify $UNIT"
if ! systemd-analyze verify "$work/ttp-agent.service" 2>&1 | tee "$work/verify.log"; then
  echo "check-systemd-unit: verify failed" >&2
  exit 1
fi
# verify exits 0 on some warnings (an unknown key is "ignored"); treat any output as a failure.
if [ -s "$work/verify.log" ]; then
  echo "check-systemd-unit: verify printed warnings (above); fix them" >&2
  exit 1
fi

echo "==> systemd-analyze security --offline=yes $UNIT (at most $MAX_EXPOSURE)"
systemd-analyze security --offline=yes --no-pager "$UNIT" > "$work/security.log" 2>&1 || true
score="$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p' "$work/security.log" | tail -1)"
if [ -z "$score" ]; then
  cat "$work/security.log" >&2
  echo "check-systemd-unit: could not read the exposure score" >&2
  exit 1
fi
# Lines marked ✗ are the settings that still cost exposure; show them with the verdict.
grep '✗' "$work/security.log" || true
echo "exposure: $score (limit $MAX_EXPOSURE)"
if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
  cat "$work/security.log" >&2
  echo "check-systemd-unit: exposure $score is above $MAX_EXPOSURE" >&2
  exit 1
fi
echo "check-systemd-unit: ok"
