#!/bin/sh
# One create + start + delete of a /bin/true container, the unit that
# scripts/bench.sh times for its "create+start+delete" row. POSIX sh, run by
# dash: its start-up cost (well under a millisecond) is the same for every
# runtime.
#
#   lifecycle.sh RUNTIME ROOT BUNDLE ID_PREFIX
#
# The container id is ID_PREFIX-<pid of this script>, fresh each iteration.
# delete --force: after start the container may still be running /bin/true
# (nothing here waits for it, as no shim reaps it), and a plain delete would
# refuse a running container.
set -eu
rt=$1 root=$2 bundle=$3 id=$4-$$
"$rt" --root "$root" create --bundle "$bundle" "$id"
"$rt" --root "$root" start "$id"
exec "$rt" --root "$root" delete --force "$id"
