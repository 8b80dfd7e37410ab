/*
 * novu--0.15.0--0.16.0.sql
 *		Upgrade from 0.15.0: the deltas only.
 *
 * A fresh install runs sql/novu.sql (shipped as novu--0.16.0.sql), the one source of the
 * schema.  Every schema change made there is added here too, as the statements that
 * take a 0.15.0 database to the same state; test/schema/compare.sh checks that a fresh
 * install and every upgrade path end with the same schema.
 */

\echo Use "ALTER EXTENSION novu UPDATE TO '0.16.0'" to load this file. \quit

-- At most 100 device tokens per subscriber and integration in all, not only
-- per call (a trigger makes one message per token).  A subscriber that holds
-- more already keeps them; the next call that adds one is refused.
CREATE OR REPLACE FUNCTION novu._store_credentials(p_subscriber_id text, p_provider_id text, p_credentials jsonb,
                                        p_identifier text, p_replace boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    integ novu.integrations;
    tokens text[];
    ntokens bigint;
BEGIN
    PERFORM novu._check_id(p_subscriber_id, 'subscriberId');
    integ := novu._resolve_integration(p_provider_id, p_identifier);
    tokens := novu._check_credentials(p_provider_id, p_credentials);
    PERFORM FROM novu.subscribers WHERE subscriber_id = p_subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber "%" not found', p_subscriber_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it first with novu.identify().';
    END IF;

    INSERT INTO novu.subscriber_channels AS c (subscriber_id, integration_id, webhook_url)
    VALUES (p_subscriber_id, integ.id, p_credentials ->> 'webhookUrl')
    ON CONFLICT (subscriber_id, integration_id) DO UPDATE SET
        webhook_url = CASE WHEN p_replace OR p_credentials ? 'webhookUrl' THEN excluded.webhook_url
                           ELSE c.webhook_url END,
        updated_at = now();

    IF p_replace THEN
        DELETE FROM novu.device_tokens
         WHERE subscriber_id = p_subscriber_id AND integration_id = integ.id
           AND device_token <> ALL (tokens);
    END IF;

    -- A token belongs to one subscriber per integration: take it over from anyone else.
    INSERT INTO novu.device_tokens AS d (integration_id, device_token, subscriber_id)
    SELECT integ.id, tok, p_subscriber_id
      FROM unnest(tokens) WITH ORDINALITY AS u(tok, n)
     ORDER BY n
    ON CONFLICT (integration_id, device_token) DO UPDATE SET
        subscriber_id = excluded.subscriber_id,
        created_at = now()
     WHERE d.subscriber_id <> excluded.subscriber_id;

    -- At most 100 tokens per subscriber and integration in all, not only per
    -- call: a trigger makes one message per token, and appending without end
    -- would let one trigger make any number of them.  (Concurrent calls for one
    -- subscriber and integration wait for each other on its channel row,
    -- upserted above, and this count sees what the other committed.)
    SELECT count(*) INTO ntokens FROM novu.device_tokens
     WHERE subscriber_id = p_subscriber_id AND integration_id = integ.id;
    IF ntokens > 100 THEN
        RAISE EXCEPTION 'subscriber "%" would have % device tokens for integration "%"', p_subscriber_id, ntokens, integ.identifier
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'A subscriber keeps at most 100 device tokens per integration: replace them with novu.set_credentials(), or remove stale ones with novu.remove_device_token().';
    END IF;
END
$$;
COMMENT ON FUNCTION novu._store_credentials(text, text, jsonb, text, boolean) IS 'Internal: store subscriber credentials for an integration, replacing (PUT) or appending (PATCH)';
