#!/usr/bin/env bash
# Run the root-only integration tests on a node-like machine: boot a small
# VM (qemu, software emulation) with Debian's kernel on pure cgroup v2, share
# this machine's / read-only over virtio-9p and run the prebuilt test
# binaries there. Their output streams here; the exit status is the tests'.
#
#   scripts/vm-test.sh [FILTER...]
#
# Two guests (SKIFF_VM_INIT):
#   systemd  (the default) shaped like a Kubernetes or Docker node: the
#            shared root under an overlay with a tmpfs upper (so the guest
#            can write; nothing reaches this machine), Debian's systemd as
#            pid 1 owning the cgroup2 tree, the D-Bus system bus, AppArmor
#            enabled, and the tests run as a service (Delegate=yes) whose
#            output goes to the serial console; the service's result is
#            printed there too and the VM powers off (systemctl poweroff).
#   busybox  a busybox init mounts cgroup2 with every controller enabled,
#            switch_roots into the read-only share and runs the tests as
#            pid 1: less like a node, a few seconds quicker to boot.
#
# Environment:
#   SKIFF_VM_INIT      systemd (default) or busybox, as above
#   SKIFF_VM_TESTS     integration test binaries to run, by name (space
#                      separated, e.g. "cgroups cgroup_resources"); default
#                      "all" (about 4 minutes here, the shim's ~2.5 of them)
#   SKIFF_TEST_FILTER  test name filters (as for cargo test), when no FILTER
#                      argument is given
#   SKIFF_VM_TIMEOUT   seconds before the VM is killed (default 1200)
#   PARITY_*           passed to the tests in the guest (integration/tests/parity.rs's
#                      knobs: PARITY_FILTER, PARITY_ALL, PARITY_JOBS, PARITY_VERBOSE, ...)
#   SKIFF_VM_MEMORY    guest memory in MiB (default 4096: the guest has no
#                      swap; the whole suite once stalled for 20 minutes in
#                      cri.rs with 2048, a run of cri.rs alone did not)
#   SKIFF_VM_CPUS      guest CPUs (default: this machine's, at most 4)
#   SKIFF_VM_KEEP      keep the work directory (initramfs, console log)
#   SKIFF_VM_VERBOSE   systemd guest: also print the slowest units of the
#                      boot and systemd's status messages
#   SKIFF_VM_CGROUP    v2 (default) or hybrid: the systemd guest on a hybrid
#                      cgroup tree (v1 controllers, systemd's cgroup2 at
#                      /sys/fs/cgroup/unified), for the systemd driver on v1
#   SKIFF_REQUIRE_LSM  apparmor, selinux or both (comma-separated): lsm.rs's
#                      tests of those fail instead of skipping when the guest
#                      does not run them
#   SKIFF_VM_COMMAND   a shell command line to run in the guest (in the
#                      repository, as the tests would be) instead of the test
#                      binaries: scripts/bench-vm.sh runs the benchmark so
#   SKIFF_VM_APPEND    more kernel command line, after the script's own (the
#                      last security= wins): "selinux=1 security=selinux
#                      enforcing=0" boots SELinux in permissive mode instead
#                      of AppArmor (the systemd guest loads the policy of
#                      Debian's selinux-policy-default), "apparmor=1
#                      security=apparmor" turns AppArmor on for busybox
#
# Why this shape: KVM is not usable on the development and CI machines, so
# qemu emulates (-accel tcg); a Debian kernel with a busybox initramfs
# boots in a few seconds that way, and systemd, with the units a test run
# does not need masked, in 15 to 20 more. Nothing is copied into the VM but
# the initramfs: the test binaries, the runtime and their libraries are read
# from the shared root, and the guest gets tmpfs for /tmp and /run.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf 'vm-test: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if ((EUID != 0)); then
    log "skipped: the tests create containers and qemu shares all of /, so this needs root"
    exit 0
fi
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

# --- Debian packages: installed only when missing, never upgrading ----------
# qemu and the guest kernel are used from the system when it has them;
# otherwise they are unpacked into a private cache rather than installed
# (on some images installing them would remove a preinstalled qemu-utils
# and upgrade systemd; see scripts/lib/apt.sh).
APT_LOG_NAME=vm-test
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install_safe busybox-static cpio jq kmod ||
    die "cannot install the VM's tools (busybox-static cpio jq kmod) without changing installed packages"
cache=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}

init_mode=${SKIFF_VM_INIT:-systemd}
case $init_mode in
busybox) ;;
systemd)
    # The guest runs this machine's own systemd; the system bus is the one
    # package it may lack (dbus-daemon, or dbus-broker where installed).
    [[ -x /lib/systemd/systemd ]] || die "SKIFF_VM_INIT=systemd needs systemd (/lib/systemd/systemd)"
    if ! [[ -x /usr/bin/dbus-daemon || -x /usr/bin/dbus-broker ]]; then
        apt_install_safe dbus || die "cannot install dbus (the guest's system bus) without changing installed packages"
    fi
    ;;
*) die "SKIFF_VM_INIT must be systemd or busybox, not \"$init_mode\"" ;;
esac

qemu=(qemu-system-x86_64)
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    apt_unpack "$cache/qemu" qemu-system-x86 || die "cannot unpack qemu-system-x86 into $cache/qemu"
    q=$cache/qemu/root
    qemu=(env "LD_LIBRARY_PATH=$q/usr/lib/x86_64-linux-gnu:$q/lib/x86_64-linux-gnu"
        "$q/usr/bin/qemu-system-x86_64" -L "$q/usr/share/qemu" -L "$q/usr/share/seabios")
fi

# --- the guest kernel: the newest Debian one with its modules -------------------
pick_kernel() { # ROOT: sets kver, kernel and moddir from ROOT/boot and ROOT/lib/modules
    local root=$1 f k versions=()
    kver=
    for f in "$root"/boot/vmlinuz-*; do
        [[ -f $f ]] && versions+=("${f#"$root"/boot/vmlinuz-}")
    done
    for k in $(printf '%s\n' "${versions[@]}" | sort -V -r); do
        if [[ -f $root/lib/modules/$k/modules.dep ]]; then
            kver=$k
            break
        fi
    done
    kernel=$root/boot/vmlinuz-$kver
    moddir=$root/lib/modules/$kver
    [[ -n $kver ]]
}
if ! pick_kernel ""; then
    apt_unpack "$cache/kernel" linux-image-amd64 || die "cannot unpack linux-image-amd64 into $cache/kernel"
    for d in "$cache"/kernel/root/lib/modules/*/; do
        k=$(basename "$d")
        [[ -f $d/modules.dep ]] || depmod -b "$cache/kernel/root" "$k" || die "depmod $k failed"
    done
    pick_kernel "$cache/kernel/root" || die "no kernel with modules in $cache/kernel/root"
fi

# --- the test binaries, built here and read by the guest over 9p -----------------
log "building skiff and the integration tests"
work=$(mktemp -d /tmp/skiff-vm.XXXXXX)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n ${SKIFF_VM_KEEP:-} ]]; then
        log "kept $work"
    else
        rm -rf -- "$work"
    fi
}
trap cleanup EXIT
cargo build -p skiff --message-format=json-render-diagnostics >"$work/build.json" ||
    die "cargo build -p skiff failed"
skiff_bin=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "skiff" and
                          .executable != null) | .executable' "$work/build.json" | tail -n 1)
[[ -x $skiff_bin ]] || die "cargo built no skiff binary"
cargo test -p skiff-integration --no-run --message-format=json-render-diagnostics >"$work/tests.json" ||
    die "building the integration tests failed"
mapfile -t built < <(jq -r 'select(.reason == "compiler-artifact" and .executable != null and
                  (.target.kind | index("test"))) | "\(.target.name) \(.executable)"' "$work/tests.json")
((${#built[@]} > 0)) || die "cargo test --no-run built no test binary"

want=${SKIFF_VM_TESTS:-all}
bins=()
for line in "${built[@]}"; do
    name=${line%% *} exe=${line#* }
    if [[ $want == all ]] || [[ " $want " == *" $name "* ]]; then
        bins+=("$name=$exe")
    fi
done
((${#bins[@]} > 0)) || die "none of the test binaries \"$want\" was built"

if (($# > 0)); then
    filters=("$@")
else
    read -r -a filters <<<"${SKIFF_TEST_FILTER:-}"
fi

# --- the initramfs -------------------------------------------------------------
initrd_dir=$work/initramfs
mkdir -p "$initrd_dir"/{bin,dev,proc,sys,host,modules}
cp /bin/busybox "$initrd_dir/bin/busybox"

# The modules for the 9p share (and overlay, for the tests' overlay mounts,
# and veth for the CRI tests' pod networks),
# each after what it depends on, from modules.dep.
declare -A seen=()
order=()
add_module() { # path relative to $moddir
    local rel=$1 deps dep
    [[ -n ${seen[$rel]:-} ]] && return 0
    seen[$rel]=1
    deps=$(awk -v m="$rel:" '$1 == m { $1 = ""; print }' "$moddir/modules.dep")
    for dep in $deps; do
        add_module "$dep"
    done
    order+=("$rel")
}
for m in 9p 9pnet_virtio virtio_pci overlay veth; do
    rel=$(awk -F: -v m="/$m.ko" 'index($1, m) && substr($1, length($1) - length(m) + 1) == m { print $1; exit }' "$moddir/modules.dep")
    [[ -n $rel ]] || die "module $m not found in $moddir/modules.dep"
    add_module "$rel"
done
: >"$initrd_dir/modules/order"
for rel in "${order[@]}"; do
    f=$moddir/$rel
    name=$(basename "$rel")
    case $f in
        *.ko) cp "$f" "$initrd_dir/modules/$name" ;;
        *.ko.xz) xz -dc "$f" >"$initrd_dir/modules/${name%.xz}"; name=${name%.xz} ;;
        *.ko.zst) zstd -qdc "$f" >"$initrd_dir/modules/${name%.zst}"; name=${name%.zst} ;;
        *) die "unknown module format: $f" ;;
    esac
    echo "$name" >>"$initrd_dir/modules/order"
done

# write_systemd_config DIR: the systemd guest's additions to /etc, laid out
# under DIR as under /etc (the init copies them into the overlay's upper).
# The guest boots skiff-vm.target rather than the host's default target, so
# that only basic.target, D-Bus and the tests start; what basic.target would
# still pull in and a test run does not need is masked, for a quicker boot
# under emulation and a guest that runs none of this machine's own services.
write_systemd_config() {
    local etc=$1 sd=$1/systemd/system u g d
    mkdir -p "$sd" "$etc/systemd/system-generators" "$etc/systemd/system.conf.d" \
        "$etc/systemd/journald.conf.d" "$etc/tmpfiles.d"
    cat >"$sd/skiff-vm.target" <<'UNIT'
[Unit]
Description=skiff's test VM: basic.target, the system bus and the tests
Requires=basic.target
Wants=dbus.service skiff-vm-tests.service
After=basic.target
AllowIsolate=yes
UNIT
    # Delegate=yes: the tests own their cgroup (the runtime puts a container
    # with no cgroupsPath beneath it, as under containerd.service), and
    # systemd enables every controller it knows on the way down from the
    # root, where the tests' containers get their cgroups.
    # Wants, not Requires, and no default dependencies: the tests run (and
    # report) even when some unit before them failed.
    cat >"$sd/skiff-vm-tests.service" <<'UNIT'
[Unit]
Description=skiff integration tests
DefaultDependencies=no
Wants=sysinit.target basic.target dbus.service
After=sysinit.target basic.target dbus.service

[Service]
Type=exec
ExecStart=/bin/sh /run/skiff-vm/tests.sh
ExecStopPost=/bin/sh /run/skiff-vm/finish.sh
Delegate=yes
TasksMax=infinity
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/console
UNIT
    # Emergency or rescue mode would wait for a login on the console: say
    # so and power off instead.
    for u in emergency rescue; do
        cat >"$sd/$u.service" <<'UNIT'
[Unit]
Description=skiff's test VM cannot boot: power off
DefaultDependencies=no

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/console
ExecStart=/bin/sh /run/skiff-vm/finish.sh %N
UNIT
    done
    # Masked: consoles and udev (the guest has no devices to set up; /dev is
    # devtmpfs), journal persistence, time sync, random seed and other
    # first-boot and hardware services, configfs and fuse, remote and
    # encrypted storage, timers.
    for u in getty.target serial-getty@ttyS0.service console-getty.service \
        systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
        systemd-udev-trigger.service systemd-udev-settle.service systemd-hwdb-update.service \
        systemd-journal-flush.service systemd-journal-catalog-update.service \
        systemd-timesyncd.service systemd-pstore.service systemd-random-seed.service \
        systemd-update-utmp.service systemd-update-utmp-runlevel.service systemd-update-done.service \
        systemd-modules-load.service proc-sys-fs-binfmt_misc.automount systemd-binfmt.service \
        sys-kernel-config.mount sys-fs-fuse-connections.mount modprobe@configfs.service \
        modprobe@fuse.service modprobe@drm.service \
        systemd-remount-fs.service systemd-firstboot.service systemd-machine-id-commit.service \
        systemd-sysusers.service ldconfig.service systemd-repart.service \
        systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-boot-system-token.service \
        selinux-autorelabel-mark.service \
        systemd-ask-password-console.path systemd-ask-password-wall.path \
        cryptsetup.target integritysetup.target veritysetup.target remote-fs.target timers.target; do
        ln -sfn /dev/null "$sd/$u"
    done
    # What this machine enables for early boot (sockets such as docker's,
    # sysinit services) stays on this machine.
    for d in /etc/systemd/system/{sysinit,sockets,paths,basic,local-fs}.target.wants; do
        for u in "$d"/*; do
            [[ -e $u || -L $u ]] && ln -sfn /dev/null "$sd/$(basename "$u")"
        done
    done
    # Generators read fstab, crypttab, /etc/init.d and the like, which
    # describe this machine, not the guest: all masked but the one that reads
    # systemd.mask= and systemd.wants= from the kernel command line.
    for g in /lib/systemd/system-generators/* /usr/lib/systemd/system-generators/* \
        /etc/systemd/system-generators/*; do
        [[ -e $g ]] || continue
        [[ $(basename "$g") == systemd-debug-generator ]] && continue
        ln -sfn /dev/null "$etc/systemd/system-generators/$(basename "$g")"
    done
    cat >"$etc/systemd/system.conf.d/skiff-vm.conf" <<'CONF'
[Manager]
DefaultTimeoutStartSec=60s
DefaultTimeoutStopSec=20s
CONF
    cat >"$etc/systemd/journald.conf.d/skiff-vm.conf" <<'CONF'
[Journal]
Storage=volatile
RuntimeMaxUse=64M
CONF
    # Debian's tmp.conf empties /tmp at boot: the checkout kept there must stay.
    ln -sfn /dev/null "$etc/tmpfiles.d/tmp.conf"
}

# containerd 2.4 (a test tool, see ../shared/tools/README.md): the harness
# unpacks its tarball into <tmp>/skiff-containerd-2.4 on first use. Unpack
# it here once, the same way, so that the guest (whose /tmp is a fresh
# tmpfs) finds it ready through the share instead of spending a minute of
# emulated xz on it.
containerd2_tarball() {
    local d
    if [[ -n ${SKIFF_CONTAINERD2_TARBALL:-} ]]; then
        [[ -f $SKIFF_CONTAINERD2_TARBALL ]] && echo "$SKIFF_CONTAINERD2_TARBALL"
        return 0
    fi
    for d in "$(dirname "$repo")" "$(dirname "$(dirname "$repo")")" "$(dirname "$(dirname "$(dirname "$repo")")")"; do
        [[ -f $d/shared/tools/containerd-2.4.tar.xz ]] && { echo "$d/shared/tools/containerd-2.4.tar.xz"; return 0; }
    done
    return 0
}
containerd2=/tmp/skiff-containerd-2.4
tarball=$(containerd2_tarball)
if [[ -n $tarball && ! -f $containerd2/bin/containerd ]]; then
    log "unpacking $tarball into $containerd2"
    unpack=$containerd2.$$
    rm -rf -- "$unpack"
    mkdir -p "$unpack"
    tar -C "$unpack" -xJf "$tarball" || die "cannot unpack $tarball"
    mv -T "$unpack/containerd-2.4" "$containerd2" 2>/dev/null || [[ -d $containerd2/bin ]] ||
        die "cannot move the unpacked containerd 2.4 to $containerd2"
    rm -rf -- "$unpack"
fi

# The test binaries, one after the other; rc is 1 when any failed.
run_tests() {
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    echo 'export TMPDIR=/tmp HOME=/root RUST_BACKTRACE=0'
    echo "export SKIFF_IT_TIMEOUT=${SKIFF_IT_TIMEOUT:-120} SKIFF_BIN=$(printf '%q' "$skiff_bin")"
    echo "export SKIFF_REQUIRE_LSM=$(printf '%q' "${SKIFF_REQUIRE_LSM:-}")"
    # parity.rs's knobs (PARITY_FILTER, PARITY_ALL, PARITY_JOBS, ...), as set here.
    local v
    for v in "${!PARITY_@}"; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    echo "cd $(printf '%q' "$repo")"
    echo 'rc=0'
    if [[ -n ${SKIFF_VM_COMMAND:-} ]]; then
        # Instead of the test binaries: one shell command line, in the repository.
        printf 'echo; echo "==> vm: command"\n'
        printf '%s || rc=1\n' "$SKIFF_VM_COMMAND"
        return 0
    fi
    # What each test binary leaves behind: the guest has no swap, and a
    # guest short of memory stalls for minutes rather than failing.
    echo 'left() { echo "vm: after $1: $(awk '"'"'/^MemAvailable/ {print int($2/1024)}'"'"' /proc/meminfo) MiB available, $(ls /proc | grep -c "^[0-9]") processes, /tmp $(du -sm /tmp 2>/dev/null | cut -f1) MiB"; }'
    for b in "${bins[@]}"; do
        name=${b%%=*} exe=${b#*=}
        printf 'echo; echo "==> vm: %s"\n' "$name"
        printf "%q --test-threads=2 --color=never" "$exe"
        for f in "${filters[@]}"; do printf ' %q' "$f"; done
        printf ' || rc=1\n'
        printf 'left %q\n' "$name"
    done
}

# shellcheck disable=SC2016 # the scripts' own variables expand in the guest
if [[ $init_mode == busybox ]]; then
    # What runs in the guest as pid 1: every chosen binary, then the status
    # line the host looks for, then power off.
    {
        echo '#!/bin/sh'
        run_tests
        echo 'echo "SKIFF-VM-EXIT=$rc"'
        echo 'sync'
        echo '/bin/busybox poweroff -f || echo o >/proc/sysrq-trigger'
    } >"$initrd_dir/tests.sh"
else
    # The service's main process: what the guest is, then every chosen
    # binary; its exit status is the tests'.
    {
        echo '#!/bin/sh'
        echo 'up() { cut -d " " -f 1 /proc/uptime; }'
        echo 'echo "vm: the tests service started at $(up) s"'
        echo 'state=$(systemctl is-system-running --wait 2>&1)'
        echo 'echo "vm: pid 1 is $(cat /proc/1/comm); the system is $state at $(up) s"'
        echo 'echo "vm: $(systemd-analyze time 2>&1 | head -n 1)"'
        echo 'failed=$(systemctl list-units --failed --plain --no-legend 2>&1 | cut -d " " -f 1 | tr "\n" " ")'
        echo '[ -z "$failed" ] || echo "vm: failed units: $failed"'
        if [[ -n ${SKIFF_VM_VERBOSE:-} ]]; then
            # (blame is left out: it takes minutes under emulation)
            echo 'systemd-analyze critical-chain --no-pager skiff-vm-tests.service 2>&1'
        fi
        # systemd enables the controllers it knows (Delegate=yes asks for all
        # of them up to the root); those it does not (hugetlb, rdma, misc)
        # are switched on here, and systemd leaves them alone.
        echo 'if [ -f /sys/fs/cgroup/cgroup.controllers ]; then'
        echo 'for c in $(cat /sys/fs/cgroup/cgroup.controllers); do'
        echo '    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || echo "vm: cannot enable $c"'
        echo 'done'
        echo 'echo "vm: cgroup2 controllers at the root: $(cat /sys/fs/cgroup/cgroup.subtree_control)"'
        echo 'echo "vm: the tests run in $(cut -d: -f3 /proc/self/cgroup) with $(cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/cgroup.controllers)"'
        echo 'else'
        echo 'echo "vm: hybrid cgroups: $(ls /sys/fs/cgroup | tr "\n" " ")"'
        echo 'fi'
        echo 'echo "vm: D-Bus system bus: $(systemctl is-active dbus.service)"'
        echo 'echo "vm: AppArmor enabled: $(cat /sys/module/apparmor/parameters/enabled 2>&1)"'
        printf 'c2=%q\n' "$containerd2"
        echo 'if [ -x "$c2/bin/containerd" ]; then'
        echo '    echo "vm: containerd 2.4 in $c2: $("$c2/bin/containerd" --version 2>&1)"'
        echo 'else'
        echo '    echo "vm: containerd 2.4: not in $c2"'
        echo 'fi'
        echo 'echo "vm: the tests start at $(up) s"'
        run_tests
        echo 'exit "$rc"'
    } >"$initrd_dir/tests.sh"
    # ExecStopPost (and emergency or rescue mode, with its name): the unit's
    # result becomes the status line, then poweroff.
    {
        echo '#!/bin/sh'
        echo 'if [ -n "$1" ]; then'
        echo '    echo "vm: systemd entered $1 mode; failed: $(systemctl list-units --failed --plain --no-legend | cut -d " " -f 1)"'
        echo '    status=98'
        echo 'else'
        echo '    echo "vm: skiff-vm-tests.service: result $SERVICE_RESULT, $EXIT_CODE $EXIT_STATUS"'
        echo '    case $SERVICE_RESULT:$EXIT_CODE in'
        echo '    success:*) status=0 ;;'
        echo '    exit-code:exited) status=$EXIT_STATUS ;;'
        echo '    *) status=99 ;;'
        echo '    esac'
        echo 'fi'
        echo 'echo "SKIFF-VM-EXIT=$status"'
        echo 'echo "vm: powering off at $(cut -d " " -f 1 /proc/uptime) s"'
        # Not asking logind about inhibitors, which would start it.
        echo 'systemctl --no-block --check-inhibitors=no poweroff'
    } >"$initrd_dir/finish.sh"
    chmod 755 "$initrd_dir/finish.sh"
    write_systemd_config "$initrd_dir/etc"
fi

# The guest covers /tmp and /run with tmpfs: a checkout or a target dir that
# lives there (a CI clone under /tmp, say) is carried over those mounts, and
# so is containerd 2.4 unpacked above.
target_dir=$(dirname "$(dirname "$skiff_bin")")
: >"$initrd_dir/keep"
for p in "$repo" "$target_dir" "$containerd2"; do
    case $p in
    /tmp/* | /run/*)
        [[ -e $p ]] || continue
        [[ $p == "$repo"/* ]] && [[ $p != "$repo" ]] && continue
        echo "$p" >>"$initrd_dir/keep"
        ;;
    esac
done
echo "$init_mode" >"$initrd_dir/mode"
# The guest's kernel modules where its modprobe looks, when they come from
# the cache rather than this machine's /lib/modules.
if [[ $moddir != "/lib/modules/$kver" ]]; then
    printf '%s %s\n' "$moddir" "/lib/modules/$kver" >"$initrd_dir/modules/dir"
fi

cat >"$initrd_dir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "vm: insmod $m failed"
done
fail() { echo "vm: $*"; echo "SKIFF-VM-EXIT=99"; poweroff -f; }
mode=$(cat /mode)
share="-t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot"
if [ "$mode" = systemd ]; then
    # systemd writes to its root: the read-only share under a tmpfs upper.
    mkdir -p /lower /rw
    mount $share /lower || fail "cannot mount the host's root"
    mount -t tmpfs -o mode=755 rw /rw
    mkdir -p /rw/upper /rw/work
    mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /host ||
        fail "cannot mount the overlay root"
    # This machine may be a container: systemd would see its /.dockerenv,
    # take the guest for one too and ignore the kernel command line.
    rm -f /host/.dockerenv
    # The guest's configuration (units, masks, drop-ins) goes into the upper.
    cp -a /etc/. /host/etc/ || fail "cannot write the guest's /etc"
    if [ -f /modules/dir ]; then
        read -r from to </modules/dir
        mkdir -p "/host$to" && mount -o bind "/host$from" "/host$to" || echo "vm: cannot bind $from"
    fi
else
    mount $share /host || fail "cannot mount the host's root"
    # The share is read-only: the guest's own kernel file systems and tmpfs go on top.
    mount -t proc proc /host/proc
    mount -t sysfs sys /host/sys
    # AppArmor's and SELinux's interfaces, when SKIFF_VM_APPEND enables one.
    mount -t securityfs securityfs /host/sys/kernel/security 2>/dev/null || true
    mount -t cgroup2 -o nsdelegate cgroup2 /host/sys/fs/cgroup || fail "cannot mount cgroup2"
    for c in $(cat /host/sys/fs/cgroup/cgroup.controllers); do
        echo "+$c" >/host/sys/fs/cgroup/cgroup.subtree_control || echo "vm: cannot enable $c"
    done
    echo "vm: cgroup2 controllers: $(cat /host/sys/fs/cgroup/cgroup.subtree_control)"
    mount -t devtmpfs dev /host/dev
    mkdir -p /host/dev/pts /host/dev/shm
    mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts
    mount -t tmpfs shm /host/dev/shm
fi
i=0
while read -r p; do
    i=$((i + 1))
    mkdir -p "/kept/$i"
    mount -o bind "/host$p" "/kept/$i" || fail "cannot keep $p"
done </keep
mount -t tmpfs -o mode=1777 tmp /host/tmp
mount -t tmpfs -o mode=755 run /host/run
i=0
while read -r p; do
    i=$((i + 1))
    mkdir -p "/host$p"
    mount -o move "/kept/$i" "/host$p" || fail "cannot restore $p"
done </keep
if [ "$mode" = systemd ]; then
    mkdir -p /host/run/skiff-vm
    cp /tests.sh /finish.sh /host/run/skiff-vm/
    # systemd mounts the rest of its API file systems (cgroup2 among them)
    # itself; these three it finds in place.
    for m in dev proc sys; do mount -o move "/$m" "/host/$m" || fail "cannot move /$m"; done
    exec switch_root /host /lib/systemd/systemd
fi
# libcni keeps its cache under /var/lib/cni (not configurable in containerd
# 1.6): give the CRI tests a writable one where the host has the directory.
if [ -d /host/var/lib/cni ]; then mount -t tmpfs -o mode=755 cni /host/var/lib/cni; fi
cp /tests.sh /host/run/skiff-vm-tests.sh
# switch_root, not chroot: the shared root must be the mount namespace's root
# mount (what setns into a container's mount namespace lands on), as on a
# real host. The tests script is pid 1 from here on and powers off at the end.
exec switch_root /host /bin/sh /run/skiff-vm-tests.sh
INIT
chmod 755 "$initrd_dir/init" "$initrd_dir/tests.sh"
(cd "$initrd_dir" && find . | cpio -o -H newc --quiet) >"$work/initrd.cpio"

# --- boot ---------------------------------------------------------------------
cpus=${SKIFF_VM_CPUS:-$(nproc)}
((cpus > 4)) && cpus=4
console=$work/console.log
append="console=ttyS0 loglevel=3 panic=-1"
case ${SKIFF_VM_CGROUP:-v2} in
v2) append+=" cgroup_no_v1=all" ;;
hybrid) [[ $init_mode == systemd ]] || die "SKIFF_VM_CGROUP=hybrid needs SKIFF_VM_INIT=systemd" ;;
*) die "SKIFF_VM_CGROUP must be v2 or hybrid, not \"$SKIFF_VM_CGROUP\"" ;;
esac
if [[ $init_mode == systemd ]]; then
    # cgroup v2 only, AppArmor on (as Debian's kernel does by default, said
    # explicitly), the guest's own target, and of systemd's status lines only
    # the failures unless asked for more.
    if [[ ${SKIFF_VM_CGROUP:-v2} == hybrid ]]; then
        append+=" systemd.unified_cgroup_hierarchy=0"
    else
        append+=" systemd.unified_cgroup_hierarchy=1"
    fi
    append+=" apparmor=1 security=apparmor systemd.unit=skiff-vm.target"
    if [[ -n ${SKIFF_VM_VERBOSE:-} ]]; then
        append+=" systemd.show_status=yes"
    else
        append+=" systemd.show_status=error"
    fi
fi
if [[ -n ${SKIFF_VM_APPEND:-} ]]; then
    append+=" $SKIFF_VM_APPEND"
fi
log "booting $kernel with $init_mode (tcg, $cpus cpus, ${SKIFF_VM_MEMORY:-4096} MiB) for: ${bins[*]%%=*}"
start=$SECONDS
set +e
timeout --kill-after=10 "${SKIFF_VM_TIMEOUT:-1200}" \
    "${qemu[@]}" -accel tcg,thread=multi -cpu max -smp "$cpus" -m "${SKIFF_VM_MEMORY:-4096}" \
    -kernel "$kernel" -initrd "$work/initrd.cpio" \
    -append "$append" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    -nic none -display none -monitor none -serial stdio -no-reboot </dev/null |
    stdbuf -oL tr -d '\r' | tee "$console"
qemu_rc=${PIPESTATUS[0]}
set -e
status=$(sed -n 's/^SKIFF-VM-EXIT=\([0-9]*\).*/\1/p' "$console" | tail -n 1)
if [[ -z $status ]]; then
    if ((qemu_rc == 124 || qemu_rc == 137)); then
        die "the VM timed out after ${SKIFF_VM_TIMEOUT:-1200} s"
    fi
    die "the VM stopped without a test status (qemu exit code $qemu_rc)"
fi
log "tests in the VM exited $status after $((SECONDS - start)) s"
exit "$status"
