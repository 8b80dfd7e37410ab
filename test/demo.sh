#!/usr/bin/env bash
# The README's run command: a throwaway cluster with the extension and its
# delivery workers, the local mock providers (FCM with OAuth, APNs over HTTP/2,
# Expo, Web Push services, OneSignal, a push webhook receiver, Discord and Slack
# webhooks; TLS with a test CA), and a walk-through from psql: integrations, a
# workflow with a push and a chat step, a subscriber with devices and chat
# webhooks, a trigger inside an application transaction, and the result: what each
# mock provider received (the Web Push mock decrypts what the browser would read).
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib.sh

ensure_packages
build_and_install

tmp=$(mktemp -d /tmp/novu-demo.XXXXXX)
chmod 755 "$tmp"
base=${NOVU_MOCK_PORT_BASE:-19000}
sh test/certs/make-certs.sh "$tmp/certs" $((base + 1))
chmod -R a+rX "$tmp/certs"
node test/mocks/server.js --certs "$tmp/certs" --port-base "$base" > "$tmp/mocks.json" 2> "$tmp/mocks.log" &
mocks_pid=$!
for _ in $(seq 100); do [ -s "$tmp/mocks.json" ] && break; sleep 0.1; done
control="http://127.0.0.1:$base"

export PGPORT=${PGPORT:-54330}
start_cluster "$tmp/pg" "novu.ca_file = '$tmp/certs/ca.pem'" "novu.database_name = 'postgres'"
trap 'stop_cluster; kill $mocks_pid 2>/dev/null || true' EXIT
psql -q -c "CREATE EXTENSION novu"

run() { printf '\n\033[1m%s\033[0m\n' "$1"; shift; psql -X -P pager=off "$@"; }

# a VAPID key pair for Web Push (raw P-256, base64url), and a browser subscription bound to it
read -r vapid_pub vapid_priv < <(node -e "const e=require('crypto').createECDH('prime256v1');e.generateKeys();const k=e.getPrivateKey();console.log(e.getPublicKey('base64url'),Buffer.concat([Buffer.alloc(32-k.length),k]).toString('base64url'))")
subscription=$(curl -s -X POST "$control/webpush/subscriptions" -H 'content-type: application/json' \
    -d "{\"service\": \"mozilla\", \"applicationServerKey\": \"$vapid_pub\"}" | node -e '
let s = ""; process.stdin.on("data", d => s += d).on("end", () => console.log(JSON.stringify(JSON.parse(s).subscriptions[0])));')
chat="https://127.0.0.1:$((base + 12))"

run "1. An administrator adds integrations (pointed at the local mocks) and a workflow" \
    -v sa="$(cat "$tmp/certs/fcm-service-account.json")" -v p8="$(cat "$tmp/certs/apns-key.p8")" \
    -v fcm="https://127.0.0.1:$((base + 2))" -v apns="https://127.0.0.1:$((base + 4))" \
    -v expo="https://127.0.0.1:$((base + 7))" -v onesignal="https://127.0.0.1:$((base + 10))" \
    -v webhook="https://127.0.0.1:$((base + 11))/novu/push" -v vapid_pub="$vapid_pub" -v vapid_priv="$vapid_priv" <<'SQL'
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', :'sa'::jsonb, 'endpoint', :'fcm'), 'fcm-demo') AS fcm;
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', :'p8', 'apiKey', 'ABC123DEFG',
         'projectName', 'TEAM123456', 'applicationId', 'com.novu.test', 'secure', false, 'endpoint', :'apns'), 'apns-demo') AS apns;
SELECT novu.create_integration('expo', jsonb_build_object('endpoint', :'expo'), 'expo-demo') AS expo;
SELECT novu.create_integration('web-push', jsonb_build_object('vapidPublicKey', :'vapid_pub', 'vapidPrivateKey', :'vapid_priv',
         'subject', 'mailto:ops@example.com'), 'web-push-demo') AS web_push;
SELECT novu.create_integration('one-signal', jsonb_build_object('applicationId', '0b5e1a2c-3d4f-4a6b-8c7d-9e0f1a2b3c4d',
         'apiKey', 'os_v2_app_novutestrestapikey0000000000000000000000', 'endpoint', :'onesignal'), 'onesignal-demo') AS one_signal;
SELECT novu.create_integration('push-webhook', jsonb_build_object('webhookUrl', :'webhook', 'secretKey', 'novu-push-webhook-secret'),
         'push-webhook-demo') AS push_webhook;
SELECT novu.create_integration('discord', '{}', 'discord-demo') AS discord;
SELECT novu.create_integration('slack', '{}', 'slack-demo') AS slack;
SELECT novu.create_integration('msteams', '{}', 'msteams-demo') AS msteams;
SELECT novu.create_integration('mattermost', '{}', 'mattermost-demo') AS mattermost;
SELECT novu.create_integration('chat-webhook', '{}', 'chat-webhook-demo') AS chat_webhook;
SELECT novu.create_workflow('order-shipped', '[{
           "type": "push",
           "title": "Order {{payload.orderId}} shipped",
           "content": "Hi {{subscriber.firstName | default: \"there\"}}, {{payload.items.size}} item{% if payload.items.size != 1 %}s are{% else %} is{% endif %} on the way"
         }, {
           "type": "chat",
           "content": "Order {{payload.orderId}} for {{subscriber.firstName}} shipped: {{payload.items | join: \", \"}}"
         }]', 'Order shipped') ->> 'workflowId' AS workflow;
SQL

run "2. The application identifies a user and stores her devices' tokens and chat webhooks" \
    -v subscription="$subscription" -v discord="$chat/api/webhooks/112233445566778899/ada-team" \
    -v slack="$chat/services/T0ADA42/B0ADA42/adaSecret" -v teams="$chat/webhookb2/ada@example/IncomingWebhook/c0ffee/owner" \
    -v mattermost="$chat/hooks/adaadaadaadaadaadaadaadaad" -v generic="$chat/chat/ada" <<'SQL'
SELECT novu.identify('user-42', '{"firstName": "Ada", "email": "ada@example.com", "locale": "en-GB"}') ->> 'subscriberId' AS subscriber;
SELECT novu.set_credentials('user-42', 'fcm', '{"deviceTokens": ["fcm-token-of-adas-phone"]}') IS NOT NULL AS fcm_token;
SELECT novu.set_credentials('user-42', 'apns', '{"deviceTokens": ["0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"]}') IS NOT NULL AS apns_token;
SELECT novu.set_credentials('user-42', 'expo', '{"deviceTokens": ["ExponentPushToken[ada-tablet]"]}') IS NOT NULL AS expo_token;
SELECT novu.set_credentials('user-42', 'web-push', jsonb_build_object('deviceTokens', jsonb_build_array(:'subscription'))) IS NOT NULL AS browser;
SELECT novu.set_credentials('user-42', 'one-signal', '{"deviceTokens": ["1dd608f2-c6a1-11e3-851d-000c2940e62c"]}') IS NOT NULL AS onesignal_id;
SELECT novu.set_credentials('user-42', 'push-webhook', '{"deviceTokens": ["ada-kiosk"]}') IS NOT NULL AS webhook_target;
SELECT novu.set_credentials('user-42', 'discord', jsonb_build_object('webhookUrl', :'discord')) IS NOT NULL AS discord_webhook;
SELECT novu.set_credentials('user-42', 'slack', jsonb_build_object('webhookUrl', :'slack')) IS NOT NULL AS slack_webhook;
SELECT novu.set_credentials('user-42', 'msteams', jsonb_build_object('webhookUrl', :'teams')) IS NOT NULL AS teams_webhook;
SELECT novu.set_credentials('user-42', 'mattermost', jsonb_build_object('webhookUrl', :'mattermost')) IS NOT NULL AS mattermost_webhook;
SELECT jsonb_pretty(novu.set_credentials('user-42', 'chat-webhook', jsonb_build_object('webhookUrl', :'generic')) -> 'channels') AS channels;
SQL

run "3. Preview the template as the worker will render it" <<'SQL'
SELECT novu.render('Hi {{subscriber.firstName}}, {{payload.items.size}} items: {{payload.items | join: ", "}}',
                   '{"subscriber": {"firstName": "Ada"}, "payload": {"items": ["book", "lamp"]}}') AS preview;
SQL

run "4. The application ships an order and notifies in the same transaction" <<'SQL'
CREATE TABLE orders (id int PRIMARY KEY, user_id text NOT NULL, state text NOT NULL);
BEGIN;
INSERT INTO orders VALUES (1001, 'user-42', 'shipped');
SELECT novu.trigger('order-shipped', '"user-42"', '{"orderId": 1001, "items": ["book", "lamp"]}',
                    transaction_id => 'order-1001-shipped') AS trigger_result;
COMMIT;
-- the same transactionId again is a duplicate: nothing new is enqueued
SELECT novu.trigger('order-shipped', '"user-42"', '{}', transaction_id => 'order-1001-shipped') ->> 'status' AS retried;
-- a rolled-back transaction notifies nobody
BEGIN;
INSERT INTO orders VALUES (1002, 'user-42', 'shipped');
SELECT novu.trigger('order-shipped', '"user-42"', '{"orderId": 1002}', transaction_id => 'order-1002-shipped') ->> 'status' AS inside_tx;
ROLLBACK;
SQL

# the worker was woken at commit; give it a moment
for _ in $(seq 100); do
    [ "$(psql -XAtc "SELECT count(*) FROM novu.messages WHERE status IN ('pending','sending')")" = 0 ] && break
    sleep 0.05
done

run "5. The result: novu.messages and the activity log" <<'SQL'
SELECT transaction_id, channel, provider_id, left(device_token, 40) AS target, status, attempts, left(provider_message_id, 40) AS provider_message_id,
       round(extract(epoch FROM sent_at - created_at) * 1000, 1) AS ms_to_send
  FROM novu.messages ORDER BY channel DESC, provider_id;
SELECT provider_id, status, detail FROM novu.execution_details ORDER BY id;
SELECT integration_identifier, pending, in_flight, sent, failed FROM novu.stat_providers ORDER BY 1;
SQL

run "6. Security: the secrets are stored encrypted, the workers are no superusers, bad input is refused" <<'SQL'
SELECT identifier, left(credentials #>> '{serviceAccount,private_key}', 40) AS fcm_private_key_as_stored,
       left(credentials ->> 'secretKey', 40) AS apns_key_as_stored
  FROM novu.integrations WHERE provider_id IN ('fcm', 'apns') ORDER BY 1;
SELECT DISTINCT a.usename AS worker_role, r.rolsuper AS superuser
  FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid WHERE a.backend_type = 'novu delivery worker';
\set VERBOSITY terse
\set ON_ERROR_STOP 0
SELECT novu.trigger('order-shipped', '"user-42"', '{}', '{"fcm": {"token": "someone-elses-token"}}');
SELECT novu.set_credentials('user-42', 'apns', '{"deviceTokens": ["../../3/device/x?"]}');
SELECT novu.create_integration('expo', '{"endpoint": "https://169.254.169.254"}');
SELECT novu.set_credentials('user-42', 'slack', '{"webhookUrl": "https://10.0.0.5/services/T/B/x"}');
SQL

printf '\n\033[1m7. What the mock providers received\033[0m\n'
curl -s "$control/requests" | node -e '
let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
  for (const r of JSON.parse(s).requests) {
    const what = r.provider === "oauth" ? "grant_type=" + (r.body && r.body.grant_type)
      : r.provider === "webpush" ? "decrypted: " + JSON.stringify(r.payload) + "  VAPID aud " + (r.vapid && r.vapid.claims && r.vapid.claims.aud)
      : JSON.stringify(r.body);
    const path = r.path.length > 60 ? r.path.slice(0, 57) + "..." : r.path;
    console.log(`${r.provider.padEnd(9)} HTTP/${r.httpVersion} ${r.method} ${path}  -> ${r.response && r.response.status}\n      ${what}`);
  }
});'

echo
echo "Cluster: psql -h $tmp/pg -p $PGPORT -U postgres; mocks: $control/requests (both stop when this script exits)"
