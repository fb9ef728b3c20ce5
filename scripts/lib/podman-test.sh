# Shared by scripts/test-container.sh and scripts/test-deb-install.sh (sourced, not run):
# reporting, polling, free ports, and whether podman can run here at all.
#
# The sourcing script sets NAME (the prefix of its messages) first.

STARTED=$SECONDS
PASSED=0
FAILED=0

say() { printf '%s: %s\n' "$NAME" "$*"; }
step() { printf '\n-- %s\n' "$*"; }
# Exit status 2: .ci/run reports the step as skipped, with the reason printed here.
skip() { printf '%s: SKIPPED: %s\n' "$NAME" "$*"; exit 2; }
die() { printf '%s: FAIL: %s\n' "$NAME" "$*" >&2; exit 1; }
ok() { printf '  ok    %s\n' "$*"; PASSED=$((PASSED + 1)); }
bad() { printf '  FAIL  %s\n' "$*"; FAILED=$((FAILED + 1)); }
# check DESCRIPTION COMMAND...: ok if the command succeeds.
check() {
  local what="$1"; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
elapsed() { printf '%ds' "$((SECONDS - $1))"; }

# The closing line .ci/run and people read; the script's exit status follows it.
verdict() {
  printf '\n'
  say "$* ($(elapsed "$STARTED") in all)"
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

# wait_for DESCRIPTION COMMAND...: runs COMMAND every second until it succeeds, for at most
# WAIT_SECS (generous: the machine may be loaded; nothing asserts on how long it took).
wait_for() {
  local what="$1" deadline=$((SECONDS + ${WAIT_SECS:-300})); shift
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "gave up after ${WAIT_SECS:-300}s waiting for: $what"
      return 1
    fi
    sleep 1
  done
}

# A TCP port on 127.0.0.1 that is free now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Skips (exit 2) unless podman can run containers here as root; sets RUNTIME to the OCI
# runtime to use. crun, podman's default, cannot run containers on cgroup v1 hosts such as
# CI's ("cgroups in hybrid mode not supported"); runc can. PODMAN_RUNTIME overrides.
require_podman() {
  [ "$(id -u)" = 0 ] || skip "needs root (rootless podman is not set up for these tests)"
  command -v podman >/dev/null 2>&1 || skip "podman is not installed (apt-get install podman buildah runc)"
  podman info >/dev/null 2>&1 || skip "podman cannot run here: $(podman info 2>&1 | tail -1)"
  RUNTIME="${PODMAN_RUNTIME:-$(command -v runc || true)}"
  [ -n "$RUNTIME" ] || skip "runc is not installed (apt-get install runc)"
  local tool
  for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (apt-get install $tool)"
  done
}

# The simulator's binary (SIM_BIN, or a release build like the agent's).
build_sim() {
  if [ -n "${SIM_BIN:-}" ]; then
    echo "$SIM_BIN"
    return
  fi
  cargo build --release --locked -p ttp-sim --bin ttp-sim >&2
  echo "$PWD/target/release/ttp-sim"
}

# start_sim OUTDIR ARGS...: starts ttp-sim on a free loopback port (SIM_PID, SIM_URL); its
# counters are printed as JSON to OUTDIR/sim.out when it gets SIGINT (stop_sim).
start_sim() {
  local out="$1"; shift
  "$SIM_BIN" --listen 127.0.0.1:0 "$@" > "$out/sim.out" 2> "$out/sim.err" &
  SIM_PID=$!
  wait_for "the simulator's base URL" grep -q '^http://' "$out/sim.out" \
    || die "ttp-sim did not start: $(cat "$out/sim.err")"
  SIM_URL="$(head -1 "$out/sim.out")"
}

stop_sim() {
  if [ -n "${SIM_PID:-}" ] && kill -0 "$SIM_PID" 2>/dev/null; then
    kill -INT "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
  fi
  SIM_PID=""
}
