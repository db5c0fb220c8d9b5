#!/usr/bin/env bash
# Show skiff working on a fresh Debian 12 machine: install what it needs,
# build it, and run busybox containers with it.
#
#   scripts/demo.sh
#
# Environment:
#   SKIFF_DEMO_RUNTIME  a runc-compatible binary to drive instead of the
#                       freshly built skiff (e.g. /usr/sbin/runc, to compare);
#                       the cargo build is skipped when it is set.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
section() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$plain"; }
say() { printf '$ %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "containers need root: run as root"

section "setup"
bash scripts/setup.sh

# --- build --------------------------------------------------------------------
if [[ -n ${SKIFF_DEMO_RUNTIME:-} ]]; then
    section "using $SKIFF_DEMO_RUNTIME instead of building skiff"
    skiff=$(type -P "$SKIFF_DEMO_RUNTIME") || die "$SKIFF_DEMO_RUNTIME not found"
    shim=
else
    section "build"
    say cargo build --release -p skiff
    cargo build --release -p skiff
    skiff=$repo/target/x86_64-unknown-linux-gnu/release/skiff  # the build target of .cargo/config.toml

    # The shim is built only once its package declares the binary.
    shim=
    if cargo metadata --no-deps --format-version 1 |
        jq -e '.packages[] | select(.name == "skiff-shim") | .targets[]
               | select(.name == "containerd-shim-skiff-v2" and (.kind | index("bin")))' \
            >/dev/null; then
        say cargo build --release -p skiff-shim
        cargo build --release -p skiff-shim
        shim=$repo/target/x86_64-unknown-linux-gnu/release/containerd-shim-skiff-v2
    else
        echo "no containerd-shim-skiff-v2 binary in the workspace yet: skipping the shim build"
    fi
fi
[[ -x $skiff ]] || die "$skiff is not an executable"

# --- a scratch area, cleaned up whatever happens ------------------------------
tmp=$(mktemp -d /tmp/skiff-demo.XXXXXX)
state=$tmp/state
run_id=demo-$$
life_id=demo-$$-detached
cleanup() {
    local id
    for id in "$run_id" "$life_id"; do
        if [[ -d $state/$id ]]; then
            timeout 30 "$skiff" --root "$state" delete --force "$id" >/dev/null 2>&1 || true
        fi
    done
    rm -rf --one-file-system -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

name=$(basename "$skiff")
rt() {
    # Every runtime call is shown, and bounded in time so a hang fails the demo.
    say "$name" --root "$state" "$@"
    timeout 60 "$skiff" --root "$state" "$@"
}

section "bundle"
bash scripts/mkbundle.sh "$tmp/bundle" sh -c \
    'echo hello from skiff; echo "hostname: $(hostname)"; id; grep -i ^cap /proc/self/status'
bundle=$tmp/bundle

# --- run: foreground, output and exit code ------------------------------------
section "run"
set +e
rt run --bundle "$bundle" "$run_id"
rc=$?
set -e
echo "exit code: $rc"
((rc == 0)) || die "run failed with exit code $rc"

# The exit code of the container's process is the exit code of `run`.
set_args() {
    jq '.process.args = $ARGS.positional' "$bundle/config.json" --args -- "$@" >"$bundle/config.json.new"
    mv "$bundle/config.json.new" "$bundle/config.json"
}
set_args sh -c 'echo "exiting with 3"; exit 3'
set +e
rt run --bundle "$bundle" "$run_id"
rc=$?
set -e
echo "exit code: $rc"
((rc == 3)) || die "expected exit code 3 from the container, got $rc"

# --- create / start / state / delete ------------------------------------------
section "lifecycle of a detached container"
# shellcheck disable=SC2016 # expanded by the container's shell
set_args sh -c 'echo "started as pid $$ in $(hostname)"; exec sleep 600'
out=$tmp/detached.out
# With no terminal the container inherits create's stdio: point it at a file
# so the container does not hold this script's stdout open.
say "$name" --root "$state" create --bundle "$bundle" "$life_id" "</dev/null >$out 2>&1"
timeout 60 "$skiff" --root "$state" create --bundle "$bundle" "$life_id" </dev/null >"$out" 2>&1 ||
    die "create failed: $(cat "$out")"

# Prints the state JSON and checks its status field.
expect_status() {
    local json
    say "$name" --root "$state" state "$life_id"
    json=$(timeout 60 "$skiff" --root "$state" state "$life_id")
    jq . <<<"$json"
    [[ $(jq -r .status <<<"$json") == "$1" ]] || die "expected status $1"
}

expect_status created
rt start "$life_id"
expect_status running

# Wait (up to 5 s) for the container's first line.
for _ in $(seq 50); do
    [[ -s $out ]] && break
    sleep 0.1
done
echo "container output:"
sed 's/^/  | /' "$out"
[[ -s $out ]] || die "the detached container printed nothing"

rt delete --force "$life_id"
if [[ -d $state/$life_id ]] ||
    timeout 60 "$skiff" --root "$state" state "$life_id" >/dev/null 2>&1; then
    die "$life_id still exists after delete --force"
fi
echo "$life_id deleted"

# --- containerd ---------------------------------------------------------------
# containerd through the skiff shim: scripts/containerd-demo.sh, once it
# exists, gets the binaries through the environment.
section "containerd"
if [[ -f scripts/containerd-demo.sh ]]; then
    SKIFF_BIN=$skiff SKIFF_SHIM_BIN=$shim SKIFF_DEMO_TMP=$tmp \
        bash scripts/containerd-demo.sh
else
    echo "scripts/containerd-demo.sh does not exist yet: skipping the containerd demo"
fi

section "done"
echo "demo finished: all steps succeeded"
