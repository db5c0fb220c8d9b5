#!/bin/sh
# One `ctr run --rm` of /bin/true through a shim, with a fresh container id:
# the unit that scripts/bench.sh times for its shim rows.
#
#   ctr-run.sh ADDRESS NAMESPACE RUNTIME IMAGE ID_PREFIX
set -eu
exec ctr --address "$1" --namespace "$2" run --rm --null-io --runtime "$3" "$4" "$5-$$" /bin/true
