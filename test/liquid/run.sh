#!/usr/bin/env bash
# test/liquid/run.sh: the differential test of the template engine against LiquidJS.
# Generates LIQUID_CASES (default 5000) random templates and contexts with seed
# LIQUID_SEED (default 1), adds the hand-written edge cases (edge_cases.json), renders
# them all with LiquidJS (test-only npm package, installed into test/liquid/.npm) and
# with novu.render in one psql session, and fails on any difference, printing the seed,
# the first differing cases and the agreement rate.
# Needs a running cluster with the extension available (PGHOST/PGPORT/PGUSER/PGDATABASE).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seed=${LIQUID_SEED:-1}
count=${LIQUID_CASES:-5000}
db=${LIQUID_DB:-novu_liquid}

psql="${PGBIN:+$PGBIN/}psql"
. "$here/../lib.sh"
ensure_liquidjs
if [ ! -d "$here/.npm/node_modules/liquidjs" ]; then
    echo "liquid: FAILED: LiquidJS is not installed in $here/.npm (npm ci --prefix $here/.npm needs npm and the registry)" >&2
    exit 1
fi

work=$(mktemp -d /tmp/novu-liquid.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

export TZ=UTC LANG=C.UTF-8
node "$here/gen.js" "$seed" "$count" > "$work/cases.jsonl"
node -e '
const cases = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
cases.forEach((c, i) => console.log(JSON.stringify({id: "edge" + (i + 1), template: c.template,
  context: JSON.stringify(c.context || {}), note: c.note})));
' "$here/edge_cases.json" > "$work/edge.jsonl"

for set in cases edge; do
    node "$here/ref.js" < "$work/$set.jsonl" > "$work/$set.expected.jsonl"
done

"$psql" -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
"$psql" -X -q -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION novu CASCADE;
CREATE FUNCTION pg_temp.try_render(t text, c jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
BEGIN
    RETURN jsonb_build_object('out', novu.render(t, c));
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('error', SQLERRM);
END \$\$;
CREATE TEMP TABLE liquid_cases (line text);
\copy liquid_cases FROM '$work/cases.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
\copy (SELECT (jsonb_build_object('id', line::jsonb->'id') || pg_temp.try_render(line::jsonb->>'template', (line::jsonb->>'context')::jsonb))::text FROM liquid_cases) TO '$work/cases.actual.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
TRUNCATE liquid_cases;
\copy liquid_cases FROM '$work/edge.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
\copy (SELECT (jsonb_build_object('id', line::jsonb->'id') || pg_temp.try_render(line::jsonb->>'template', (line::jsonb->>'context')::jsonb))::text FROM liquid_cases) TO '$work/edge.actual.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SQL
"$psql" -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null

status=0
echo "liquid: seed $seed (LIQUID_SEED=$seed LIQUID_CASES=$count bash test/liquid/run.sh reproduces)"
node "$here/compare.js" "$work/cases.jsonl" "$work/cases.expected.jsonl" "$work/cases.actual.jsonl" "generated" || status=1
node "$here/compare.js" "$work/edge.jsonl" "$work/edge.expected.jsonl" "$work/edge.actual.jsonl" "edge cases" || status=1
if [ -n "${LIQUID_KEEP:-}" ]; then cp "$work"/*.jsonl "$LIQUID_KEEP"/; fi
exit $status
