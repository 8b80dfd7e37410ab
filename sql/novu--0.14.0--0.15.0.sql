/*
 * novu--0.14.0--0.15.0.sql
 *		Upgrade from 0.14.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.15.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.14.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.15.0'" to load this file. \quit

-- novu.trigger pins search_path itself, before the first statement it runs
-- through SPI (src/common/spi_util.c): its SET clause cost every call a GUC
-- nest level and a search path computed again (8% of a trigger)
ALTER FUNCTION novu.trigger(text, jsonb, jsonb, jsonb, text, jsonb) RESET search_path;
