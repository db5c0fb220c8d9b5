#!/usr/bin/env bash
# Runs busybox containers through a private containerd with the skiff shim
# (runtime io.containerd.skiff.v2), then through containerd's own runc shim
# driving skiff. Called by scripts/demo.sh with:
#   SKIFF_BIN       the skiff binary
#   SKIFF_SHIM_BIN  containerd-shim-skiff-v2 (empty: no shim built)
#   SKIFF_DEMO_TMP  a scratch directory that demo.sh removes
# It starts containerd with its own root, state dir and socket, and stops it
# (and removes what it made) on exit.
set -euo pipefail

: "${SKIFF_BIN:?}" "${SKIFF_DEMO_TMP:?}"
if [[ -z ${SKIFF_SHIM_BIN:-} ]]; then
    echo "containerd-demo: no shim binary; skipping"
    exit 0
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$SKIFF_DEMO_TMP/containerd
mkdir -p "$work"/{root,state,bin}
sock=$work/containerd.sock
# containerd finds a runtime's shim as containerd-shim-<name>-<version> on
# its PATH.
ln -sf "$SKIFF_SHIM_BIN" "$work/bin/containerd-shim-skiff-v2"
ln -sf "$SKIFF_BIN" "$work/bin/skiff"

cat >"$work/config.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
EOF

containerd_pid=
cleanup() {
    local rc=$?
    set +e
    for id in demo-shim demo-runc-shim; do
        ctr -a "$sock" task kill -s KILL "$id" >/dev/null 2>&1 || true
        ctr -a "$sock" task delete "$id" >/dev/null 2>&1 || true
        ctr -a "$sock" container delete "$id" >/dev/null 2>&1 || true
    done
    if [[ -n $containerd_pid ]]; then
        kill "$containerd_pid" 2>/dev/null || true
        wait "$containerd_pid" 2>/dev/null || true
    fi
    # Anything containerd left mounted under its root goes too.
    grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    exit "$rc"
}
trap cleanup EXIT INT TERM

PATH="$work/bin:$PATH" containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do
    ctr -a "$sock" version >/dev/null 2>&1 && break
    sleep 0.1
done
ctr -a "$sock" version >/dev/null || { cat "$work/containerd.log"; exit 1; }

rootfs=$work/rootfs
"$repo/scripts/mkbundle.sh" "$work/bundle" >/dev/null
cp -a "$work/bundle/rootfs" "$rootfs"

echo "== ctr run --runtime io.containerd.skiff.v2 (the skiff shim driving skiff)"
set +e
ctr -a "$sock" run --rm --rootfs --runtime io.containerd.skiff.v2 \
    "$rootfs" demo-shim /bin/sh -c 'echo hello from skiff through containerd; exit 3'
rc=$?
set -e
echo "exit code: $rc (expected 3)"
[[ $rc -eq 3 ]]

echo "== ctr run --runtime io.containerd.runc.v2 with BinaryName=skiff (containerd's runc shim driving skiff)"
ctr -a "$sock" run --rm --rootfs --runtime io.containerd.runc.v2 --runc-binary "$SKIFF_BIN" \
    "$rootfs" demo-runc-shim /bin/sh -c 'echo hello from skiff under the runc shim'
echo "containerd demo: ok"
