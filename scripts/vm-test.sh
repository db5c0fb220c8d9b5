#!/usr/bin/env bash
# Run the root-only integration tests on a pure cgroup v2 kernel: boot a
# small VM (qemu, software emulation) with Debian's kernel and a busybox
# initramfs, share this machine's / read-only over virtio-9p, mount cgroup2
# with every controller enabled, switch_root into the share and run the prebuilt
# test binaries there. Their output streams here; the exit status is the
# tests'.
#
#   scripts/vm-test.sh [FILTER...]
#
# Environment:
#   SKIFF_VM_TESTS     integration test binaries to run, by name (space
#                      separated, e.g. "cgroups cgroup_resources"); default
#                      "all" (about 4 minutes here, the shim's ~2.5 of them)
#   SKIFF_TEST_FILTER  test name filters (as for cargo test), when no FILTER
#                      argument is given
#   SKIFF_VM_TIMEOUT   seconds before the VM is killed (default 1200)
#   SKIFF_VM_MEMORY    guest memory in MiB (default 2048)
#   SKIFF_VM_CPUS      guest CPUs (default: this machine's, at most 4)
#   SKIFF_VM_KEEP      keep the work directory (initramfs, console log)
#
# Why this shape: KVM is not usable on the development and CI machines, so
# qemu emulates (-accel tcg); a Debian kernel with a busybox initramfs
# boots in a few seconds that way. Nothing is copied into the VM but the
# initramfs: the test binaries, the runtime and their libraries are read
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

# What runs in the guest as pid 1: every chosen binary, then the status line
# the host looks for, then power off.
# shellcheck disable=SC2016 # the script's own variables expand in the guest
{
    echo '#!/bin/sh'
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    echo 'export TMPDIR=/tmp HOME=/root RUST_BACKTRACE=0'
    echo "export SKIFF_IT_TIMEOUT=${SKIFF_IT_TIMEOUT:-120} SKIFF_BIN=$(printf '%q' "$skiff_bin")"
    echo "cd $(printf '%q' "$repo")"
    echo 'rc=0'
    for b in "${bins[@]}"; do
        name=${b%%=*} exe=${b#*=}
        printf 'echo; echo "==> vm: %s"\n' "$name"
        printf "%q --test-threads=2 --color=never" "$exe"
        for f in "${filters[@]}"; do printf ' %q' "$f"; done
        printf ' || rc=1\n'
    done
    echo 'echo "SKIFF-VM-EXIT=$rc"'
    echo 'sync'
    echo '/bin/busybox poweroff -f || echo o >/proc/sysrq-trigger'
} >"$initrd_dir/tests.sh"

# The guest covers /tmp and /run with tmpfs: a checkout or a target dir that
# lives there (a CI clone under /tmp, say) is carried over those mounts.
target_dir=$(dirname "$(dirname "$skiff_bin")")
: >"$initrd_dir/keep"
for p in "$repo" "$target_dir"; do
    case $p in
    /tmp/* | /run/*)
        [[ $p == "$repo"/* ]] && [[ $p != "$repo" ]] && continue
        echo "$p" >>"$initrd_dir/keep"
        ;;
    esac
done

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
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /host ||
    fail "cannot mount the host's root"
# The share is read-only: the guest's own kernel file systems and tmpfs go on top.
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t cgroup2 -o nsdelegate cgroup2 /host/sys/fs/cgroup || fail "cannot mount cgroup2"
for c in $(cat /host/sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" >/host/sys/fs/cgroup/cgroup.subtree_control || echo "vm: cannot enable $c"
done
echo "vm: cgroup2 controllers: $(cat /host/sys/fs/cgroup/cgroup.subtree_control)"
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts
mount -t tmpfs shm /host/dev/shm
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
log "booting $kernel (tcg, $cpus cpus, ${SKIFF_VM_MEMORY:-2048} MiB) for: ${bins[*]%%=*}"
start=$SECONDS
set +e
timeout --kill-after=10 "${SKIFF_VM_TIMEOUT:-1200}" \
    "${qemu[@]}" -accel tcg,thread=multi -cpu max -smp "$cpus" -m "${SKIFF_VM_MEMORY:-2048}" \
    -kernel "$kernel" -initrd "$work/initrd.cpio" \
    -append "console=ttyS0 loglevel=3 panic=-1 cgroup_no_v1=all" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    -nic none -display none -monitor none -serial stdio -no-reboot </dev/null |
    tr -d '\r' | tee "$console"
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
