#!/usr/bin/env bash
# The local base images of the serving image: Debian bookworm minbase + python3 (3.11, the
# version the wheels are built for), made with debootstrap from Debian's archive and imported
# into the Docker engine at $DOCKER_HOST. Nothing is pulled from an image registry.
#
# One debootstrap, two images:
#   TAG        the runtime base: no package manager, perl, docs, locales or iconv modules (the
#              image is rebuilt, never patched in place)
#   TAG-build  the same plus binutils, for the Dockerfile's dependency stage, which strips the
#              wheels' shared libraries of their symbols (uvloop alone: 13.6 MB -> 1.6 MB)
# Reused when both tags exist.
#   scripts/build-base-image.sh [TAG]      (default edgewave-base:bookworm-py311)
set -euo pipefail
tag="${1:-edgewave-base:bookworm-py311}"
build_tag="${tag}-build"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$tag" >/dev/null 2>&1 && docker image inspect "$build_tag" >/dev/null 2>&1; then
    echo "build-base-image: $tag and $build_tag already present" >&2
    exit 0
fi
work="$(mktemp -d /tmp/edgewave-rootfs.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "build-base-image: debootstrap bookworm (minbase + python3 + binutils) from $mirror" >&2
debootstrap --variant=minbase --include=python3,ca-certificates,binutils bookworm "$work/rootfs" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
cd "$work/rootfs"
# what binutils brought, before the package database goes
for list in var/lib/dpkg/info/{binutils,libbinutils,libctf,libgprofng,libsframe,libjansson}*.list; do
    if [ -f "$list" ]; then cat "$list"; fi
done | sort -u > "$work/binutils.files"
test -s "$work/binutils.files" || { echo "build-base-image: no binutils file list found" >&2; exit 1; }
rm -rf var/cache/apt/* var/lib/apt/lists/* var/log/* usr/share/doc/* usr/share/man/* usr/share/info/* \
    usr/share/common-licenses usr/lib/x86_64-linux-gnu/gconv usr/lib/python3.11/pydoc_data usr/lib/python3.11/test \
    usr/bin/perl* usr/lib/x86_64-linux-gnu/perl-base usr/share/perl5 \
    usr/bin/apt* usr/lib/apt usr/lib/x86_64-linux-gnu/libapt-* etc/apt var/lib/dpkg usr/bin/dpkg*
find usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C*' -exec rm -rf {} +
echo "build-base-image: importing $(du -sh . | cut -f1) as $build_tag" >&2
tar -C "$work/rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$build_tag" >/dev/null
while read -r path; do  # files only: directories may be shared with other packages
    if [ -f "$work/rootfs$path" ] || [ -L "$work/rootfs$path" ]; then rm -f "$work/rootfs$path"; fi
done < "$work/binutils.files"
echo "build-base-image: importing $(du -sh . | cut -f1) as $tag" >&2
tar -C "$work/rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$tag" >/dev/null
docker image inspect "$tag" --format '{{.Id}} {{.Size}}'
