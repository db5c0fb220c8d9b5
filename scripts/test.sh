#!/usr/bin/env bash
# Install what the project needs and run every test: formatting, lints, the
# build, unit tests, the root-only integration tests, the reduced soak
# campaign (scripts/soak.sh --quick) and, when present, the
# cgroup v2 VM tests. Every step runs (a failed build skips the tests that
# need it); a summary closes the output and the exit code is non-zero if any
# step failed.
#
# Environment:
#   SKIFF_TEST_FILTER  test name filters (space separated) for the
#                      integration tests and scripts/vm-test.sh
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

# A run from a clean checkout gains nothing from incremental compilation,
# which only adds to the target directory.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# The build and the tests need a few GiB (target/, bundles, the VM's tmpfs
# lives in memory): say so up front rather than fail later with ENOSPC.
avail_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
if [[ $avail_kib =~ ^[0-9]+$ ]] && ((avail_kib < 6 * 1024 * 1024)); then
    printf 'test.sh: warning: only %d MiB free on %s; the build and tests need about 6 GiB\n' \
        $((avail_kib / 1024)) "$(df -P . | awk 'NR == 2 {print $6}')" >&2
fi

logdir=$(mktemp -d /tmp/skiff-test.XXXXXX)
trap 'rm -rf -- "$logdir"' EXIT

names=() results=() seconds=()
failed=0

record() { # name result seconds
    names+=("$1") results+=("$2") seconds+=("$3")
    [[ $2 == FAIL ]] && failed=1
    return 0
}

# step NAME CMD...: runs CMD with its output shown and kept in a log.
step() {
    local name=$1 start rc
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    start=$SECONDS
    set +e
    "$@" 2>&1 | tee "$logdir/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc == 0)); then
        record "$name" ok $((SECONDS - start))
    else
        printf '==> %s failed (exit code %d)\n' "$name" "$rc"
        record "$name" FAIL $((SECONDS - start))
    fi
}

skip() { # name reason
    printf '\n==> %s: skipped (%s)\n' "$1" "$2"
    record "$1" "skipped: $2" 0
}

passed() { # name: did this step run and succeed?
    local i
    for i in "${!names[@]}"; do
        [[ ${names[$i]} == "$1" && ${results[$i]} == ok ]] && return 0
    done
    return 1
}

read -r -a filters <<<"${SKIFF_TEST_FILTER:-}"

step setup bash scripts/setup.sh
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace

if passed build; then
    # Everything but the root-only integration crate: unit tests and the
    # property tests over config parsing (runtime/tests/).
    step unit cargo test --workspace --exclude skiff-integration --no-fail-fast
    if ((EUID == 0)); then
        step integration cargo test -p skiff-integration --no-fail-fast -- --test-threads=2 "${filters[@]}"
        # The reduced soak and fault campaign, skiff beside runc (README, Tests).
        step soak bash scripts/soak.sh --quick
    else
        skip integration "needs root"
        skip soak "needs root"
    fi
else
    skip unit "the build failed"
    skip integration "the build failed"
    skip soak "the build failed"
fi

if [[ -x scripts/vm-test.sh ]]; then
    if passed build; then
        # In the VM (software emulation) the per-syscall fault sweep is left
        # out: its ptrace stepping takes most of the VM's time under emulation;
        # it runs on the host. The differential matrix runs its cgroup v2
        # subset there (parity.rs's V2_SUBSET, about 3.5 minutes), podman.rs
        # about 3.5 more.
        SKIFF_VM_TIMEOUT=${SKIFF_VM_TIMEOUT:-2400} SKIFF_REQUIRE_LSM=apparmor \
            step vm scripts/vm-test.sh \
            --skip create_killed_at_every_system_call --skip killed_along_its_path
        # The systemd driver on a cgroup v1 (hybrid) tree: a second, short boot.
        SKIFF_VM_CGROUP=hybrid SKIFF_VM_TESTS=systemd_cgroup SKIFF_VM_TIMEOUT=900 \
            step vm-hybrid scripts/vm-test.sh the_scope_on_cgroup_v1
        # SELinux instead of AppArmor (one major LSM per boot): the labels
        # lsm.rs reads back from a container, skiff's beside runc's. Permissive
        # mode: the guest's root is the host's filesystem over 9p, whose files
        # carry no SELinux labels (the host runs none), so an enforcing policy
        # would see every file as unlabeled; the labels a container gets are
        # set and read back the same in permissive mode.
        SKIFF_VM_APPEND="selinux=1 security=selinux enforcing=0" SKIFF_VM_TESTS=lsm \
            SKIFF_REQUIRE_LSM=selinux \
            SKIFF_VM_TIMEOUT=900 step vm-selinux scripts/vm-test.sh selinux
    else
        skip vm "the build failed"
        skip vm-hybrid "the build failed"
        skip vm-selinux "the build failed"
    fi
else
    skip vm "scripts/vm-test.sh is not there yet"
    skip vm-hybrid "scripts/vm-test.sh is not there yet"
    skip vm-selinux "scripts/vm-test.sh is not there yet"
fi

# --- summary -------------------------------------------------------------------
# Test counts are added up from every "test result:" line that cargo printed.
total_passed=0 total_failed=0 total_ignored=0
while read -r p f i; do
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    total_ignored=$((total_ignored + i))
done < <(cat "$logdir"/*.log 2>/dev/null |
    sed -n 's/.*test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p')

printf '\n==> summary\n'
for i in "${!names[@]}"; do
    printf '  %-12s %-44s %5ss\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}"
done
if ((failed)); then
    printf 'test.sh: FAILED\n'
else
    printf 'test.sh: every step succeeded\n'
fi
printf 'tests: %d passed, %d failed, %d skipped\n' "$total_passed" "$total_failed" "$total_ignored"
exit "$failed"
