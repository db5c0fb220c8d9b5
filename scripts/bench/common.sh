# shellcheck shell=bash
# Helpers shared by scripts/bench.sh and the scripts it runs (sourced, not run).
#
# Everything here is about finding and undoing what the benchmark made: every
# name it creates starts with $BENCH_PREFIX (containers, cgroups) or lives
# under $BENCH_WORK (state roots, bundles, containerd), so cleanup can be
# exact and never touches anything else on the host.

log() { printf 'bench: %s\n' "$*" >&2; }
section() { printf '\n== %s ==\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# Appends a line to the notes printed under the table and kept in the JSON.
note() {
    printf '%s\n' "$*" >>"$BENCH_WORK/notes"
    log "note: $*"
}

# Is this a hybrid cgroup host (v1 controllers on a tmpfs, an empty cgroup2
# at /sys/fs/cgroup/unified)? crun refuses to run on one.
cgroup_hybrid() {
    [[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == tmpfs ]] &&
        [[ $(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null) == cgroup2fs ]]
}

# Inside a private mount namespace only: hide the cgroup2 mount of a hybrid
# host under a private tmpfs. With the mount merely gone, crun would mkdir its
# "0::" cgroup (and write a cgroup.procs file) in the directory underneath, on
# the host's shared /sys/fs/cgroup tmpfs, and leave both there (rmdir fails on
# the file); the private tmpfs vanishes with the namespace instead, and
# clear_private_unified empties it between benchmarks. Never call this in the
# host's namespace.
hide_unified_in_private_ns() {
    umount /sys/fs/cgroup/unified &&
        mount -t tmpfs -o size=64m,mode=0755 skiff-bench /sys/fs/cgroup/unified
}
clear_private_unified() {
    [[ $(findmnt -n -o SOURCE /sys/fs/cgroup/unified 2>/dev/null) == skiff-bench ]] || return 0
    find /sys/fs/cgroup/unified -mindepth 1 -delete 2>/dev/null || true
}

# A command prefix that runs what follows it in a throwaway private mount
# namespace without the hybrid cgroup2 mount (as hide_unified_in_private_ns):
# how crun is called from the host's namespace. Empty when not hybrid.
V1NS=()
# shellcheck disable=SC2034 # used by the scripts that source this file
if cgroup_hybrid; then
    V1NS=(unshare -m --propagation private sh -c
        'umount /sys/fs/cgroup/unified && mount -t tmpfs -o size=64m,mode=0755 skiff-bench /sys/fs/cgroup/unified && exec "$@"' sh)
fi

# delete --force every container in a state root.
delete_all_in() { # COMMAND... -- ROOT   (COMMAND: the runtime, maybe after ${V1NS[@]})
    local runner=() root id d
    while [[ $1 != -- ]]; do runner+=("$1"); shift; done
    root=$2
    [[ -d $root ]] || return 0
    for d in "$root"/*/; do
        [[ -d $d ]] || continue
        id=$(basename "$d")
        timeout 30 "${runner[@]}" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
    done
}

# rmdir (deepest first) the cgroup directories the benchmark's containers
# used: <hierarchy>/<prefix>*, <hierarchy>/skiff/<prefix>* (skiff's default
# parent) and <hierarchy>/<containerd namespace> (ctr's default parent).
# rmdir only removes empty cgroups, so nothing with a process in it goes.
remove_cgroups() { # PREFIX [NAMESPACE]
    local prefix=$1 ns=${2:-} h d
    for h in /sys/fs/cgroup /sys/fs/cgroup/*/; do
        h=${h%/}
        [[ -d $h ]] || continue
        for d in "$h/$prefix"* "$h/skiff/$prefix"* ${ns:+"$h/$ns"}; do
            [[ -d $d ]] || continue
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
        done
    done
}

# Lazily unmount every mount point under DIR, deepest first.
unmount_under() { # DIR
    local dir=$1 mp
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r mp; do
            umount -l "$mp" 2>/dev/null || true
        done
}

# Pids of the processes whose command line contains STRING (an exact,
# benchmark-unique string such as our containerd's socket path).
pids_with_arg() { # STRING
    local p cmd
    for p in /proc/[0-9]*; do
        cmd=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
        [[ $cmd == *"$1"* ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

# A shell-words quoted command line for hyperfine -N.
cmdline() { printf '%q ' "$@"; }

# Time one command with hyperfine into $BENCH_WORK/json/<SECTION>@<NAME>.json
# (report.sh merges a section's files into one row). On failure the export is
# removed, the command is run once more to catch its error, and a note says
# so; the caller cleans up what the failed runs left. Returns hyperfine's status.
hyperfine_one() { # SECTION LABEL NAME WARMUP RUNS COMMAND_LINE
    local sec=$1 label=$2 name=$3 warm=$4 runs=$5 cmd=$6 err
    if hyperfine -N --style basic --warmup "$warm" --runs "$runs" \
        --export-json "$BENCH_WORK/json/$sec@$name.json" --command-name "$name" "$cmd"; then
        return 0
    fi
    rm -f "$BENCH_WORK/json/$sec@$name.json"
    err=$(eval "timeout 120 $cmd" 2>&1 >/dev/null </dev/null | tail -n 2 | tr '\n' ' ') || true
    note "$label: $name failed under hyperfine, its cell is empty (run once more alone: ${err:-it succeeded})"
    return 1
}

# Record a section (one table row) for report.sh.
add_section() { # SECTION LABEL
    printf '%s\t%s\tms\n' "$1" "$2" >>"$BENCH_WORK/sections.tsv"
}
