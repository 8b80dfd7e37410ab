-- provider_safety: attacks on the push providers' targets, refused before
-- anything is stored (DESIGN.md 5).  Device tokens must have their provider's
-- form (an APNs token becomes the URL path); overrides shape the notification
-- and can never change its target (token, topic, condition, "to"), its
-- authentication (authorization, apns-topic) or inject a header.
\set VERBOSITY terse
\set SHOW_CONTEXT never

SELECT novu.identify('ps-1') IS NOT NULL;

-- ---------------------------------------------------------------------------
-- device tokens, per provider
-- ---------------------------------------------------------------------------

-- APNs: the token goes into the URL path /3/device/<token>: a path traversal
-- and a query must never get there (the error names the token and the form)
\set VERBOSITY default
SELECT novu.set_credentials('ps-1', 'apns', '{"deviceTokens": ["../x?y"]}', 'apns-main');
\set VERBOSITY terse
SELECT novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('ab', 32), '../../3/device/' || repeat('ab', 32))), 'apns-main');
SELECT novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('ab', 32) || '?x=1')), 'apns-main');
SELECT novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('ab', 32) || '/')), 'apns-main');
SELECT novu.set_credentials('ps-1', 'apns', '{"deviceTokens": ["aa11"]}', 'apns-main');                                     -- too short
SELECT novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('a', 65))), 'apns-main');   -- odd
SELECT novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('ab', 101))), 'apns-main'); -- 202 > 200
SELECT novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('g', 64))), 'apns-main');   -- not hex
SELECT novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens', jsonb_build_array(repeat('ab', 31) || E'\r\n')), 'apns-main');
-- accepted: 64 hex (either case) and longer simulator tokens
SELECT jsonb_array_length(novu.set_credentials('ps-1', 'apns', jsonb_build_object('deviceTokens',
       jsonb_build_array(repeat('ab', 32), repeat('CD', 32), repeat('0f', 80))), 'apns-main') #> '{channels,0,credentials,deviceTokens}');

-- FCM: letters, digits, '-', '_', ':'
SELECT novu.set_credentials('ps-1', 'fcm', '{"deviceTokens": ["fcm-ok", "tok/../x"]}', 'fcm-main');
SELECT novu.set_credentials('ps-1', 'fcm', '{"deviceTokens": ["has space"]}', 'fcm-main');
SELECT novu.set_credentials('ps-1', 'fcm', '{"deviceTokens": ["tok?x=1"]}', 'fcm-main');
SELECT novu.set_credentials('ps-1', 'fcm', '{"deviceTokens": ["tok\"x"]}', 'fcm-main');
SELECT novu.set_credentials('ps-1', 'fcm', '{"deviceTokens": ["tok\nx"]}', 'fcm-main');
SELECT novu.set_credentials('ps-1', 'fcm', '{"deviceTokens": ["dGVzdA:APA91bH-x_y"]}', 'fcm-main') #> '{channels}';

-- Expo: ExponentPushToken[...] / ExpoPushToken[...] (or a bare UUID)
SELECT novu.set_credentials('ps-1', 'expo', '{"deviceTokens": ["not-an-expo-token"]}', 'expo-main');
SELECT novu.set_credentials('ps-1', 'expo', '{"deviceTokens": ["ExponentPushToken[]"]}', 'expo-main');
SELECT novu.set_credentials('ps-1', 'expo', '{"deviceTokens": ["ExponentPushToken[abc]def"]}', 'expo-main');
SELECT novu.set_credentials('ps-1', 'expo', '{"deviceTokens": ["ExponentPushToken[a b]"]}', 'expo-main');
SELECT novu.set_credentials('ps-1', 'expo', '{"deviceTokens": ["ExponentPushToken[a\"]"]}', 'expo-main');
SELECT novu.set_credentials('ps-1', 'expo', '{"deviceTokens": ["ExponentPushToken[xXx-1_2]", "ExpoPushToken[abc]",
       "8d1c1a0e-7a0a-4b6e-9c49-0a5d8b2f1e3c"]}', 'expo-main') #> '{channels,1,credentials}';

-- web-push: the browser's subscription JSON (https endpoint, keys.p256dh, keys.auth)
SELECT novu.set_credentials('ps-1', 'web-push', '{"deviceTokens": ["not json"]}', 'web-push-main');
SELECT novu.set_credentials('ps-1', 'web-push', jsonb_build_object('deviceTokens', jsonb_build_array(
       '{"endpoint": "http://push.example.com/1", "keys": {"p256dh": "BCVx", "auth": "BTBZ"}}')), 'web-push-main');
SELECT novu.set_credentials('ps-1', 'web-push', jsonb_build_object('deviceTokens', jsonb_build_array(
       '{"endpoint": "https://push.example.com/1"}')), 'web-push-main');
SELECT novu.set_credentials('ps-1', 'web-push', jsonb_build_object('deviceTokens', jsonb_build_array(
       '{"endpoint": "https://push.example.com/1", "keys": {"p256dh": "BC/x+", "auth": "BTBZ"}}')), 'web-push-main');
SELECT novu.set_credentials('ps-1', 'web-push', jsonb_build_object('deviceTokens', jsonb_build_array(
       '{"endpoint": "https://push.example.com/1", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}, "expirationTime": null}')),
       'web-push-main') IS NOT NULL AS web_push_ok;

-- every path that stores tokens checks them: add_credentials, identify's and
-- bulk_identify's channels, a trigger's inline subscriber
SELECT novu.add_credentials('ps-1', 'apns', '{"deviceTokens": ["../x?y"]}', 'apns-main');
SELECT novu.identify('ps-2', '{"channels": [{"providerId": "apns", "integrationIdentifier": "apns-main", "credentials": {"deviceTokens": ["../x?y"]}}]}');
SELECT novu.update_subscriber('ps-1', '{"channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["a/b"]}}]}');
SELECT novu.bulk_identify('[{"subscriberId": "ps-3", "channels": [{"providerId": "expo", "integrationIdentifier": "expo-main", "credentials": {"deviceTokens": ["nope"]}}]},
                            {"subscriberId": "ps-4"}]') -> 'failed';
SELECT novu.trigger('order-shipped', '{"subscriberId": "ps-5", "channels": [{"providerId": "apns", "integrationIdentifier": "apns-main", "credentials": {"deviceTokens": ["../x?y"]}}]}',
                    '{}', '{}', 'ps-tx-inline');
-- nothing of the refused calls was stored
SELECT (SELECT count(*) FROM novu.subscribers WHERE subscriber_id IN ('ps-2', 'ps-3', 'ps-5')) AS subscribers,
       (SELECT count(*) FROM novu.events WHERE transaction_id = 'ps-tx-inline') AS events,
       (SELECT count(*) FROM novu.device_tokens WHERE subscriber_id LIKE 'ps-%' AND device_token NOT LIKE '{%'
           AND (device_token ~ '[/?. "]' OR device_token ~ '[\r\n]' OR device_token IN ('aa11', 'nope'))) AS bad_tokens;

-- ---------------------------------------------------------------------------
-- overrides: a trigger (and bulk_trigger, broadcast) cannot retarget or inject
-- ---------------------------------------------------------------------------

-- FCM: token, topic, condition are the target
\set VERBOSITY default
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"token": "attacker-device"}}', 'ps-tx-1');
\set VERBOSITY terse
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"topic": "everyone"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"condition": "''a'' in topics || ''b'' in topics"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"providers": {"fcm": {"token": "attacker-device"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"steps": {"push-0": {"fcm": {"token": "attacker-device"}}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"fid": "x"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"validate_only": true}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"apns": {"headers": {"apns-topic": "com.attacker"}}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"apns": {"live_activity_token": "x"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"webpush": {"headers": {"Urgency": "high\r\nX-Evil: 1"}}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": "not an object"}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"fcm": {"android": "HIGH"}}', 'ps-tx-1');

-- APNs: headers only from the allowlist, without control characters, once each
\set VERBOSITY default
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-collapse-id": "x\r\napns-topic: com.attacker"}}}', 'ps-tx-1');
\set VERBOSITY terse
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-collapse-id": "x\nY"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-topic": "com.attacker"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"APNS-Topic": "com.attacker"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"authorization": "bearer x"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {":path": "/3/device/00"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"x-custom": "1"}}}', 'ps-tx-1');
\set VERBOSITY default
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-priority": "5", "APNS-Priority": "10"}}}', 'ps-tx-1');
\set VERBOSITY terse
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-priority": "7"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-push-type": "voip"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-expiration": "soon"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', jsonb_build_object('apns', jsonb_build_object('headers', jsonb_build_object('apns-collapse-id', repeat('c', 65)))), 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"headers": {"apns-priority": {"x": 1}}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"apns": {"topic": "com.attacker"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"providers": {"apns": {"headers": "apns-topic: x"}}}', 'ps-tx-1');

-- Expo: never "to"; only Expo's message fields
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"to": "ExponentPushToken[attacker]"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"providers": {"expo": {"to": ["ExponentPushToken[a]", "ExponentPushToken[b]"]}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"recipients": "x"}}', 'ps-tx-1');

-- Expo: each field with the type Expo's message takes (PROTOCOLS.md 3.1): Expo
-- refuses a whole request for one wrong value, so one trigger's override would
-- fail the other subscribers' messages sent with it
\set VERBOSITY default
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"priority": "urgent"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"ttl": "3600"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": 1}}', 'ps-tx-1');
\set VERBOSITY terse
DO $$
BEGIN
    PERFORM novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"badge": "1"}}', 'ps-tx-1');
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE 'refused with SQLSTATE %: %', SQLSTATE, SQLERRM;
END
$$;
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"priority": 10}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"priority": "HIGH"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"priority": null}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"ttl": true}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"expiration": "tomorrow"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"badge": [1]}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"title": 5}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"title": null}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"body": ["x"]}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"subtitle": {"text": "x"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"channelId": 1}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"categoryId": false}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"icon": 1}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"collapseId": 1}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"tag": {}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": true}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": ["default"]}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": {"critical": "yes"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": {"name": 5}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": {"volume": "loud"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"mutableContent": "true"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"_contentAvailable": 1}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"_displayInForeground": "yes"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"interruptionLevel": "urgent"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"richContent": {"image": 1}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"data": "x"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"providers": {"expo": {"ttl": "1h"}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"steps": {"push-0": {"expo": {"badge": "2"}}}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"steps": {"push-0": {"providers": {"expo": {"priority": "max"}}}}}', 'ps-tx-1');
SELECT novu.broadcast('order-shipped', '{}', '{"expo": {"priority": "urgent"}}', 'ps-tx-1');

-- the other push providers: their targets too
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"web-push": {"endpoint": "https://attacker.example"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"one-signal": {"included_segments": ["All"]}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"one-signal": {"email_to": ["victim@example.com"]}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"one-signal": {"tags": [{"key": "k", "relation": "exists"}]}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"one-signal": {"external_id": "4f0e2b3c-0000-4000-8000-000000000000"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"one-signal": {"idempotency_key": "4f0e2b3c-0000-4000-8000-000000000000"}}', 'ps-tx-1');
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"push-webhook": {"target": ["x"]}}', 'ps-tx-1');

-- broadcast and bulk_trigger go through the same checks; a bad event fails alone
SELECT novu.broadcast('order-shipped', '{}', '{"fcm": {"topic": "everyone"}}', 'ps-tx-1');
SELECT jsonb_pretty(novu.bulk_trigger('[{"workflowId": "order-shipped", "to": "ps-1", "overrides": {"apns": {"headers": {"apns-topic": "com.attacker"}}}, "transactionId": "ps-tx-bulk-1"},
                                        {"workflowId": "order-shipped", "to": "ps-1", "transactionId": "ps-tx-bulk-2"}]'));
SELECT transaction_id FROM novu.events WHERE transaction_id LIKE 'ps-tx-%' ORDER BY 1;

-- what overrides are for still works: the notification's shape
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{
    "fcm": {"android": {"priority": "HIGH", "ttl": "60s"}, "data": {"k": "v"}, "notification": {"image": "https://example.com/i.png"},
            "apns": {"headers": {"apns-priority": "5"}, "payload": {"aps": {"badge": 1}}}, "webpush": {"headers": {"TTL": "60", "Urgency": "high"}},
            "fcm_options": {"analytics_label": "l"}},
    "apns": {"headers": {"apns-priority": 5, "apns-expiration": "0", "apns-collapse-id": "order-1", "apns-push-type": "background"},
             "aps": {"content-available": 1}, "orderId": 1},
    "providers": {"expo": {"priority": "high", "sound": "default", "badge": 2, "channelId": "orders", "data": {"k": "v"}}},
    "steps": {"push-0": {"apns": {"aps": {"sound": "default"}}}}}', 'ps-tx-ok') ->> 'status';
-- every value Expo takes (PROTOCOLS.md 3.1): sound a string, null or an object; numbers; Expo's words
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{
    "expo": {"title": "T", "body": "B", "subtitle": "S", "data": {"k": [1]}, "sound": null, "badge": 0, "ttl": 0,
             "expiration": 1700000000, "priority": "normal", "channelId": "c", "categoryId": "k", "mutableContent": true,
             "interruptionLevel": "time-sensitive", "richContent": {"image": "https://example.com/i.png"}, "icon": "i",
             "collapseId": "x", "tag": "t", "_contentAvailable": false, "_displayInForeground": true},
    "steps": {"push-0": {"expo": {"sound": {"critical": true, "name": "alarm.wav", "volume": 0.5}, "priority": "default",
                                  "ttl": 86400.5}}}}', 'ps-tx-ok-expo') ->> 'status';
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": "chime.wav", "priority": "high", "badge": 3,
    "interruptionLevel": "active"}}', 'ps-tx-ok-expo2') ->> 'status';
SELECT novu.trigger('order-shipped', '"ps-1"', '{}', '{"expo": {"sound": {"name": null}, "interruptionLevel": "critical"}}',
    'ps-tx-ok-expo3') ->> 'status';

-- ---------------------------------------------------------------------------
-- overrides of workflow steps (stored, then merged into every trigger)
-- ---------------------------------------------------------------------------
SELECT novu.create_workflow('ps-wf', '[{"type": "push", "title": "t", "content": "c", "overrides": {"fcm": {"token": "attacker-device"}}}]');
SELECT novu.create_workflow('ps-wf', '[{"type": "push", "title": "t", "content": "c"},
    {"type": "push", "title": "t", "content": "c", "overrides": {"providers": {"apns": {"headers": {"apns-collapse-id": "a\r\nb"}}}}}]');
SELECT novu.create_workflow('ps-wf', '[{"type": "push", "title": "t", "content": "c", "overrides": {"expo": {"to": "ExponentPushToken[attacker]"}}}]');
SELECT novu.create_workflow('ps-wf', '[{"type": "push", "title": "t", "content": "c", "overrides": {"expo": {"priority": "urgent"}}}]');
SELECT novu.create_workflow('ps-wf', '[{"type": "push", "title": "t", "content": "c", "overrides": {"providers": {"expo": {"ttl": "1h"}}}}]');
SELECT novu.create_workflow('ps-wf', '[{"type": "push", "title": "t", "content": "c",
    "overrides": {"fcm": {"android": {"priority": "HIGH"}}, "apns": {"headers": {"apns-priority": "10"}}}}]') ->> 'workflowId';
SELECT novu.update_workflow('ps-wf', '{"steps": [{"type": "push", "title": "t", "content": "c", "overrides": {"apns": {"headers": {"authorization": "bearer x"}}}}]}');
SELECT novu.update_workflow('ps-wf', '{"steps": [{"type": "push", "title": "t", "content": "c", "overrides": {"expo": {"mutableContent": 1}}}]}');
SELECT novu.get_workflow('ps-wf') #> '{steps,0,overrides}';

-- clean up
SELECT novu.delete_workflow('ps-wf');
DELETE FROM novu.events WHERE transaction_id LIKE 'ps-tx-%';
SELECT count(*) FILTER (WHERE novu.delete_subscriber(s)) FROM unnest(ARRAY['ps-1', 'ps-4']) s;
