#!/usr/bin/env bash
# Stand-in images for the upstream images docker-compose.yml names (python:3.11-slim,
# redis:7.4-alpine, postgres:16-alpine, nginx:1.27-alpine), for CI machines that reach
# Debian's archive and PyPI but not Docker Hub. They test the compose wiring (entrypoints,
# env vars, healthchecks, volumes, DNS, scaling), not the upstream images themselves: the
# versions are Debian bookworm's (Python 3.11, Redis 7.0, PostgreSQL 15, nginx 1.22).
#
# One Debian root holding every package is debootstrapped once, cached as a tarball under
# $LEVIATHAN_CI_CACHE (default /var/cache/leviathan-ci, keyed by this script's package list),
# imported as leviathan-ci/bookworm, and each stand-in is a thin Dockerfile on top of it
# (entrypoint + default command), tagged with the upstream name. Needs root, debootstrap and
# a running Docker engine. Usage: deploy/ci-images/build.sh [docker binary]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
docker="${1:-docker}"
cache="${LEVIATHAN_CI_CACHE:-/var/cache/leviathan-ci}"
mirror="${LEVIATHAN_CI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=(
  ca-certificates python3 python3-venv python3-pip python-is-python3
  redis-server postgresql-15 postgresql-client-15 nginx-light wget
)
key="$(printf '%s\n' bookworm "${packages[@]}" | sha256sum | cut -c1-12)"
tarball="$cache/bookworm-$key.tar"
base="leviathan-ci/bookworm:$key"

log() { printf '[ci-images] %s\n' "$*" >&2; }
stand_ins=(python:3.11-slim redis:7.4-alpine postgres:16-alpine nginx:1.27-alpine)
label='{{ index .Config.Labels "org.leviathan.ci-stand-in" }}'

# Never shadow a real upstream image someone pulled: only a missing image or an earlier
# stand-in (labelled) is (re)built. With all four upstream images present, nothing to do.
replaceable() {
  ! "$docker" image inspect "$1" >/dev/null 2>&1 \
    || [ "$("$docker" image inspect -f "$label" "$1")" = 1 ]
}
todo=()
for tag in "${stand_ins[@]}"; do
  if replaceable "$tag"; then todo+=("$tag"); else log "keep $tag: the upstream image is here"; fi
done
if [ "${#todo[@]}" -eq 0 ]; then
  exit 0
fi

if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  if [ ! -s "$tarball" ]; then
    log "debootstrap bookworm into $tarball (once; cached)"
    mkdir -p "$cache"
    root="$(mktemp -d "$cache/root.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    include="$(IFS=,; echo "${packages[*]}")"
    if ! debootstrap --variant=minbase --include="$include" bookworm "$root" "$mirror" \
      >"$cache/debootstrap.log" 2>&1; then
      tail -30 "$cache/debootstrap.log" >&2
      exit 1
    fi
    # Apt lists, downloaded .debs and docs only add weight to every image.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc \
      "$root"/usr/share/man "$root"/var/cache/apt/archives/*.deb
    # Should postgresql-common have made a default cluster, drop it: the entrypoint makes
    # the cluster in the volume on first start, like the upstream image.
    rm -rf "$root"/var/lib/postgresql/15/main "$root"/etc/postgresql/15/main
    rm -f "$root"/etc/nginx/sites-enabled/default
    tar -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    trap - EXIT
  fi
  log "import $tarball as $base"
  "$docker" import "$tarball" "$base" >/dev/null
fi

# The host's CA bundle goes into the python stand-in so pip in the project's Dockerfile can
# reach the package index through whatever TLS interception the CI network does.
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here"/*.Dockerfile "$here"/*-entrypoint.sh "$ctx"/
cp /etc/ssl/certs/ca-certificates.crt "$ctx"/host-ca-certificates.crt
build() { # tag dockerfile
  if replaceable "$1"; then
    log "build $1"
    "$docker" build -q --build-arg "BASE=$base" -t "$1" -f "$ctx/$2" "$ctx" >/dev/null
  fi
}
build python:3.11-slim python.Dockerfile
build redis:7.4-alpine redis.Dockerfile
build postgres:16-alpine postgres.Dockerfile
build nginx:1.27-alpine nginx.Dockerfile
log "stand-ins ready"
