#!/usr/bin/env bash
# The local base image of the serving image: Debian bookworm minbase + python3 (3.11, the
# version the wheels are built for), made with debootstrap from Debian's archive and imported
# into the Docker engine at $DOCKER_HOST. Nothing is pulled from an image registry.
#
# The rootfs is trimmed to a runtime: no package manager, perl, docs, locales or iconv
# modules (the image is rebuilt, never patched in place). Reused when the tag exists.
#   scripts/build-base-image.sh [TAG]      (default edgewave-base:bookworm-py311)
set -euo pipefail
tag="${1:-edgewave-base:bookworm-py311}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "build-base-image: $tag already present" >&2
    exit 0
fi
work="$(mktemp -d /tmp/edgewave-rootfs.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "build-base-image: debootstrap bookworm (minbase + python3) from $mirror" >&2
debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$work/rootfs" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
cd "$work/rootfs"
rm -rf var/cache/apt/* var/lib/apt/lists/* var/log/* usr/share/doc/* usr/share/man/* usr/share/info/* \
    usr/share/common-licenses usr/lib/x86_64-linux-gnu/gconv usr/lib/python3.11/pydoc_data \
    usr/bin/perl* usr/lib/x86_64-linux-gnu/perl-base usr/share/perl5 \
    usr/bin/apt* usr/lib/apt usr/lib/x86_64-linux-gnu/libapt-* etc/apt var/lib/dpkg usr/bin/dpkg*
find usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C*' -exec rm -rf {} +
echo "build-base-image: importing $(du -sh . | cut -f1) as $tag" >&2
tar -C "$work/rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$tag" >/dev/null
docker image inspect "$tag" --format '{{.Id}} {{.Size}}'
