#!/usr/bin/env bash
# Build a small OCI bundle: a busybox-static rootfs and a config.json in the
# shape `runc spec` produces (spec 1.0.2), without a terminal.
#
#   scripts/mkbundle.sh [--force] DIR [ARGS...]
#
# ARGS become process.args (default: sh). Options go before DIR; everything
# after DIR is the container's command line (a leading `--` is dropped).
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: mkbundle.sh [--force] DIR [--] [ARGS...]

Creates DIR/rootfs (Debian's static busybox and its applet links, a minimal
/etc) and DIR/config.json (OCI runtime spec 1.0.2, terminal false, hostname
"skiff", read-only root) whose process.args are ARGS, or "sh" when none.

  --force   replace DIR/rootfs and DIR/config.json if DIR is not empty
USAGE
}

die() { printf 'mkbundle: %s\n' "$*" >&2; exit 1; }

force=0
while (($# > 0)); do
    case $1 in
        --force) force=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) break ;;
    esac
done
(($# > 0)) || { usage >&2; exit 2; }
dir=$1
shift
[[ ${1:-} == -- ]] && shift
args=("$@")
((${#args[@]} > 0)) || args=(sh)

busybox=/bin/busybox
command -v jq >/dev/null 2>&1 || die "jq is missing: run scripts/setup.sh"
[[ -x $busybox ]] || die "$busybox is missing: run scripts/setup.sh (busybox-static)"
# Debian's dynamic busybox also installs /bin/busybox; a dynamic one would
# not run inside a rootfs that has no libc.
if dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null | grep -qx installed; then
    :
else
    die "busybox-static is not installed: run scripts/setup.sh"
fi

if [[ -e $dir && ! -d $dir ]]; then
    die "$dir exists and is not a directory"
fi
if [[ -d $dir ]] && [[ -n $(ls -A "$dir") ]]; then
    ((force)) || die "$dir is not empty (use --force to replace its rootfs and config.json)"
    # Only what this script creates is removed; --one-file-system keeps a
    # mount left inside an old rootfs from being emptied.
    rm -rf --one-file-system -- "$dir/rootfs" "$dir/config.json"
fi
mkdir -p -- "$dir"
rootfs=$dir/rootfs

# --- rootfs ------------------------------------------------------------------
mkdir -p "$rootfs"
for d in bin sbin usr/bin usr/sbin usr/local/bin etc dev proc sys run var/log home mnt; do
    mkdir -p "$rootfs/$d"
done
install -d -m 0700 "$rootfs/root"
install -d -m 1777 "$rootfs/tmp" "$rootfs/var/tmp"
install -m 0755 "$busybox" "$rootfs/bin/busybox"

# One relative symlink per applet: bin/sh -> busybox,
# sbin/ip -> ../bin/busybox, usr/bin/env -> ../../bin/busybox.
while IFS= read -r applet; do
    applet=${applet%/}
    case $applet in
        bin/busybox) continue ;;
        bin/*) target=busybox ;;
        sbin/*) target=../bin/busybox ;;
        usr/bin/* | usr/sbin/*) target=../../bin/busybox ;;
        *) continue ;; # e.g. "linuxrc", which belongs to an initramfs
    esac
    [[ -e $rootfs/$applet || -L $rootfs/$applet ]] || ln -s "$target" "$rootfs/$applet"
done < <("$busybox" --list-full)

cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
cat >"$rootfs/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1	localhost
HOSTS
: >"$rootfs/etc/resolv.conf"

# --- config.json -------------------------------------------------------------
args_json=$(jq -nc '$ARGS.positional' --args -- "${args[@]}")

cat >"$dir/config.json.tmp" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": $args_json,
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "TERM=xterm"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [
      { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }
    ],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "skiff",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    {
      "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
    },
    {
      "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    },
    {
      "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
    },
    {
      "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
      "options": ["nosuid", "noexec", "nodev"]
    },
    {
      "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": ["nosuid", "noexec", "nodev", "ro"]
    },
    {
      "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
    }
  ],
  "linux": {
    "resources": {
      "devices": [ { "allow": false, "access": "rwm" } ]
    },
    "namespaces": [
      { "type": "pid" },
      { "type": "network" },
      { "type": "ipc" },
      { "type": "uts" },
      { "type": "mount" },
      { "type": "cgroup" }
    ],
    "maskedPaths": [
      "/proc/acpi",
      "/proc/asound",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/sys/firmware",
      "/proc/scsi"
    ],
    "readonlyPaths": [
      "/proc/bus",
      "/proc/fs",
      "/proc/irq",
      "/proc/sys",
      "/proc/sysrq-trigger"
    ]
  }
}
JSON
# Re-emit through jq: proves the JSON is well formed and normalises layout.
jq . "$dir/config.json.tmp" >"$dir/config.json"
rm -f "$dir/config.json.tmp"

printf 'mkbundle: bundle at %s (args: %s)\n' "$dir" "$args_json"
