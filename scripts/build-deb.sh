#!/usr/bin/env bash
# Builds the Debian package target/debian/ttp-agent_<version>-1_<arch>.deb with cargo-deb
# ([package.metadata.deb] in Cargo.toml). Installs cargo-deb first if it is missing.
#
#   scripts/build-deb.sh            release build + package
#   CARGO_DEB_ARGS=--no-build scripts/build-deb.sh   package an existing target/release build
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "==> installing cargo-deb (cargo install cargo-deb --locked)"
  cargo install cargo-deb --locked
fi

# The packaged configuration: the documented example, with the two secrets the unit hands over
# as systemd credentials (LoadCredential=api-key, idat-key) read from $CREDENTIALS_DIRECTORY.
mkdir -p target/deb-assets
src=config/agent.toml
out=target/deb-assets/agent.toml
{
  cat <<'HEADER'
# ttp-agent configuration, installed by the Debian package (a conffile: upgrades keep your
# changes). Fill in [ttp] base_url, study and target from the fTTP operator. The secrets come
# from /etc/ttp-agent/credentials/ through systemd (LoadCredential= in ttp-agent.service);
# `${CREDENTIALS_DIRECTORY}` is where systemd puts them for the service. To run a command by
# hand, point it at the same files:
#   sudo CREDENTIALS_DIRECTORY=/etc/ttp-agent/credentials ttp-agent check
# /usr/share/doc/ttp-agent/OPERATIONS.md explains installation, secrets, upgrades and backups.
#
HEADER
  sed -e 's|^# api_key_file = "/etc/ttp-agent/secrets/api-key"$|api_key_file = "${CREDENTIALS_DIRECTORY}/api-key"|' \
      -e 's|^idat_key_file = "/etc/ttp-agent/secrets/idat-key"$|idat_key_file = "${CREDENTIALS_DIRECTORY}/idat-key"|' \
      -e 's|^# seeds_file = "/etc/ttp-agent/secrets/encoding-seeds.json"$|# seeds_file = "${CREDENTIALS_DIRECTORY}/encoding-seeds"|' \
      "$src"
} > "$out"
# The substitutions must have happened; an edit of the example must not silently break them.
# (The seeds line stays commented: [encoding] is completed per study.)
for key in api_key_file idat_key_file "# seeds_file"; do
  if ! grep -q "^$key = \"\${CREDENTIALS_DIRECTORY}/" "$out"; then
    echo "build-deb: $src no longer has the expected $key line; update scripts/build-deb.sh" >&2
    exit 1
  fi
done

echo "==> cargo deb"
# shellcheck disable=SC2086 # CARGO_DEB_ARGS is a list of options
cargo deb --locked ${CARGO_DEB_ARGS:-}
ls -l target/debian/*.deb
