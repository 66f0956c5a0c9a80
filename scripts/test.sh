#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (deno task test):
# unit tests and end-to-end runs against real CRIU 4.1.1. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec node_modules/deno/deno task test "$@"
