# novu for PostgreSQL: PGXS build.
#   make && make install            build and install the extension
#   make installcheck               pg_regress + isolation suites against a running cluster
#   bash test/run-tests.sh          everything, from a fresh machine (see README)

EXTENSION = novu
EXTVERSION = 0.22.0

MODULE_big = novu
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c src/*/*.c)))

# sql/novu.sql is the one source of the schema, shipped as novu--$(EXTVERSION).sql (made
# below); databases of older versions go through the committed upgrade scripts.
DATA = sql/novu--0.1.0.sql $(wildcard sql/novu--*--*.sql) sql/novu--$(EXTVERSION).sql

REGRESS = setup template crypto integrations secrets subscribers credentials url_policy workflows trigger fanout_subscribers topics engine provider_safety import limits queue_stats feed security roles upgrade
ISOLATION = concurrent_identify concurrent_trigger concurrent_fanout_subscribers workflow_cache concurrent_digest digest_group_shift cancel_due cancel_next_delay concurrent_marks claim_groups stats_skip_locked digest_key_change delete_messages_marks delete_subscriber_feed backoff_order

# -MMD -MP: each object's header dependencies (src/*/*.d), so a changed header rebuilds
# what includes it
PG_CPPFLAGS = -I$(srcdir)/src $(shell curl-config --cflags) -DNOVU_EXTVERSION=\"$(EXTVERSION)\" -MMD -MP
SHLIB_LINK = $(shell curl-config --libs) -lnghttp2 -lssl -lcrypto -lz -Wl,--version-script=$(srcdir)/src/exports.map

EXTRA_CLEAN = build sql/novu--$(EXTVERSION).sql $(OBJS:.o=.d)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

-include $(OBJS:.o=.d)

all: sql/novu--$(EXTVERSION).sql

# The install script of this version is sql/novu.sql, copied; novu.control must name
# the same version.
sql/novu--$(EXTVERSION).sql: sql/novu.sql novu.control
	@grep -q "^default_version = '$(EXTVERSION)'" novu.control || \
		{ echo "novu.control: default_version is not $(EXTVERSION) (Makefile EXTVERSION)" >&2; exit 1; }
	cp $< $@

# the objects embed EXTVERSION (NOVU_EXTVERSION: the workers wait for the SQL of this version)
$(OBJS): Makefile

.PHONY: test bench
test:
	bash test/run-tests.sh

# measurements, never part of the tests (see test/bench/run.sh for BENCH_SCALE, BENCH_RUNS,
# BENCH_ONLY, PG_NET_SRC, and test/bench/mixed.sh for MIXED_SECONDS)
bench:
	bash test/bench/run.sh
