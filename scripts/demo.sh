#!/usr/bin/env bash
# Sets everything up, then migrates a sample process lazily on this host:
# a memory-verifying workload is checkpointed with criu dump, lazyd inspects
# the images and serves them to criu restore --lazy-pages, and the restored
# process verifies every word of its memory. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec node_modules/deno/deno run --allow-all scripts/demo.ts "$@"
