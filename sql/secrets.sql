-- secrets at rest: integration secrets are stored AES-256-GCM encrypted under
-- the key of novu.secret_key_file (this cluster has one), never in clear,
-- never shown. Written as attacks: each read below got a secret before 0.4.0.
-- The key id in messages differs per cluster: it is shown as <key id>.
\set VERBOSITY terse
\set rsa_key `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null`
\set ec_key `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null`
\set apns_pair `d=$(mktemp -d); openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=test -days 2 -keyout $d/k -out $d/c 2>/dev/null; cat $d/c $d/k; rm -rf $d`
\set apns_pair2 `d=$(mktemp -d); openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=test2 -days 2 -keyout $d/k -out $d/c 2>/dev/null; cat $d/c $d/k; rm -rf $d`
\set vapid_pair `d=$(mktemp -d); openssl ecparam -name prime256v1 -genkey -noout -out $d/k 2>/dev/null; openssl ec -in $d/k -outform DER 2>/dev/null | tail -c 65 | basenc --base64url -w0 | tr -d '='; printf ' '; openssl ec -in $d/k -outform DER 2>/dev/null | head -c 39 | tail -c 32 | basenc --base64url -w0 | tr -d '='; rm -rf $d`
\set vapid_pair2 `d=$(mktemp -d); openssl ecparam -name prime256v1 -genkey -noout -out $d/k 2>/dev/null; openssl ec -in $d/k -outform DER 2>/dev/null | tail -c 65 | basenc --base64url -w0 | tr -d '='; printf ' '; openssl ec -in $d/k -outform DER 2>/dev/null | head -c 39 | tail -c 32 | basenc --base64url -w0 | tr -d '='; rm -rf $d`
SELECT substring(:'apns_pair' FROM '-----BEGIN CERTIFICATE-----.*-----END CERTIFICATE-----') AS cert,
       substring(:'apns_pair' FROM '-----BEGIN PRIVATE KEY-----.*-----END PRIVATE KEY-----') AS cert_key,
       substring(:'apns_pair2' FROM '-----BEGIN CERTIFICATE-----.*-----END CERTIFICATE-----') AS cert2,
       substring(:'apns_pair2' FROM '-----BEGIN PRIVATE KEY-----.*-----END PRIVATE KEY-----') AS cert_key2,
       split_part(:'vapid_pair', ' ', 1) AS vapid_pub, split_part(:'vapid_pair', ' ', 2) AS vapid_priv,
       split_part(:'vapid_pair2', ' ', 1) AS vapid_pub2, split_part(:'vapid_pair2', ' ', 2) AS vapid_priv2 \gset

-- one integration per provider, each with a secret we can look for
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'sec-project', 'client_email', 'sec@sec-project.iam.gserviceaccount.com',
    'private_key', :'rsa_key', 'private_key_id', 'sec-kid')), 'sec-fcm');
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'ABC123DEFG',
    'projectName', 'TEAM123456', 'applicationId', 'com.novu.sec'), 'sec-apns');
SELECT novu.create_integration('apns', jsonb_build_object('certificate', :'cert', 'privateKey', :'cert_key',
    'applicationId', 'com.novu.sec'), 'sec-apns-cert');
SELECT novu.create_integration('expo', '{"apiKey": "expo-PLANTED-token-1"}', 'sec-expo');
SELECT novu.create_integration('expo', '{"apiKey": "expo-PLANTED-token-1"}', 'sec-expo-2');
SELECT novu.create_integration('one-signal', '{"applicationId": "sec-app", "apiKey": "onesignal-PLANTED-key"}', 'sec-onesignal');
SELECT novu.create_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/sec", "secretKey": "hmac-PLANTED-key"}', 'sec-webhook');
SELECT novu.create_integration('web-push', jsonb_build_object('vapidPublicKey', :'vapid_pub',
    'vapidPrivateKey', :'vapid_priv', 'subject', 'mailto:sec@example.com'), 'sec-webpush');
-- an integration without a secret stores nothing sealed
SELECT novu.create_integration('expo', '{}', 'sec-expo-nokey');

CREATE TEMP TABLE planted (identifier text, path text[], secret text);
INSERT INTO planted VALUES
    ('sec-fcm', '{serviceAccount,private_key}', split_part(:'rsa_key', chr(10), 3)),
    ('sec-apns', '{secretKey}', split_part(:'ec_key', chr(10), 3)),
    ('sec-apns-cert', '{privateKey}', split_part(:'cert_key', chr(10), 3)),
    ('sec-expo', '{apiKey}', 'expo-PLANTED-token-1'),
    ('sec-expo-2', '{apiKey}', 'expo-PLANTED-token-1'),
    ('sec-onesignal', '{apiKey}', 'onesignal-PLANTED-key'),
    ('sec-webhook', '{secretKey}', 'hmac-PLANTED-key'),
    ('sec-webpush', '{vapidPrivateKey}', :'vapid_priv');

-- attack: read the table (novu_admin can, and so can pg_dump and a stolen backup)
SELECT p.identifier,
       strpos(i.credentials::text, p.secret) > 0 AS secret_in_clear,
       i.credentials::text LIKE '%PRIVATE KEY%' AS pem_in_clear,
       i.credentials #>> p.path ~ '^novu:v1:[0-9a-f]{16}:[A-Za-z0-9_-]{40,}$' AS sealed
  FROM planted p JOIN novu.integrations i USING (identifier) ORDER BY 1;
-- one key encrypted them all, and the same secret gives different ciphertexts (fresh nonces)
SELECT count(DISTINCT split_part(i.credentials #>> p.path, ':', 3)) AS key_ids,
       count(DISTINCT i.credentials #>> p.path) = count(*) AS all_ciphertexts_differ
  FROM planted p JOIN novu.integrations i USING (identifier);
-- the settings that are not secret stay readable jsonb
SELECT identifier, credentials - 'secretKey' - 'privateKey' - 'apiKey' - 'vapidPrivateKey' - 'certificate'
                   - 'vapidPublicKey' #- '{serviceAccount,private_key}' AS readable
  FROM novu.integrations WHERE identifier LIKE 'sec-%' ORDER BY 1;
SELECT (SELECT credentials ->> 'certificate' = :'cert' FROM novu.integrations WHERE identifier = 'sec-apns-cert') AS certificate_readable,
       (SELECT credentials ->> 'vapidPublicKey' = :'vapid_pub' FROM novu.integrations WHERE identifier = 'sec-webpush') AS vapid_public_readable;

-- attack: read them through the API: masked, neither clear nor sealed
SELECT strpos(novu.list_integrations()::text, 'PLANTED') = 0 AS list_no_secret,
       strpos(novu.list_integrations()::text, 'PRIVATE KEY') = 0 AS list_no_pem,
       strpos(novu.list_integrations()::text, 'novu:v1:') = 0 AS list_no_ciphertext;
SELECT elem ->> 'identifier' AS identifier, elem -> 'credentials' AS credentials
  FROM jsonb_array_elements(novu.list_integrations()) elem
 WHERE elem ->> 'identifier' IN ('sec-expo', 'sec-onesignal', 'sec-webhook', 'sec-apns') ORDER BY 1;
SELECT novu.update_integration('sec-fcm', '{"name": "renamed"}') #> '{credentials,serviceAccount,private_key}' AS fcm_key,
       novu.update_integration('sec-webpush', '{"active": true}') #> '{credentials,vapidPrivateKey}' AS vapid_key;

-- update_integration keeps a stored secret as it is when other settings change ...
SELECT credentials ->> 'apiKey' AS before FROM novu.integrations WHERE identifier = 'sec-expo' \gset
SELECT novu.update_integration('sec-expo', '{"name": "Expo, renamed"}') ->> 'name';
SELECT credentials ->> 'apiKey' = :'before' AS secret_kept FROM novu.integrations WHERE identifier = 'sec-expo';
-- attack: point the endpoint (or a push webhook's URL) at a host of one's own
-- and keep the stored secret: Expo and OneSignal send the API key itself, FCM
-- an access token, APNs a JWT signed with the key.  The secret must be given
-- again with a new route, also when given back as the mask; nothing is stored.
SELECT novu.update_integration('sec-expo', '{"credentials": {"endpoint": "https://127.0.0.1:9443"}}');
SELECT novu.update_integration('sec-expo', '{"credentials": {"endpoint": "https://127.0.0.1:9443", "apiKey": "********"}}');
SELECT novu.update_integration('sec-onesignal', '{"credentials": {"endpoint": "https://127.0.0.1:9443"}}');
SELECT novu.update_integration('sec-fcm', '{"credentials": {"endpoint": "https://127.0.0.1:9443"}}');
SELECT novu.update_integration('sec-webhook', '{"credentials": {"webhookUrl": "https://127.0.0.1:9443/hook"}}');
-- FCM's token_uri receives the JWT its private key signs: a route too, also when
-- the private key is given back as stored (sealed; novu_admin reads the table)
SELECT credentials -> 'serviceAccount' AS fcm_sa FROM novu.integrations WHERE identifier = 'sec-fcm' \gset
SELECT novu.update_integration('sec-fcm', jsonb_build_object('credentials', jsonb_build_object('serviceAccount',
    :'fcm_sa'::jsonb || '{"token_uri": "https://127.0.0.1:9443/token"}')));
-- the same token_uri given again is no change
SELECT novu.update_integration('sec-fcm', jsonb_build_object('credentials', jsonb_build_object('serviceAccount',
    :'fcm_sa'::jsonb))) #>> '{credentials,serviceAccount,token_uri}' AS token_uri;
SELECT credentials -> 'serviceAccount' = :'fcm_sa'::jsonb AS fcm_unchanged FROM novu.integrations WHERE identifier = 'sec-fcm';
SELECT credentials ->> 'apiKey' = :'before' AND credentials ->> 'endpoint' IS NULL AS unchanged
  FROM novu.integrations WHERE identifier = 'sec-expo';
-- attack: an older sealed value of the row (novu_admin reads the table; or a
-- dump, a backup) given back after the route changed, or after the secret was
-- removed, would decrypt and go to the new route: a sealed value is accepted
-- only as the one the row holds now
SELECT credentials ->> 'apiKey' AS sealed_old FROM novu.integrations WHERE identifier = 'sec-expo' \gset
CREATE ROLE novu_sec_thief IN ROLE novu_admin;
SET ROLE novu_sec_thief;
SELECT novu.update_integration('sec-expo', '{"credentials": {"endpoint": "https://127.0.0.1:9444", "apiKey": "junk"}}') #>> '{credentials,endpoint}';
SELECT novu.update_integration('sec-expo', jsonb_build_object('credentials', jsonb_build_object('endpoint', 'https://127.0.0.1:9444', 'apiKey', :'sealed_old')));
SELECT novu.update_integration('sec-expo', '{"credentials": {"endpoint": "https://127.0.0.1:9444", "apiKey": null}}') #>> '{credentials,endpoint}';
SELECT novu.update_integration('sec-expo', jsonb_build_object('credentials', jsonb_build_object('endpoint', 'https://127.0.0.1:9444', 'apiKey', :'sealed_old')));
RESET ROLE;
SELECT credentials ->> 'apiKey' IS DISTINCT FROM :'sealed_old' AS old_secret_not_back FROM novu.integrations WHERE identifier = 'sec-expo';
DROP ROLE novu_sec_thief;
SELECT novu.update_integration('sec-expo', '{"credentials": {"endpoint": null, "apiKey": "expo-PLANTED-token-0"}}') #>> '{credentials,endpoint}';
-- the same endpoint again is no change; a new one with the secret is accepted
SELECT novu.update_integration('sec-expo', '{"credentials": {"endpoint": "https://127.0.0.1:9443", "apiKey": "expo-PLANTED-token-1"}}') #>> '{credentials,endpoint}';
SELECT novu.update_integration('sec-expo', '{"credentials": {"endpoint": "https://127.0.0.1:9443"}}') #>> '{credentials,endpoint}';
SELECT credentials ->> 'apiKey' AS before FROM novu.integrations WHERE identifier = 'sec-expo' \gset
-- ... and seals a new one, never in clear
SELECT novu.update_integration('sec-expo', '{"credentials": {"apiKey": "expo-PLANTED-token-2"}}') #>> '{credentials,apiKey}';
SELECT credentials ->> 'apiKey' <> :'before' AS resealed, strpos(credentials::text, 'PLANTED') = 0 AS no_clear
  FROM novu.integrations WHERE identifier = 'sec-expo';
-- the mask that list_integrations shows, given back with the rest, keeps the
-- stored secret; it is never stored as a secret itself
SELECT credentials ->> 'apiKey' AS before_mask FROM novu.integrations WHERE identifier = 'sec-expo' \gset
SELECT novu.update_integration('sec-expo', '{"credentials": {"apiKey": "********"}}') #>> '{credentials,apiKey}' AS shown;
SELECT credentials ->> 'apiKey' = :'before_mask' AS mask_kept_secret FROM novu.integrations WHERE identifier = 'sec-expo';
SELECT novu.create_integration('expo', '{"apiKey": "********"}', 'sec-expo-mask');
-- a certificate or a VAPID public key cannot change alone: the stored private half is never decrypted to check it
SELECT novu.update_integration('sec-apns-cert', jsonb_build_object('credentials', jsonb_build_object('certificate', :'cert2')));
SELECT novu.update_integration('sec-webpush', jsonb_build_object('credentials', jsonb_build_object('vapidPublicKey', :'vapid_pub2')));
-- nor with the private half given back as the mask (refused)
SELECT novu.update_integration('sec-webpush', jsonb_build_object('credentials', jsonb_build_object('vapidPublicKey', :'vapid_pub2',
    'vapidPrivateKey', '********')));
SELECT novu.update_integration('sec-apns-cert', jsonb_build_object('credentials',
    jsonb_build_object('certificate', :'cert2', 'privateKey', :'cert_key'))) IS NOT NULL AS mismatch_accepted;
SELECT novu.update_integration('sec-apns-cert', jsonb_build_object('credentials',
    jsonb_build_object('certificate', :'cert2', 'privateKey', :'cert_key2'))) ->> 'identifier';
SELECT novu.update_integration('sec-webpush', jsonb_build_object('credentials',
    jsonb_build_object('vapidPublicKey', :'vapid_pub2', 'vapidPrivateKey', :'vapid_priv2'))) ->> 'identifier';
SELECT strpos(credentials::text, :'vapid_priv2') = 0 AS no_clear FROM novu.integrations WHERE identifier = 'sec-webpush';
-- switching APNs to token auth drops the certificate pair and seals the .p8
SELECT novu.update_integration('sec-apns-cert', jsonb_build_object('credentials', jsonb_build_object(
    'certificate', NULL, 'privateKey', NULL, 'secretKey', :'ec_key', 'apiKey', 'ABC123DEFG', 'projectName', 'TEAM123456'))) -> 'credentials';
SELECT credentials ->> 'secretKey' LIKE 'novu:v1:%' AS sealed FROM novu.integrations WHERE identifier = 'sec-apns-cert';

-- attack: bad credentials never echo the secret in an error (message, detail or hint)
CREATE FUNCTION pg_temp.leaks(provider text, creds jsonb) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text; det text; hnt text; st text;
BEGIN
    PERFORM novu.create_integration(provider, creds, 'sec-bad');
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT, st = RETURNED_SQLSTATE;
    RETURN st || CASE WHEN concat(msg, det, hnt) ~ 'PLANTED|MIIE' THEN ' LEAKS: ' || concat_ws(' | ', msg, det, hnt)
                      ELSE ' no secret in: ' || msg END;
END
$$;
SELECT pg_temp.leaks('fcm', '{"serviceAccount": "{\"project_id\": \"p\", \"client_email\": \"a@b.c\", \"private_key\": MIIEvPLANTEDSECRET}"}');
SELECT pg_temp.leaks('fcm', '{"serviceAccount": "{\"project_id\": \"p\", \"client_email\": \"a@b.c\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIEvPLANTED\\n-----END PRIVATE KEY-----\"}"}');
SELECT pg_temp.leaks('fcm', '{"serviceAccount": {"project_id": "p", "client_email": "a@b.c", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvPLANTED\n-----END PRIVATE KEY-----"}}');
SELECT pg_temp.leaks('apns', '{"secretKey": "PLANTED-not-a-pem", "apiKey": "K", "projectName": "T", "applicationId": "com.x"}');
SELECT pg_temp.leaks('apns', jsonb_build_object('certificate', :'cert', 'privateKey', :'cert_key2', 'applicationId', 'com.x'));
SELECT pg_temp.leaks('apns', jsonb_build_object('certificate', 'PLANTED', 'privateKey', 'PLANTED', 'applicationId', 'com.x'));
SELECT pg_temp.leaks('web-push', jsonb_build_object('vapidPublicKey', :'vapid_pub', 'vapidPrivateKey', 'PLANTED!', 'subject', 'mailto:a@b.c'));
SELECT pg_temp.leaks('web-push', jsonb_build_object('vapidPublicKey', :'vapid_pub', 'vapidPrivateKey', :'vapid_priv2', 'subject', 'mailto:a@b.c'));
SELECT pg_temp.leaks('one-signal', '{"apiKey": "onesignal-PLANTED-key"}');
SELECT pg_temp.leaks('push-webhook', '{"webhookUrl": "ftp://x", "secretKey": "PLANTED"}');

-- attack: swap ciphertexts between rows (a table writer, a doctored backup): they are bound
-- to their integration and field, so nothing decrypts; novu.reencrypt_secrets() verifies
-- every secret and names the bad one (the worker fails that integration's messages: TAP)
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text; det text; hnt text; st text; r text;
BEGIN
    EXECUTE sql INTO r;
    RETURN 'ok: ' || r;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT, st = RETURNED_SQLSTATE;
    RETURN regexp_replace(concat_ws(E'\n  ', st || ' ' || msg, 'DETAIL: ' || det, 'HINT: ' || hnt), '[0-9a-f]{16}', '<key id>', 'g');
END
$$;
SELECT pg_temp.try('SELECT novu.reencrypt_secrets()') AS nothing_to_do;
-- (through the table's trigger a sealed value is taken only as the one the row
-- holds: refused; a superuser that bypasses the trigger, or a doctored dump, gets
-- it in, and reencrypt_secrets names it)
UPDATE novu.integrations SET credentials = jsonb_set(credentials, '{apiKey}',
       (SELECT credentials -> 'apiKey' FROM novu.integrations WHERE identifier = 'sec-expo'))
 WHERE identifier = 'sec-expo-2';
ALTER TABLE novu.integrations DISABLE TRIGGER seal_secrets;
UPDATE novu.integrations SET credentials = jsonb_set(credentials, '{apiKey}',
       (SELECT credentials -> 'apiKey' FROM novu.integrations WHERE identifier = 'sec-expo'))
 WHERE identifier = 'sec-expo-2';
ALTER TABLE novu.integrations ENABLE TRIGGER seal_secrets;
SELECT pg_temp.try('SELECT novu.reencrypt_secrets()') AS swapped_row;
ALTER TABLE novu.integrations DISABLE TRIGGER seal_secrets;
UPDATE novu.integrations SET credentials = jsonb_set(credentials, '{apiKey}',
       (SELECT credentials -> 'secretKey' FROM novu.integrations WHERE identifier = 'sec-webhook'))
 WHERE identifier = 'sec-expo-2';
ALTER TABLE novu.integrations ENABLE TRIGGER seal_secrets;
SELECT pg_temp.try('SELECT novu.reencrypt_secrets()') AS swapped_field;
SELECT novu.update_integration('sec-expo-2', '{"credentials": {"apiKey": "expo-PLANTED-token-3"}}') ->> 'identifier' AS given_again;
SELECT pg_temp.try('SELECT novu.reencrypt_secrets()') AS fixed;
-- one character of the ciphertext changed
ALTER TABLE novu.integrations DISABLE TRIGGER seal_secrets;
UPDATE novu.integrations
   SET credentials = jsonb_set(credentials, '{apiKey}', to_jsonb(overlay(credentials ->> 'apiKey' PLACING
       CASE WHEN substr(credentials ->> 'apiKey', 40, 1) = 'A' THEN 'B' ELSE 'A' END FROM 40 FOR 1)))
 WHERE identifier = 'sec-expo-2';
ALTER TABLE novu.integrations ENABLE TRIGGER seal_secrets;
SELECT pg_temp.try('SELECT novu.reencrypt_secrets()') AS altered;
SELECT novu.update_integration('sec-expo-2', '{"credentials": {"apiKey": "expo-PLANTED-token-3"}}') ->> 'identifier' AS given_again;

-- a clear secret (as 0.3.0 left them) is encrypted by novu.reencrypt_secrets(), the others stay
ALTER TABLE novu.integrations DISABLE TRIGGER seal_secrets;
UPDATE novu.integrations SET credentials = '{"webhookUrl": "https://hooks.example.com/sec", "secretKey": "hmac-PLANTED-legacy"}'
 WHERE identifier = 'sec-webhook';
ALTER TABLE novu.integrations ENABLE TRIGGER seal_secrets;
SELECT credentials ->> 'apiKey' AS before FROM novu.integrations WHERE identifier = 'sec-expo' \gset
SELECT pg_temp.try('SELECT novu.reencrypt_secrets()') AS legacy_encrypted;
SELECT identifier, strpos(credentials::text, 'PLANTED') = 0 AS no_clear, credentials ->> 'secretKey' LIKE 'novu:v1:%' AS sealed
  FROM novu.integrations WHERE identifier = 'sec-webhook';
SELECT credentials ->> 'apiKey' = :'before' AS untouched FROM novu.integrations WHERE identifier = 'sec-expo';
-- a clear secret the row already held may stay on a write without a key; with a key it is sealed
ALTER TABLE novu.integrations DISABLE TRIGGER seal_secrets;
UPDATE novu.integrations SET credentials = '{"apiKey": "expo-PLANTED-legacy"}' WHERE identifier = 'sec-expo-nokey';
ALTER TABLE novu.integrations ENABLE TRIGGER seal_secrets;
SELECT novu.update_integration('sec-expo-nokey', '{"active": false}') -> 'credentials';
SELECT strpos(credentials::text, 'PLANTED') = 0 AS sealed_on_write FROM novu.integrations WHERE identifier = 'sec-expo-nokey';
-- ids and providers bind ciphertexts: they cannot change under them
UPDATE novu.integrations SET id = id + 1000 WHERE identifier = 'sec-expo';
UPDATE novu.integrations SET provider_id = 'one-signal' WHERE identifier = 'sec-expo';
-- a NULL identifier or provider reaches the trigger before NOT NULL is checked
-- (the table's owner writing it directly): a clear error, not a crash
INSERT INTO novu.integrations (identifier, provider_id, name, credentials) VALUES (NULL, 'expo', 'x', '{}');
INSERT INTO novu.integrations (identifier, provider_id, name, credentials) VALUES ('sec-null', NULL, 'x', '{}');
UPDATE novu.integrations SET provider_id = NULL WHERE identifier = 'sec-expo';
UPDATE novu.integrations SET identifier = NULL, credentials = credentials WHERE identifier = 'sec-expo';

-- who may do what: only superusers re-encrypt; nobody calls the internals; the key
-- settings are superuser-only (hidden from other roles)
CREATE ROLE novu_sec_admin IN ROLE novu_admin;
CREATE ROLE novu_sec_app IN ROLE novu_app;
SET ROLE novu_sec_admin;
SELECT novu.reencrypt_secrets();
SELECT novu._mask_secrets('expo', '{}');
SHOW novu.secret_key_file;
SELECT count(*) AS settings_visible FROM pg_settings WHERE name LIKE 'novu.%secret_key_file';
SELECT count(*) AS admin_sees_rows FROM novu.integrations WHERE identifier LIKE 'sec-%';
RESET ROLE;
SET ROLE novu_sec_app;
SELECT novu.reencrypt_secrets();
SELECT credentials FROM novu.integrations;
RESET ROLE;
SELECT novu._seal_secrets();
DROP ROLE novu_sec_admin, novu_sec_app;
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_executes
  FROM pg_proc p WHERE p.pronamespace = 'novu'::regnamespace AND p.proname IN ('_seal_secrets', '_mask_secrets', 'reencrypt_secrets')
 ORDER BY 1::text;
SELECT name, context, current_setting(name) <> '' AS set FROM pg_settings WHERE name LIKE 'novu.%secret_key_file' ORDER BY 1;

SELECT novu.delete_integration(identifier) FROM novu.integrations WHERE identifier LIKE 'sec-%' ORDER BY identifier;
