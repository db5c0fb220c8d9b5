#!/bin/sh
# N concurrent creates of a /bin/true container, then N concurrent deletes:
# the unit that scripts/bench.sh times for its "concurrent creates" rows.
#
#   concurrent.sh N RUNTIME ROOT BUNDLE ID_PREFIX
#
# Ids are ID_PREFIX-<pid of this script>-<i>. Exits non-zero if any create or
# delete failed (hyperfine then reports the failure), after trying every
# delete so that nothing is left behind.
set -u
n=$1 rt=$2 root=$3 bundle=$4 prefix=$5-$$
status=0

pids=
i=1
while [ "$i" -le "$n" ]; do
    "$rt" --root "$root" create --bundle "$bundle" "$prefix-$i" &
    pids="$pids $!"
    i=$((i + 1))
done
for p in $pids; do wait "$p" || status=1; done

pids=
i=1
while [ "$i" -le "$n" ]; do
    "$rt" --root "$root" delete --force "$prefix-$i" &
    pids="$pids $!"
    i=$((i + 1))
done
for p in $pids; do wait "$p" || status=1; done
exit "$status"
