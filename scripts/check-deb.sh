#!/usr/bin/env bash
# Checks the Debian package built by scripts/build-deb.sh: metadata, maintainer scripts,
# contents, and that the packaged binary runs and the packaged configuration loads.
#
#   scripts/check-deb.sh [PATH.deb]     (default: the newest target/debian/ttp-agent_*.deb)
set -euo pipefail
cd "$(dirname "$0")/.."

deb="${1:-$(ls -t target/debian/ttp-agent_*.deb 2>/dev/null | head -1 || true)}"
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
  echo "check-deb: no package found; run scripts/build-deb.sh first" >&2
  exit 1
fi
echo "==> checking $deb"

failures=0
ok() { echo "  ok    $*"; }
bad() { echo "  FAIL  $*"; failures=$((failures + 1)); }
expect() { # expect DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dpkg-deb -I "$deb" > "$work/info"
dpkg-deb -c "$deb" > "$work/contents"
dpkg-deb -e "$deb" "$work/control"
dpkg-deb -x "$deb" "$work/root"

echo "-- control"
expect "Package: ttp-agent" grep -qx ' Package: ttp-agent' "$work/info"
expect "depends on adduser" grep -q '^ Depends:.*adduser' "$work/info"
expect "depends on ca-certificates (the fTTP's TLS)" grep -q '^ Depends:.*ca-certificates' "$work/info"
# The maintainer is the project address named in README.md ("Contact"), never a placeholder
# of the example.* or .invalid kinds.
readme_contact="$(sed -n 's/^The project.s address is \*\*\(.*\)\*\*:.*$/\1/p' README.md)"
expect "README.md names the project address" test -n "$readme_contact"
expect "Maintainer: is README's project address ($readme_contact)" grep -qxF " Maintainer: $readme_contact" "$work/info"
expect "Maintainer: is no placeholder" bash -c "! grep -Eiq '^ Maintainer:.*@([a-z0-9.-]*\\.)?(example\\.(org|com|net)|[a-z0-9.-]*\\.(invalid|example|test))>' '$work/info'"
expect "conffile /etc/ttp-agent/agent.toml" grep -qx '/etc/ttp-agent/agent.toml' "$work/control/conffiles"
for script in postinst prerm postrm; do
  expect "$script present and executable" test -x "$work/control/$script"
  expect "$script: debhelper snippets merged" bash -c "! grep -q '#DEBHELPER#' '$work/control/$script'"
done
expect "postinst creates the ttp-agent user" grep -q 'adduser --system --group' "$work/control/postinst"
expect "postinst registers the unit with systemd" grep -q 'deb-systemd-helper' "$work/control/postinst"
expect "postinst does not start the unit" bash -c "! grep -q 'deb-systemd-invoke start' '$work/control/postinst'"
expect "postinst enables the unit only where it was enabled" grep -q 'was-enabled ttp-agent.service' "$work/control/postinst"
expect "postinst restarts a running unit after an upgrade" grep -q 'try-restart ttp-agent.service' "$work/control/postinst"
expect "postrm purges the unit's state" grep -q 'deb-systemd-helper purge' "$work/control/postrm"
expect "maintainer scripts parse" sh -n "$work/control/postinst" "$work/control/postrm" "$work/control/prerm"

echo "-- contents"
expect "binary /usr/bin/ttp-agent (0755)" grep -Eq '^-rwxr-xr-x .* \./usr/bin/ttp-agent$' "$work/contents"
unit="$(sed -n 's#^.* \./\(\(usr/\)\{0,1\}lib/systemd/system/ttp-agent\.service\)$#\1#p' "$work/contents")"
if [ -n "$unit" ]; then ok "unit /$unit"; else bad "systemd unit ttp-agent.service"; fi
expect "unit identical to systemd/ttp-agent.service" cmp -s "$work/root/$unit" systemd/ttp-agent.service
expect "configuration /etc/ttp-agent/agent.toml (0644)" grep -Eq '^-rw-r--r-- .* \./etc/ttp-agent/agent\.toml$' "$work/contents"
expect "documentation OPERATIONS.md" grep -q '\./usr/share/doc/ttp-agent/OPERATIONS\.md$' "$work/contents"
expect "nothing under /var (the store is created at install/start)" bash -c "! grep -q ' \./var/' '$work/contents'"

echo "-- the packaged binary and configuration"
bin="$work/root/usr/bin/ttp-agent"
expect "binary runs (--version)" "$bin" --version
expect "binary is stripped (debug symbols in ttp-agent-dbgsym)" bash -c "! readelf -S -W '$bin' | grep -Eq '\.debug_(info|line) '"
conf="$work/root/etc/ttp-agent/agent.toml"
expect "configuration reads secrets from \$CREDENTIALS_DIRECTORY" grep -q '^idat_key_file = "${CREDENTIALS_DIRECTORY}/idat-key"' "$conf"
for cred in $(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' systemd/ttp-agent.service); do
  expect "credential $cred of the unit is used by the configuration" grep -q "\${CREDENTIALS_DIRECTORY}/$cred\"" "$conf"
done
# `check` with the packaged file: configuration and secrets must pass. The fTTP is pointed at a
# closed loopback port, so the network part fails quickly (exit 1, not 78) and nothing leaves
# the machine.
mkdir -m 700 "$work/creds"
printf 'test-api-key\n' > "$work/creds/api-key"
printf '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n' > "$work/creds/idat-key"
chmod 600 "$work/creds/"*
set +e
CREDENTIALS_DIRECTORY="$work/creds" \
  TTP_AGENT__TTP__BASE_URL=http://127.0.0.1:9/ttp-fhir/fhir/dispatcher \
  TTP_AGENT__TTP__STUDY=check-deb-study TTP_AGENT__TTP__TARGET=check-deb-site \
  TTP_AGENT__STORE__PATH="$work/store" \
  "$bin" check --config "$conf" > "$work/check.out" 2>&1
rc=$?
set -e
if [ "$rc" = 1 ] && grep -q '^✓ configuration' "$work/check.out" && grep -q '^✓ secrets' "$work/check.out"; then
  ok "packaged configuration loads (check: configuration ✓, secrets ✓)"
else
  cat "$work/check.out" >&2
  bad "packaged configuration: check exited $rc"
fi

if [ "$failures" -gt 0 ]; then
  echo "check-deb: $failures check(s) failed" >&2
  exit 1
fi
echo "check-deb: ok"
