#!/usr/bin/env bash
# System packages the tests use, from Debian's archive; idempotent, safe to run again.
#   prometheus  the PromQL path of the rollout is tested against a real Prometheus
#   kubectl     `kubectl kustomize` renders the k8s/ base and the overlays the rollout writes
#   openssh-server
#               sites on the far side of a network: Git over SSH and the SFTP monitoring store,
#               an sshd the tests start on a high loopback port with its own config (never port 22)
#   docker.io, docker-registry, debootstrap
#               the serving image is built, run, pushed and pulled on a real local engine and
#               registry, from a base image made with debootstrap (tasks/engine.py starts them)
#   chromium    headless, for the browser test of what a person sees in the Prefect UI
# On a developer's machine without root or network the script says so and exits 0: the tests
# that need a package are skipped with that reason (pytest -ra prints it). Under CI (CI=true,
# which .ci/run sets) a package that cannot be installed fails the run instead: a missing
# engine or Prometheus must never turn into a green run of skipped tests.
# Another apt or dpkg run (unattended upgrades, a second checkout's tests) holds the dpkg lock:
# apt waits for it up to EDGEWAVE_APT_LOCK_SECONDS (default 600) instead of failing at once.
# Each run logs to a file of its own, named in every message.
set -uo pipefail
LOCK_SECONDS=${EDGEWAVE_APT_LOCK_SECONDS:-600}
APT=(apt-get -q -o "DPkg::Lock::Timeout=$LOCK_SECONDS")

missing_packages() {
    local missing=()
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    command -v git >/dev/null 2>&1 || missing+=(git)
    command -v kubectl >/dev/null 2>&1 || missing+=(kubectl)
    dpkg -s docker.io >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    test -x /usr/sbin/sshd || missing+=(openssh-server)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    echo "${missing[@]}"
}

give_up() {  # $1: what is wrong
    if [ "${CI:-}" = true ]; then
        echo "setup-system: $1; CI needs every package (see ${log:-the apt log})" >&2
        exit 1
    fi
    echo "setup-system: $1 (tests needing them will be skipped)" >&2
    exit 0
}

read -r -a missing <<< "$(missing_packages)"
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    give_up "not root; cannot install ${missing[*]}"
fi
log=$(mktemp -t "edgewave-apt-$(date +%Y%m%dT%H%M%S)-XXXXXX.log")
echo "setup-system: installing ${missing[*]} from Debian's packages (log: $log; waits up to ${LOCK_SECONDS}s for another apt run to finish)" >&2
export DEBIAN_FRONTEND=noninteractive
# docker.io's maintainer scripts would start the engine without our flags (it rewrites the host firewall and
# makes a bridge): forbid service starts while installing; tasks/engine.py starts its own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
updated=0
for package in "${missing[@]}"; do  # one at a time: a package this mirror lacks must not block the others
    if ! "${APT[@]}" install -y --no-install-recommends "$package" >>"$log" 2>&1; then
        if [ "$updated" = 0 ]; then
            "${APT[@]}" update >>"$log" 2>&1
            updated=1
        fi
        "${APT[@]}" install -y --no-install-recommends "$package" >>"$log" 2>&1 \
            || echo "setup-system: could not install $package (see $log)" >&2
    fi
done
read -r -a still <<< "$(missing_packages)"
if [ ${#still[@]} -gt 0 ]; then
    give_up "could not install ${still[*]}"
fi
echo "setup-system: installed ${missing[*]} (log: $log)" >&2
