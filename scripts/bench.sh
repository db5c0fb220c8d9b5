#!/usr/bin/env bash
# Benchmark skiff against runc and crun, side by side, in one run.
#
#   scripts/bench.sh [--quick] [--runs N] [--no-shim] [--no-build] [--name NAME]
#
# Builds skiff (and the shim, when it builds) in release mode, makes a busybox
# bundle, and measures with hyperfine, every runtime in the same hyperfine
# call:
#   - `run` of /bin/true, beside the kernel floor (bench/floor.c, built with
#     cc: the same namespaces, rootfs mounts, pivot_root, execve, wait and
#     cgroup mkdir/rmdir with no runtime around them); create + start +
#     delete of it; `exec` of /bin/true into a running container;
#   - `run` with 1, 10 and 100 extra tmpfs/bind mounts in the spec;
#   - 1, 10 and 50 concurrent creates (then deletes), wall time;
#   - the runtime's peak RSS during `create` (GNU time %M, median);
#   - on a hybrid cgroup host, `run` as the host sees it (crun through a
#     per-call unshare) for reference;
#   - with a private containerd, when containerd and our shim are usable:
#     `ctr run --rm` through containerd-shim-skiff-v2 + skiff against
#     containerd-shim-runc-v2 + runc, and each shim's RSS and PSS per pod
#     with 1, 10 and 50 running containers.
#   - through containerd's CRI (integration/src/bin/cri-bench.rs), skiff's
#     handler against the runc handler: RunPodSandbox + CreateContainer +
#     StartContainer, ExecSync of /bin/true, StopPodSandbox +
#     RemovePodSandbox (about 30 s in full mode).
# Then it prints a table (mean ± sd, ratios skiff/runc and skiff/crun), and
# writes bench/results/<date>-<name>.json (every raw hyperfine export),
# bench/README.md (the latest table) and bench/chart.png (gnuplot).
#
# It reports and never judges: a slow result is not a failure. A runtime or
# a section that does not work is left out with a note. Everything it makes
# (containers, cgroups, mounts, containerd, temp dirs) is removed at exit,
# also on Ctrl-C.
#
# Options:
#   --quick       fewer runs: about 1 minute on 2 cores instead of about 2
#                 (plus the release build)
#   --runs N      hyperfine runs for the single-container benchmarks
#   --no-shim     skip the containerd/shim part
#   --no-cri      skip the CRI part
#   --no-build    use the binaries already in target/x86_64-unknown-linux-gnu/release
#   --name NAME   results file name suffix (default: quick or full)
# Environment (override the mode's defaults):
#   BENCH_RUNS, BENCH_WARMUP, BENCH_SCALE_RUNS (concurrent 10/50 runs),
#   BENCH_RSS_RUNS, BENCH_SHIM_RUNS, BENCH_MOUNTS ("1 10 100"),
#   BENCH_CONCURRENCY ("1 10 50"), BENCH_PODS ("1 10 50"), BENCH_NAME,
#   BENCH_CRI_PODS (pods per handler), BENCH_CRI_EXECS (ExecSyncs per pod),
#   BENCH_MANY_PODS ("10 50": pods of one container for the shims' PSS per pod),
#   BENCH_CRI_BURST (20: pods per handler started at once).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=scripts/bench/common.sh
source scripts/bench/common.sh

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

mode=full shim=1 cri=1 build=1 runs_opt='' name=${BENCH_NAME:-}
while (($# > 0)); do
    case $1 in
        --quick) mode=quick ;;
        --runs) runs_opt=${2:?--runs needs a number}; shift ;;
        --no-shim) shim=0 ;;
        --no-cri) cri=0 ;;
        --no-build) build=0 ;;
        --name) name=${2:?--name needs a name}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
[[ $name =~ ^[A-Za-z0-9._-]*$ ]] || die "--name: letters, digits, '.', '_' and '-' only"
name=${name:-$mode}

if [[ $mode == quick ]]; then
    d_runs=10 d_warm=2 d_scale=3 d_rss=5 d_shim=5 d_pods=3 d_execs=10
else
    d_runs=50 d_warm=5 d_scale=10 d_rss=20 d_shim=15 d_pods=10 d_execs=20
fi
export BENCH_CRI_PODS=${BENCH_CRI_PODS:-$d_pods}
export BENCH_CRI_EXECS=${BENCH_CRI_EXECS:-$d_execs}
export BENCH_RUNS=${runs_opt:-${BENCH_RUNS:-$d_runs}}
export BENCH_WARMUP=${BENCH_WARMUP:-$d_warm}
export BENCH_SCALE_RUNS=${BENCH_SCALE_RUNS:-$d_scale}
export BENCH_RSS_RUNS=${BENCH_RSS_RUNS:-$d_rss}
export BENCH_SHIM_RUNS=${BENCH_SHIM_RUNS:-$d_shim}
export BENCH_MOUNTS=${BENCH_MOUNTS:-1 10 100}
export BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-1 10 50}
export BENCH_PODS=${BENCH_PODS:-1 10 50}
export BENCH_MANY_PODS=${BENCH_MANY_PODS:-10 50}
export BENCH_CRI_BURST=${BENCH_CRI_BURST:-20}
for v in BENCH_RUNS BENCH_WARMUP BENCH_SCALE_RUNS BENCH_RSS_RUNS BENCH_SHIM_RUNS BENCH_CRI_PODS BENCH_CRI_EXECS BENCH_CRI_BURST; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, not '${!v}'"
done
((BENCH_RUNS >= 2 && BENCH_SCALE_RUNS >= 2 && BENCH_SHIM_RUNS >= 2)) ||
    die "hyperfine needs at least 2 runs for a standard deviation"

((EUID == 0)) || die "containers need root: run as root"
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- dependencies ---------------------------------------------------------------
section "dependencies"
# What the benchmark needs, installed the way scripts/setup.sh does it
# (dpkg status first, apt-get only for what is missing), without the rest of
# setup.sh's list.
bench_packages=(
    busybox-static # the bundle's rootfs (scripts/mkbundle.sh)
    runc crun      # the runtimes compared with skiff
    containerd     # the shim part (ctr, containerd-shim-runc-v2)
    hyperfine      # the timings
    gnuplot-nox    # bench/chart.png
    time           # /usr/bin/time: peak RSS
    jq             # configs and results
    util-linux     # unshare, findmnt
)
missing=()
for pkg in "${bench_packages[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"
else
    log "Debian packages already installed"
fi
for tool in hyperfine gnuplot /usr/bin/time jq unshare runc crun; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done

# --- build ----------------------------------------------------------------------
bin_dir=$repo/target/x86_64-unknown-linux-gnu/release  # the build target of .cargo/config.toml
shim_bin=
if ((build)); then
    section "build"
    cargo build --release -p skiff
fi
[[ -x $bin_dir/skiff ]] || die "$bin_dir/skiff is missing (drop --no-build)"

# --- scratch area and cleanup ---------------------------------------------------
work=$(mktemp -d /tmp/skiff-bench.XXXXXX)
prefix=skb$$
export BENCH_WORK=$work BENCH_REPO=$repo BENCH_PREFIX=$prefix BENCH_BIN_DIR=$bin_dir
: >"$work/notes"
mkdir -p "$work/json" "$work/state"
# The runtimes' state roots live on a tmpfs, as their defaults do (/run/runc,
# /run/crun, /run/skiff): on the disk's filesystem every state file costs an
# inode allocation whose price depends on what the machine deleted lately.
mount -t tmpfs -o mode=0700,size=64m skiff-bench-state "$work/state"
mkdir -p "$work/state/skiff" "$work/state/runc" "$work/state/crun"
note "the runtimes' --root directories are on a tmpfs, like their defaults under /run"

stop_containerd() {
    local dir=$work/ctrd ns=$prefix-ns pid p a i base
    [[ -f $dir/containerd.pid ]] || return 0
    pid=$(cat "$dir/containerd.pid")
    local sockets=() procs=()
    for a in "$dir"/state/io.containerd.runtime.v2.task/"$ns"/*/address; do
        [[ -f $a ]] && sockets+=("$(sed 's|^unix://||' "$a")")
    done
    mapfile -t procs < <(pids_with_arg "$dir/c.sock")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    # The shims (and any ctr) that served this containerd: ours by their
    # unique socket path; killed by pid.
    for p in "${procs[@]}"; do
        if [[ $p != "$pid" ]]; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    # What they left running: force-delete with the runtime that made it.
    for base in /run/containerd/skiff /run/containerd/runc; do
        [[ -d $base/$ns ]] || continue
        delete_all_in "$bin_dir/skiff" -- "$base/$ns"
        [[ $base == */runc ]] && delete_all_in runc -- "$base/$ns"
        rm -rf -- "${base:?}/$ns"
    done
    for a in "${sockets[@]}"; do
        [[ -S $a ]] && rm -f -- "$a"
    done
    rm -f -- "$dir/containerd.pid"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_containerd
    delete_all_in "$bin_dir/skiff" -- "$work/state/skiff"
    delete_all_in runc -- "$work/state/runc"
    delete_all_in "${V1NS[@]}" crun -- "$work/state/crun"
    remove_cgroups "$prefix" "$prefix-ns"
    unmount_under "$work"
    rm -rf --one-file-system -- "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if ((build && shim)); then
    if cargo build --release -p skiff-shim >"$work/shim-build.log" 2>&1 &&
        [[ -x $bin_dir/containerd-shim-skiff-v2 ]]; then
        shim_bin=$bin_dir/containerd-shim-skiff-v2
        log "built $shim_bin"
    else
        note "the shim (skiff-shim) does not build yet: shim benchmarks skipped ($(grep -m1 -E '^error' "$work/shim-build.log" || tail -n 1 "$work/shim-build.log"))"
        shim=0
    fi
elif ((shim)); then
    [[ -x $bin_dir/containerd-shim-skiff-v2 ]] && shim_bin=$bin_dir/containerd-shim-skiff-v2
fi

# --- the kernel floor -------------------------------------------------------------
# bench/floor.c: clone3 with the bundle's namespaces, its rootfs and kernel
# mounts, pivot_root, execve, wait, cgroup mkdir/rmdir, and nothing else.
export BENCH_FLOOR=
if command -v cc >/dev/null 2>&1 &&
    { cc -O2 -static -o "$work/floor" bench/floor.c 2>"$work/floor-build.log" ||
        cc -O2 -o "$work/floor" bench/floor.c 2>>"$work/floor-build.log"; }; then
    BENCH_FLOOR=$work/floor
else
    note "the kernel floor (bench/floor.c) did not build, its column is empty: $(tail -n 1 "$work/floor-build.log" 2>/dev/null || echo 'no C compiler')"
fi

# --- bundles ----------------------------------------------------------------------
section "bundles"
bundles=$work/bundles
scripts/mkbundle.sh "$bundles/true" /bin/true >/dev/null
rootfs=$bundles/true/rootfs
export BENCH_ROOTFS=$rootfs
# Every other bundle is a config.json pointing at the same read-only rootfs.
derive() { # NAME JQ_FILTER [JQ ARGS...]
    local name=$1 filter=$2
    shift 2
    mkdir -p "$bundles/$name"
    jq --arg rootfs "$rootfs" "$@" ".root.path = \$rootfs | $filter" \
        "$bundles/true/config.json" >"$bundles/$name/config.json"
}
derive sleep '.process.args = ["sleep", "3600"]'
max_mounts=0
for m in $BENCH_MOUNTS; do
    [[ $m =~ ^[0-9]+$ ]] || die "BENCH_MOUNTS: '$m' is not a number"
    ((m > max_mounts)) && max_mounts=$m
done
mkdir -p "$work/bind-source"
for ((i = 0; i < max_mounts; i++)); do mkdir -p "$rootfs/mnt/bench/m$i"; done
for m in $BENCH_MOUNTS; do
    # Even mounts are tmpfs, odd ones binds of a host directory.
    derive "mounts-$m" '.mounts += [range($n) as $i
        | if $i % 2 == 0
          then {destination: "/mnt/bench/m\($i)", type: "tmpfs", source: "tmpfs",
                options: ["nosuid", "nodev", "size=64k"]}
          else {destination: "/mnt/bench/m\($i)", type: "bind", source: $src,
                options: ["rbind", "nosuid", "nodev"]}
          end]' --argjson n "$m" --arg src "$work/bind-source"
done
log "busybox bundles under $bundles"

# --- what is being compared -----------------------------------------------------------
if cgroup_hybrid; then cgroup=hybrid
elif [[ $(stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]]; then cgroup=v2
else cgroup=v1; fi
jq -n \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg mode "$mode" --arg name "$name" \
    --arg cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
    --argjson cores "$(nproc)" --arg kernel "$(uname -r)" --arg cgroup "$cgroup" \
    --arg load "$load_before" \
    --arg skiff_version "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
    --arg runc "$(runc --version | head -n 1)" --arg crun "$(crun --version | head -n 1)" \
    --arg hyperfine "$(hyperfine --version | awk '{print $2}')" \
    --arg containerd "$( ((shim)) && containerd --version 2>/dev/null | awk '{print $3}')" \
    --argjson runs "$BENCH_RUNS" --argjson warmup "$BENCH_WARMUP" \
    --argjson scale_runs "$BENCH_SCALE_RUNS" --argjson rss_runs "$BENCH_RSS_RUNS" \
    --argjson shim_runs "$BENCH_SHIM_RUNS" \
    '{date: $date, mode: $mode, name: $name, cpu: $cpu, cores: $cores, kernel: $kernel,
      cgroup: $cgroup, load_before: $load, skiff_version: $skiff_version, runc: $runc, crun: $crun,
      hyperfine: $hyperfine, containerd: (if $containerd == "" then null else $containerd end),
      settings: {runs: $runs, warmup: $warmup, scale_runs: $scale_runs, rss_runs: $rss_runs,
                 shim_runs: $shim_runs}}' >"$work/meta.json"
log "mode $mode: $BENCH_RUNS runs (warm-up $BENCH_WARMUP), concurrent $BENCH_SCALE_RUNS runs, RSS $BENCH_RSS_RUNS runs; cgroup $cgroup"

# --- the runtimes, in a private mount namespace -------------------------------------
BENCH_RUNTIMES="skiff:$bin_dir/skiff runc:$(command -v runc) crun:$(command -v crun)"
export BENCH_RUNTIMES
if [[ $cgroup == hybrid ]]; then
    log "crun refuses hybrid cgroup hosts: skiff, runc and crun are all measured in one private" \
        "mount namespace where /sys/fs/cgroup/unified is unmounted (the host's mount stays)"
fi
unshare -m --propagation private bash scripts/bench/runtimes.sh ||
    note "the runtime benchmarks stopped early (exit $?); the rows above are what they measured"

# --- reference: the hybrid host as it is ---------------------------------------------
if [[ $cgroup == hybrid ]]; then
    section "reference: run /bin/true as the hybrid host sees it"
    sec=hybrid-run label="run /bin/true, hybrid host view"
    add_section "$sec" "$label"
    hyperfine_one "$sec" "$label" skiff "$BENCH_WARMUP" "$BENCH_RUNS" \
        "$(cmdline "$bin_dir/skiff" --root "$work/state/skiff" run --bundle "$bundles/true" "$prefix-hyb")" ||
        delete_all_in "$bin_dir/skiff" -- "$work/state/skiff"
    hyperfine_one "$sec" "$label" runc "$BENCH_WARMUP" "$BENCH_RUNS" \
        "$(cmdline runc --root "$work/state/runc" run --bundle "$bundles/true" "$prefix-hyb")" ||
        delete_all_in runc -- "$work/state/runc"
    hyperfine_one "$sec" "$label" crun "$BENCH_WARMUP" "$BENCH_RUNS" \
        "$(cmdline "${V1NS[@]}" crun --root "$work/state/crun" run --bundle "$bundles/true" "$prefix-hyb")" ||
        delete_all_in "${V1NS[@]}" crun -- "$work/state/crun"
    note "the \"hybrid host view\" row runs skiff and runc directly on the hybrid host, and crun through a per-call \`unshare -m\` + umount + mount wrapper whose cost is in crun's time: compare it with the \"run /bin/true\" row to see what such a wrapper would add"
fi

# --- the shim -------------------------------------------------------------------------
if ((shim)); then
    if [[ -n $shim_bin ]]; then
        bash scripts/bench/shim.sh || note "the shim benchmarks stopped early (exit $?)"
    else
        note "shim benchmarks skipped: $bin_dir/containerd-shim-skiff-v2 is missing"
    fi
fi
stop_containerd

# --- CRI: what a kubelet waits for ----------------------------------------------------
# integration/src/bin/cri-bench.rs on the integration harness's CRI node (a
# private containerd with CRI, in its own network namespace): skiff's handler
# against containerd's runc handler, pod by pod in turn.
# One cri-bench run: PREFIX LABEL-SUFFIX ARGS...; adds its three rows.
cri_run() {
    local prefix=$1 suffix=$2
    shift 2
    if SKIFF_BIN=$bin_dir/skiff timeout 900 "$bin_dir/cri-bench" "$work/json" --prefix "$prefix" "$@" \
        2>"$work/cri-$prefix.err"; then
        printf '%s\t%s\tms\n' "${prefix}start" "CRI pod start$suffix" "${prefix}exec" "CRI ExecSync /bin/true$suffix" \
            "${prefix}stop" "CRI pod stop+remove$suffix" >>"$work/sections.tsv"
    else
        note "CRI benchmark $prefix skipped: $(tail -n 2 "$work/cri-$prefix.err" | tr '\n' ' ')"
    fi
}
if ((cri)) && [[ -n $shim_bin ]]; then
    section "CRI: pod start, ExecSync, pod stop ($BENCH_CRI_PODS pods one by one and $BENCH_CRI_BURST at once, $BENCH_CRI_EXECS execs each)"
    if { ((!build)) || cargo build --release -p skiff-integration --bin cri-bench >"$work/cri-build.log" 2>&1; } &&
        [[ -x $bin_dir/cri-bench ]]; then
        cri_run cri- "" "$BENCH_CRI_PODS" "$BENCH_CRI_EXECS"
        cri_run cri-burst- ", $BENCH_CRI_BURST pods at once" "$BENCH_CRI_BURST" "$((BENCH_CRI_EXECS / 4 + 2))" --burst
        # The skiff column with the shim forking the runtime binary per exec, as before issue 15.
        cri_run cri-forked- ", shim forks skiff exec" "$BENCH_CRI_PODS" "$BENCH_CRI_EXECS" --env SKIFF_SHIM_EXEC=runtime
        v1=$(containerd --version | awk '{print $3}')
        note "CRI rows: the runc column is containerd's runc handler (containerd-shim-runc-v2 + runc), the skiff column our handler (containerd-shim-skiff-v2 + skiff), on one containerd $v1 with CRI; one by one, the handlers alternate pod by pod; 'at once' starts a handler's pods on one thread each; 'shim forks skiff exec' is the skiff handler with SKIFF_SHIM_EXEC=runtime (its runc column is a second runc sample)"
        if [[ -e $repo/../shared/tools/containerd-2.4.tar.xz || -e $repo/../../shared/tools/containerd-2.4.tar.xz || -n ${SKIFF_CONTAINERD2_TARBALL:-} ]]; then
            cri_run cri2- " (containerd 2.4)" "$BENCH_CRI_PODS" "$BENCH_CRI_EXECS" --containerd 2
            cri_run cri2-burst- " (containerd 2.4), $BENCH_CRI_BURST pods at once" "$BENCH_CRI_BURST" "$((BENCH_CRI_EXECS / 4 + 2))" --burst --containerd 2
        else
            note "CRI rows on containerd 2.4 skipped: ../shared/tools/containerd-2.4.tar.xz not found"
        fi
    else
        note "CRI benchmarks skipped: $(tail -n 2 "$work/cri-build.log" 2>/dev/null | tr '\n' ' ')"
    fi
fi

# --- report ---------------------------------------------------------------------------
section "results"
mkdir -p bench/results
results=bench/results/$(date +%Y-%m-%dT%H%M)-$name.json
bash scripts/bench/report.sh "$work" "$results" bench/README.md bench/chart.png
if [[ -s $work/notes ]]; then
    echo
    echo "notes:"
    sed 's/^/  - /' "$work/notes"
fi
echo
log "raw results: $results; table: bench/README.md; chart: bench/chart.png"
log "took $(($(date +%s) - started)) s"
