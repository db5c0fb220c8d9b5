#!/usr/bin/env bash
# The runtime half of scripts/bench.sh: skiff, runc and crun side by side.
# scripts/bench.sh runs this inside a private mount namespace
# (`unshare -m --propagation private`), never directly.
#
# crun refuses hybrid cgroup hosts, so on one this hides the host's empty
# cgroup2 mount (/sys/fs/cgroup/unified) inside that private namespace only,
# and all three runtimes are measured there: the same pure cgroup v1 view,
# and no per-call wrapper that would add its own cost to one runtime's times.
#
# Input (environment, set by scripts/bench.sh): BENCH_WORK, BENCH_REPO,
# BENCH_PREFIX, BENCH_RUNTIMES ("name:path ..."), BENCH_RUNS, BENCH_WARMUP,
# BENCH_SCALE_RUNS, BENCH_RSS_RUNS, BENCH_MOUNTS, BENCH_CONCURRENCY.
# Output, under BENCH_WORK: json/<section>.json (hyperfine exports),
# sections.tsv (section, label, unit), rss.tsv, notes.
set -euo pipefail

# shellcheck source=scripts/bench/common.sh
source "$BENCH_REPO/scripts/bench/common.sh"

work=$BENCH_WORK
prefix=$BENCH_PREFIX
here=$BENCH_REPO/scripts/bench
bundles=$work/bundles

declare -A bin=()
names=()
for pair in $BENCH_RUNTIMES; do
    names+=("${pair%%:*}")
    bin[${pair%%:*}]=${pair#*:}
done

root_of() { printf '%s/state/%s' "$work" "$1"; }

cleanup() {
    local n
    for n in "${names[@]}"; do
        delete_all_in "${bin[$n]}" -- "$(root_of "$n")"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- the cgroup view -----------------------------------------------------------
if cgroup_hybrid; then
    hide_unified_in_private_ns || die "could not hide /sys/fs/cgroup/unified in the private mount namespace"
    note "hybrid cgroup host: crun refuses it, so skiff, runc and crun all ran in one private mount namespace in which /sys/fs/cgroup/unified is unmounted and covered by an empty private tmpfs (a pure cgroup v1 view; the host's mount is untouched). crun still makes its cgroup v2 directory there and writes cgroup.procs, which on the tmpfs costs a mkdir and a small write"
fi

# --- which runtimes work here --------------------------------------------------
section "smoke test"
kept=()
for n in "${names[@]}"; do
    mkdir -p "$(root_of "$n")"
    if out=$(timeout 60 "${bin[$n]}" --root "$(root_of "$n")" run --bundle "$bundles/true" "$prefix-smoke" 2>&1 </dev/null); then
        log "$n: ok (${bin[$n]})"
        kept+=("$n")
    else
        note "$n left out: \`$n run\` of /bin/true failed: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
        delete_all_in "${bin[$n]}" -- "$(root_of "$n")"
    fi
done
names=("${kept[@]}")
((${#names[@]} > 0)) || die "no runtime could run /bin/true"

# --- hyperfine ------------------------------------------------------------------
# bench SECTION LABEL WARMUP RUNS CMD_FN [ARG]
#   CMD_FN is a function printing, for a runtime name (and ARG), the command
#   line to time. One hyperfine call per runtime (hyperfine runs its commands
#   one after the other anyway), so that one runtime failing leaves the
#   others' numbers. Never fatal.
bench() {
    local sec=$1 label=$2 warm=$3 runs=$4 fn=$5 arg=${6:-} n
    section "$label"
    add_section "$sec" "$label"
    for n in "${names[@]}"; do
        hyperfine_one "$sec" "$label" "$n" "$warm" "$runs" "$("$fn" "$n" "$arg")" ||
            delete_all_in "${bin[$n]}" -- "$(root_of "$n")"
        clear_private_unified
    done
}

cmd_run() { cmdline "${bin[$1]}" --root "$(root_of "$1")" run --bundle "$bundles/true" "$prefix-run"; }
bench run "run /bin/true" "$BENCH_WARMUP" "$BENCH_RUNS" cmd_run
# The kernel floor (bench/floor.c) in the same row, the same namespace and
# cgroup view: what any runtime must ask the kernel for to run this bundle.
if [[ -x ${BENCH_FLOOR:-} ]]; then
    hyperfine_one run "run /bin/true" floor "$BENCH_WARMUP" "$BENCH_RUNS" \
        "$(cmdline "$BENCH_FLOOR" "$bundles/true/rootfs" "$prefix-floor")" || true
    clear_private_unified
fi

cmd_life() { cmdline sh "$here/lifecycle.sh" "${bin[$1]}" "$(root_of "$1")" "$bundles/true" "$prefix-life"; }
bench lifecycle "create+start+delete" "$BENCH_WARMUP" "$BENCH_RUNS" cmd_life

# exec: one long-running container per runtime, deleted after.
exec_ok=1
for n in "${names[@]}"; do
    if ! timeout 60 "${bin[$n]}" --root "$(root_of "$n")" run -d --bundle "$bundles/sleep" "$prefix-exec" \
        </dev/null >/dev/null 2>"$work/exec-$n.err"; then
        note "exec: \`$n run -d\` of the sleep container failed: $(tail -n 2 "$work/exec-$n.err" | tr '\n' ' ')"
        exec_ok=0
    fi
done
cmd_exec() { cmdline "${bin[$1]}" --root "$(root_of "$1")" exec "$prefix-exec" /bin/true; }
((exec_ok)) && bench exec "exec /bin/true" "$BENCH_WARMUP" "$BENCH_RUNS" cmd_exec
for n in "${names[@]}"; do
    timeout 30 "${bin[$n]}" --root "$(root_of "$n")" delete --force "$prefix-exec" >/dev/null 2>&1 || true
done

# Scaling with the number of mounts in the spec.
cmd_mounts() { cmdline "${bin[$1]}" --root "$(root_of "$1")" run --bundle "$bundles/mounts-$2" "$prefix-m$2"; }
for m in $BENCH_MOUNTS; do
    bench "mounts-$m" "run +$m mounts" "$BENCH_WARMUP" "$BENCH_RUNS" cmd_mounts "$m"
done

# Scaling with concurrent creates (wall time to create N, then delete N).
cmd_conc() { cmdline sh "$here/concurrent.sh" "$2" "${bin[$1]}" "$(root_of "$1")" "$bundles/true" "$prefix-c$2"; }
for c in $BENCH_CONCURRENCY; do
    runs=$BENCH_SCALE_RUNS warm=1
    ((c == 1)) && runs=$BENCH_RUNS warm=$BENCH_WARMUP
    bench "concurrent-$c" "$c concurrent create+delete" "$warm" "$runs" cmd_conc "$c"
done

# --- peak RSS during create ----------------------------------------------------
# GNU time's %M is the ru_maxrss of the runtime process (the largest of it and
# the helpers it waited for, not a sum); the container init it leaves behind
# blocked on exec.fifo is not counted.
section "peak RSS of \`create\` (KiB, ${BENCH_RSS_RUNS} runs each)"
for n in "${names[@]}"; do
    vals=()
    for ((i = 1; i <= BENCH_RSS_RUNS; i++)); do
        id=$prefix-rss-$i
        if /usr/bin/time -q -f %M -o "$work/rss.one" \
            "${bin[$n]}" --root "$(root_of "$n")" create --bundle "$bundles/true" "$id" \
            </dev/null >/dev/null 2>&1; then
            vals+=("$(tail -n 1 "$work/rss.one")")
        fi
        timeout 30 "${bin[$n]}" --root "$(root_of "$n")" delete --force "$id" >/dev/null 2>&1 || true
    done
    clear_private_unified
    if ((${#vals[@]} == 0)); then
        note "peak RSS: every \`$n create\` failed"
        continue
    fi
    printf '%s\n' "${vals[@]}" | sort -n | awk -v n="$n" '
        { v[NR] = $1 }
        END {
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s\t%s\t%s\t%s\t%s\n", n, med, v[1], v[NR], NR
        }' | tee -a "$work/rss.tsv" |
        awk -F'\t' '{ printf "%-6s median %s KiB (min %s, max %s, n=%s)\n", $1, $2, $3, $4, $5 }' >&2
done
