#!/usr/bin/env bash
# The benchmark on the node-shaped VM: scripts/bench.sh run inside the
# cgroup v2 guest of scripts/vm-test.sh (systemd as pid 1, cgroup2 only, where
# crun also clones into the cgroup), with the release binaries built here.
#
#   scripts/bench-vm.sh [BENCH.SH OPTIONS...]   (default: --quick)
#
# The guest is emulated (qemu -accel tcg), so only the ratios of a row mean
# anything, never its times. The run's results JSON comes back over the
# serial console and is written to bench/results/<date>-vm.json, its table to
# bench/README-vm.md (and bench/chart-vm.png). Environment: what vm-test.sh
# and bench.sh take (SKIFF_VM_TIMEOUT defaults to 3600 here; BENCH_* are
# passed into the guest).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench-vm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
((EUID == 0)) || die "the VM and the containers need root"
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

(($# > 0)) || set -- --quick
# The guest reads this machine's root but cannot build: everything bench.sh
# needs is built (and its packages installed) here first.
log "building the release binaries"
cargo build --release -p skiff -p skiff-shim >/dev/null
cargo build --release -p skiff-integration --bin cri-bench >/dev/null
for tool in hyperfine crun runc containerd jq gnuplot cc; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is missing: run scripts/bench.sh here once first (it installs what the benchmark needs)"
done

# What runs in the guest: bench.sh, then its results JSON between markers.
benv=$(for v in "${!BENCH_@}"; do printf '%s=%q ' "$v" "${!v}"; done)
args=$(printf '%q ' "$@")
cmd="${benv}bash scripts/bench.sh --no-build --name vm $args; "
cmd+='f=$(ls -t bench/results/*-vm.json 2>/dev/null | head -n 1); '
cmd+='if [ -n "$f" ]; then echo BENCH-VM-BEGIN; jq -cM . "$f"; echo BENCH-VM-END; else false; fi'

console=$(mktemp)
trap 'rm -f "$console"' EXIT
log "booting the VM (emulated: expect tens of minutes)"
SKIFF_VM_COMMAND=$cmd SKIFF_VM_TIMEOUT=${SKIFF_VM_TIMEOUT:-3600} scripts/vm-test.sh | tee "$console" || true
# (Colour escapes stripped, should a jq colour its output on the console anyway.)
json=$(tr -d '\r' <"$console" | sed -n '/^BENCH-VM-BEGIN$/,/^BENCH-VM-END$/p' | sed '1d;$d' |
    sed 's/\x1b\[[0-9;]*m//g')
[[ -n $json ]] || die "the guest printed no results (see the output above)"
mkdir -p bench/results
out=bench/results/$(date +%Y-%m-%dT%H%M)-vm.json
printf '%s\n' "$json" | jq . >"$out" || die "the results from the guest are not JSON"
bash scripts/bench/report.sh --from "$out" bench/README-vm.md bench/chart-vm.png
sed -i '1a\
\
In the cgroup v2 VM of `scripts/bench-vm.sh` (systemd as pid 1, cgroup2 only; qemu emulates the CPU, so\
read the ratios, not the times).' bench/README-vm.md
log "results: $out; table: bench/README-vm.md"
