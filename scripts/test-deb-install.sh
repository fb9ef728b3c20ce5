#!/usr/bin/env bash
# The Debian package, installed for real: a Debian 12 root file system (debootstrap, with
# systemd) runs as a container whose init is systemd; apt installs the package built by
# scripts/build-deb.sh (with its dependencies from Debian; `dpkg -i` reinstalls it later), and
# the packaged unit is started against the fTTP simulator on this
# machine's loopback:
#
#   * the service user, its directories and their permissions, the conffile, the unit
#     installed but neither enabled nor started;
#   * credentials: the secrets in /etc/ttp-agent/credentials (root only) reach the service
#     through LoadCredential= and ${CREDENTIALS_DIRECTORY};
#   * `systemctl start` returns once the agent reported READY=1 (Type=notify), it runs as
#     ttp-agent inside the unit's sandbox, feeds the watchdog, writes to the journal, polls;
#   * reinstalling (an upgrade) keeps a changed conffile and restarts the running service;
#   * `systemctl stop` (SIGTERM) ends it with status 0; purge keeps the store and credentials.
#
# Exit status: 0 every check passed, 1 a check failed, 2 skipped because podman or debootstrap
# cannot run here (the reason is printed; .ci/run reports it).
#
#   scripts/test-deb-install.sh [PATH.deb]   (default: the newest target/debian/ttp-agent_*.deb)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SUITE (bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${DEBIAN_SUITE:-bookworm}"
WAIT_SECS="${WAIT_SECS:-180}"
STUDY=deb-study
TARGET=dic_deb

NAME=test-deb-install
# shellcheck source=scripts/lib/podman-test.sh
. scripts/lib/podman-test.sh

deb="${1:-$(ls -t target/debian/ttp-agent_*.deb 2>/dev/null | grep -v dbgsym | head -1 || true)}"
[ -n "$deb" ] && [ -f "$deb" ] || die "no package found; run scripts/build-deb.sh first"
deb="$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"

require_podman
command -v debootstrap >/dev/null 2>&1 || skip "debootstrap is not installed (apt-get install debootstrap)"

run_id="ttp-deb-$$"
ctr="$run_id-debian"
root="$PWD/target/deb-install/rootfs"
work="$(mktemp -d "${TMPDIR:-/tmp}/$run_id.XXXXXX")"
cleanup() {
  local rc=$?
  podman rm -f -t 5 "$ctr" >/dev/null 2>&1 || true
  stop_sim
  rm -rf "$work" "$root"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ctr() { podman exec "$ctr" "$@"; }
prop() { in_ctr systemctl show -p "$1" --value ttp-agent.service; }

# --- A Debian root file system with systemd. --------------------------------------------------
step "Debian $SUITE root file system (debootstrap --variant=minbase, with systemd)"
t=$SECONDS
rm -rf "$root"
mkdir -p "$root"
# A pristine copy is kept in target/ (the repository's build directory, which CI starts
# without), so that running the script again on a developer's machine skips debootstrap.
base="$PWD/target/deb-install/base-$SUITE.tar"
if [ -f "$base" ]; then
  tar -C "$root" -xpf "$base"
  say "root file system from $base (delete it to debootstrap afresh)"
else
  if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,adduser,procps \
      "$SUITE" "$root" "$MIRROR" > "$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log"
    die "debootstrap $SUITE from $MIRROR failed"
  fi
  tar -C "$root" -cpf "$base.tmp" . && mv "$base.tmp" "$base"
fi
say "debootstrap: $(du -sh "$root" | cut -f1) in $(elapsed "$t")"

# --- systemd as the container's init. ---------------------------------------------------------
step "boot it: podman --systemd=always, /sbin/init as PID 1"
# Host network: the unit reaches the simulator on 127.0.0.1 (nothing leaves loopback).
# No extra privileges: with podman's defaults systemd sets up the unit's whole sandbox (its own
# mount and user namespaces, seccomp, no capabilities; checked below). Adding CAP_SYS_ADMIN
# would break it (217/USER, "Failed to set up user namespacing", from PrivateUsers=yes with
# ProtectProc=invisible); --privileged works too but is not needed.
podman run -d --name "$ctr" --runtime "$RUNTIME" \
  --ulimit nofile=4096:4096 --ulimit nproc=1000:1000 \
  --network host --systemd=always \
  -v "$deb:/srv/ttp-agent.deb:ro" \
  --rootfs "$root" /sbin/init > /dev/null
state() { in_ctr systemctl is-system-running 2>/dev/null || true; }
wait_for "systemd to finish booting" bash -c "[[ \"\$(podman exec $ctr systemctl is-system-running 2>/dev/null)\" =~ ^(running|degraded)$ ]]" \
  || { podman logs "$ctr" 2>&1 | tail -20; die "systemd did not boot in the container (state: $(state))"; }
ok "systemd $(in_ctr systemctl --version | head -1 | awk '{print $2}') is PID 1 in the container (state: $(state))"

# --- Install. ---------------------------------------------------------------------------------
step "apt-get install ./$(basename "$deb") (as OPERATIONS.md says; dpkg -i follows for the upgrade)"
# apt resolves the package's dependencies from Debian (ca-certificates is not in minbase).
t=$SECONDS
{ in_ctr apt-get update -qq && in_ctr env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends /srv/ttp-agent.deb; } > "$work/dpkg.out" 2>&1 \
  || { cat "$work/dpkg.out"; die "apt-get install of the package failed"; }
grep -E '^(Setting up|ttp-agent:|Creating|Adding)' "$work/dpkg.out" | sed 's/^/    /'
say "installed in $(elapsed "$t")"
check "its dependencies came along (adduser, ca-certificates)" bash -c \
  "podman exec $ctr dpkg-query -W -f='\${Status}\n' adduser ca-certificates | grep -c 'install ok installed' | grep -qx 2"
check "postinst told the site what to do next" grep -q 'configure /etc/ttp-agent/agent.toml' "$work/dpkg.out"

passwd_line="$(in_ctr getent passwd ttp-agent || true)"
IFS=: read -r _ _ svc_uid svc_gid _ svc_home svc_shell <<< "$passwd_line"
check "system user ttp-agent (uid $svc_uid < 1000, home $svc_home, shell $svc_shell)" \
  bash -c "[ -n '$svc_uid' ] && [ '$svc_uid' -lt 1000 ] && [ '$svc_home' = /var/lib/ttp-agent ] && [ '$svc_shell' = /usr/sbin/nologin ]"
check "group ttp-agent (gid $svc_gid)" bash -c "podman exec $ctr getent group ttp-agent | grep -q ':$svc_gid:'"
perm() { in_ctr stat -c '%U:%G %a' "$1"; }
check "/usr/bin/ttp-agent root:root 755" test "$(perm /usr/bin/ttp-agent)" = "root:root 755"
check "/etc/ttp-agent/agent.toml root:root 644" test "$(perm /etc/ttp-agent/agent.toml)" = "root:root 644"
check "/etc/ttp-agent/credentials root:root 700" test "$(perm /etc/ttp-agent/credentials)" = "root:root 700"
check "/var/lib/ttp-agent ttp-agent:ttp-agent 700" test "$(perm /var/lib/ttp-agent)" = "ttp-agent:ttp-agent 700"
check "agent.toml is a conffile" bash -c "podman exec $ctr dpkg-query -W -f='\${Conffiles}' ttp-agent | grep -q '/etc/ttp-agent/agent.toml'"
check "unit installed, not enabled" test "$(in_ctr systemctl is-enabled ttp-agent.service 2>/dev/null || true)" = disabled
check "unit not started" test "$(in_ctr systemctl is-active ttp-agent.service 2>/dev/null || true)" = inactive

# --- Configure as a site would. ---------------------------------------------------------------
step "configure: agent.toml, credentials"
SIM_BIN="$(build_sim)"
printf 'deb-api-key-%s\n' "$RANDOM$RANDOM" > "$work/api-key"
start_sim "$work" --api-key-file "$work/api-key" --study "$STUDY" --target "$TARGET"
base_url="$SIM_URL"
admin_port="$(free_port)"
podman cp "$work/api-key" "$ctr:/etc/ttp-agent/credentials/api-key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/idat-key"; echo >> "$work/idat-key"
podman cp "$work/idat-key" "$ctr:/etc/ttp-agent/credentials/idat-key"
in_ctr chmod 600 /etc/ttp-agent/credentials/api-key /etc/ttp-agent/credentials/idat-key
in_ctr chown root:root /etc/ttp-agent/credentials/api-key /etc/ttp-agent/credentials/idat-key
# The three values from the fTTP operator, a poll every 2 seconds, a free admin port: edits of
# the conffile, kept by the reinstall below.
in_ctr sed -i \
  -e "s|^base_url = .*|base_url = \"$base_url\"|" \
  -e "s|^study = .*|study = \"$STUDY\"|" \
  -e "s|^target = .*|target = \"$TARGET\"|" \
  -e "/^\[schedule\]$/a cron = \"*/2 * * * * *\"\njitter = \"0s\"" \
  -e "/^\[admin\]$/a listen = \"127.0.0.1:$admin_port\"" \
  /etc/ttp-agent/agent.toml
check "the edited configuration passes \`ttp-agent check\`'s configuration and secrets steps" bash -c \
  "podman exec -e CREDENTIALS_DIRECTORY=/etc/ttp-agent/credentials $ctr ttp-agent check > '$work/check.out' 2>&1; grep -q '^✓ configuration' '$work/check.out' && grep -q '^✓ secrets' '$work/check.out'"

# --- Start the packaged unit. -----------------------------------------------------------------
step "systemctl start ttp-agent"
t=$SECONDS
if in_ctr systemctl start ttp-agent.service; then
  ok "systemctl start returned: READY=1 received (Type=notify) after $(elapsed "$t")"
else
  bad "systemctl start failed: $(prop Result) $(prop ExecMainStatus)"
  in_ctr journalctl -u ttp-agent --no-pager -n 30 || true
fi
check "active (running)" test "$(prop ActiveState)/$(prop SubState)" = "active/running"
pid="$(prop MainPID)"
[ "$pid" != 0 ] || die "the service is not running; the journal above says why"
check "the process runs as ttp-agent" bash -c "podman exec $ctr ps -o user= -p $pid | grep -qx ttp-agent"
check "no capabilities" bash -c "podman exec $ctr grep -Eq '^CapEff:\s+0+$' /proc/$pid/status"
check "NoNewPrivs" bash -c "podman exec $ctr grep -Eq '^NoNewPrivs:\s+1$' /proc/$pid/status"
check "sandbox: its own mount and user namespaces, a seccomp filter" bash -c \
  "[ \"\$(podman exec $ctr readlink /proc/1/ns/mnt)\" != \"\$(podman exec $ctr readlink /proc/$pid/ns/mnt)\" ] \
   && [ \"\$(podman exec $ctr readlink /proc/1/ns/user)\" != \"\$(podman exec $ctr readlink /proc/$pid/ns/user)\" ] \
   && podman exec $ctr grep -Eq '^Seccomp:\s+2$' /proc/$pid/status"
check "watchdog armed (WatchdogUSec $(prop WatchdogUSec))" test "$(prop WatchdogUSec)" = 10min
journal_has() { in_ctr journalctl -u ttp-agent.service --no-pager -o cat | grep -q "$1"; }
wait_for "a successful poll in the journal" journal_has "poll cycle finished" \
  && ok "journal: 'poll cycle finished' (the agent authenticated with the credential)" \
  || bad "no successful poll in the journal"
check "journal: structured entries with priorities (journald format)" bash -c \
  "podman exec $ctr journalctl -u ttp-agent.service -o json --no-pager | grep '\"MESSAGE\":\"ttp-agent started' | grep -q '\"PRIORITY\":\"6\"'"
wait_for "a watchdog ping" bash -c "[ -n \"\$(podman exec $ctr systemctl show -p WatchdogTimestampMonotonic --value ttp-agent.service | grep -v '^0$')\" ]" \
  && ok "watchdog: the agent sent WATCHDOG=1 ($(prop WatchdogTimestamp))" \
  || bad "no watchdog ping recorded (WatchdogTimestamp empty)"
check "status text from the agent: $(prop StatusText)" test -n "$(prop StatusText)"
check "ttp-agent status beside the running service (control socket in RuntimeDirectory=)" bash -c \
  "podman exec $ctr ttp-agent status > '$work/status.out' 2>&1 && podman exec $ctr test -S /run/ttp-agent/control.sock"
check "credentials: not readable by the service user in /etc/ttp-agent/credentials" bash -c \
  "! podman exec $ctr setpriv --reuid ttp-agent --regid ttp-agent --clear-groups cat /etc/ttp-agent/credentials/api-key >/dev/null 2>&1"

# --- Upgrade: reinstall while running. --------------------------------------------------------
step "reinstall while running (an upgrade)"
in_ctr dpkg -i /srv/ttp-agent.deb > "$work/dpkg2.out" 2>&1 || { cat "$work/dpkg2.out"; bad "second dpkg -i failed"; }
check "the conffile keeps the site's edits" bash -c "podman exec $ctr grep -q '^base_url = \"$base_url\"' /etc/ttp-agent/agent.toml"
wait_for "the service to be running again" bash -c "[ \"\$(podman exec $ctr systemctl is-active ttp-agent.service)\" = active ]" || true
new_pid="$(prop MainPID)"
check "the running service was restarted (pid $pid -> $new_pid)" bash -c "[ '$new_pid' != 0 ] && [ '$new_pid' != '$pid' ]"

# --- Stop: SIGTERM. ---------------------------------------------------------------------------
step "systemctl stop ttp-agent (SIGTERM)"
t=$SECONDS
in_ctr systemctl stop ttp-agent.service
# systemd clears ExecMainStatus/Code once the unit is inactive; its journal keeps the verdict:
# "Deactivated successfully" after an exit 0, "code=killed" or "code=exited, status=N" else.
check "stopped after $(elapsed "$t"): Result=$(prop Result), exit status 0 (\"Deactivated successfully\", never killed)" bash -c \
  "[ \"\$(podman exec $ctr systemctl show -p Result --value ttp-agent.service)\" = success ] \
   && podman exec $ctr journalctl -u ttp-agent.service --no-pager -o cat | tail -3 | grep -q 'Deactivated successfully' \
   && ! podman exec $ctr journalctl -u ttp-agent.service --no-pager -o cat | grep -Eq 'code=killed|code=exited, status=[1-9]'"
# journald reads the service's output stream on its own schedule: the agent's last line can
# reach the journal after systemd's "Deactivated successfully" (seen once in CI), so wait for it.
wait_for "the agent's last line in the journal" journal_has "ttp-agent stopped" \
  && ok "journal: 'ttp-agent stopped'" \
  || bad "journal: no 'ttp-agent stopped' after the stop"
check "the store belongs to ttp-agent" test "$(perm /var/lib/ttp-agent/store)" = "ttp-agent:ttp-agent 700"

# --- Purge. -----------------------------------------------------------------------------------
step "dpkg --purge ttp-agent"
in_ctr dpkg --purge ttp-agent > "$work/purge.out" 2>&1 || { cat "$work/purge.out"; bad "purge failed"; }
check "program and unit removed" bash -c "! podman exec $ctr test -e /usr/bin/ttp-agent && ! podman exec $ctr test -e /lib/systemd/system/ttp-agent.service"
check "store, credentials and user kept" bash -c \
  "podman exec $ctr test -d /var/lib/ttp-agent/store && podman exec $ctr test -f /etc/ttp-agent/credentials/idat-key && podman exec $ctr getent passwd ttp-agent >/dev/null"

verdict "package $(basename "$deb")"
