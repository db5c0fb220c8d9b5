#!/usr/bin/env bash
# Turn what scripts/bench.sh measured into its outputs: one results JSON, the
# table on stdout, bench/README.md and the chart.
#
#   report.sh WORK RESULTS_JSON README CHART
#   report.sh --from RESULTS_JSON README CHART   (redraw from a saved run)
#
# WORK holds meta.json, notes, sections.tsv (section, label, unit),
# json/<section>.json (hyperfine exports), rss.tsv (runtime, median, min,
# max, n) and shim-rss.tsv (shim, containers, processes, RSS, PSS, threads).
# Each row of the results has per-runtime values (value = mean for times,
# median for the runtime's RSS) and the raw hyperfine export where there is one.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [[ $1 == --from ]]; then
    results=$2 readme=$3 chart=$4
    [[ -f $results ]] || { echo "report: $results not found" >&2; exit 1; }
    work=$(mktemp -d /tmp/skiff-bench-report.XXXXXX)
    trap 'rm -rf -- "$work"' EXIT
else
    work=$1 results=$2 readme=$3 chart=$4
fi

# --- rows (from the measurements in WORK) -------------------------------------
build_results() {
rows=$work/rows
rm -rf "$rows"
mkdir -p "$rows"

# --- rows -------------------------------------------------------------------
i=0
if [[ -f $work/sections.tsv ]]; then
    while IFS=$'\t' read -r sec label _unit; do
        # A section's exports: json/<section>@<runtime>.json, one per runtime.
        files=("$work/json/$sec@"*.json)
        [[ -f ${files[0]} ]] || continue
        i=$((i + 1))
        jq -s --arg id "$sec" --arg lbl "$label" '{
            "id": $id, "label": $lbl, "kind": "time", "unit": "ms",
            "values": (map(.results[]) | map({key: .command, value: {
                value: (.mean * 1000), spread: (.stddev // 0 | . * 1000),
                median: (.median * 1000), min: (.min * 1000), max: (.max * 1000),
                user: (if .user == null then null else .user * 1000 end),
                system: (if .system == null then null else .system * 1000 end), runs: (.times | length)}})
                | from_entries),
            "hyperfine": map(.results[])}' "${files[@]}" >"$rows/$(printf '%03d' "$i").json"
    done <"$work/sections.tsv"
fi
if [[ -s $work/rss.tsv ]]; then
    i=$((i + 1))
    jq -R -s '{"id": "rss-create", "label": "peak RSS of create", "kind": "memory", "unit": "KiB",
        "values": (split("\n") | map(select(length > 0) | split("\t")) | map({key: .[0], value: {
            value: (.[1] | tonumber), min: (.[2] | tonumber), max: (.[3] | tonumber),
            runs: (.[4] | tonumber)}}) | from_entries)}' "$work/rss.tsv" >"$rows/$(printf '%03d' "$i").json"
fi
if [[ -s $work/shim-rss.tsv ]]; then
    for what in rss pss; do
        for n in $(cut -f2 "$work/shim-rss.tsv" | sort -nu); do
            i=$((i + 1))
            jq -R -s --arg what "$what" --argjson n "$n" '{
                "id": "shim-\($what)-\($n)", "kind": "memory", "unit": "KiB",
                "label": "shim \($what | ascii_upcase) per pod, \($n) ctr",
                "values": (split("\n") | map(select(length > 0) | split("\t"))
                    | map(select(.[1] == ($n | tostring))) | map({key: .[0], value: {
                        value: (if $what == "rss" then .[3] else .[4] end | tonumber),
                        processes: (.[2] | tonumber), threads: (.[5] // "0" | tonumber)}}) | from_entries)}' \
                "$work/shim-rss.tsv" >"$rows/$(printf '%03d' "$i").json"
        done
    done
fi

if [[ -s $work/shim-pods.tsv ]]; then
    for what in pss rss; do
        for n in $(cut -f2 "$work/shim-pods.tsv" | sort -nu); do
            i=$((i + 1))
            jq -R -s --arg what "$what" --argjson n "$n" '{
                "id": "shim-pods-\($what)-\($n)", "kind": "memory", "unit": "KiB",
                "label": "shim \($what | ascii_upcase) per pod, \($n) pods",
                "values": (split("\n") | map(select(length > 0) | split("\t"))
                    | map(select(.[1] == ($n | tostring))) | map({key: .[0], value: {
                        value: ((if $what == "rss" then .[3] else .[4] end | tonumber) / $n),
                        processes: (.[2] | tonumber)}}) | from_entries)}' \
                "$work/shim-pods.tsv" >"$rows/$(printf '%03d' "$i").json"
        done
    done
fi

if [[ -s $work/shim-rss.tsv ]] && awk -F'\t' 'NF >= 6 { found = 1 } END { exit !found }' "$work/shim-rss.tsv"; then
    for n in $(cut -f2 "$work/shim-rss.tsv" | sort -nu); do
        i=$((i + 1))
        jq -R -s --argjson n "$n" '{
            "id": "shim-threads-\($n)", "kind": "count", "unit": "threads",
            "label": "shim threads per pod, \($n) ctr",
            "values": (split("\n") | map(select(length > 0) | split("\t"))
                | map(select(.[1] == ($n | tostring))) | map({key: .[0], value: {
                    value: (.[5] | tonumber)}}) | from_entries)}' \
            "$work/shim-rss.tsv" >"$rows/$(printf '%03d' "$i").json"
    done
fi

jq -n --slurpfile meta "$work/meta.json" --rawfile notes "$work/notes" \
    --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '
    {meta: ($meta[0] + {load_after: $load}), notes: ($notes | split("\n") | map(select(length > 0))),
     rows: [inputs]}' "$rows"/*.json >"$results"
}
[[ $1 == --from ]] || build_results

# --- the table ----------------------------------------------------------------
# Cells: "mean ± sd ms" for times, "x.xx MiB" for memory; ratios of the values.
table_jq='
    def f2: (. * 100 | round) as $x | "\($x / 100 | floor).\($x % 100 | tostring | if length < 2 then "0" + . else . end)";
    def cell: if . == null then "–"
        elif .unit == "ms" then "\(.v.value | f2) ± \(.v.spread | f2) ms"
        elif .unit == "KiB" then "\(.v.value / 1024 | f2) MiB"
        else "\(.v.value) \(.unit)" end;
    def ratio($a; $b): if $a == null or $b == null or $b.value == 0 then "–"
        else (($a.value / $b.value) | f2) end;
    .rows[] | . as $r
    | [$r.label]
      + (["skiff", "runc", "crun", "floor"] | map($r.values[.] as $v | if $v == null then "–" else ({v: $v, unit: $r.unit} | cell) end))
      + [ratio($r.values.skiff; $r.values.runc), ratio($r.values.skiff; $r.values.crun),
         ratio($r.values.skiff; $r.values.floor)]'
{
    printf 'benchmark\tskiff\trunc\tcrun\tfloor\tskiff/runc\tskiff/crun\tskiff/floor\n'
    jq -r "$table_jq | @tsv" "$results"
} | column -t -s $'\t' -o '   '

# CPU time (user + system) of the timed commands: steadier than wall time
# when the machine is busy with other work. Not for ctr-run nor the CRI rows:
# the shim is not a child of the client, so only the client's CPU would be
# counted.
cpu_jq='
    def f2: (. * 100 | round) as $x | "\($x / 100 | floor).\($x % 100 | tostring | if length < 2 then "0" + . else . end)";
    def cpu: if . == null or .user == null then null else .user + .system end;
    def ratio($a; $b): if $a == null or $b == null or $b == 0 then "–" else (($a / $b) | f2) end;
    .rows[] | select(.kind == "time" and .id != "ctr-run" and (.id | startswith("cri") | not)) | . as $r
    | [$r.label]
      + (["skiff", "runc", "crun", "floor"] | map($r.values[.] | cpu | if . == null then "–" else "\(f2) ms" end))
      + [ratio($r.values.skiff | cpu; $r.values.runc | cpu), ratio($r.values.skiff | cpu; $r.values.crun | cpu),
         ratio($r.values.skiff | cpu; $r.values.floor | cpu)]'
echo
echo "CPU time (user + system, mean per run):"
{
    printf 'benchmark\tskiff\trunc\tcrun\tfloor\tskiff/runc\tskiff/crun\tskiff/floor\n'
    jq -r "$cpu_jq | @tsv" "$results"
} | column -t -s $'\t' -o '   '

# --- README -------------------------------------------------------------------
{
    cat <<'HEAD'
# Benchmarks

Written by `scripts/bench.sh` (see its header for the options); the raw
results of every run, with every hyperfine export, are in `results/`. This
page shows the latest run; `scripts/bench/report.sh --from results/<run>.json
bench/README.md bench/chart.png` redraws it from a saved one.

HEAD
    jq -r '.meta | "Run \(.date) (\(.mode) mode) on \(.cpu), \(.cores) cores, Linux \(.kernel), cgroup \(.cgroup); skiff \(.skiff_version), \(.runc), \(.crun), hyperfine \(.hyperfine)\(if .containerd then ", containerd \(.containerd)" else "" end). Load average \(.load_before) before the run and \(.load_after) after it.\n"' "$results"
    cat <<'EXPLAIN'
Times are hyperfine's mean ± standard deviation of the wall time; memory is
the median peak RSS of the runtime process over its runs, and the shims' RSS
and PSS summed over the shim processes serving one pod (read from
`/proc/<pid>/smaps_rollup`). In the shim rows the skiff column is
`containerd-shim-skiff-v2` driving skiff and the runc column is containerd's
`containerd-shim-runc-v2` driving runc. Ratios below 1 mean skiff is faster
or smaller.

Reading the wall times: moving a process into a cgroup by pid (writing
`cgroup.procs`, as runc and crun do on cgroup v1 hosts) takes the kernel's
global threadgroup lock, whose first writer after a quiet moment waits for
an RCU grace period, about 5 to 15 ms on the development machines. skiff
avoids that lock (`CLONE_INTO_CGROUP` for cgroup2 directories, and the new
process writing itself into each v1 hierarchy's `tasks` file), so runc and
crun pay the wait and skiff does not; it is also most of their spread. The
CPU-time table below the main one is steadier for comparing the runtimes'
own work.

The floor column is `bench/floor.c`, built by the bench with `cc`: the
least any runtime must ask the kernel for to run this bundle, with no
runtime around it. It makes the container's cgroup in every hierarchy (a v1
cpuset gets its parent's cpus and mems), clone3s with the spec's namespaces
(pid, net, ipc, uts, mount, cgroup), and in the child joins the v1 cgroups,
bind-mounts the rootfs, mounts proc, the /dev tmpfs, devpts, /dev/shm,
mqueue and sysfs, pivot_roots, detaches the old root, remounts the root
read-only, sets the hostname and execs /bin/true; the parent waits and
removes the cgroups. It skips the policy a runtime adds (device nodes,
masked and read-only paths, the cgroup mount, capabilities, rlimits,
no_new_privs, the state file, hooks), so skiff/floor is what skiff costs on
top of the kernel's unavoidable work. It runs in the same row, the same
mount namespace and the same hyperfine session as the runtimes.

The CRI rows (integration/src/bin/cri-bench.rs) drive a private containerd
with its CRI plugin, as a kubelet would: pod start is RunPodSandbox +
CreateContainer + StartContainer of a `sleep` (a pause sandbox and one app
container), ExecSync runs `/bin/true` in it, pod stop is StopPodSandbox +
RemovePodSandbox. The skiff column is skiff's handler
(`containerd-shim-skiff-v2` + skiff), the runc column containerd's runc
handler (`containerd-shim-runc-v2` + runc); the two alternate pod by pod.
They are wall times of the CRI calls only (the work is in containerd and
the shims, so they have no CPU-time row).

PSS divides shared pages among the processes that map them, so a shim's PSS
drops when other shims of the same binary run on the machine (containerd's
runc shim is common); RSS does not depend on them.

| benchmark | skiff | runc | crun | floor | skiff/runc | skiff/crun | skiff/floor |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EXPLAIN
    jq -r "$table_jq | \"| \" + join(\" | \") + \" |\"" "$results"
    echo
    cat <<'CPUTABLE'
CPU time of the same commands (hyperfine's user + system, mean per run),
steadier than wall time when the machine is busy:

| benchmark | skiff | runc | crun | floor | skiff/runc | skiff/crun | skiff/floor |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
CPUTABLE
    jq -r "$cpu_jq | \"| \" + join(\" | \") + \" |\"" "$results"
    echo
    if jq -e '.notes | length > 0' "$results" >/dev/null; then
        echo "Notes:"
        echo
        jq -r '.notes[] | "- " + .' "$results"
        echo
    fi
    echo '![skiff, runc and crun side by side](chart.png)'
} >"$readme"

# --- chart --------------------------------------------------------------------
data=$work/chart
mkdir -p "$data"
# One data file per panel: label, then value and spread for skiff, runc, crun
# ("?" where missing); times in ms, memory in MiB.
panel() { # FILE JQ_SELECT SCALE
    jq -r --argjson scale "$3" "
        .rows[] | select($2) | . as \$r
        | [\$r.label] + ([\"skiff\", \"runc\", \"crun\"] | map(\$r.values[.] as \$v
            | if \$v == null then \"?\", \"?\" else (\$v.value / \$scale), ((\$v.spread // 0) / \$scale) end))
        | map(tostring) | .[0] |= \"\\\"\" + . + \"\\\"\" | join(\" \")" "$results" >"$data/$1"
}
panel single.dat '.kind == "time" and (.id | test("^(run|lifecycle|exec|mounts-)"))' 1
panel concurrent.dat '.id | test("^concurrent-")' 1
panel shim.dat '.id == "ctr-run"' 1
panel memory.dat '.kind == "memory"' 1024
subtitle=$(jq -r '.meta | "\(.date), \(.mode) mode, \(.cores) cores, 1-minute load \(.load_before | split(" ")[0]) before the run and \(.load_after | split(" ")[0]) after"' "$results")
count() { wc -l <"$data/$1"; }
gnuplot -e "datadir='$data'; out='$chart'; subtitle='${subtitle//\'/}'; n_single=$(count single.dat); \
n_concurrent=$(count concurrent.dat); n_shim=$(count shim.dat); n_memory=$(count memory.dat)" "$here/chart.gp"
