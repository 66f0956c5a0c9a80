#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (deno task test):
# unit tests and end-to-end runs against real CRIU 4.1.1. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# No background "is there a newer Deno?" look-ups (DNS to the outside).
export DENO_NO_UPDATE_CHECK=1
exec node_modules/deno/deno task test "$@"
