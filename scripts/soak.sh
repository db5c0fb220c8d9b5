#!/usr/bin/env bash
# Soak and fault campaign: skiff and runc side by side, with leak accounting.
#
#   scripts/soak.sh [--quick] [--runtime skiff|runc|both] [--cycles N]
#                   [--concurrent M] [--time-limit SECONDS] [--bin-dir DIR]
#
# For each runtime, directly through its CLI (--root in the temp dir):
#   - N create/start/kill -9/delete cycles (cycles/s; an exit that never shows
#     up as "stopped" is a lost exit),
#   - M containers created and started concurrently, then killed and deleted,
#   - concurrent execs into one container (each must print its word),
#   - rounds of concurrent creates of one id (exactly one must win),
#   - kill -9 of the runtime during create, start and delete at a few delays,
#     then `delete --force` and a create of the same id that must work;
# and through a private containerd 1.6 (own root/state/socket/config in the
# temp dir, namespace = the cgroup parent) with our shim or containerd's runc
# shim: concurrent execs into a pod's container, kill -9 of an exec, of a
# container's init (its exit status must be 137), of the shim, and of
# containerd itself with containers running (one init is killed while
# containerd is down: its exit must be reported after the restart).
#
# Leaks are counted before and after each runtime's campaign: mountinfo lines
# naming the temp dir, cgroup directories under the test's parent in every
# hierarchy, processes (in those cgroups, or started by the script and still
# alive), zombies (children of any of those or of the script), state
# directories in the runtime roots, and the pod shim's fds and RSS (before and
# after the exec/kill phase). A table compares the runtimes. The exit code is
# non-zero if skiff leaked anything, lost an exit or failed a check; runc's
# figures are for comparison only.
#
# Every loop is capped in count and by the time limit; every command by a
# timeout. Everything lives under one temp dir and one cgroup parent
# (/skiff-soak-<pid>) and is removed at the end, also on failure or
# interrupt. Without root the script says so and exits 0.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
log() { printf 'soak: %s\n' "$*" >&2; }
die() { printf 'soak: %s\n' "$*" >&2; exit 2; }

quick=0 which=both cycles= conc= limit= bindir=$repo/target/x86_64-unknown-linux-gnu/debug
while (($# > 0)); do
    case $1 in
        --quick) quick=1; shift ;;
        --runtime) which=${2:?--runtime needs a value}; shift 2 ;;
        --cycles) cycles=${2:?}; shift 2 ;;
        --concurrent) conc=${2:?}; shift 2 ;;
        --time-limit) limit=${2:?}; shift 2 ;;
        --bin-dir) bindir=${2:?}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
case $which in skiff) runtimes=(skiff) ;; runc) runtimes=(runc) ;; both) runtimes=(skiff runc) ;;
    *) die "--runtime must be skiff, runc or both, not $which" ;; esac
if ((quick)); then
    : "${cycles:=200}" "${conc:=50}" "${limit:=90}"
    execs=16 races=5 racers=6 ctr_execs=10
else
    : "${cycles:=1000}" "${conc:=200}" "${limit:=1800}"
    execs=50 races=20 racers=10 ctr_execs=50
fi
[[ $cycles =~ ^[0-9]+$ && $conc =~ ^[0-9]+$ && $limit =~ ^[0-9]+$ ]] ||
    die "--cycles, --concurrent and --time-limit take whole numbers"
((cycles <= 100000 && conc <= 1000)) || die "--cycles is capped at 100000, --concurrent at 1000"

if ((EUID != 0)); then
    log "skipped: the soak runs real containers and needs root"
    exit 0
fi
for tool in jq runc containerd ctr containerd-shim-runc-v2 busybox; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run scripts/setup.sh"
done
skiff_bin=$bindir/skiff
[[ -x $skiff_bin && -x $bindir/containerd-shim-skiff-v2 ]] ||
    die "$bindir has no skiff or containerd-shim-skiff-v2: run cargo build --workspace"

# --- one temp dir, one cgroup parent, one tag; all removed by cleanup --------
prefix=skiff-soak-$$
work=$(mktemp -d /tmp/skiff-soak.XXXXXX)
tag=SKIFF_SOAK=$prefix # in the environment of every process we start
sock=$work/ctrd/c.sock
ctrd_pid= events_pid=

# Hierarchies to account: every mounted cgroup fs (v1 controllers, named and
# the cgroup2 one), not their symlink aliases.
mapfile -t hiers < <(awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo | sort -u)

# The pids of processes carrying our tag (but containerd and its event
# reader, which are restarted on purpose) or living in our cgroups.
tagged_pids() {
    local p
    for p in /proc/[0-9]*; do
        [[ ${p#/proc/} == "$ctrd_pid" || ${p#/proc/} == "$events_pid" ]] && continue
        grep -qzx -- "$tag" "$p/environ" 2>/dev/null && printf '%s\n' "${p#/proc/}"
    done
    return 0
}
cgroup_pids() {
    local h
    for h in "${hiers[@]}"; do
        [[ -d $h/$prefix ]] || continue
        find "$h/$prefix" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u
}

cleanup() {
    local rc=$? p h i d c bin
    trap - EXIT INT TERM
    set +e
    log "cleaning up $work and /$prefix"
    [[ -n $ctrd_pid ]] && kill -9 "$ctrd_pid" 2>/dev/null
    [[ -n $events_pid ]] && kill -9 "$events_pid" 2>/dev/null
    # Containers first (by their runtimes), then anything left, by pid.
    for d in "$work"/root-*/ "$work"/ctr-root-*/*/; do
        [[ -d $d ]] || continue
        case $d in *runc*) bin=runc ;; *) bin=$skiff_bin ;; esac
        for c in "$d"*/; do
            [[ -d $c ]] && timeout 20 "$bin" --root "${d%/}" delete --force "$(basename "$c")" >/dev/null 2>&1
        done
    done
    for i in 1 2 3; do
        for p in $(tagged_pids) $(cgroup_pids); do
            [[ $p == "$$" ]] || kill -9 "$p" 2>/dev/null
        done
        sleep 0.2
    done
    awk -v d="$work" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    for h in "${hiers[@]}"; do
        [[ -d $h/$prefix ]] && find "$h/$prefix" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf --one-file-system -- "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- bundles -------------------------------------------------------------------
bash scripts/mkbundle.sh "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
# mkcfg DIR CGROUP ARGS...: a config.json in DIR whose root is the shared
# read-only rootfs and whose cgroup is /$prefix/CGROUP.
mkcfg() {
    local dir=$1 cg=$2
    shift 2
    mkdir -p "$dir"
    jq --arg r "$rootfs" --arg c "/$prefix/$cg" '.root.path = $r | .linux.cgroupsPath = $c
        | .process.args = $ARGS.positional' "$work/bundle/config.json" --args -- "$@" >"$dir/config.json"
}

# --- accounting ------------------------------------------------------------------
# snapshot: "mounts cgroups procs zombies states" for the current runtime.
snapshot() {
    local mounts cgs procs zombies states p h parents
    mounts=$(grep -c -F -- "$work" /proc/self/mountinfo || true)
    cgs=0
    for h in "${hiers[@]}"; do
        [[ -d $h/$prefix ]] || continue
        cgs=$((cgs + $(find "$h/$prefix" -mindepth 1 -type d | wc -l)))
    done
    mapfile -t ours < <({ tagged_pids; cgroup_pids; } | sort -u)
    procs=${#ours[@]}
    parents=" $$ ${ours[*]} "
    zombies=0
    for p in /proc/[0-9]*/stat; do
        read -r -a st 2>/dev/null <"$p" || continue
        # pid (comm) state ppid: comm has no spaces for what we look at; be safe anyway.
        [[ ${st[2]} == Z && $parents == *" ${st[3]} "* ]] && zombies=$((zombies + 1))
    done
    states=$(find "$work" -mindepth 2 -maxdepth 2 -path "$work/root-*/*" -type d | wc -l)
    states=$((states + $(find "$work" -mindepth 3 -maxdepth 3 -path "$work/ctr-root-*/*/*" -type d | wc -l)))
    printf '%s %s %s %s %s\n' "$mounts" "$cgs" "$procs" "$zombies" "$states"
}

# What is there now (cgroup dirs, processes), to show what leaked.
details() {
    local h p
    for h in "${hiers[@]}"; do
        [[ -d $h/$prefix ]] && find "$h/$prefix" -mindepth 1 -type d
    done
    for p in $({ tagged_pids; cgroup_pids; } | sort -u); do
        printf 'pid %s: %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
    done
}

declare -A fig # fig[<runtime>,<name>]

fail() { # a check failed for the current runtime
    fig[$rt,errors]=$((${fig[$rt,errors]:-0} + 1))
    log "$rt: FAILED: $*"
}
lost() {
    fig[$rt,lost]=$((${fig[$rt,lost]:-0} + 1))
    log "$rt: LOST EXIT: $*"
}
left() { ((SECONDS < deadline)); }

# R ARGS...: the runtime under test, tagged, bounded.
R() { env "$tag" timeout 30 "$rt_bin" --root "$root" "$@" </dev/null >/dev/null 2>>"$work/$rt.err"; }
status() { env "$tag" timeout 30 "$rt_bin" --root "$root" state "$1" 2>/dev/null | jq -r .status 2>/dev/null; }
wait_status() { # ID WANT: up to 10 s
    local i
    for ((i = 0; i < 200; i++)); do
        [[ $(status "$1") == "$2" ]] && return 0
        sleep 0.05
    done
    return 1
}
init_pid() { env "$tag" timeout 30 "$rt_bin" --root "$root" state "$1" 2>/dev/null | jq -r .pid; }

# par MAX CMD...: CMD in the background, at most MAX at a time; par_wait
# waits for them all (never for containerd, which is a job of this shell too).
parpids=()
par() {
    local max=$1 p live
    shift
    while :; do
        live=()
        for p in "${parpids[@]}"; do kill -0 "$p" 2>/dev/null && live+=("$p"); done
        ((${#live[@]} < max)) && break
        wait -n "${live[@]}" || true
    done
    "$@" &
    parpids+=($!)
}
par_wait() {
    local p
    for p in "${parpids[@]}"; do wait "$p" || true; done
    parpids=()
}

# --- the campaign through the runtime's CLI ------------------------------------
cycle() { # ID
    mkcfg "$work/b/$1" "$1" sleep 1000
    R create --bundle "$work/b/$1" "$1" || { fail "create $1"; R delete --force "$1"; return; }
    R start "$1" || fail "start $1"
    R kill "$1" KILL || fail "kill $1"
    wait_status "$1" stopped || lost "$1 never stopped after SIGKILL"
    R delete "$1" || { fail "delete $1"; R delete --force "$1"; }
    rm -rf "$work/b/$1"
}

phase_cycles() {
    local i start=$SECONDS ms0 ms1
    ms0=$(date +%s%N)
    # At most 40% of the time limit, so that the other phases still run.
    local stop=$((SECONDS + limit * 2 / 5))
    for ((i = 0; i < cycles && SECONDS < stop; i++)); do cycle "$rt-cyc-$i"; done
    ms1=$(date +%s%N)
    fig[$rt,cycles]=$i
    fig[$rt,rate]=$(awk -v n="$i" -v ns=$((ms1 - ms0)) 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
    ((i == cycles)) || log "$rt: time limit reached after $i of $cycles cycles"
    log "$rt: $i cycles in $((SECONDS - start)) s (${fig[$rt,rate]}/s)"
}

one_running() { # ID: create and start, with a result line
    mkcfg "$work/b/$1" "$1" sleep 1000
    if R create --bundle "$work/b/$1" "$1" && R start "$1" && [[ $(status "$1") == running ]]; then
        echo ok >>"$work/res"
    else
        echo fail >>"$work/res"
    fi
}
one_gone() { # ID
    R kill "$1" KILL
    wait_status "$1" stopped || echo lost >>"$work/res"
    R delete --force "$1" || echo fail >>"$work/res"
}

phase_concurrent() {
    local i ok
    : >"$work/res"
    for ((i = 0; i < conc && SECONDS < deadline; i++)); do par 8 one_running "$rt-con-$i"; done
    par_wait
    ok=$(grep -c ok "$work/res" || true)
    fig[$rt,conc]=$ok/$conc
    ((ok == conc)) || fail "$((conc - ok)) of $conc concurrent containers did not run"
    : >"$work/res"
    for ((i = 0; i < conc; i++)); do
        [[ -d $root/$rt-con-$i ]] && par 8 one_gone "$rt-con-$i"
    done
    par_wait
    if grep -q lost "$work/res"; then lost "$(grep -c lost "$work/res") concurrent containers never stopped"; fi
    if grep -q fail "$work/res"; then fail "$(grep -c fail "$work/res") concurrent deletes failed"; fi
    rm -rf "$work"/b/"$rt"-con-*
    log "$rt: ${fig[$rt,conc]} concurrent containers ran"
}

one_exec() { # ID N
    local out
    out=$(env "$tag" timeout 30 "$rt_bin" --root "$root" exec "$1" sh -c "echo word-$2" </dev/null 2>>"$work/$rt.err") || true
    [[ $out == "word-$2" ]] && echo ok >>"$work/res"
    return 0
}

phase_execs() {
    local id=$rt-exec ok i
    one_running "$id" >/dev/null 2>&1
    : >"$work/res"
    for ((i = 0; i < execs; i++)); do par 8 one_exec "$id" "$i"; done
    par_wait
    ok=$(grep -c ok "$work/res" || true)
    fig[$rt,execs]=$ok/$execs
    ((ok == execs)) || fail "$((execs - ok)) of $execs concurrent execs failed"
    [[ $(status "$id") == running ]] || fail "the exec target is no longer running"
    : >"$work/res"
    one_gone "$id"
    grep -q . "$work/res" && fail "deleting the exec target"
    rm -rf "$work/b/$id"
    log "$rt: ${fig[$rt,execs]} concurrent execs answered"
}

race_one() { if R create --bundle "$work/b/$1" "$1"; then echo win >>"$work/res"; fi; }

phase_race() {
    local r j wins good=0 id
    for ((r = 0; r < races && SECONDS < deadline; r++)); do
        id=$rt-race-$r
        mkcfg "$work/b/$id" "$id" sleep 1000
        : >"$work/res"
        for ((j = 0; j < racers; j++)); do
            par "$racers" race_one "$id"
        done
        par_wait
        wins=$(grep -c win "$work/res" || true)
        if ((wins == 1)); then good=$((good + 1)); else fail "round $r: $wins of $racers creates of one id won"; fi
        [[ $(status "$id") == created ]] || fail "round $r: the winner is not created"
        R delete --force "$id" || fail "round $r: delete"
        rm -rf "$work/b/$id"
    done
    fig[$rt,race]=$good/$r
    log "$rt: $good of $r rounds had exactly one winner"
}

# kill9 ID DELAY CMD...: run the runtime's CMD, SIGKILL it after DELAY.
kill9() {
    local id=$1 delay=$2 pid
    shift 2
    env "$tag" timeout 30 "$rt_bin" --root "$root" "$@" </dev/null >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

phase_runtime_kill() {
    local d id n=0 ok=0
    for d in 0.001 0.005 0.02 0.05; do
        for step in create start delete; do
            left || break 2
            id=$rt-k9-$step-${d#0.}
            n=$((n + 1))
            mkcfg "$work/b/$id" "$id" sleep 1000
            case $step in
                create) kill9 "$id" "$d" create --bundle "$work/b/$id" "$id" ;;
                start) R create --bundle "$work/b/$id" "$id" || fail "$id: create"
                    kill9 "$id" "$d" start "$id" ;;
                delete) R create --bundle "$work/b/$id" "$id" && R start "$id" || fail "$id: create/start"
                    R kill "$id" KILL; wait_status "$id" stopped || lost "$id"
                    kill9 "$id" "$d" delete "$id" ;;
            esac
            # Recovery as a caller does it: a forced delete (which may find
            # nothing), then the id again.
            if [[ -n $(status "$id") ]]; then
                R delete --force "$id" || fail "$id: delete --force after kill -9"
            else
                R delete --force "$id" || true
            fi
            if R create --bundle "$work/b/$id" "$id" && R delete --force "$id"; then
                ok=$((ok + 1))
            else
                fail "$id: the id could not be created again after kill -9 during $step"
                R delete --force "$id"
            fi
            rm -rf "$work/b/$id"
        done
    done
    fig[$rt,k9]=$ok/$n
    log "$rt: $ok of $n kill -9 points recovered"
}

# The init killed from outside: the runtime must see it stopped.
phase_init_kill() {
    local id=$rt-initk pid
    : >"$work/res"
    one_running "$id"
    pid=$(init_pid "$id")
    if [[ $pid =~ ^[0-9]+$ && $pid != 0 ]]; then kill -9 "$pid"; else fail "$id: no init pid"; fi
    wait_status "$id" stopped || lost "$id: init killed -9, never stopped"
    R delete "$id" || { fail "$id: delete"; R delete --force "$id"; }
    rm -rf "$work/b/$id"
}

# --- the campaign through containerd -------------------------------------------
ctr_() { env "$tag" timeout 60 ctr --address "$sock" --namespace "$prefix" "$@"; }

start_containerd() {
    mkdir -p "$work/ctrd"
    PATH=$bindir:$PATH env "$tag" setsid containerd --config "$work/ctrd/config.toml" \
        </dev/null >>"$work/ctrd/containerd.log" 2>&1 &
    ctrd_pid=$!
    local i
    for ((i = 0; i < 200; i++)); do
        if [[ -S $sock ]] && ctr_ version >/dev/null 2>&1; then
            # Exit events, for exit_status.
            env "$tag" ctr --address "$sock" --namespace "$prefix" events >>"$work/ctrd/events.log" 2>/dev/null &
            events_pid=$!
            return 0
        fi
        kill -0 "$ctrd_pid" 2>/dev/null || break
        sleep 0.1
    done
    die "containerd did not start: $(tail -n 3 "$work/ctrd/containerd.log" | tr '\n' ' ')"
}
stop_containerd() {
    [[ -n $ctrd_pid ]] || return 0
    kill "$ctrd_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$ctrd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$ctrd_pid" 2>/dev/null || true
    wait "$ctrd_pid" 2>/dev/null || true
    ctrd_pid=
}

setup_containerd() {
    mkdir -p "$work/ctrd"
    cat >"$work/ctrd/config.toml" <<TOML
version = 2
root = "$work/ctrd/root"
state = "$work/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"
TOML
    printf 'BinaryName = "%s"\nRoot = "%s"\n' "$skiff_bin" "$work/ctr-root-skiff" >"$work/ctrd/skiff.toml"
    start_containerd
    # A busybox OCI image: one uncompressed layer (the bundle's rootfs).
    local l=$work/ctrd/image layer ls cfg cs man ms
    mkdir -p "$l/blobs/sha256"
    blob() { local h s; h=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1"); mv "$1" "$l/blobs/sha256/$h"; printf 'sha256:%s %s\n' "$h" "$s"; }
    tar --numeric-owner -C "$rootfs" -cf "$l/layer.tar" .
    read -r layer ls < <(blob "$l/layer.tar")
    jq -nc --arg l "$layer" '{architecture: "amd64", os: "linux", config: {Cmd: ["sh"],
        Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}, rootfs: {type: "layers", diff_ids: [$l]}}' >"$l/c.json"
    read -r cfg cs < <(blob "$l/c.json")
    jq -nc --arg c "$cfg" --argjson cs "$cs" --arg l "$layer" --argjson ls "$ls" '{schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
        layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls}]}' >"$l/m.json"
    read -r man ms < <(blob "$l/m.json")
    jq -nc --arg m "$man" --argjson ms "$ms" --arg n "$image" '{schemaVersion: 2, manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
        annotations: {"io.containerd.image.name": $n, "org.opencontainers.image.ref.name": "latest"}}]}' >"$l/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$l/oci-layout"
    tar -C "$l" -cf "$work/ctrd/busybox.tar" oci-layout index.json blobs
    ctr_ images import "$work/ctrd/busybox.tar" >/dev/null || die "ctr images import failed"
}
image=docker.io/library/skiff-soak-busybox:latest

# crun_ ID [--pod] ARGS...: ctr run -d with the current runtime.
crun_() {
    local id=$1 extra=()
    shift
    if [[ $1 == --pod ]]; then extra=(--annotation "io.kubernetes.cri.sandbox-id=$rt-pod"); shift; fi
    case $rt in
        skiff) extra+=(--runtime io.containerd.skiff.v2 --runtime-config-path "$work/ctrd/skiff.toml") ;;
        runc) extra+=(--runtime io.containerd.runc.v2 --runc-root "$work/ctr-root-runc") ;;
    esac
    ctr_ run -d --null-io "${extra[@]}" "$image" "$id" "$@" >/dev/null 2>>"$work/$rt.err"
}
crm() { # ID...: remove tasks and containers
    local id
    for id in "$@"; do
        ctr_ task rm -f "$id" >/dev/null 2>&1 || true
        ctr_ containers rm "$id" >/dev/null 2>&1 || true
    done
}
task_pid() { ctr_ task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $2 }'; }
task_status() { ctr_ task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }'; }
# exit_status ID: the init's exit status from the /tasks/exit event that
# containerd published (ctr events runs beside containerd), within 10 s; the
# task is removed afterwards.
exit_status() {
    local i st=
    for ((i = 0; i < 100; i++)); do
        st=$(grep -F '/tasks/exit' "$work/ctrd/events.log" 2>/dev/null |
            grep -F "\"container_id\":\"$1\"" | grep -F "\"id\":\"$1\"" |
            sed -n 's/.*"exit_status":\([0-9]*\).*/\1/p' | tail -n 1)
        [[ -n $st ]] && break
        sleep 0.1
    done
    ctr_ task rm -f "$1" >/dev/null 2>&1 || true
    echo "${st:-none}"
}
shim_of() { # ID: the shim serving it (its cmdline names the containerd socket and the id or pod)
    local pid
    pid=$(task_pid "$1")
    [[ -n $pid ]] && awk '{ print $4 }' "/proc/$pid/stat" 2>/dev/null
}
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null; }

ctr_exec_one() { # ID N
    local out
    out=$(ctr_ task exec --exec-id "x$2" "$1" sh -c "echo word-$2" 2>>"$work/$rt.err" </dev/null) || true
    [[ $out == "word-$2" ]] && echo ok >>"$work/res"
    return 0
}

phase_containerd() {
    local pod=$rt-pod shim fd0 fd1 rss0 rss1 ok i pid st n=0 good=0
    crun_ "$pod" --pod sleep 1000 || { fail "ctr run $pod"; return; }
    shim=$(shim_of "$pod")
    # Warm up once, so that lazily built state is not counted as a leak.
    : >"$work/res"; ctr_exec_one "$pod" warm
    fd0=$(fds "$shim") rss0=$(rss "$shim")

    # Concurrent execs through the shim.
    : >"$work/res"
    for ((i = 0; i < ctr_execs; i++)); do par 4 ctr_exec_one "$pod" "$i"; done
    par_wait
    ok=$(grep -c ok "$work/res" || true)
    fig[$rt,ctrexec]=$ok/$ctr_execs
    ((ok == ctr_execs)) || fail "$((ctr_execs - ok)) of $ctr_execs execs through the shim failed"

    # kill -9 of an exec: ctr task exec must return 137.
    n=$((n + 1))
    ctr_ task exec --exec-id k9 "$pod" sleep 1000 </dev/null >/dev/null 2>&1 &
    local ex=$! before
    for ((i = 0; i < 100; i++)); do
        pid=$(ctr_ task ps "$pod" 2>/dev/null | awk -v init="$(task_pid "$pod")" 'NR > 1 && $1 != init { print $1 }' | head -n 1)
        [[ -n $pid ]] && break
        sleep 0.05
    done
    if [[ -n $pid ]]; then kill -9 "$pid"; fi
    st=0; wait "$ex" || st=$?
    if ((st == 137)); then good=$((good + 1)); else lost "exec killed -9: ctr task exec returned $st"; fi

    # kill -9 of a container's init (a second container of the pod, same shim).
    n=$((n + 1))
    crun_ "$rt-init" --pod sleep 1000 || fail "ctr run $rt-init"
    pid=$(task_pid "$rt-init")
    [[ -n $pid && $pid != 0 ]] && kill -9 "$pid"
    st=$(exit_status "$rt-init")
    if [[ $st == 137 ]]; then good=$((good + 1)); else lost "init killed -9: ctr task exit event '${st}'"; fi
    crm "$rt-init"

    fd1=$(fds "$shim") rss1=$(rss "$shim")
    fig[$rt,shimfd]=$((fd1 - fd0))
    fig[$rt,shimrss]=$((rss1 - rss0))
    log "$rt: pod shim fds $fd0 -> $fd1, RSS $rss0 -> $rss1 KiB"
    ((fd1 <= fd0)) || fail "the pod shim holds $((fd1 - fd0)) more fds after the exec and kill phase"
    crm "$pod"

    # kill -9 of a shim: containerd must clean up after it.
    n=$((n + 1))
    crun_ "$rt-shimk" sleep 1000 || fail "ctr run $rt-shimk"
    shim=$(shim_of "$rt-shimk")
    before=$(task_pid "$rt-shimk")
    [[ -n $shim ]] && kill -9 "$shim"
    for ((i = 0; i < 100; i++)); do
        st=$(task_status "$rt-shimk")
        [[ $st != RUNNING ]] && break
        sleep 0.1
    done
    crm "$rt-shimk"
    for ((i = 0; i < 50; i++)); do
        [[ -n $before && -e /proc/$before && $(awk '{ print $3 }' "/proc/$before/stat" 2>/dev/null) != Z ]] || break
        sleep 0.1
    done
    if [[ -n $before && -e /proc/$before && $(awk '{ print $3 }' "/proc/$before/stat" 2>/dev/null) != Z ]]; then
        fail "the init of $rt-shimk survived its shim's kill -9 and task rm -f"
    else
        good=$((good + 1))
    fi

    # kill -9 of containerd with containers running; one init dies meanwhile.
    n=$((n + 1))
    local ids=("$rt-live-1" "$rt-live-2" "$rt-live-3")
    for i in "${ids[@]}"; do crun_ "$i" sleep 1000 || fail "ctr run $i"; done
    pid=$(task_pid "${ids[2]}")
    kill -9 "$ctrd_pid"; wait "$ctrd_pid" 2>/dev/null || true; ctrd_pid=
    [[ -n $pid ]] && kill -9 "$pid"
    sleep 0.5
    start_containerd
    local okc=1
    for i in "${ids[@]:0:2}"; do
        [[ $(task_status "$i") == RUNNING ]] || { fail "$i is not RUNNING after containerd's restart"; okc=0; }
    done
    # containerd learns of it from the shim after the restart: STOPPED, and
    # 137 if the shim's exit event came after ctr events subscribed again.
    for ((i = 0; i < 100; i++)); do [[ $(task_status "${ids[2]}") == STOPPED ]] && break; sleep 0.1; done
    local stopped
    stopped=$(task_status "${ids[2]}")
    st=$(exit_status "${ids[2]}")
    if [[ $st != 137 && ($st != none || $stopped != STOPPED) ]]; then
        lost "init killed while containerd was down: task ${stopped:-gone}, exit event '${st}'"
        okc=0
    fi
    for i in "${ids[@]:0:2}"; do
        ctr_ task kill -s KILL "$i" >/dev/null 2>&1 || true
        st=$(exit_status "$i")
        [[ $st == 137 ]] || { lost "$i after containerd's restart: exit event '${st}'"; okc=0; }
    done
    crm "${ids[@]}"
    ((okc)) && good=$((good + 1))
    fig[$rt,ctrk9]=$good/$n
    # Shims exit once their last container is gone; give them a moment.
    for ((i = 0; i < 50; i++)); do
        [[ -z $(pgrep -f -- "containerd-shim-$rt-v2 .*$sock" || true) ]] && break
        sleep 0.1
    done
    log "$rt: containerd faults: $good of $n handled"
}

# --- run -------------------------------------------------------------------------
setup_containerd
for rt in "${runtimes[@]}"; do
    case $rt in skiff) rt_bin=$skiff_bin ;; runc) rt_bin=$(command -v runc) ;; esac
    root=$work/root-$rt
    mkdir -p "$root"
    : >"$work/$rt.err"
    deadline=$((SECONDS + limit))
    fig[$rt,errors]=0 fig[$rt,lost]=0
    read -r -a s0 < <(snapshot)
    details | sort >"$work/before"
    log "== $rt ($rt_bin): $cycles cycles, $conc concurrent, time limit $limit s =="
    fig[$rt,cut]=no
    phase_cycles
    for ph in phase_concurrent phase_execs phase_race phase_runtime_kill phase_init_kill phase_containerd; do
        if left; then $ph; else fig[$rt,cut]=yes; log "$rt: time limit: $ph skipped"; fi
    done
    sleep 0.5
    read -r -a s1 < <(snapshot)
    details | sort | comm -13 "$work/before" - | sed "s/^/soak: $rt: left behind: /" >&2
    for k in 0 1 2 3 4; do
        d=$((s1[k] - s0[k]))
        fig[$rt,leak$k]=$((d > 0 ? d : 0))
    done
    fig[$rt,time]=$((SECONDS - deadline + limit))
done
stop_containerd

# --- report ----------------------------------------------------------------------
row() { printf '%-22s' "$1"; shift; printf ' %14s' "$@"; printf '\n'; }
printf '\nsoak: %s run, %s cycles, %s concurrent, time limit %s s per runtime\n' \
    "$( ((quick)) && echo quick || echo full)" "$cycles" "$conc" "$limit"
row "" "${runtimes[@]}"
get() { local r out=(); for r in "${runtimes[@]}"; do out+=("${fig[$r,$1]:--}"); done; printf '%s\n' "${out[@]}"; }
line() { local label=$1; mapfile -t v < <(get "$2"); row "$label" "${v[@]}"; }
line "cycles done" cycles
line "cycles/s" rate
line "concurrent running" conc
line "concurrent execs" execs
line "one-id races, 1 win" race
line "runtime kill -9 ok" k9
line "ctr execs" ctrexec
line "ctr kill -9 ok" ctrk9
line "lost exits" lost
line "failed checks" errors
line "leak: mounts" leak0
line "leak: cgroup dirs" leak1
line "leak: processes" leak2
line "leak: zombies" leak3
line "leak: state dirs" leak4
line "leak: shim fds" shimfd
line "shim RSS delta KiB" shimrss
line "seconds" time
line "phases skipped" cut

bad=0
if [[ " ${runtimes[*]} " == *" skiff "* ]]; then
    for k in lost errors leak0 leak1 leak2 leak3 leak4; do
        ((${fig[skiff,$k]:-0} == 0)) || bad=1
    done
    ((${fig[skiff,shimfd]:-0} <= 0)) || bad=1
    if ((bad)); then
        printf 'soak: FAILED: skiff leaked, lost an exit or failed a check (details above, stderr of its commands in the log)\n'
        tail -n 20 "$work/skiff.err" >&2 || true
        exit 1
    fi
fi
printf 'soak: no skiff leak, lost exit or failed check\n'
