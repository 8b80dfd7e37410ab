-- url_policy: the outbound URL policy at SQL time (DESIGN section 5), as attacks.
-- Every URL a worker will call is https only, without user:password@ or a
-- fragment, and of bounded length; a literal address in a refused range is
-- refused when stored (the connect-time check is the guarantee, tested end to
-- end in test/t/006_url_policy.pl).  The test cluster allows 127.0.0.1/32
-- (novu.allowed_private_networks, a superuser-only, reloadable setting).
\set VERBOSITY default
\set SHOW_CONTEXT never
\set rsa_key `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null`
\set sa '{"project_id": "p", "client_email": "a@b.iam.gserviceaccount.com"}'

-- plain http: access tokens, JWT assertions and notifications would travel in clear
SELECT novu._validate_integration('expo', '{"endpoint": "http://exp.host"}');
SELECT novu._validate_integration('one-signal', '{"applicationId": "a", "apiKey": "k", "endpoint": "HTTP://onesignal.com"}');
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount',
    :'sa'::jsonb || jsonb_build_object('private_key', :'rsa_key', 'token_uri', 'http://oauth2.googleapis.com/token'))) #> '{serviceAccount,token_uri}';
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "http://hooks.example.com/push", "secretKey": "s"}');
SELECT novu.create_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/push", "secretKey": "s3cret"}', 'url-hook');
SELECT novu.identify('url-sub') ->> 'subscriberId';
SELECT novu.set_credentials('url-sub', 'push-webhook', '{"webhookUrl": "http://hooks.example.com/u"}', 'url-hook');

-- user:password@ in the authority (also when it only looks like one)
SELECT novu._validate_integration('one-signal', '{"applicationId": "a", "apiKey": "k", "endpoint": "https://user:pw@onesignal.com"}');
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount',
    :'sa'::jsonb || jsonb_build_object('private_key', :'rsa_key', 'token_uri', 'https://oauth2.googleapis.com@10.0.0.1/token'))) #> '{serviceAccount,token_uri}';
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com:pw@127.0.0.1/hook", "secretKey": "s"}');
SELECT novu.set_credentials('url-sub', 'push-webhook', '{"webhookUrl": "https://token@hooks.example.com/u"}', 'url-hook');

-- fragments, and a path on a base URL
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://hooks.example.com/push#x", "secretKey": "s"}');
SELECT novu.set_credentials('url-sub', 'push-webhook', '{"webhookUrl": "https://hooks.example.com/u#frag"}', 'url-hook');
SELECT novu._validate_integration('expo', '{"endpoint": "https://exp.host/#"}');

-- bounded length
SELECT length(novu._validate_integration('push-webhook', jsonb_build_object('webhookUrl',
    'https://hooks.example.com/' || repeat('a', 2100), 'secretKey', 's')) ->> 'webhookUrl');
SELECT length(novu.set_credentials('url-sub', 'push-webhook', jsonb_build_object('webhookUrl',
    'https://hooks.example.com/' || repeat('a', 2100)), 'url-hook')::text);

-- literal addresses in refused ranges are refused when stored
SELECT novu._validate_integration('expo', '{"endpoint": "https://127.0.0.2:9443"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://169.254.169.254"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://[::1]:8443"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://[::ffff:10.1.2.3]"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://[fd00:ec2::254]"}');
-- numeric forms a resolver reads as IPv4 (0x7f.2 and 2130706434 are 127.0.0.2)
SELECT novu._validate_integration('expo', '{"endpoint": "https://0x7f.2"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://2130706434"}');
SELECT novu._validate_integration('expo', '{"endpoint": "https://0"}');
SELECT novu._validate_integration('fcm', jsonb_build_object('serviceAccount',
    :'sa'::jsonb || jsonb_build_object('private_key', :'rsa_key', 'token_uri', 'https://192.168.1.10/token'))) #> '{serviceAccount,token_uri}';
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://100.64.0.1/hook", "secretKey": "s"}');
SELECT novu.set_credentials('url-sub', 'push-webhook', '{"webhookUrl": "https://172.16.5.4/u"}', 'url-hook');

-- the ranges, at their edges (127.0.0.1/32 is allowed by the test cluster)
CREATE FUNCTION pg_temp.verdict(url text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM novu._check_url(url, 'u');
    RETURN 'accepted';
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN regexp_replace(SQLERRM, '^u points to (.*), which the outbound URL policy refuses$', '\1');
END $$;
SELECT u AS url, pg_temp.verdict(u) FROM unnest(ARRAY[
    'https://0.255.255.255', 'https://1.0.0.1', 'https://9.255.255.255', 'https://10.0.0.0', 'https://10.255.255.255',
    'https://11.0.0.0', 'https://100.63.255.255', 'https://100.64.0.0', 'https://100.127.255.255', 'https://100.128.0.0',
    'https://126.255.255.255', 'https://127.0.0.1', 'https://127.255.255.255', 'https://128.0.0.0',
    'https://169.253.255.255', 'https://169.254.0.1', 'https://169.255.0.0', 'https://172.15.255.255', 'https://172.16.0.0',
    'https://172.31.255.255', 'https://172.32.0.0', 'https://192.0.0.8', 'https://192.0.1.1', 'https://192.0.2.1',
    'https://192.88.99.1', 'https://192.167.255.255', 'https://192.168.0.1', 'https://192.169.0.0',
    'https://198.17.255.255', 'https://198.18.0.1', 'https://198.19.255.255', 'https://198.20.0.0',
    'https://198.51.100.1', 'https://203.0.113.1', 'https://223.255.255.255', 'https://224.0.0.1',
    'https://239.255.255.250', 'https://240.0.0.1', 'https://255.255.255.255',
    'https://[::]', 'https://[::1]', 'https://[::2]', 'https://[::ffff:127.0.0.1]', 'https://[::ffff:127.0.0.2]',
    'https://[::ffff:8.8.8.8]', 'https://[::ffff:0:10.0.0.1]', 'https://[::10.0.0.1]', 'https://[64:ff9b::10.0.0.1]',
    'https://[64:ff9b::8.8.8.8]', 'https://[64:ff9b:1::1]', 'https://[2002:a00:1::1]', 'https://[2002:808:808::1]',
    'https://[100::1]', 'https://[2001::1]', 'https://[2001:2::1]', 'https://[2001:db8::1]', 'https://[3fff::1]',
    'https://[fbff:ffff::1]', 'https://[fc00::1]', 'https://[fdff:ffff::1]', 'https://[fe80::1]', 'https://[febf::1]',
    'https://[fec0::1]', 'https://[ff02::1]', 'https://[2606:4700::1111]', 'https://[2a00:1450::1]']) u;

-- what stays accepted: https, public literals, the allowed 127.0.0.1, host names
SELECT novu._validate_integration('expo', '{"endpoint": "HTTPS://127.0.0.1:9443/"}') AS allowed_loopback;
SELECT novu._validate_integration('expo', '{"endpoint": "https://[2606:4700:4700::1111]:8443"}') AS public_v6;
SELECT novu._validate_integration('push-webhook', '{"webhookUrl": "https://8.8.8.8/hook?team=1&x=%20", "secretKey": "s"}') ->> 'webhookUrl' AS public_v4;
SELECT novu.set_credentials('url-sub', 'push-webhook', '{"webhookUrl": "https://hooks.example.com/u?k=v"}', 'url-hook') #> '{channels,0,credentials}' AS webhook;

-- through the admin API as well
SET ROLE novu_admin;
SELECT novu.create_integration('expo', '{"endpoint": "http://exp.host"}', 'expo-plain');
SELECT novu.create_integration('expo', '{}', 'expo-url') IS NOT NULL AS created;
SELECT novu.update_integration('expo-url', '{"credentials": {"endpoint": "https://10.0.0.8"}}');
SELECT novu.delete_integration('expo-url');

-- the setting: superuser only, reloadable, validated
SHOW novu.allowed_private_networks;
RESET ROLE;
SELECT context, vartype, boot_val FROM pg_settings WHERE name = 'novu.allowed_private_networks';
SET novu.allowed_private_networks = '10.0.0.0/8';
ALTER SYSTEM SET novu.allowed_private_networks = 'not-a-network';
ALTER SYSTEM SET novu.allowed_private_networks = '10.0.0.0/8, 300.1.2.3/32';
ALTER SYSTEM SET novu.allowed_private_networks = '10.1.2.3/8';
ALTER SYSTEM SET novu.allowed_private_networks = '10.0.0.0/33';
ALTER SYSTEM SET novu.allowed_private_networks = 'fd00::/7';
ALTER SYSTEM SET novu.allowed_private_networks = '10.0.0.0/8,,fc00::/7';
ALTER SYSTEM SET novu.allowed_private_networks = '10.0.0.0/8 192.168.0.0/16';
ALTER SYSTEM SET novu.allowed_private_networks = ' 10.0.0.0/8, 192.168.1.7 ,fc00::/7, ::ffff:127.0.0.1/128 ';
ALTER SYSTEM RESET novu.allowed_private_networks;
SET ROLE novu_admin;
ALTER SYSTEM SET novu.allowed_private_networks = '0.0.0.0/0';
RESET ROLE;

SELECT novu.delete_subscriber('url-sub');
SELECT novu.delete_integration('url-hook');
