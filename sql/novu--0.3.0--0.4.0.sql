-- novu 0.3.0 -> 0.4.0: security hardening (DESIGN section 5).

\echo Use "ALTER EXTENSION novu UPDATE TO '0.4.0'" to load this file. \quit

-- ==== privileges: definer functions, the worker role ====

-- ==== bounded input ====

-- ==== secrets at rest ====

-- ==== outbound URL policy ====

-- Subscriber webhook URLs get the check of integration URLs (netpolicy.c): https
-- only, no user:password@, no fragment, at most 2048 bytes, no literal address
-- that novu.allowed_private_networks does not allow (so STABLE: it reads the
-- setting).  The error never repeats the URL: it may hold a secret.
CREATE OR REPLACE FUNCTION novu._check_url(value text, field text)
RETURNS void
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'novu_check_url';
COMMENT ON FUNCTION novu._check_url(text, text) IS 'Internal: raise unless the value is a URL the outbound URL policy accepts (https, no user:password@ or fragment, at most 2048 bytes, no refused literal address)';

-- ==== providers: tokens, overrides, pruning ====

-- ==== templates ====
