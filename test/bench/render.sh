#!/usr/bin/env bash
# test/bench/render.sh: render throughput of the template engine, renders per second on
# one core (CPU time of the rendering backend), for a typical push message: a title and a
# body with 3 variables, one filter and one if, compiled once and rendered as the
# delivery worker does (template_render against {payload, subscriber, actor}).
#
# Measures this tree's engine and an earlier engine (src/template/ at RENDER_BASE, default
# 1ecbc63, the 0.6.0 engine before LiquidJS semantics) side by side in one run: each is built into a small bench
# module (the engine's sources plus a loop function, linked -Bsymbolic so it calls its own
# engine), loaded into one backend, and run RENDER_ROUNDS times alternately; the best
# round of each counts.  Prints one markdown table row.  Never part of the tests.
#
#   RENDER_N=200000      renders per round      RENDER_ROUNDS=5   rounds per engine
#   RENDER_BASE=<commit> the engine to compare with (default 1ecbc63: 0.6.0, the engine before LiquidJS semantics)
#
# Uses the cluster in PGHOST/PGPORT when one answers, else starts a throwaway one
# (the extension must be installed: make install).
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
PG_CONFIG=${PG_CONFIG:-pg_config}
N=${RENDER_N:-200000}
ROUNDS=${RENDER_ROUNDS:-5}
BASE=${RENDER_BASE:-1ecbc63}

tmp=$(mktemp -d /tmp/novu-render-bench.XXXXXX)
chmod 755 "$tmp"
cleanup() { stop_cluster; rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "${RENDER_KEEP:-}" ] && trap - EXIT

# the loop: compile once, render N times, return renders per CPU second
cat > "$tmp/bench.c" <<'EOF'
#include "postgres.h"

#include <time.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "template/template.h"

PG_MODULE_MAGIC;
PG_FUNCTION_INFO_V1(render_bench);

/* CPU seconds of this thread. */
static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* render_bench(title, body, context, n): title and body rendered n times; renders per CPU second. */
Datum
render_bench(PG_FUNCTION_ARGS)
{
	char	   *title = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *body = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Jsonb	   *context = PG_GETARG_JSONB_P(2);
	int			n = PG_GETARG_INT32(3);
	char	   *err;
	Template   *t = template_parse(title, strlen(title), &err);
	Template   *b = template_parse(body, strlen(body), &err);
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "bench", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	double		start;
	double		elapsed;
	int			i;

	if (t == NULL || b == NULL)
		elog(ERROR, "bench template does not parse: %s", err);
	start = cpu_now();
	for (i = 0; i < n; i++)
	{
		char	   *s1 = template_render(t, context, &err);
		char	   *s2 = template_render(b, context, &err);

		if (s1 == NULL || s2 == NULL)
			elog(ERROR, "bench render failed: %s", err);
		pfree(s1);
		pfree(s2);
		if ((i & 1023) == 0)
			MemoryContextReset(cxt);
	}
	elapsed = cpu_now() - start;
	MemoryContextSwitchTo(old);
	PG_RETURN_FLOAT8(n / elapsed);
}
EOF

# one bench module per engine
build() {
    local name=$1 dir="$tmp/$1"
    mkdir -p "$dir/src/template"
    cp "$tmp/bench.c" "$dir/bench.c"
    if [ "$name" = new ]; then
        cp src/template/*.c src/template/*.h "$dir/src/template/"
    else
        for f in $(git ls-tree --name-only "$BASE" src/template/); do
            git show "$BASE:$f" > "$dir/$f"
        done
    fi
    cat > "$dir/Makefile" <<EOF
MODULE_big = render_bench_$name
OBJS = bench.o \$(patsubst %.c,%.o,\$(wildcard src/template/*.c))
PG_CPPFLAGS = -I\$(srcdir)/src
SHLIB_LINK = -Wl,-Bsymbolic
PGXS := \$(shell \$(PG_CONFIG) --pgxs)
include \$(PGXS)
EOF
    make -s -C "$dir" PG_CONFIG="$PG_CONFIG" with_llvm=no >/dev/null 2>"$dir/build.log" ||
        { cat "$dir/build.log" >&2; exit 1; }
}
build new
build old

if ! psql -X -q -c 'SELECT 1' >/dev/null 2>&1; then
    start_cluster "$tmp/pg" >/dev/null
fi

title='{{ subscriber.firstName | capitalize }}, your order shipped'
body='{% if payload.items > 1 %}{{ payload.items }} items{% else %}One item{% endif %} from {{ payload.store }}'
context='{"payload": {"items": 3, "store": "Corner Shop", "orderId": "A-1042"}, "subscriber": {"firstName": "ana", "lastName": "Lima", "email": "ana@example.com", "locale": "en"}, "actor": null}'

psql -X -q -v ON_ERROR_STOP=1 -At > "$tmp/out" <<SQL
CREATE FUNCTION pg_temp.bench_new(text, text, jsonb, int) RETURNS float8 LANGUAGE c STRICT AS '$tmp/new/render_bench_new.so', 'render_bench';
CREATE FUNCTION pg_temp.bench_old(text, text, jsonb, int) RETURNS float8 LANGUAGE c STRICT AS '$tmp/old/render_bench_old.so', 'render_bench';
CREATE TEMP TABLE r (engine text, rate float8);
$(for i in $(seq "$ROUNDS"); do
    echo "INSERT INTO r SELECT 'new', pg_temp.bench_new(\$t\$$title\$t\$, \$t\$$body\$t\$, \$t\$$context\$t\$, $N);"
    echo "INSERT INTO r SELECT 'old', pg_temp.bench_old(\$t\$$title\$t\$, \$t\$$body\$t\$, \$t\$$context\$t\$, $N);"
done)
SELECT round(max(rate) FILTER (WHERE engine = 'new')), round(max(rate) FILTER (WHERE engine = 'old')) FROM r;
SQL
IFS='|' read -r new old < "$tmp/out"
ratio=$(awk -v a="$new" -v b="$old" 'BEGIN { printf "%.2f", a / b }')
verdict=$(awk -v a="$new" -v b="$old" 'BEGIN { print (a >= 200000 && a >= b) ? "met" : "NOT met" }')
echo "| Template render (push title + body: 3 variables, 1 filter, 1 if), renders/s per core | $new | $old (engine at ${BASE:0:7}) | ${ratio}x | ≥ 200,000/s and ≥ today's: $verdict |"
