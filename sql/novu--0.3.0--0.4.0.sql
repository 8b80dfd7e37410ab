-- novu 0.3.0 -> 0.4.0: security hardening (DESIGN section 5).

\echo Use "ALTER EXTENSION novu UPDATE TO '0.4.0'" to load this file. \quit

-- ==== privileges: definer functions, the worker role ====

-- ==== bounded input ====

-- ==== secrets at rest ====

-- ==== outbound URL policy ====

-- ==== providers: tokens, overrides, pruning ====

-- ==== templates ====
