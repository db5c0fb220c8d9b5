#!/usr/bin/env bash
# Install what skiff's scripts, builds and tests need on a Debian 12 machine.
#
# Idempotent and quick when everything is already there: apt-get runs only
# when at least one package is missing, and rustup only when a cargo
# component does not answer.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages, each with the reason it is here.
packages=(
    busybox-static # the rootfs of every test and demo bundle
    runc           # reference runtime: comparisons, benchmarks, shim tests
    crun           # second reference runtime for benchmarks
    containerd     # end-to-end tests through the shim and ctr
    containernetworking-plugins docker.io # CRI pods' ptp/host-local networks; dockerd (tests/cri.rs, tests/docker.rs)
    hyperfine      # scripts/bench.sh
    iproute2       # ip: looking inside network namespaces; the veth pairs of the netDevices tests
    util-linux     # nsenter, unshare, mount, flock, setpriv, prlimit (the shim EMFILE test)
    procps         # ps, pgrep: finding container processes
    jq             # editing and reading config.json and state JSON
    strace         # lifecycle.rs holds a create paused between its mkdir and its lock
    coreutils      # timeout, mktemp, realpath
    ca-certificates # cargo's TLS to crates.io on a bare image
    gcc            # the linker cargo invokes (cc)
    libc6-dev      # crt objects and libc for linking
    dbus           # the system bus of scripts/vm-test.sh's systemd guest (systemd's D-Bus API)
    apparmor       # apparmor_parser: integration/tests/lsm.rs loads its test profiles in the VM (AppArmor on)
    selinux-policy-default # the policy the VM loads with SKIFF_VM_APPEND="selinux=1 security=selinux enforcing=0" (lsm.rs)
)

log() { printf 'setup: %s\n' "$*"; }

# Installs only the missing packages, and refuses (naming them) when that
# would upgrade or remove anything the machine already has.
APT_LOG_NAME=setup
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
if [[ -z $(apt_missing "${packages[@]}") ]]; then
    log "Debian packages already installed"
else
    apt_install_safe "${packages[@]}"
fi

# Real clients for tests/podman.rs: podman (with conmon) and buildah. On Debian 12
# their libsubid4 comes from a newer shadow than the machine's passwd/login, so
# installing them would upgrade those; when they are not installed, their .debs
# (and the libraries the machine lacks) are unpacked with dpkg -x into
# $SKIFF_CLIENTS_DIR instead, touching nothing else. The test reads them there.
clients_dir=${SKIFF_CLIENTS_DIR:-/var/cache/skiff-clients}
client_debs=(podman conmon buildah golang-github-containers-common libgpgme11 libsubid4)
if ! command -v podman >/dev/null 2>&1 && [[ ! -x $clients_dir/usr/bin/podman ]]; then
    if ((EUID == 0)); then
        log "unpacking podman, conmon and buildah into $clients_dir"
        debs=$(mktemp -d)
        (cd "$debs" && chmod 755 . && apt_retry apt-get download "${client_debs[@]}") ||
            { log "could not download ${client_debs[*]}; tests/podman.rs will skip"; }
        mkdir -p "$clients_dir"
        for deb in "$debs"/*.deb; do
            [[ -f $deb ]] && dpkg -x "$deb" "$clients_dir"
        done
        rm -rf -- "$debs"
    else
        log "podman is missing; run this script as root to unpack it (tests/podman.rs skips)"
    fi
fi

# The Rust toolchain is preinstalled, but a minimal profile may lack these.
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
components=()
cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
if ((${#components[@]} > 0)); then
    log "adding rust components: ${components[*]}"
    rustup component add "${components[@]}"
else
    log "rustfmt and clippy present"
fi
