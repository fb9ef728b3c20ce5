#!/usr/bin/env bash
# Builds the container image localhost/ttp-agent:latest with buildah, from nothing but the
# release binary built on this machine and files out of Debian packages (`apt-get download` +
# `dpkg-deb -x`): no registry other than Debian's is needed.
#
#   scripts/build-image.sh                  release build + image
#   TTP_AGENT_BIN=path scripts/build-image.sh   use this binary instead of building one
#   IMAGE=name:tag scripts/build-image.sh   another image name (default localhost/ttp-agent:latest)
#
# The image is distroless-like: the binary, the shared libraries it links (taken from the
# Debian packages, not from this machine), the CA bundle, the time zone database and
# passwd/group entries for the non-root user 65532. No shell, no package manager, no
# coreutils. Its configuration (entrypoint, user, volume, environment, health check, stop
# signal) is the Containerfile's; tests/it/deploy/container_contract.rs compares the two.
#
# Needs root (buildah mount), buildah, apt-get (with its package lists: `apt-get update`),
# dpkg-deb, readelf and objcopy (binutils). Runs on a Debian 12 host: the binary links the
# host's glibc, so the image takes libc6 from the same release.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/ttp-agent:latest}"
WORK=target/image
# Debian packages whose files go into the image. libc6 and libgcc-s1 provide the libraries
# the binary links (checked below: every NEEDED entry must resolve inside them);
# base-files only contributes os-release, so that scanners know what the libraries are.
PACKAGES=(libc6 libgcc-s1 ca-certificates tzdata base-files)
ARCH_TRIPLET=x86_64-linux-gnu

say() { printf 'build-image: %s\n' "$*"; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%ds' "$((SECONDS - $1))"; }

[ "$(id -u)" = 0 ] || die "run as root (buildah mount needs it)"
for tool in buildah apt-get dpkg-deb readelf objcopy; do
  command -v "$tool" >/dev/null 2>&1 \
    || die "$tool not found (apt-get install buildah apt dpkg binutils)"
done
[ "$(dpkg --print-architecture)" = amd64 ] || die "only amd64 is supported (ARCH_TRIPLET=$ARCH_TRIPLET)"

start=$SECONDS

# --- 1. The binary. -------------------------------------------------------------------------
t=$SECONDS
if [ -n "${TTP_AGENT_BIN:-}" ]; then
  bin="$TTP_AGENT_BIN"
  [ -x "$bin" ] || die "TTP_AGENT_BIN=$bin is not an executable file"
else
  say "cargo build --release --locked --bin ttp-agent"
  cargo build --release --locked --bin ttp-agent
  bin=target/release/ttp-agent
fi
say "binary: $bin ($(elapsed "$t"))"

rm -rf "$WORK"
mkdir -p "$WORK/debs" "$WORK/pkgs" "$WORK/rootfs"
WORK="$(cd "$WORK" && pwd)"
rootfs="$WORK/rootfs"

# --- 2. Debian packages, unpacked side by side (nothing is installed). ----------------------
t=$SECONDS
( cd "$WORK/debs" && apt-get download -q "${PACKAGES[@]}" >/dev/null 2>"$WORK/apt-download.log" ) || {
  cat "$WORK/apt-download.log" >&2
  die "apt-get download ${PACKAGES[*]} failed (is 'apt-get update' done and Debian reachable?)"
}
for pkg in "${PACKAGES[@]}"; do
  deb="$(ls "$WORK/debs/${pkg}"_*.deb)"
  mkdir -p "$WORK/pkgs/$pkg"
  dpkg-deb -x "$deb" "$WORK/pkgs/$pkg"
  dpkg-deb -f "$deb" > "$WORK/pkgs/$pkg.control"
  say "  $(basename "$deb")"
done
say "Debian packages downloaded and unpacked ($(elapsed "$t"))"

# --- 3. The root file system. ---------------------------------------------------------------
install -d -m 0755 "$rootfs"/{etc,usr/local/bin,usr/share/doc,var/lib/dpkg/status.d}
install -d -m 1777 "$rootfs/tmp"
# The state directory belongs to the image's user, so a fresh volume does too (copy-up).
install -d -m 0700 -o 65532 -g 65532 "$rootfs/var/lib/ttp-agent"

# The binary, without its DWARF (the line tables go into the Debian package's dbgsym; the
# symbol table stays, so a backtrace still names functions).
objcopy --strip-debug "$bin" "$rootfs/usr/local/bin/ttp-agent"
chmod 0755 "$rootfs/usr/local/bin/ttp-agent"

# Copies PATH (relative to a package root) and, if it is a symlink, what it points to.
copy_from_pkg() { # copy_from_pkg PKGDIR RELPATH
  local pkgdir="$1" rel="$2"
  install -d -m 0755 "$rootfs/$(dirname "$rel")"
  cp -a "$pkgdir/$rel" "$rootfs/$rel"
  if [ -L "$pkgdir/$rel" ]; then
    local target
    target="$(readlink "$pkgdir/$rel")"
    case "$target" in
      /*) copy_from_pkg "$pkgdir" "${target#/}" ;;
      *) copy_from_pkg "$pkgdir" "$(dirname "$rel")/$target" ;;
    esac
  fi
}

# Where a soname lives in the unpacked packages: "PKGDIR RELPATH".
find_lib() {
  local soname="$1" pkg dir
  for pkg in "${PACKAGES[@]}"; do
    for dir in "lib/$ARCH_TRIPLET" "usr/lib/$ARCH_TRIPLET" lib64 usr/lib64; do
      if [ -e "$WORK/pkgs/$pkg/$dir/$soname" ] || [ -L "$WORK/pkgs/$pkg/$dir/$soname" ]; then
        echo "$WORK/pkgs/$pkg $dir/$soname"
        return 0
      fi
    done
  done
  return 1
}

needed() { readelf -d -W "$1" | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]/\1/p'; }

# The dynamic loader the binary names (PT_INTERP), then every NEEDED library, recursively,
# read from the packages' own files.
interp="$(readelf -l -W "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
[ -n "$interp" ] || die "$bin has no program interpreter; is it a dynamically linked ELF file?"
loc="$(find_lib "$(basename "$interp")")" || die "the loader $interp is in none of: ${PACKAGES[*]}"
copy_from_pkg "${loc%% *}" "${loc#* }"
# The loader's path as the binary names it (/lib64/ld-linux-x86-64.so.2 is a symlink in libc6).
if [ ! -e "$rootfs$interp" ] && [ ! -L "$rootfs$interp" ]; then
  libc_dir="$(find_lib libc.so.6)" || die "libc.so.6 is in none of: ${PACKAGES[*]}"
  copy_from_pkg "${libc_dir%% *}" "${interp#/}"
fi
declare -A seen=()
todo=("$bin")
libs=()
while [ "${#todo[@]}" -gt 0 ]; do
  file="${todo[0]}"
  todo=("${todo[@]:1}")
  for soname in $(needed "$file"); do
    [ -n "${seen[$soname]:-}" ] && continue
    seen[$soname]=1
    loc="$(find_lib "$soname")" \
      || die "$file needs $soname, which is in none of: ${PACKAGES[*]} (dpkg -S $soname names the package to add to PACKAGES)"
    copy_from_pkg "${loc%% *}" "${loc#* }"
    libs+=("$soname")
    todo+=("${loc%% *}/${loc#* }")
  done
done
say "libraries: ${libs[*]} (loader $interp)"

# The binary must not need a newer glibc than the image's (it was linked on this machine).
libc_version="$(sed -n 's/^Version: \([0-9]*\.[0-9]*\).*/\1/p' "$WORK/pkgs/libc6.control")"
wanted="$(readelf -V -W "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
if [ "$(printf '%s\n%s\n' "$wanted" "$libc_version" | sort -V | tail -1)" != "$libc_version" ]; then
  die "the binary needs glibc $wanted, the image's libc6 is $libc_version; build on Debian 12"
fi
say "glibc: the binary needs at most $wanted, the image has $libc_version"

# CA certificates: the bundle update-ca-certificates would write (every Mozilla root Debian
# ships), at the path rustls' platform verifier reads first. The tool itself needs a shell and
# openssl, which the image does not have, so the bundle is put together here.
install -d -m 0755 "$rootfs/etc/ssl/certs"
find "$WORK/pkgs/ca-certificates/usr/share/ca-certificates/mozilla" -name '*.crt' -print0 \
  | LC_ALL=C sort -z | xargs -0 cat > "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$rootfs/etc/ssl/certs/ca-certificates.crt"
certs="$(grep -c 'BEGIN CERTIFICATE' "$rootfs/etc/ssl/certs/ca-certificates.crt")"
[ "$certs" -gt 100 ] || die "only $certs CA certificates found in ca-certificates"

# Time zones. The agent's [schedule] timezone uses the database compiled into the binary
# (chrono-tz); the files serve TZ= for the C library. right/ (leap-second variants) is left out.
cp -a "$WORK/pkgs/tzdata/usr/share/zoneinfo" "$rootfs/usr/share/zoneinfo"
rm -rf "$rootfs/usr/share/zoneinfo/right"

cp -a "$WORK/pkgs/base-files/usr/lib/os-release" "$rootfs/etc/os-release" 2>/dev/null \
  || cp -aL "$WORK/pkgs/base-files/etc/os-release" "$rootfs/etc/os-release"

# Users: root (owns the files), nonroot 65532 (runs the agent; the name distroless uses).
# No login shell exists, so none is named.
cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/var/lib/ttp-agent:/sbin/nologin
EOF
cat > "$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"

# Licences and package records: the copyright file of every package files came from, and its
# control record where distroless keeps them (/var/lib/dpkg/status.d/), so that image
# scanners find the Debian versions inside.
for pkg in "${PACKAGES[@]}"; do
  doc="$WORK/pkgs/$pkg/usr/share/doc/$pkg"
  if [ -L "$doc" ]; then
    # Debian points some libraries' documentation at their source's base package
    # (libgcc-s1 -> gcc-12-base); the copyright comes from there.
    base="$(readlink "$doc")"
    case "$base" in */*|'') die "unexpected documentation link $doc -> $base" ;; esac
    ( cd "$WORK/debs" && apt-get download -q "$base" >/dev/null 2>>"$WORK/apt-download.log" ) \
      || die "apt-get download $base (the copyright of $pkg) failed"
    mkdir -p "$WORK/pkgs/$base"
    dpkg-deb -x "$(ls "$WORK/debs/${base}"_*.deb)" "$WORK/pkgs/$base"
    install -d -m 0755 "$rootfs/usr/share/doc/$base"
    cp "$WORK/pkgs/$base/usr/share/doc/$base/copyright" "$rootfs/usr/share/doc/$base/copyright"
    ln -sfn "$base" "$rootfs/usr/share/doc/$pkg"
  else
    install -d -m 0755 "$rootfs/usr/share/doc/$pkg"
    cp "$doc/copyright" "$rootfs/usr/share/doc/$pkg/copyright"
  fi
  cp "$WORK/pkgs/$pkg.control" "$rootfs/var/lib/dpkg/status.d/$pkg"
done

# Nothing that could run a command but the agent.
for forbidden in bin/sh usr/bin/sh bin/bash usr/bin/apt-get usr/bin/dpkg; do
  [ ! -e "$rootfs/$forbidden" ] || die "$forbidden ended up in the image"
done
say "root file system: $(du -sh --apparent-size "$rootfs" | cut -f1) in $(find "$rootfs" | wc -l) entries"

# --- 4. The image. --------------------------------------------------------------------------
t=$SECONDS
old_id="$(buildah images --noheading --quiet "$IMAGE" 2>/dev/null || true)"
ctr="$(buildah from --quiet --format docker scratch)"
cleanup() { buildah rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
mnt="$(buildah mount "$ctr")"
cp -a "$rootfs"/. "$mnt"/
buildah umount "$ctr" >/dev/null

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# The contract, as in the Containerfile's runtime stage (tests/it/deploy/container_contract.rs compares
# these lines with it; keep one option per line).
buildah config \
  --env PATH=/usr/local/bin:/usr/bin:/bin \
  --env TTP_AGENT__STORE__PATH=/var/lib/ttp-agent/store \
  --env TTP_AGENT__CONTROL__SOCKET=/var/lib/ttp-agent/control.sock \
  --env TTP_AGENT__LOG__FORMAT=json \
  --user 65532:65532 \
  --workingdir /var/lib/ttp-agent \
  --volume /var/lib/ttp-agent \
  --healthcheck 'CMD ttp-agent healthcheck' \
  --healthcheck-interval 30s \
  --healthcheck-timeout 10s \
  --healthcheck-start-period 60s \
  --healthcheck-retries 3 \
  --stop-signal SIGTERM \
  --entrypoint '["ttp-agent", "run"]' \
  --cmd '' \
  --label org.opencontainers.image.title=ttp-agent \
  --label org.opencontainers.image.description="Site agent for the fTTP dispatcher" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$revision" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.base.name="debian:12 packages (${PACKAGES[*]})" \
  "$ctr"
# Docker format: the OCI image format has no HEALTHCHECK.
buildah commit --quiet --format docker --squash --rm "$ctr" "$IMAGE" >/dev/null
trap - EXIT
new_id="$(buildah images --noheading --quiet "$IMAGE")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  # The previous build of this tag, now untagged; only ours, nothing else is pruned.
  buildah rmi "$old_id" >/dev/null 2>&1 || true
fi
say "image committed ($(elapsed "$t"))"

# The size podman reports for the image (uncompressed layers), or the root file system's.
if command -v podman >/dev/null 2>&1; then
  size_bytes="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
else
  size_bytes="$(du -sb "$rootfs" | cut -f1)"
fi
echo "$size_bytes" > "$WORK/size-bytes"
say "$IMAGE: $((size_bytes / 1000000)) MB ($size_bytes bytes; binary $(( $(stat -c %s "$rootfs/usr/local/bin/ttp-agent") / 1000000 )) MB), built in $(elapsed "$start")"
