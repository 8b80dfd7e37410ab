-- novu 0.3.0 -> 0.4.0: security hardening (DESIGN section 5).

\echo Use "ALTER EXTENSION novu UPDATE TO '0.4.0'" to load this file. \quit

-- ==== privileges: definer functions, the worker role ====

-- ==== bounded input ====

-- ==== secrets at rest ====
-- Integration secrets (the fields listed in src/secrets.c: serviceAccount.private_key,
-- apns secretKey and privateKey, expo and one-signal apiKey, push-webhook secretKey,
-- web-push vapidPrivateKey, chat-webhook hmacSecretKey) are stored in place as
-- AES-256-GCM envelopes "novu:v1:<key id>:<base64url(nonce || ciphertext || tag)>"
-- under the key of novu.secret_key_file, bound to their integration's id and field.
-- Only C code decrypts them: the delivery workers, and novu.reencrypt_secrets()
-- (superuser only).

-- Every write of a row encrypts its clear secrets; without a key, storing one is refused.
CREATE FUNCTION novu._seal_secrets()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'novu_seal_secrets';
COMMENT ON FUNCTION novu._seal_secrets() IS 'Internal: trigger encrypting the secrets of novu.integrations rows (AES-256-GCM, novu.secret_key_file)';
CREATE TRIGGER seal_secrets BEFORE INSERT OR UPDATE OF id, provider_id, credentials ON novu.integrations
    FOR EACH ROW EXECUTE FUNCTION novu._seal_secrets();

-- The one list of secret fields also masks what the API returns.
CREATE FUNCTION novu._mask_secrets(provider_id text, credentials jsonb)
RETURNS jsonb
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'novu_mask_secrets';
COMMENT ON FUNCTION novu._mask_secrets(text, jsonb) IS 'Internal: credentials with every secret field shown as ********';

CREATE OR REPLACE FUNCTION novu._integration_json(i novu.integrations)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'identifier', i.identifier,
        'providerId', i.provider_id,
        'channel', i.channel,
        'name', i.name,
        'active', i.active,
        'credentials', novu._mask_secrets(i.provider_id, i.credentials),
        'createdAt', novu._iso(i.created_at),
        'updatedAt', novu._iso(i.updated_at))
$$;

-- Rotation and the move out of clear text: superuser only (it decrypts every secret).
CREATE FUNCTION novu.reencrypt_secrets()
RETURNS integer
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'novu_reencrypt_secrets';
COMMENT ON FUNCTION novu.reencrypt_secrets() IS 'Superuser: encrypt every integration secret under novu.secret_key_file (re-encrypting those of novu.previous_secret_key_file, encrypting clear ones); returns the number of integrations rewritten';

REVOKE EXECUTE ON FUNCTION novu._seal_secrets(), novu._mask_secrets(text, jsonb), novu.reencrypt_secrets() FROM PUBLIC;

-- Secrets stored in clear by 0.3.0: encrypted now if a key is configured, else a WARNING
-- (the workers keep delivering with them until novu.reencrypt_secrets() runs).
CREATE FUNCTION novu._secrets_upgrade()
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'novu_secrets_upgrade';
SELECT novu._secrets_upgrade();
DROP FUNCTION novu._secrets_upgrade();

-- ==== outbound URL policy ====

-- ==== providers: tokens, overrides, pruning ====

-- ==== templates ====
