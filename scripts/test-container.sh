#!/usr/bin/env bash
# The container image, built and run for real: scripts/build-image.sh, then podman (with runc)
# runs localhost/ttp-agent:latest the way deploy/compose.yaml and the Kubernetes manifest do,
# against the fTTP simulator (the ttp-sim binary) on this machine's loopback:
#
#   * configuration from environment variables only, secrets as mounted read-only files, a
#     read-only root file system (no tmpfs either), the store on a named volume, no
#     capabilities, no new privileges;
#   * records submitted and pseudonyms exported through the running daemon (`podman exec …
#     ttp-agent submit|export`, over its control socket in the volume), every task answered;
#   * SIGTERM (podman stop) ends the daemon with exit 0 before the stop timeout; a second
#     container on the same volume carries on: nothing lost, nothing sent twice (the
#     simulator's counters);
#   * `podman healthcheck run` (the image's HEALTHCHECK, liveness) and /readyz (readiness,
#     [admin] ready_window) before and after the fTTP goes away;
#   * the process runs as uid 65532 and writes nothing outside the volume;
#   * the admin port published on the host's loopback (-p 127.0.0.1:PORT:9464) from a
#     container with a network namespace of its own.
#
# Network: the daemon containers share the host's network namespace (--network host), so the
# agent reaches the simulator on 127.0.0.1 and its admin endpoint listens on 127.0.0.1 only;
# no packet leaves loopback. Podman's other ways for a container to reach the host's loopback
# go through a private-range gateway address (slirp4netns' 10.0.2.2) or need pasta, which
# podman 4.3 (Debian 12) does not have. The port-publishing check uses slirp4netns without
# any fTTP traffic (see there).
#
# Exit status: 0 every check passed, 1 a check failed, 2 skipped because podman cannot run at
# all here (the reason is printed; .ci/run reports it).
#
#   scripts/test-container.sh            build the image, then test it
#   SKIP_BUILD=1 scripts/test-container.sh   test the image that is there
#   TTP_AGENT_BIN=… SIM_BIN=… scripts/test-container.sh   use these binaries (no cargo build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

IMAGE="${IMAGE:-localhost/ttp-agent:latest}"
RECORDS="${RECORDS:-40}"
# Generous limits for polling on a loaded 2-core machine; nothing asserts on durations.
WAIT_SECS="${WAIT_SECS:-300}"
STUDY=container-study
TARGET=dic_container
READY_WINDOW=20s

NAME=test-container
# shellcheck source=scripts/lib/podman-test.sh
. scripts/lib/podman-test.sh
require_podman
command -v jq >/dev/null 2>&1 || die "jq is needed (apt-get install jq)"

# --- Build. ---------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  t=$SECONDS
  scripts/build-image.sh
  say "image built in $(elapsed "$t")"
fi
podman image exists "$IMAGE" || die "no image $IMAGE; run scripts/build-image.sh"
t=$SECONDS
if [ -z "${TTP_AGENT_BIN:-}" ]; then
  cargo build --release --locked --bin ttp-agent
fi
host_bin="$(realpath "${TTP_AGENT_BIN:-target/release/ttp-agent}")"
SIM_BIN="$(build_sim)"
say "host binaries (ttp-agent for init, ttp-sim) ready in $(elapsed "$t")"

# --- Scratch space and cleanup. ---------------------------------------------------------------
run_id="ttp-ct-$$"
work="$(mktemp -d "${TMPDIR:-/tmp}/$run_id.XXXXXX")"
chmod 755 "$work"
volume="$run_id-state"
cleanup() {
  local rc=$?
  for c in $(podman ps -a --filter "name=^$run_id-" --format '{{.Names}}' 2>/dev/null); do
    podman rm -f -v -t 0 "$c" >/dev/null 2>&1 || true
  done
  podman volume rm -f "$volume" >/dev/null 2>&1 || true
  stop_sim
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Podman's complaints that it cannot reach systemd to schedule health checks (there is no
# systemd here; the checks are run by hand below) go to podman.err, not to the output.
# Every podman run: runc, ulimits within what this sandbox allows (podman's defaults exceed
# them: "setrlimit RLIMIT_NOFILE: Operation not permitted"), the hardening compose.yaml sets.
RUN=(podman run --runtime "$RUNTIME" --ulimit nofile=1024:1024 --ulimit nproc=1000:1000
     --cap-drop ALL --security-opt no-new-privileges --read-only --read-only-tmpfs=false)

# --- The image as built. ----------------------------------------------------------------------
step "the image"
podman image inspect "$IMAGE" > "$work/inspect.json"
size_bytes="$(jq -r '.[0].Size' "$work/inspect.json")"
say "image $IMAGE: $((size_bytes / 1000000)) MB ($size_bytes bytes, uncompressed)"
check "image smaller than 40 MB ($((size_bytes / 1000000)) MB)" test "$size_bytes" -lt 40000000
# The configuration the Containerfile declares (tests/it/deploy/container_contract.rs keeps the two
# files in step; this checks what buildah actually committed).
cfg() { jq -c "$1" "$work/inspect.json"; }
check "entrypoint [ttp-agent, run]" test "$(cfg '.[0].Config.Entrypoint')" = '["ttp-agent","run"]'
check "user 65532:65532" test "$(cfg '.[0].Config.User')" = '"65532:65532"'
check "volume /var/lib/ttp-agent" test "$(cfg '.[0].Config.Volumes | keys')" = '["/var/lib/ttp-agent"]'
check "working directory /var/lib/ttp-agent" test "$(cfg '.[0].Config.WorkingDir')" = '"/var/lib/ttp-agent"'
check "stop signal SIGTERM" test "$(cfg '.[0].Config.StopSignal')" = '"SIGTERM"'
check "health check [CMD, ttp-agent, healthcheck]" test "$(cfg '.[0].Healthcheck.Test')" = '["CMD","ttp-agent","healthcheck"]'
check "environment: JSON logs, store and control socket in the volume" test \
  "$(cfg '[.[0].Config.Env[] | select(startswith("TTP_AGENT__"))] | sort')" = \
  '["TTP_AGENT__CONTROL__SOCKET=/var/lib/ttp-agent/control.sock","TTP_AGENT__LOG__FORMAT=json","TTP_AGENT__STORE__PATH=/var/lib/ttp-agent/store"]'
# The file system: nothing that could run a command besides the agent.
ctr_fs="$(podman create --runtime "$RUNTIME" --name "$run_id-fs" "$IMAGE")"
podman export "$ctr_fs" | tar -t > "$work/files.txt"
podman rm -v "$ctr_fs" > /dev/null 2>> "$work/podman.err"
say "$(wc -l < "$work/files.txt") files and directories in the image"
check "no shell, no package manager, no coreutils" bash -c \
  "! grep -Eq '(^|/)(s?bin/)(sh|bash|dash|busybox|apt|apt-get|dpkg|ls|cat)$' '$work/files.txt'"
check "CA bundle /etc/ssl/certs/ca-certificates.crt" grep -qx 'etc/ssl/certs/ca-certificates.crt' "$work/files.txt"
check "time zones /usr/share/zoneinfo/Europe/Berlin" grep -qx 'usr/share/zoneinfo/Europe/Berlin' "$work/files.txt"
version_out() { "${RUN[@]}" --rm --network none --entrypoint ttp-agent "$IMAGE" --version 2>> "$work/podman.err"; }
if v="$(version_out)"; then ok "the binary runs in the image: $v"; else bad "the binary does not run in the image"; fi

# --- Secrets, the encoding profile, records. -------------------------------------------------
step "fixtures"
mkdir -m 700 "$work/secrets"
printf 'container-api-key-%s\n' "$RANDOM$RANDOM" > "$work/secrets/fttp-api-key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/secrets/idat-key"
echo >> "$work/secrets/idat-key"
# Mounted as they are (like compose's file secrets): the image's user must read them.
chown 65532:65532 "$work/secrets/fttp-api-key" "$work/secrets/idat-key"
chmod 400 "$work/secrets/fttp-api-key" "$work/secrets/idat-key"
chmod 755 "$work/secrets"

# `submit` needs the [encoding] section, which only a configuration file can hold (the daemon
# encodes: `submit` streams the CSV to it): the profile `ttp-agent init` writes, alone in a
# file, with its seeds next to it, mounted read-only at the default path /etc/ttp-agent/.
# Everything else comes from the environment.
"$host_bin" init --dir "$work/init" > /dev/null
mkdir -p "$work/encoding/secrets"
awk '/^\[/ { keep = ($0 ~ /^\[encoding(\.|\])/) } keep' "$work/init/agent.toml" > "$work/encoding/agent.toml"
grep -q '^\[encoding\]' "$work/encoding/agent.toml" || die "no [encoding] section in the file ttp-agent init wrote"
seeds_rel="$(sed -n 's/^seeds_file = "\(.*\)"$/\1/p' "$work/encoding/agent.toml")"
[ -n "$seeds_rel" ] || die "ttp-agent init's [encoding] has no seeds_file"
cp "$work/init/$seeds_rel" "$work/encoding/$seeds_rel"
chown -R 65532:65532 "$work/encoding"
chmod -R go-rwx "$work/encoding"

mkdir "$work/input"
{
  echo "local_id,given,family,birthdate,gender"
  given=(Anna Jürgen Maria Karl-Heinz Zoë Ömer Lena Till Sophie Jonas Mia Felix)
  family=(Müller Schmidt Schäfer Weiß Bauer Yılmaz Fischer Becker Wagner Hoffmann Schulz Koch)
  for i in $(seq 1 "$RECORDS"); do
    printf 'ct-%03d,%s,%s,%04d-%02d-%02d,%s\n' "$i" "${given[$((i % 12))]}" \
      "${family[$(((i * 7) % 12))]}" "$((1940 + i))" "$((1 + i % 12))" "$((1 + i % 28))" \
      "$([ $((i % 2)) = 0 ] && echo female || echo male)"
  done
} > "$work/input/records.csv"
chmod 755 "$work/input"; chmod 644 "$work/input/records.csv"
ok "$RECORDS invented records, secrets (0400, uid 65532), encoding profile from ttp-agent init"

# --- The simulator on the host's loopback. ---------------------------------------------------
start_sim "$work" --api-key-file "$work/secrets/fttp-api-key" \
  --study "$STUDY" --target "$TARGET" --seed 18 --clearing 0.5 --repeat-first 0.5
base_url="$SIM_URL"
say "fTTP simulator at $base_url (pid $SIM_PID)"

admin_port="$(free_port)"
podman volume create "$volume" >/dev/null
# What every container of the agent gets: the environment compose.yaml sets, the secrets, the
# store volume.
AGENT=(--network host
       -v "$volume:/var/lib/ttp-agent"
       -v "$work/encoding:/etc/ttp-agent:ro"
       -v "$work/input:/input:ro"
       -v "$work/secrets/fttp-api-key:/run/secrets/fttp-api-key:ro"
       -v "$work/secrets/idat-key:/run/secrets/idat-key:ro"
       -e TTP_AGENT__TTP__BASE_URL="$base_url"
       -e TTP_AGENT__TTP__STUDY="$STUDY"
       -e TTP_AGENT__TTP__TARGET="$TARGET"
       -e TTP_AGENT__TTP__API_KEY_FILE=/run/secrets/fttp-api-key
       -e TTP_AGENT__STORE__IDAT_KEY_FILE=/run/secrets/idat-key
       -e TTP_AGENT__ADMIN__LISTEN="127.0.0.1:$admin_port"
       -e TTP_AGENT__ADMIN__READY_WINDOW="$READY_WINDOW"
       -e TTP_AGENT__SCHEDULE__JITTER=0s)

# --- Container A: one poll at start, then stopped with SIGTERM. ------------------------------
step "daemon A: submit through it (podman exec), then SIGTERM"
# Cron once a year: A's only poll is the one at start, before the records exist; the tasks the
# registration raises are left for B.
podman_daemon() { # podman_daemon NAME CRON
  "${RUN[@]}" -d --name "$1" "${AGENT[@]}" -e TTP_AGENT__SCHEDULE__CRON="$2" \
    --health-interval disable "$IMAGE" > /dev/null 2>> "$work/podman.err"
}
json_logs_ok() { # every line of the container's log is a JSON object
  podman logs "$1" 2>&1 | python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    if line.strip():
        assert isinstance(json.loads(line), dict), line
        n += 1
assert n > 0
'
}
# What the container changed in its root file system, less the mount points podman itself
# creates before making it read-only (/etc for hosts and resolv.conf, the secrets' files).
wrote_outside_volume() {
  local mounts
  mounts="$(podman inspect --format '{{range .Mounts}}{{.Destination}}{{"\n"}}{{end}}' "$1")"
  podman diff "$1" | awk '{print $2}' | grep -vxF -e /etc -e /etc/hosts -e /etc/resolv.conf \
    -e /etc/hostname -e /run -e /run/secrets -e /run/.containerenv $(printf -- '-e %s ' $mounts) || true
}
logged() { podman logs "$1" 2>&1 | grep -q "\"message\":\"$2\""; }
status_json() { podman exec "$1" ttp-agent status --json; }

podman_daemon "$run_id-a" "0 0 0 1 1 *"
wait_for "daemon A's first poll" logged "$run_id-a" "poll cycle finished" || { podman logs "$run_id-a" | tail -20; die "daemon A did not poll"; }
pid_a="$(podman inspect --format '{{.State.Pid}}' "$run_id-a")"
check "the agent runs as uid 65532, gid 65532, in no other group" bash -c \
  "grep -Eq '^Uid:\s+65532\s+65532\s+65532\s+65532$' /proc/$pid_a/status && grep -Eq '^Gid:\s+65532\s+65532\s+65532\s+65532$' /proc/$pid_a/status && grep -Eq '^Groups:\s*(65532)?\s*$' /proc/$pid_a/status"
check "no capabilities" grep -Eq '^CapEff:\s+0+$' "/proc/$pid_a/status"
check "the volume is the image user's" test \
  "$(stat -c '%u:%g %a' "$(podman volume inspect --format '{{.Mountpoint}}' "$volume")")" = "65532:65532 700"
t=$SECONDS
podman exec "$run_id-a" ttp-agent submit /input/records.csv > "$work/submit.out" 2> "$work/submit.err" \
  || { cat "$work/submit.out" "$work/submit.err"; die "submit through the daemon failed"; }
sed 's/^/    /' "$work/submit.out"
check "podman exec … submit: $RECORDS records stored and registered through the daemon's control socket ($(elapsed "$t"))" \
  grep -q "$RECORDS" "$work/submit.out"
check "the daemon ran it (its log names the command)" bash -c \
  "podman logs '$run_id-a' 2>&1 | grep '\"message\":\"control: command started\"' | grep -q submit"
check "podman healthcheck run: healthy" podman healthcheck run "$run_id-a"
check "/healthz on 127.0.0.1:$admin_port: 200" curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/healthz"
check "/readyz: 200 after a successful poll" curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/readyz"
status_json "$run_id-a" > "$work/status-a.json"
psn_a="$(jq '.records.pseudonymised' "$work/status-a.json")"
open_a="$(jq '.summary.open' "$work/status-a.json")"
say "A after the submit: $psn_a of $RECORDS records pseudonymised, $open_a task(s) open"
t=$SECONDS
podman stop -t 60 "$run_id-a" > /dev/null 2>> "$work/podman.err"
stop_secs=$((SECONDS - t))
exit_a="$(podman inspect --format '{{.State.ExitCode}}' "$run_id-a")"
check "SIGTERM: A exited 0 after ${stop_secs}s (stop timeout 60s, grace period 10s)" test "$exit_a" = 0
check "A logged 'ttp-agent stopped'" logged "$run_id-a" "ttp-agent stopped"
check "A logged JSON only, one object per line" json_logs_ok "$run_id-a"
check "A changed nothing outside the volume (podman diff: only podman's mount points)" test -z "$(wrote_outside_volume "$run_id-a")"

# --- Container B: same volume, carries on until everything is answered. ----------------------
step "daemon B: the same volume, polling every 2 s until every task is answered"
podman_daemon "$run_id-b" "*/2 * * * * *"
finished() {
  status_json "$run_id-b" > "$work/status-b.json" || return 1
  [ "$(jq '.records.pseudonymised' "$work/status-b.json")" = "$RECORDS" ] \
    && [ "$(jq '.summary.open' "$work/status-b.json")" = 0 ]
}
t=$SECONDS
if wait_for "every record pseudonymised and no task open" finished; then
  ok "B: all $RECORDS records pseudonymised, no task open ($(elapsed "$t"))"
else
  bad "B did not finish: $(jq -c '{records, summary}' "$work/status-b.json" 2>/dev/null)"
fi
check "B logged 'recovered_in_doubt' 0 at start (A stopped cleanly)" bash -c \
  "podman logs '$run_id-b' 2>&1 | grep '\"message\":\"ttp-agent started\"' | grep -q '\"recovered_in_doubt\":0'"

# --- Export through the image. ---------------------------------------------------------------
step "export through B (podman exec)"
podman exec "$run_id-b" ttp-agent export --format csv > "$work/export.csv" 2> "$work/export.err" \
  || { cat "$work/export.err"; bad "export failed"; }
rows="$(($(wc -l < "$work/export.csv") - 1))"
check "export: $rows pseudonyms for $RECORDS records" test "$rows" = "$RECORDS"
check "export: every local_id once, each with a pseudonym" python3 - "$work/export.csv" "$RECORDS" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
ids = sorted(r["local_id"] for r in rows)
want = sorted("ct-%03d" % i for i in range(1, int(sys.argv[2]) + 1))
assert ids == want, (ids[:5], want[:5])
assert all(r["pseudonym"].strip() for r in rows)
EOF

# --- The fTTP goes away: liveness stays, readiness goes. -------------------------------------
step "the fTTP goes away"
stop_sim
# The simulator prints its counters as JSON after the base URL.
sed -n '2,$p' "$work/sim.out" > "$work/sim-stats.json"
jq -e . "$work/sim-stats.json" > /dev/null || die "no statistics from the simulator: $(cat "$work/sim.out")"
readyz_code() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz"; }
t=$SECONDS
if wait_for "/readyz 503 once no poll succeeded for $READY_WINDOW" bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$admin_port/readyz)\" = 503 ]"; then
  ok "/readyz: 503 once no poll succeeded within ready_window $READY_WINDOW ($(elapsed "$t") after the fTTP went away)"
else
  bad "/readyz still $(readyz_code) after the fTTP went away"
fi
# The HEALTHCHECK is liveness (/healthz): an fTTP outage must not get the agent restarted,
# since a restart cannot bring the fTTP back (OPERATIONS.md). It stays healthy.
check "podman healthcheck run: still healthy (liveness; readiness is /readyz)" podman healthcheck run "$run_id-b"

step "SIGTERM to B"
t=$SECONDS
podman stop -t 60 "$run_id-b" > /dev/null 2>> "$work/podman.err"
stop_secs=$((SECONDS - t))
check "SIGTERM: B exited 0 after ${stop_secs}s" test "$(podman inspect --format '{{.State.ExitCode}}' "$run_id-b")" = 0
check "B logged JSON only" json_logs_ok "$run_id-b"
check "B changed nothing outside the volume" test -z "$(wrote_outside_volume "$run_id-b")"

# --- Nothing lost, nothing sent twice. -------------------------------------------------------
step "the simulator's counters"
jq -c '{registrations, duplicate_registrations, provide_ok, duplicate_provides,
        provide_violations_total, tasks_raised_by_type, tasks_completed_by_type,
        tasks_expired_by_type, clearings_started, clearings_finished, auth_failures}' \
  "$work/sim-stats.json" | sed 's/^/    /'
stat_of() { jq -r "$1" "$work/sim-stats.json"; }
check "every record registered once ($(stat_of .registrations) of $RECORDS)" test "$(stat_of .registrations)" = "$RECORDS"
check "no registration repeated" test "$(stat_of .duplicate_registrations)" = 0
check "no IDAT sent twice (duplicate_provides 0)" test "$(stat_of .duplicate_provides)" = 0
check "every send_idat's IDAT accepted (provide_ok $(stat_of '.provide_ok') of $(stat_of '.tasks_raised_by_type.send_idat // 0'))" \
  test "$(stat_of '.provide_ok')" = "$(stat_of '.tasks_raised_by_type.send_idat // 0')"
# dic_psn_available counts as completed in the simulator only after it was listed twice; the
# agent has the pseudonym from the first listing (checked by the export below).
for type in send_idat repeat_request; do
  check "every $type answered ($(stat_of ".tasks_completed_by_type.$type // 0") of $(stat_of ".tasks_raised_by_type.$type // 0"))" \
    test "$(stat_of ".tasks_completed_by_type.$type // 0")" = "$(stat_of ".tasks_raised_by_type.$type // 0")"
done
check "no task expired" test "$(stat_of '[.tasks_expired_by_type[]] | add // 0')" = 0
check "every clearing finished ($(stat_of .clearings_finished) of $(stat_of .clearings_started))" \
  test "$(stat_of .clearings_finished)" = "$(stat_of .clearings_started)"
check "clearings happened across the restart (at least one)" test "$(stat_of .clearings_started)" -gt 0
check "no data-minimisation violation, no authentication failure" \
  test "$(stat_of .provide_violations_total)" = 0 -a "$(stat_of .auth_failures)" = 0

# --- Writing outside the volume is refused. --------------------------------------------------
step "the root file system is read-only, the volume the only writable place"
for path in /usr/local/store /tmp/store /etc/ttp-agent/store; do
  set +e
  "${RUN[@]}" --rm --name "$run_id-ro" "${AGENT[@]}" -e TTP_AGENT__STORE__PATH="$path" \
    --entrypoint ttp-agent "$IMAGE" export > /dev/null 2> "$work/ro.err"
  rc=$?
  set -e
  check "a store at $path is refused (exit $rc: cannot create or write the store)" \
    bash -c "[ $rc = 1 ] && grep -q 'cannot create or write the store' '$work/ro.err'"
done
mp="$(podman volume inspect --format '{{.Mountpoint}}' "$volume")"
check "every file in the volume belongs to 65532 ($(find "$mp" | wc -l) entries)" test -z "$(find "$mp" ! -uid 65532)"

# --- Publishing the admin port on the host's loopback. ---------------------------------------
step "admin port published on 127.0.0.1 (own network namespace, slirp4netns)"
# The agent listens on all interfaces inside its own namespace, which needs an admin token;
# the host publishes the port on its loopback only. The fTTP URL points at a closed port on
# the container's own loopback: nothing is sent anywhere, the agent just is not ready.
pub_port="$(free_port)"
# 64 hex characters: the agent refuses a token shorter than 32.
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$work/secrets/admin-token"
chown 65532:65532 "$work/secrets/admin-token"; chmod 400 "$work/secrets/admin-token"
token="$(head -1 "$work/secrets/admin-token")"
"${RUN[@]}" -d --name "$run_id-pub" --network slirp4netns -p "127.0.0.1:$pub_port:9464" \
  -v "$work/secrets/fttp-api-key:/run/secrets/fttp-api-key:ro" \
  -v "$work/secrets/idat-key:/run/secrets/idat-key:ro" \
  -v "$work/secrets/admin-token:/run/secrets/admin-token:ro" \
  --mount type=volume,dst=/var/lib/ttp-agent \
  -e TTP_AGENT__TTP__BASE_URL=http://127.0.0.1:9/ttp-fhir/fhir/dispatcher \
  -e TTP_AGENT__TTP__STUDY="$STUDY" -e TTP_AGENT__TTP__TARGET="$TARGET" \
  -e TTP_AGENT__TTP__API_KEY_FILE=/run/secrets/fttp-api-key \
  -e TTP_AGENT__STORE__IDAT_KEY_FILE=/run/secrets/idat-key \
  -e TTP_AGENT__ADMIN__LISTEN=0.0.0.0:9464 \
  -e TTP_AGENT__ADMIN__TOKEN_FILE=/run/secrets/admin-token \
  --health-interval disable "$IMAGE" > /dev/null 2>> "$work/podman.err"
if wait_for "/healthz through the published port" curl -fsS -o /dev/null "http://127.0.0.1:$pub_port/healthz"; then
  ok "/healthz through 127.0.0.1:$pub_port: 200"
else
  bad "/healthz through 127.0.0.1:$pub_port did not answer: $(podman logs "$run_id-pub" 2>&1 | tail -3)"
fi
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pub_port/metrics")"
check "/metrics without the token: 401 (got $code)" test "$code" = 401
readyz_503() { [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$pub_port/readyz")" = 503 ]; }
if wait_for "/readyz 503 after the first poll failed" readyz_503; then
  ok "/readyz with the token: 503 (the fTTP is unreachable)"
else
  bad "/readyz with the token did not turn 503"
fi
check "podman healthcheck run (asks 127.0.0.1:9464 inside): healthy" podman healthcheck run "$run_id-pub"
check "published on loopback only" bash -c \
  "podman port '$run_id-pub' | grep -qx '9464/tcp -> 127.0.0.1:$pub_port'"
podman stop -t 60 "$run_id-pub" > /dev/null 2>> "$work/podman.err"
check "SIGTERM: exit 0" test "$(podman inspect --format '{{.State.ExitCode}}' "$run_id-pub")" = 0
pub_vol="$(podman inspect --format '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{end}}{{end}}' "$run_id-pub")"
podman rm -f "$run_id-pub" > /dev/null 2>> "$work/podman.err"
[ -z "$pub_vol" ] || podman volume rm -f "$pub_vol" > /dev/null 2>&1 || true

# --- Verdict. --------------------------------------------------------------------------------
verdict "image $((size_bytes / 1000000)) MB; $RECORDS records; A pseudonymised $psn_a before its SIGTERM, B the remaining $((RECORDS - psn_a)); tasks $(stat_of '[.tasks_raised_by_type | to_entries[] | "\(.key) \(.value)"] | join(", ")')"
