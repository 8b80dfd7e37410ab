/*
 * novu--0.21.0--0.22.0.sql
 *		Upgrade from 0.21.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.22.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.21.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.22.0'" to load this file. \quit

-- The outbox loses its block range index on created_at: every trigger paid for
-- it (opening, locking and updating it was a twentieth of novu.trigger's own
-- work), and once housekeeping's freed space is reused each range holds an old
-- row, so the statistics that read novu.events by created_at read the whole
-- table with or without it (as novu._housekeeping's comment found for the other
-- tables in 0.19.0).
DROP INDEX novu.events_created_idx;
