#!/usr/bin/env bash
# The shim half of scripts/bench.sh: `ctr run --rm` through our shim
# (containerd-shim-skiff-v2 driving skiff) against containerd's runc shim
# (containerd-shim-runc-v2 driving runc), and each shim's memory per pod
# with 1, 10 and 50 running containers.
#
# It starts a private containerd (own config, root, state, sockets and
# namespace, all under BENCH_WORK/ctrd) and imports a busybox image built here
# as an OCI archive. scripts/bench.sh's cleanup stops that containerd and
# everything it started, even if this script is interrupted.
#
# Input (environment): BENCH_WORK, BENCH_REPO, BENCH_PREFIX, BENCH_BIN_DIR
# (where skiff and containerd-shim-skiff-v2 are), BENCH_ROOTFS, BENCH_WARMUP,
# BENCH_SHIM_RUNS, BENCH_PODS, BENCH_MANY_PODS. Output under BENCH_WORK:
# json/ctr-run.json, sections.tsv, shim-rss.tsv (shim, containers, processes,
# RSS KiB, PSS KiB, threads), shim-pods.tsv (shim, pods, processes, RSS KiB,
# PSS KiB: sums over every shim process), notes. Exits 0 after a note when something is unusable.
set -euo pipefail

# shellcheck source=scripts/bench/common.sh
source "$BENCH_REPO/scripts/bench/common.sh"

work=$BENCH_WORK
prefix=$BENCH_PREFIX
dir=$work/ctrd
sock=$dir/c.sock
ns=$prefix-ns
image=docker.io/library/skiff-bench-busybox:latest

skip() { note "shim benchmarks skipped: $*"; exit 0; }

for tool in containerd ctr containerd-shim-runc-v2; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
done
[[ -x $BENCH_BIN_DIR/containerd-shim-skiff-v2 ]] || skip "containerd-shim-skiff-v2 was not built"

ctrc() { timeout 60 ctr --address "$sock" --namespace "$ns" "$@"; }

# --- a private containerd ----------------------------------------------------
section "private containerd"
mkdir -p "$dir"
cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"
TOML
# The shim is found on containerd's PATH; skiff beside it is its runtime.
PATH=$BENCH_BIN_DIR:$PATH setsid containerd --config "$dir/config.toml" \
    </dev/null >"$dir/containerd.log" 2>&1 &
echo $! >"$dir/containerd.pid"
for ((i = 0; i < 200; i++)); do
    [[ -S $sock ]] && ctrc version >/dev/null 2>&1 && break
    kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || skip "containerd exited: $(tail -n 3 "$dir/containerd.log" | tr '\n' ' ')"
    sleep 0.1
done
ctrc version >/dev/null 2>&1 || skip "containerd did not answer within 20 s"
log "containerd $(containerd --version | awk '{print $3}') at $sock, namespace $ns"

# --- a busybox image: one uncompressed layer, written as an OCI archive ------
layout=$dir/image
mkdir -p "$layout/blobs/sha256"
blob() { # FILE -> moves it into the layout, prints "sha256:<hex> <size>"
    local hex size
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$layout/blobs/sha256/$hex"
    printf 'sha256:%s %s\n' "$hex" "$size"
}
tar --numeric-owner --exclude=./mnt/bench -C "$BENCH_ROOTFS" -cf "$layout/layer.tar" .
read -r layer layer_size < <(blob "$layout/layer.tar")
jq -nc --arg l "$layer" '{architecture: "amd64", os: "linux",
    config: {Cmd: ["sh"], Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
    rootfs: {type: "layers", diff_ids: [$l]}}' >"$layout/config.json"
read -r config config_size < <(blob "$layout/config.json")
jq -nc --arg c "$config" --argjson cs "$config_size" --arg l "$layer" --argjson ls "$layer_size" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls}]}' \
    >"$layout/manifest.json"
read -r manifest manifest_size < <(blob "$layout/manifest.json")
jq -nc --arg m "$manifest" --argjson ms "$manifest_size" --arg name "$image" '{
    schemaVersion: 2,
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
        platform: {architecture: "amd64", os: "linux"},
        annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": "latest"}}]}' \
    >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
tar -C "$layout" -cf "$dir/busybox-oci.tar" oci-layout index.json blobs
ctrc images import "$dir/busybox-oci.tar" >/dev/null || skip "ctr images import failed"

# --- is our shim usable? ----------------------------------------------------
declare -A runtime=([skiff]=io.containerd.skiff.v2 [runc]=io.containerd.runc.v2)
for s in skiff runc; do
    if ! out=$(ctrc run --rm --null-io --runtime "${runtime[$s]}" "$image" "$prefix-smoke-$s" /bin/true 2>&1); then
        ctrc task rm -f "$prefix-smoke-$s" >/dev/null 2>&1 || true
        ctrc containers rm "$prefix-smoke-$s" >/dev/null 2>&1 || true
        skip "\`ctr run --rm\` through the $s shim failed: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"
    fi
done
log "both shims ran /bin/true"

# --- ctr run --rm -------------------------------------------------------------
section "ctr run --rm /bin/true: our shim + skiff vs containerd-shim-runc-v2 + runc"
add_section ctr-run "ctr run --rm (shim)"
here=$BENCH_REPO/scripts/bench
for s in skiff runc; do
    hyperfine_one ctr-run "ctr run --rm (shim)" "$s" "$BENCH_WARMUP" "$BENCH_SHIM_RUNS" \
        "$(cmdline sh "$here/ctr-run.sh" "$sock" "$ns" "${runtime[$s]}" "$image" "$prefix-ctr-$s")" || true
done

# --- memory per pod -----------------------------------------------------------
# The pids of the shims serving our containerd, for one shim binary.
shim_pids() { # skiff|runc
    local p exe
    for p in $(pids_with_arg "$sock"); do
        exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
        [[ $(basename "$exe") == "containerd-shim-$1-v2" ]] && printf '%s\n' "$p"
    done
    return 0
}

# Sum of Rss and Pss (KiB) over the given pids, from smaps_rollup.
rss_pss() {
    local p
    for p in "$@"; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done |
        awk '$1 == "Rss:" { r += $2 } $1 == "Pss:" { p += $2 } END { printf "%d %d\n", r, p }'
}

remove_pod() { # shim count
    local s=$1 n=$2 i
    for ((i = 1; i <= n; i++)); do printf '%s-pod-%s-%s\n' "$prefix" "$s" "$i"; done |
        xargs -P 4 -I{} sh -c 'ctr --address "$1" --namespace "$2" task rm -f "$3" >/dev/null 2>&1
            ctr --address "$1" --namespace "$2" containers rm "$3" >/dev/null 2>&1; true' sh "$sock" "$ns" {}
}

read -r -a pods <<<"$BENCH_PODS"
max=${pods[-1]}
for s in skiff runc; do
    section "memory of the $s shim per pod (${pods[*]} running containers)"
    started=0 ok=1
    for want in "${pods[@]}"; do
        while ((started < want)); do
            id=$prefix-pod-$s-$((started + 1))
            if ! out=$(ctrc run -d --null-io --runtime "${runtime[$s]}" \
                --annotation "io.kubernetes.cri.sandbox-id=$prefix-pod-$s" \
                "$image" "$id" sleep 3600 2>&1); then
                note "$s shim: starting container $((started + 1)) of a pod failed: $(printf '%s' "$out" | tail -n 1)"
                ok=0
                break
            fi
            started=$((started + 1))
        done
        ((ok)) || break
        sleep 0.5 # let the shim settle (reaper, io threads) before reading it
        mapfile -t pids < <(shim_pids "$s")
        read -r rss pss < <(rss_pss "${pids[@]}")
        threads=$(for p in "${pids[@]}"; do awk '$1 == "Threads:" { print $2 }' "/proc/$p/status" 2>/dev/null; done |
            awk '{ t += $1 } END { print t + 0 }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$want" "${#pids[@]}" "$rss" "$pss" "$threads" >>"$work/shim-rss.tsv"
        log "$s shim, $want containers: ${#pids[@]} shim process(es), $threads threads, RSS $rss KiB, PSS $pss KiB"
        # Where the memory is: RSS per mapping of the first shim process.
        if [[ $want == "${pods[0]}" && -n ${pids[0]:-} ]]; then
            awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anon]" : $6) }
                 $1 == "Rss:" { rss[name] += $2 }
                 END { for (n in rss) if (rss[n] > 0) printf "%s\t%d\n", n, rss[n] }' \
                "/proc/${pids[0]}/smaps" 2>/dev/null | sort -t$'\t' -k2,2nr |
                sed "s/^/$s\t/" >>"$work/shim-maps.tsv" || true
            log "$s shim RSS by mapping (KiB): $(grep "^$s	" "$work/shim-maps.tsv" | cut -f2,3 | tr '\t\n' '= ' )"
        fi
    done
    remove_pod "$s" "$max"
done

# --- memory per pod over many pods ----------------------------------------------
# What a node pays: N pods of one container each (so N shim processes of one
# binary, whose shared pages PSS divides among them), their shims' PSS summed
# and divided by N in the report.
read -r -a many <<<"${BENCH_MANY_PODS:-10 50}"
for s in skiff runc; do
    section "memory of the $s shim over ${many[*]} pods of one container"
    started=0 ok=1
    for want in "${many[@]}"; do
        while ((started < want)); do
            id=$prefix-many-$s-$((started + 1))
            if ! out=$(ctrc run -d --null-io --runtime "${runtime[$s]}" \
                --annotation "io.kubernetes.cri.sandbox-id=$id" \
                "$image" "$id" sleep 3600 2>&1); then
                note "$s shim: starting pod $((started + 1)) failed: $(printf '%s' "$out" | tail -n 1)"
                ok=0
                break
            fi
            started=$((started + 1))
        done
        ((ok)) || break
        sleep 0.5
        mapfile -t pids < <(shim_pids "$s")
        read -r rss pss < <(rss_pss "${pids[@]}")
        printf '%s\t%s\t%s\t%s\t%s\n' "$s" "$want" "${#pids[@]}" "$rss" "$pss" >>"$work/shim-pods.tsv"
        log "$s shim, $want pods: ${#pids[@]} shim processes, RSS $rss KiB, PSS $pss KiB in all ($((pss / want)) KiB PSS per pod)"
    done
    for ((i = 1; i <= started; i++)); do printf '%s-many-%s-%s\n' "$prefix" "$s" "$i"; done |
        xargs -P 4 -I{} sh -c 'ctr --address "$1" --namespace "$2" task rm -f "$3" >/dev/null 2>&1
            ctr --address "$1" --namespace "$2" containers rm "$3" >/dev/null 2>&1; true' sh "$sock" "$ns" {}
done
