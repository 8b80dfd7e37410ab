-- crypto: per-provider validation of integration credentials (keys parsed with
-- OpenSSL) and JWT signing (RS256; ES256 with the raw 64-byte R||S signature).
-- Every key is generated at test time; no key material is ever printed, only
-- checked facts.
\set VERBOSITY terse

\set rsa_key `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null`
\set rsa_pkcs1_key `openssl genrsa -traditional 2048 2>/dev/null`
\set ec_key `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null`
\set ec_sec1_key `openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null`
\set ec384_key `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 2>/dev/null`
\set encrypted_key `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes-128-cbc -pass pass:secret 2>/dev/null`
-- an APNs-style client certificate and its key, made in one go (cert, then key)
\set apns_pair `d=$(mktemp -d); openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=test -days 2 -keyout $d/k -out $d/c 2>/dev/null; cat $d/c $d/k; rm -rf $d`
-- a VAPID pair: raw public point (65 bytes) and private scalar (32 bytes) cut from the SEC1 DER
\set vapid_pair `d=$(mktemp -d); openssl ecparam -name prime256v1 -genkey -noout -out $d/k 2>/dev/null; openssl ec -in $d/k -outform DER 2>/dev/null | tail -c 65 | basenc --base64url -w0 | tr -d '='; printf ' '; openssl ec -in $d/k -outform DER 2>/dev/null | head -c 39 | tail -c 32 | basenc --base64url -w0 | tr -d '='; rm -rf $d`

SELECT substring(:'apns_pair' FROM '-----BEGIN CERTIFICATE-----.*-----END CERTIFICATE-----') AS apns_cert,
       substring(:'apns_pair' FROM '-----BEGIN PRIVATE KEY-----.*-----END PRIVATE KEY-----') AS apns_cert_key,
       split_part(:'vapid_pair', ' ', 1) AS vapid_pub,
       split_part(:'vapid_pair', ' ', 2) AS vapid_priv \gset

-- the generated material has the expected shape
SELECT :'rsa_key' LIKE '-----BEGIN PRIVATE KEY-----%' AS rsa_pkcs8,
       :'rsa_pkcs1_key' LIKE '-----BEGIN RSA PRIVATE KEY-----%' AS rsa_pkcs1,
       :'ec_key' LIKE '-----BEGIN PRIVATE KEY-----%' AS ec_pkcs8,
       :'ec_sec1_key' LIKE '-----BEGIN EC PRIVATE KEY-----%' AS ec_sec1,
       :'encrypted_key' LIKE '-----BEGIN ENCRYPTED PRIVATE KEY-----%' AS encrypted,
       :'apns_cert' LIKE '-----BEGIN CERTIFICATE-----%' AS cert,
       :'apns_cert_key' LIKE '-----BEGIN PRIVATE KEY-----%' AS cert_key,
       length(:'vapid_pub') AS vapid_pub_len, length(:'vapid_priv') AS vapid_priv_len;

------------------------------------------------------------------------------
-- JWT self-test: sign, check the encoded header/claims, verify with the
-- public half only, check a tampered token fails; returns the signature size
------------------------------------------------------------------------------
SELECT novu._jwt_selftest('RS256', :'rsa_key') AS rs256_pkcs8;
SELECT novu._jwt_selftest('RS256', :'rsa_pkcs1_key') AS rs256_pkcs1;
SELECT novu._jwt_selftest('ES256', :'ec_key') AS es256_pkcs8;
SELECT novu._jwt_selftest('ES256', :'ec_sec1_key') AS es256_sec1;
SELECT novu._jwt_selftest('ES256', :'apns_cert_key') AS es256_cert_key;
-- PEM with literal \n escapes, as copied out of a JSON key file
SELECT position(chr(10) IN replace(:'rsa_key', chr(10), '\n')) = 0 AS one_line,
       novu._jwt_selftest('RS256', replace(:'rsa_key', chr(10), '\n')) AS rs256_escaped,
       novu._jwt_selftest('ES256', replace(:'ec_key', chr(10), '\n')) AS es256_escaped;
-- errors
SELECT novu._jwt_selftest('ES256', :'rsa_key');
SELECT novu._jwt_selftest('RS256', :'ec_key');
SELECT novu._jwt_selftest('ES256', :'ec384_key');
SELECT novu._jwt_selftest('HS256', :'rsa_key');
SELECT novu._jwt_selftest('RS256', 'not a key');
SELECT novu._jwt_selftest('RS256', '');
SELECT novu._jwt_selftest('RS256', :'apns_cert');
-- an encrypted key is refused, never prompted for
SELECT novu._jwt_selftest('ES256', :'encrypted_key');

------------------------------------------------------------------------------
-- provider and shape
------------------------------------------------------------------------------
SELECT novu._validate_integration('gcm', '{}');
SELECT novu._validate_integration('', '{}');
SELECT novu._validate_integration('expo', '[]');
SELECT novu._validate_integration('expo', '"apiKey"');
SELECT novu._validate_integration('expo', 'null');
-- messages, details and hints in full for a few errors
\set VERBOSITY default
SELECT novu._validate_integration('gcm', '{}');
SELECT novu._validate_integration('expo', '{"apiKey": "x", "colour": "red"}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "privateKey": "k"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": "{\"project_id\": not json}"}');
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b.iam.gserviceaccount.com', 'private_key', :'ec_key')));
SELECT novu._validate_integration('apns', '{"applicationId": "com.novu.test"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}');
\set VERBOSITY terse

------------------------------------------------------------------------------
-- fcm
------------------------------------------------------------------------------
-- serviceAccount as an object: token_uri defaults, the key is kept as given
SELECT c #>> '{serviceAccount,project_id}' AS project_id,
       c #>> '{serviceAccount,client_email}' AS client_email,
       c #>> '{serviceAccount,token_uri}' AS token_uri,
       c #>> '{serviceAccount,private_key}' = :'rsa_key' AS key_kept,
       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(c) k) AS keys,
       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(c -> 'serviceAccount') k) AS sa_keys
  FROM novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
        'project_id', 'p', 'client_email', 'a@b.iam.gserviceaccount.com', 'private_key', :'rsa_key'))) c;
-- serviceAccount as a string holding a whole key file: returned parsed, every field kept;
-- endpoint loses its trailing "/"
SELECT jsonb_typeof(c -> 'serviceAccount') AS sa_type,
       c #>> '{serviceAccount,token_uri}' AS token_uri,
       c #>> '{serviceAccount,private_key_id}' AS private_key_id,
       c #>> '{serviceAccount,universe_domain}' AS universe_domain,
       c -> 'endpoint' AS endpoint,
       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(c -> 'serviceAccount') k) AS sa_keys
  FROM novu._validate_integration('fcm', jsonb_build_object(
        'serviceAccount', jsonb_build_object(
            'type', 'service_account', 'project_id', 'novu-test', 'private_key_id', 'k1',
            'private_key', :'rsa_key', 'client_email', 'sender@novu-test.iam.gserviceaccount.com',
            'client_id', '1234567890', 'auth_uri', 'https://accounts.google.com/o/oauth2/auth',
            'token_uri', 'https://127.0.0.1:9000/token',
            'auth_provider_x509_cert_url', 'https://www.googleapis.com/oauth2/v1/certs',
            'client_x509_cert_url', 'https://www.googleapis.com/robot/v1/metadata/x509/sender',
            'universe_domain', 'googleapis.com')::text,
        'endpoint', 'https://127.0.0.1:9443/')) c;
-- a PKCS#1 RSA key in the \n-escaped form is accepted and stored with real newlines
SELECT c #>> '{serviceAccount,private_key}' = :'rsa_pkcs1_key' AS key_unescaped
  FROM novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
        'project_id', 'p', 'client_email', 'a@b.iam.gserviceaccount.com',
        'private_key', replace(:'rsa_pkcs1_key', chr(10), '\n')))) c;
-- a key given as null counts as absent and is dropped
SELECT c #>> '{serviceAccount,token_uri}' AS token_uri, c ? 'endpoint' AS has_endpoint,
       c -> 'serviceAccount' ? 'client_id' AS has_client_id
  FROM novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
        'project_id', 'p', 'client_email', 'a@b.iam.gserviceaccount.com', 'private_key', :'rsa_key',
        'token_uri', NULL, 'client_id', NULL), 'endpoint', NULL)) c;
-- errors
SELECT novu._validate_integration('fcm', '{}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": null}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": 42}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": ["x"]}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": "not json"}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": "[1, 2]"}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": "\"a string\""}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": "{\"project_id\": \"a\\u0000b\"}"}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {}, "colour": "red"}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "privateKey": "k"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"client_email": "a@b", "private_key": "k"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "", "client_email": "a@b", "private_key": "k"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": 7, "client_email": "a@b", "private_key": "k"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "private_key": "k"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "client_email": "", "private_key": "k"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "client_email": "a@b"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "client_email": "a@b", "private_key": 1}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "client_email": "a@b", "private_key": "not a key"}}');
SELECT novu._validate_integration('fcm', '{"serviceAccount": {"project_id": "p", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}');
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'ec_key')));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'encrypted_key')));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'apns_cert')));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key', 'private_key_id', 5)));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key', 'private_key_id', '')));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key', 'token_uri', 'ftp://oauth2.googleapis.com/token')));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key', 'token_uri', 'oauth2.googleapis.com/token')));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key', 'token_uri', 'https://oauth2.googleapis.com/to ken')));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key'), 'endpoint', 'https://fcm.example.com/v1'));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key'), 'endpoint', 'ftp://fcm.example.com'));
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount', jsonb_build_object(
    'project_id', 'p', 'client_email', 'a@b', 'private_key', :'rsa_key'), 'endpoint', 42));

------------------------------------------------------------------------------
-- apns
------------------------------------------------------------------------------
-- token auth: secure defaults to false
SELECT c - 'secretKey' AS credentials, c ->> 'secretKey' = :'ec_key' AS key_kept
  FROM novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'ABC123DEFG',
        'projectName', 'TEAM123456', 'applicationId', 'com.novu.test')) c;
-- "true"/"false" strings become booleans; SEC1 and \n-escaped keys are accepted
SELECT c -> 'secure' AS secure, jsonb_typeof(c -> 'secure') AS type
  FROM novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_sec1_key', 'apiKey', 'ABC123DEFG',
        'projectName', 'TEAM123456', 'applicationId', 'com.novu.test', 'secure', 'true')) c;
SELECT c -> 'secure' AS secure, c -> 'endpoint' AS endpoint, c ->> 'secretKey' = :'ec_key' AS key_unescaped
  FROM novu._validate_integration('apns', jsonb_build_object('secretKey', replace(:'ec_key', chr(10), '\n'),
        'apiKey', 'ABC123DEFG', 'projectName', 'TEAM123456', 'applicationId', 'com.novu.test',
        'secure', 'false', 'endpoint', 'https://[2606:4700:4700::1111]:8443')) c;
-- certificate auth
SELECT c - 'certificate' - 'privateKey' AS credentials,
       c ->> 'certificate' = :'apns_cert' AND c ->> 'privateKey' = :'apns_cert_key' AS pem_kept
  FROM novu._validate_integration('apns', jsonb_build_object('certificate', :'apns_cert', 'privateKey', :'apns_cert_key',
        'applicationId', 'com.novu.test', 'secure', true)) c;
-- \n-escaped certificate and key are accepted and stored with real newlines
SELECT c ->> 'certificate' = :'apns_cert' AND c ->> 'privateKey' = :'apns_cert_key' AS pem_unescaped
  FROM novu._validate_integration('apns', jsonb_build_object('certificate', replace(:'apns_cert', chr(10), '\n'),
        'privateKey', replace(:'apns_cert_key', chr(10), '\n'), 'applicationId', 'com.novu.test')) c;
-- switching modes: the other mode's keys set to null are dropped
SELECT (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(c) k) AS keys
  FROM novu._validate_integration('apns', jsonb_build_object('secretKey', NULL, 'apiKey', NULL, 'projectName', NULL,
        'certificate', :'apns_cert', 'privateKey', :'apns_cert_key', 'applicationId', 'com.novu.test')) c;
-- errors
SELECT novu._validate_integration('apns', '{"applicationId": "com.novu.test"}');
SELECT novu._validate_integration('apns', '{"applicationId": "com.novu.test", "teamId": "T"}');
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'K', 'projectName', 'T',
    'certificate', :'apns_cert', 'applicationId', 'com.novu.test'));
SELECT novu._validate_integration('apns', '{"apiKey": "K", "projectName": "T", "applicationId": "com.novu.test"}');
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'projectName', 'T', 'applicationId', 'com.novu.test'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', '', 'projectName', 'T', 'applicationId', 'com.novu.test'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'K', 'applicationId', 'com.novu.test'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'K', 'projectName', 'T'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', ''));
SELECT novu._validate_integration('apns', '{"secretKey": "garbage", "apiKey": "K", "projectName": "T", "applicationId": "com.x"}');
SELECT novu._validate_integration('apns', '{"secretKey": true, "apiKey": "K", "projectName": "T", "applicationId": "com.x"}');
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'rsa_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec384_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'encrypted_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', 'com.x', 'secure', 'yes'));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', 'com.x', 'secure', 1));
SELECT novu._validate_integration('apns', jsonb_build_object('secretKey', :'ec_key', 'apiKey', 'K', 'projectName', 'T', 'applicationId', 'com.x', 'endpoint', 'https://api.push.apple.com/3/device'));
SELECT novu._validate_integration('apns', jsonb_build_object('privateKey', :'apns_cert_key', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('certificate', :'apns_cert', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('certificate', 'not a certificate', 'privateKey', :'apns_cert_key', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('certificate', :'apns_cert_key', 'privateKey', :'apns_cert_key', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('certificate', :'apns_cert', 'privateKey', 'not a key', 'applicationId', 'com.x'));
-- a certificate with someone else's key
SELECT novu._validate_integration('apns', jsonb_build_object('certificate', :'apns_cert', 'privateKey', :'ec_key', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('certificate', :'apns_cert', 'privateKey', :'rsa_key', 'applicationId', 'com.x'));
SELECT novu._validate_integration('apns', jsonb_build_object('certificate', :'apns_cert', 'privateKey', :'apns_cert_key'));

------------------------------------------------------------------------------
-- expo
------------------------------------------------------------------------------
SELECT novu._validate_integration('expo', '{}');
SELECT novu._validate_integration('expo', '{"apiKey": "expo-access-token", "endpoint": "HTTPS://LocalHost:8080"}');
SELECT novu._validate_integration('expo', '{"apiKey": null}');
-- errors
SELECT novu._validate_integration('expo', '{"apiKey": ""}');
SELECT novu._validate_integration('expo', '{"apiKey": 12}');
SELECT novu._validate_integration('expo', '{"accessToken": "t"}');
SELECT novu._validate_integration('expo', '{"endpoint": ""}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://:443"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://exp.host:0"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://exp.host:65536"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://exp.host:80a"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://user:pw@exp.host"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://exp.host/?x=1"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://exp.host//"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://exp host"}');
SELECT novu._validate_integration('expo', '{"endpoint": "exp.host"}');

------------------------------------------------------------------------------
-- one-signal
------------------------------------------------------------------------------
SELECT novu._validate_integration('one-signal', '{"applicationId": "app-id", "apiKey": "rest-key", "endpoint": "https://127.0.0.1:9001"}');
-- errors
SELECT novu._validate_integration('one-signal', '{"applicationId": "app"}');
SELECT novu._validate_integration('one-signal', '{"apiKey": "k"}');
SELECT novu._validate_integration('one-signal', '{"applicationId": "", "apiKey": "k"}');
SELECT novu._validate_integration('one-signal', '{"applicationId": "app", "apiKey": ["k"]}');
SELECT novu._validate_integration('one-signal', '{"applicationId": "app", "apiKey": "k", "appId": "x"}');
SELECT novu._validate_integration('one-signal', '{"applicationId": "app", "apiKey": "k", "endpoint": "https://onesignal.com/api/v1"}');

------------------------------------------------------------------------------
-- push-webhook
------------------------------------------------------------------------------
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/push?team=1", "secretKey": "s3cret"}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://127.0.0.1:8080/hook", "secretKey": "s3cret"}');
-- errors
SELECT novu._validate_integration('push-webhook', '{"secretKey": "s"}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/push"}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/push", "secretKey": ""}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "not a url", "secretKey": "s"}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "ftp://hooks.example.com/push", "secretKey": "s"}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/a b", "secretKey": "s"}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https:///push", "secretKey": "s"}');
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/push", "secretKey": "s", "endpoint": "https://x"}');

------------------------------------------------------------------------------
-- web-push (RFC 8291 Appendix A user-agent keys: a known P-256 pair)
------------------------------------------------------------------------------
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}');
-- padding is accepted and removed
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4=", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94=", "subject": "https://example.com/contact"}') - 'subject';
-- a pair generated now with openssl
SELECT c ->> 'vapidPublicKey' = :'vapid_pub' AND c ->> 'vapidPrivateKey' = :'vapid_priv' AS pair_kept
  FROM novu._validate_integration('web-push', jsonb_build_object('vapidPublicKey', :'vapid_pub',
        'vapidPrivateKey', :'vapid_priv', 'subject', 'mailto:ops@example.com')) c;
-- errors
SELECT novu._validate_integration('web-push', '{"vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "subject": "mailto:ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com", "gcmKey": "x"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N+eNgVRqvHtD0zTZsEc6/VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "ACVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}');
-- 0x04 || (0, 0): not on the curve
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM9", "subject": "mailto:ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLc", "subject": "mailto:ops@example.com"}');
-- a mismatched pair: the RFC's user-agent public key with its application-server private key
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw", "subject": "mailto:ops@example.com"}');
-- the generated public key with the RFC's private key
SELECT novu._validate_integration('web-push', jsonb_build_object('vapidPublicKey', :'vapid_pub',
    'vapidPrivateKey', 'q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94', 'subject', 'mailto:ops@example.com'));
-- a zero private key is no P-256 key
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "subject": "mailto:ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "ops@example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "http://example.com"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:"}');
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": 1}');

-- RFC 8291 Appendix A: the fixed sender key and salt give the RFC's body, byte for byte
SELECT novu._webpush_selftest();
-- a VAPID subject is mailto:user@host or an https:// URL
SELECT novu._validate_integration('web-push', '{"vapidPublicKey": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "vapidPrivateKey": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "subject": "mailto:ops"}');
-- the providers of this version, listed by the library, and their channels
SELECT novu._providers() AS all_providers;
SELECT novu._providers('chat') AS chat_providers;
SELECT p, novu._provider_channel(p) FROM unnest(ARRAY['fcm', 'web-push', 'discord', 'chat-webhook']) p;
-- target forms of the new providers
\set VERBOSITY default
SELECT novu._check_device_token('one-signal', '1dd608f2-c6a1-11e3-851d-000c2940e62c', 'credentials.deviceTokens[0]');
SELECT novu._check_device_token('one-signal', 'player-1', 'credentials.deviceTokens[0]');
SELECT novu._check_device_token('discord', 'http://discord.com/api/webhooks/1/x', 'credentials.webhookUrl');
SELECT novu._check_device_token('web-push', '{"endpoint": "https://push.example.com/x", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}', 'sub');
SELECT novu._check_device_token('web-push', '{"endpoint": "https://push.example.com/x", "keys": {"p256dh": "BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}', 'sub');
SELECT novu._check_device_token('web-push', '{"endpoint": "https://push.example.com/x", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSI"}}', 'sub');
SELECT novu._check_device_token('web-push', '{"endpoint": "https://user:pw@push.example.com/x", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}', 'sub');
\set VERBOSITY terse
