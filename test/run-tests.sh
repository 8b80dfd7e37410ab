#!/usr/bin/env bash
# The README's test command: everything, from a fresh Debian 12 machine.
# Installs packages, builds with warnings as errors, installs, starts a throwaway
# cluster as an unprivileged user with shared_preload_libraries = 'novu', runs every
# suite (schema equivalence, pg_regress, isolation, the template engine against
# LiquidJS), stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib.sh

ensure_packages
log "source layout: includes point one way"
bash test/layers.sh
build_and_install

tmp=$(mktemp -d /tmp/novu-test.XXXXXX)
chmod 755 "$tmp"
start_cluster "$tmp/pg"

status=0
# First, while no database uses the extension's roles: each path creates them itself.
log "schema: a fresh install (sql/novu.sql) = every upgrade path from 0.1.0"
if ! bash test/schema/compare.sh "$tmp/schema"; then
    status=1
fi

log "pg_regress and isolation suites"
if ! make -s installcheck with_llvm=no; then
    status=1
    for f in regression.diffs output_iso/regression.diffs; do
        [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
    done
fi

# The template engine against LiquidJS, the engine Novu renders with: thousands of
# random templates and contexts (seeded) and the hand-written edge cases.
log "templates: differential test against LiquidJS (test/liquid/)"
if ! bash test/liquid/run.sh; then
    status=1
fi

stop_cluster

# End-to-end: clusters with the worker against the strict mock providers.
# PostgreSQL's TAP framework runs clusters as the invoking user, so as root the
# suite runs as the postgres user from a copy it can read and write.
log "end-to-end TAP suites (delivery worker + mock providers)"
suite="$tmp/suite"
mkdir -p "$suite"
cp -r test "$suite/"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$suite"; fi
PGXS_DIR=$(dirname "$(pg_config --pgxs)")/../..
tap_tests=${NOVU_TAP_TESTS:-$(cd "$suite/test/t" && ls [0-9]*.pl)}
if ! as_owner env PATH="$PGBIN:$PATH" TESTDIR="$suite" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
        prove --timer -I "$PGXS_DIR/src/test/perl" -I "$suite/test/t" \
        $(for t in $tap_tests; do echo "$suite/test/t/$t"; done) 2>&1 | tee "$tmp/prove.out"; then
    status=1
    for f in "$suite"/tmp_check/log/*; do
        case "$f" in *.log) echo "---- $f (last 40 lines)"; tail -40 "$f";; esac
    done
    # Last, where a truncated CI log still shows it: which test failed and how.
    fail_re='^not ok|Looks like you|BAIL|error running SQL|no plan was declared| died at '
    for f in "$suite"/tmp_check/log/regress_log_*; do
        if grep -qE "$fail_re" "$f"; then
            echo "---- $f (failed; its lines from the first failure, at most 80)"
            grep -nE -m1 "$fail_re" "$f" | cut -d: -f1 |
                { read -r n; sed -n "$((n > 30 ? n - 30 : 1)),$((n + 50))p" "$f"; }
        fi
    done
    echo "---- prove's summary"
    sed -n '/^Test Summary Report/,$p' "$tmp/prove.out"
fi

if [ $status = 0 ]; then log "all suites passed"; rm -rf "$tmp"; else log "FAILED (server log: $tmp/pg/server.log)"; fi
exit $status
