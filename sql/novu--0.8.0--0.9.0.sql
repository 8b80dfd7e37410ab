/*
 * novu--0.8.0--0.9.0.sql
 *		Upgrade from 0.8.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.9.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.8.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.9.0'" to load this file. \quit
