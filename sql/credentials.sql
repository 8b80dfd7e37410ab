-- credentials: set (PUT), add (PATCH), remove one token, delete; integration
-- selection; a token belongs to one subscriber per integration.
\set VERBOSITY terse

SELECT novu.identify('cred-a') IS NOT NULL, novu.identify('cred-b') IS NOT NULL;

-- without integration_identifier: the newest active integration of the provider (fcm-second)
SELECT novu.set_credentials('cred-a', 'fcm', '{"deviceTokens": ["t1", "t2", "t1"]}') -> 'channels';
-- named integration
SELECT novu.set_credentials('cred-a', 'fcm', '{"deviceTokens": ["m1"]}', 'fcm-main') -> 'channels';
-- PUT replaces
SELECT novu.set_credentials('cred-a', 'fcm', '{"deviceTokens": ["t3", "t2"]}') #> '{channels,1,credentials}';
-- PATCH appends and de-duplicates
SELECT novu.add_credentials('cred-a', 'fcm', '{"deviceTokens": ["t2", "t4"]}') #> '{channels,1,credentials}';
-- the newest *active* one: deactivating fcm-second sends tokens to fcm-main
SELECT novu.update_integration('fcm-second', '{"active": false}') ->> 'active';
SELECT novu.add_credentials('cred-a', 'fcm', '{"deviceTokens": ["m2"]}') #> '{channels,0,credentials}';
SELECT novu.update_integration('fcm-second', '{"active": true}') ->> 'active';
-- another provider
SELECT novu.add_credentials('cred-a', 'apns', '{"deviceTokens": ["aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11"]}', 'apns-main') #> '{channels,0}';

-- a device token belongs to one subscriber per integration: storing it for B takes it from A
SELECT novu.add_credentials('cred-b', 'fcm', '{"deviceTokens": ["t4"]}') -> 'channels';
SELECT subscriber_id, device_token FROM novu.device_tokens d JOIN novu.integrations i ON i.id = d.integration_id
 WHERE i.identifier = 'fcm-second' ORDER BY device_token;
-- ... but the same token under another integration is another device registration
SELECT novu.add_credentials('cred-b', 'fcm', '{"deviceTokens": ["m1"]}', 'fcm-second') IS NOT NULL;
SELECT i.identifier, d.device_token, d.subscriber_id FROM novu.device_tokens d JOIN novu.integrations i ON i.id = d.integration_id
 WHERE d.device_token = 'm1' ORDER BY 1;

-- attack: append tokens without end (a trigger makes one message per token):
-- at most 100 per subscriber and integration in all; the call that would pass
-- it writes nothing, a replacement (PUT) of 100 is fine
SELECT novu.identify('cred-many') IS NOT NULL;
SELECT novu.add_credentials('cred-many', 'fcm', jsonb_build_object('deviceTokens', (SELECT jsonb_agg('many-' || i) FROM generate_series(1, 60) i))) IS NOT NULL;
SELECT novu.add_credentials('cred-many', 'fcm', jsonb_build_object('deviceTokens', (SELECT jsonb_agg('many-' || i) FROM generate_series(41, 100) i))) IS NOT NULL;
SELECT novu.add_credentials('cred-many', 'fcm', '{"deviceTokens": ["many-101"]}');
SELECT count(*) FROM novu.device_tokens WHERE subscriber_id = 'cred-many';
SELECT novu.set_credentials('cred-many', 'fcm', jsonb_build_object('deviceTokens', (SELECT jsonb_agg('other-' || i) FROM generate_series(1, 100) i))) IS NOT NULL;
SELECT count(*), min(device_token) FROM novu.device_tokens WHERE subscriber_id = 'cred-many';
SELECT novu.remove_device_token('cred-many', 'fcm', 'other-1');
SELECT novu.add_credentials('cred-many', 'fcm', '{"deviceTokens": ["many-101"]}') IS NOT NULL;
SELECT novu.delete_subscriber('cred-many');

-- push-webhook takes a webhookUrl as well
SELECT novu.set_credentials('cred-b', 'push-webhook', '{"webhookUrl": "https://hooks.example.com/u/b", "deviceTokens": ["w1"]}') #> '{channels}';

-- remove one token
SELECT novu.remove_device_token('cred-a', 'fcm', 't3');
SELECT novu.remove_device_token('cred-a', 'fcm', 't3');
SELECT novu.remove_device_token('cred-a', 'fcm', 'm2', 'fcm-main');
SELECT novu.get_subscriber('cred-a') -> 'channels';

-- delete: one integration, then the whole provider
SELECT novu.delete_credentials('cred-a', 'fcm', 'fcm-main');
SELECT novu.delete_credentials('cred-a', 'fcm');
SELECT novu.delete_credentials('cred-a', 'fcm');
SELECT novu.get_subscriber('cred-a') -> 'channels';

-- deleting a subscriber deletes its credentials
SELECT novu.set_credentials('cred-a', 'expo', '{"deviceTokens": ["ExponentPushToken[x]"]}') IS NOT NULL;
SELECT novu.delete_subscriber('cred-a');
SELECT count(*) FROM novu.device_tokens WHERE subscriber_id = 'cred-a';

-- deleting an integration deletes the tokens stored for it
SELECT novu.create_integration('expo', '{}', 'expo-temp') IS NOT NULL;
SELECT novu.set_credentials('cred-b', 'expo', '{"deviceTokens": ["ExponentPushToken[y]"]}', 'expo-temp') IS NOT NULL;
SELECT novu.delete_integration('expo-temp');
SELECT count(*) FROM novu.device_tokens WHERE device_token = 'ExponentPushToken[y]';

-- a rolled-back set_credentials leaves the old tokens
BEGIN;
SELECT novu.set_credentials('cred-b', 'fcm', '{"deviceTokens": []}') IS NOT NULL;
ROLLBACK;
SELECT novu.get_subscriber('cred-b') #> '{channels,0,credentials}';

-- errors, each writes nothing
SELECT novu.set_credentials('cred-b', 'fcm', '{"deviceTokens": "t1"}');
SELECT novu.set_credentials('cred-b', 'fcm', '{"deviceTokens": ["ok", ""]}');
SELECT novu.set_credentials('cred-b', 'fcm', '{"deviceTokens": ["ok", 7]}');
SELECT novu.set_credentials('cred-b', 'fcm', '{"deviceTokens": [null]}');
SELECT novu.set_credentials('cred-b', 'fcm', '["t1"]');
SELECT novu.set_credentials('cred-b', 'fcm', '{"token": "t1"}');
SELECT novu.set_credentials('cred-b', 'fcm', '{"webhookUrl": "https://x.example"}');
SELECT novu.set_credentials('cred-b', 'push-webhook', '{"webhookUrl": "ftp://x.example"}');
SELECT novu.set_credentials('cred-b', 'push-webhook', '{"webhookUrl": "not a url"}');
SELECT novu.set_credentials('cred-b', 'gcm', '{"deviceTokens": ["t1"]}');
SELECT novu.set_credentials('cred-b', 'fcm', '{"deviceTokens": ["t1"]}', 'apns-main');
SELECT novu.set_credentials('cred-b', 'fcm', '{"deviceTokens": ["t1"]}', 'fcm-nope');
SELECT novu.set_credentials('cred-b', 'one-signal', '{"deviceTokens": ["t1"]}');
SELECT novu.set_credentials('nobody', 'fcm', '{"deviceTokens": ["t1"]}');
SELECT novu.set_credentials('cred-b', 'web-push', '{"deviceTokens": ["{\"endpoint\": \"http://insecure\"}"]}');
SELECT novu.set_credentials('cred-b', 'fcm', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('x', 4097))));
SELECT novu.remove_device_token('cred-b', 'gcm', 't1');
SELECT novu.remove_device_token('cred-b', 'fcm', 't1', 'apns-main');
SELECT novu.delete_credentials('cred-b', 'fcm', 'fcm-nope');
SELECT novu.get_subscriber('cred-b') -> 'channels' AS unchanged_after_errors;
