#!/usr/bin/env bash
# test/schema/compare.sh: the schema of a fresh install (CREATE EXTENSION novu, from
# sql/novu.sql) equals the schema every upgrade path reaches from 0.1.0:
#   update       CREATE EXTENSION novu VERSION '0.1.0'; ALTER EXTENSION novu UPDATE
#   stepwise     the same, one ALTER EXTENSION novu UPDATE TO 'x.y.z' per script
#   from-X.Y.Z   CREATE EXTENSION novu VERSION 'X.Y.Z' (each intermediate version); UPDATE
# Each database is described by test/schema/describe.sql (pg_dump skips extension
# members) and the descriptions are diffed; any difference fails, with the diff.
#
# Runs against the cluster of the libpq environment (PGHOST, PGPORT, PGUSER: a
# superuser), with the extension installed (make install).  The roles the extension
# creates are cluster-wide: when none exist at the start, each path's database is
# dropped, with those roles, before the next path runs, so every path creates them
# itself and their attributes are compared too; when they exist already (another
# database uses them), they are shared and left alone.
# Usage: bash test/schema/compare.sh [OUTDIR]   (descriptions kept in OUTDIR)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$(mktemp -d /tmp/novu-schema.XXXXXX)}
mkdir -p "$out"
db=novu_schema_check

q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# The version chain, from the scripts in the source tree: 0.1.0 and each script's target.
default=$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$root/novu.control")
chain=(0.1.0)
v=0.1.0
while [ "$v" != "$default" ]; do
    next=$(cd "$root/sql" && ls novu--"$v"--*.sql 2>/dev/null | sed "s/^novu--$v--\(.*\)\.sql$/\1/")
    if [ "$(echo "$next" | wc -w)" != 1 ]; then
        echo "schema: no single upgrade script from $v (found: ${next:-none}) on the way to $default" >&2
        exit 1
    fi
    chain+=("$next")
    v=$next
done
if [ ! -f "$root/sql/novu.sql" ]; then
    echo "schema: sql/novu.sql is missing" >&2
    exit 1
fi

own_roles=$(q -d postgres -Atc "SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname LIKE 'novu\_%')")
if [ "$own_roles" != t ]; then
    echo "schema: novu_* roles exist already: they are shared by every path (their creation is not compared)" >&2
fi

# run_path NAME SQL...: a new database, the statements in order, its description in OUTDIR/NAME.txt
run_path() {
    local name=$1; shift
    local args=()
    for s in "$@"; do args+=(-c "$s"); done
    q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db"
    q -d postgres -c "CREATE DATABASE $db"
    PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=error" q -d "$db" "${args[@]}"
    q -d "$db" -At -f "$here/describe.sql" > "$out/$name.txt"
    q -d postgres -c "DROP DATABASE $db"
    if [ "$own_roles" = t ]; then
        for r in $(q -d postgres -Atc "SELECT quote_ident(rolname) FROM pg_roles WHERE rolname LIKE 'novu\_%' ORDER BY 1 DESC"); do
            q -d postgres -c "DROP ROLE $r"
        done
    fi
}

run_path fresh "CREATE EXTENSION novu"
paths=(update stepwise)
run_path update "CREATE EXTENSION novu VERSION '0.1.0'" "ALTER EXTENSION novu UPDATE"
steps=("CREATE EXTENSION novu VERSION '0.1.0'")
for v in "${chain[@]:1}"; do steps+=("ALTER EXTENSION novu UPDATE TO '$v'"); done
run_path stepwise "${steps[@]}"
last=$(( ${#chain[@]} - 1 ))
for v in "${chain[@]:1:$(( last > 1 ? last - 1 : 0 ))}"; do
    run_path "from-$v" "CREATE EXTENSION novu VERSION '$v'" "ALTER EXTENSION novu UPDATE"
    paths+=("from-$v")
done

status=0
lines=$(wc -l < "$out/fresh.txt")
for p in "${paths[@]}"; do
    if diff -u --label "fresh install ($default)" --label "$p" "$out/fresh.txt" "$out/$p.txt"; then
        echo "schema: $p = fresh install ($lines lines)" >&2
    else
        echo "schema: $p DIFFERS from the fresh install (descriptions in $out)" >&2
        status=1
    fi
done
if [ $status = 0 ] && [ -z "${1:-}" ]; then rm -rf "$out"; fi
exit $status
