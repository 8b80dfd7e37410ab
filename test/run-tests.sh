#!/usr/bin/env bash
# The README's test command: everything, from a fresh Debian 12 machine.
# Installs packages, builds with warnings as errors, installs, starts a throwaway
# cluster as an unprivileged user with shared_preload_libraries = 'novu', runs every
# suite (pg_regress, isolation), stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib.sh

ensure_packages
build_and_install

tmp=$(mktemp -d /tmp/novu-test.XXXXXX)
chmod 755 "$tmp"
start_cluster "$tmp/pg"

status=0
log "pg_regress and isolation suites"
if ! make -s installcheck with_llvm=no; then
    status=1
    for f in regression.diffs output_iso/regression.diffs; do
        [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
    done
fi

stop_cluster
if [ $status = 0 ]; then log "all suites passed"; else log "FAILED (server log: $tmp/pg/server.log)"; fi
exit $status
