# Debian package helpers for the project's scripts (sourced, not run).
#
# The rule they keep: installing what the project needs never upgrades or
# removes a package the machine already has. apt-get's --no-upgrade only
# spares the packages named on its command line, and a dependency can still
# be upgraded (or a conflicting package removed), so every install is
# simulated first and refused when the simulation touches an installed
# package. Where that refusal would leave a tool out (qemu and the guest
# kernel conflict with some images' preinstalled qemu-utils and want a newer
# systemd), apt_unpack extracts the packages into a private directory
# instead, which installs nothing system-wide.

apt_log() { printf '%s: %s\n' "${APT_LOG_NAME:-apt}" "$*" >&2; }

apt_is_installed() { # PKG
    # `dpkg -s` exits 0 even for a removed package whose config files
    # remain, so read the status field itself.
    local status
    status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
    [[ $status == installed ]]
}

apt_missing() { # PKG...: prints the ones not installed, one a line
    local p
    for p in "$@"; do
        apt_is_installed "$p" || printf '%s\n' "$p"
    done
}

apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)

apt_retry() { # CMD...: a mirror can fail for a moment
    local try
    for try in 1 2 3; do
        "$@" && return 0
        ((try < 3)) && { apt_log "retrying in $((try * 5)) s: $*"; sleep $((try * 5)); }
    done
    return 1
}

apt_updated=
apt_update() {
    [[ -n $apt_updated ]] && return 0
    apt_retry apt-get "${apt_opts[@]}" update -qq
    apt_updated=1
}

# apt_simulate PKG...: apt-get's plan for installing PKG..., one action a
# line: "Inst NAME [OLD] (NEW ...)" for an upgrade, "Inst NAME (NEW ...)"
# for a new package, "Remv NAME [OLD]" for a removal.
apt_simulate() {
    LC_ALL=C apt-get "${apt_opts[@]}" -s install --no-install-recommends "$@" 2>/dev/null |
        grep -E '^(Inst|Remv) '
}

# apt_touches_installed PLAN: the lines of a plan that upgrade or remove an
# installed package (empty when the plan only adds packages).
apt_touches_installed() {
    grep -E '^Remv |^Inst [^ ]+ \[' <<<"$1" || true
}

# apt_install_safe PKG...: installs the missing ones among PKG..., or fails
# with the list of installed packages the install would upgrade or remove.
apt_install_safe() {
    local missing plan touched
    mapfile -t missing < <(apt_missing "$@")
    ((${#missing[@]} > 0)) || return 0
    if ((EUID != 0)); then
        apt_log "missing packages: ${missing[*]}; run as root to install them"
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_update || return 1
    plan=$(apt_simulate "${missing[@]}") || {
        apt_log "apt-get cannot install: ${missing[*]}"
        return 1
    }
    touched=$(apt_touches_installed "$plan")
    if [[ -n $touched ]]; then
        apt_log "refusing to install ${missing[*]}: it would change packages this machine already has:"
        printf '    %s\n' "$touched" >&2
        return 1
    fi
    apt_log "installing: ${missing[*]}"
    apt_retry apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
        --no-remove --no-upgrade "${missing[@]}"
}

# apt_unpack DIR PKG...: downloads PKG... and whatever of their dependencies
# this machine lacks, and extracts them under DIR/root without installing
# anything (no maintainer scripts, no dpkg database entry). Done once: DIR
# keeps a stamp naming the packages.
apt_unpack() {
    local dir=$1 stamp new deb
    shift
    stamp="$dir/.unpacked-$(printf '%s\n' "$@" | sort | tr '\n' '+')"
    [[ -f $stamp ]] && return 0
    export DEBIAN_FRONTEND=noninteractive
    apt_update || return 1
    # The dependency closure as apt would install it; only the new packages
    # are fetched: the installed ones (at whatever version) are what the
    # unpacked binaries run against.
    mapfile -t new < <(apt_simulate "$@" | awk '$1 == "Inst" && $3 !~ /^\[/ { print $2 }')
    ((${#new[@]} > 0)) || { apt_log "apt resolves nothing to unpack for: $*"; return 1; }
    rm -rf -- "$dir/debs" "$dir/root"
    mkdir -p "$dir/debs" "$dir/root"
    apt_log "unpacking into $dir (not installing): ${new[*]}"
    (cd "$dir/debs" && apt_retry apt-get "${apt_opts[@]}" download -qq "${new[@]}") || return 1
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root" || return 1
    done
    rm -rf -- "$dir/debs"
    : >"$stamp"
}
