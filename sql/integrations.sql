-- integrations: create/update/delete/list, per-provider validation, generated
-- identifiers, secrets masked. Creates the integrations later tests use:
-- fcm-main, fcm-second (newest fcm), apns-main, expo-main, push-webhook-main.
\set VERBOSITY terse
\set rsa_key `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null`
\set ec_key `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null`

SELECT novu.create_integration('fcm',
    jsonb_build_object('serviceAccount', jsonb_build_object(
        'project_id', 'novu-test', 'client_email', 'sender@novu-test.iam.gserviceaccount.com',
        'private_key', :'rsa_key', 'private_key_id', 'k1')),
    'fcm-main', 'FCM main');

-- generated identifier, like Novu's fcm-Ab12Cd34x
SELECT novu.create_integration('expo', '{}') ~ '^expo-[A-Za-z0-9]{9}$' AS generated_identifier;
SELECT count(*) FROM novu.integrations WHERE provider_id = 'expo';
SELECT novu.delete_integration(identifier) FROM novu.integrations WHERE provider_id = 'expo';

SELECT novu.create_integration('expo', '{"apiKey": "expo-access-token"}', 'expo-main');
SELECT novu.create_integration('apns',
    jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'ABC123DEFG', 'projectName', 'TEAM123456',
                       'applicationId', 'com.novu.test', 'secure', false),
    'apns-main');
-- web push: a VAPID key pair (these are the RFC 8291 Appendix A user-agent keys, a known P-256 pair)
SELECT novu.create_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}', 'web-push-main');
SELECT novu.create_integration('push-webhook',
    '{"webhookUrl": "https://hooks.example.com/push", "secretKey": "s3cret"}', 'push-webhook-main');

-- secrets are masked in what the API returns
SELECT novu.update_integration('fcm-main', '{"name": "FCM (main)"}') #> '{credentials,serviceAccount}' AS fcm_service_account;
SELECT jsonb_pretty(no_ts(elem)) FROM jsonb_array_elements(novu.list_integrations()) elem;

-- a second active fcm integration, newer than fcm-main
SELECT novu.create_integration('fcm',
    jsonb_build_object('serviceAccount', jsonb_build_object(
        'project_id', 'novu-second', 'client_email', 'sender@novu-second.iam.gserviceaccount.com',
        'private_key', :'rsa_key')),
    'fcm-second', 'FCM second');

-- update: active flag, rename, credentials merged and validated again
SELECT novu.update_integration('fcm-second', '{"active": false}') ->> 'active';
SELECT novu.update_integration('fcm-second', '{"active": true}') ->> 'active';
SELECT novu.update_integration('expo-main', '{"credentials": {"endpoint": "https://127.0.0.1:9443", "apiKey": "expo-access-token"}}') -> 'credentials';
SELECT novu.update_integration('push-webhook-main', '{"identifier": "webhook-renamed"}') ->> 'identifier';
SELECT novu.update_integration('webhook-renamed', '{"identifier": "push-webhook-main"}') ->> 'identifier';

-- errors, each writes nothing
SELECT novu.create_integration('gcm', '{}');
SELECT novu.create_integration('fcm', '{"serviceAccount": {"project_id": "p", "client_email": "a@b.c", "private_key": "not a key"}}');
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b.c', 'private_key', :'ec_key')));
SELECT novu.create_integration('fcm', '{"serviceAccount": {"project_id": "p"}}');
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', :'rsa_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', 'com.x'));
SELECT novu.create_integration('apns', '{"secretKey": "garbage", "apiKey": "K", "projectName": "T", "applicationId": "com.x"}');
SELECT novu.create_integration('expo', '{"apiKey": "x", "colour": "red"}');
SELECT novu.create_integration('expo', '{}', 'expo-main');
SELECT novu.create_integration('expo', '{}', 'bad identifier!');
SELECT novu.create_integration('expo', '[]');
SELECT novu.create_integration('one-signal', '{"applicationId": "app"}');
-- values that go into a request header or a URL path: no line break, space or path character
SELECT novu.create_integration('expo', '{"apiKey": "tok\r\nx-injected: 1"}');
SELECT novu.create_integration('one-signal', '{"applicationId": "app", "apiKey": "key with space"}');
SELECT novu.create_integration('one-signal', '{"applicationId": "../apps/other", "apiKey": "k"}');
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'ABC123DEFG', 'projectName', 'TEAM123456',
                       'applicationId', E'com.novu.test\r\napns-priority: 5'));
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object('type', 'service_account',
                       'project_id', 'p/../../other', 'client_email', 'x@y', 'private_key', :'rsa_key')));
SELECT count(*) AS integrations_made FROM novu.integrations WHERE provider_id IN ('expo', 'one-signal', 'apns', 'fcm')
   AND identifier NOT IN ('expo-main', 'apns-main', 'fcm-main');
SELECT novu.update_integration('nope', '{"active": false}');
SELECT novu.update_integration('expo-main', '{"colour": "red"}');
SELECT novu.update_integration('expo-main', '{"active": "yes"}');
SELECT novu.update_integration('expo-main', '{"credentials": {"endpoint": "ftp://x"}}');
SELECT novu.update_integration('expo-main', '{"identifier": "apns-main"}');
SELECT novu.delete_integration('nope');
SELECT provider_id, identifier, name, active FROM novu.integrations ORDER BY provider_id, identifier;
