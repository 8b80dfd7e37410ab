#!/usr/bin/env bash
# The README's run command: a throwaway cluster with the extension and a
# walk-through of the product from psql: integration, workflow, identify,
# credentials, trigger inside an application transaction, and what it left.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib.sh

ensure_packages
build_and_install

tmp=$(mktemp -d /tmp/novu-demo.XXXXXX)
chmod 755 "$tmp"
PGPORT=${PGPORT:-54330} start_cluster "$tmp/pg"
psql -q -c "CREATE EXTENSION novu"

# A service-account key made now (the real one comes from the Firebase console).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/fcm.pem" 2>/dev/null

run() { printf '\n\033[1m%s\033[0m\n' "$1"; shift; psql -X -P pager=off "$@"; }

run "1. An administrator adds an FCM integration and a workflow" \
    -v key="$(cat "$tmp/fcm.pem")" <<'SQL'
SELECT novu.create_integration('fcm',
         jsonb_build_object('serviceAccount', jsonb_build_object(
             'project_id', 'demo-project',
             'client_email', 'sender@demo-project.iam.gserviceaccount.com',
             'private_key', :'key')),
         'fcm-demo') AS integration;
SELECT novu.create_workflow('order-shipped', '[{
           "type": "push",
           "title": "Order {{payload.orderId}} shipped",
           "content": "Hi {{subscriber.firstName | default: \"there\"}}, {{payload.items.size}} item{% if payload.items.size != 1 %}s are{% else %} is{% endif %} on the way"
         }]', 'Order shipped') ->> 'workflowId' AS workflow;
SQL

run "2. The application identifies a user and stores the device token" <<'SQL'
SELECT jsonb_pretty(novu.identify('user-42', '{"firstName": "Ada", "email": "ada@example.com", "locale": "en-GB"}')
                    - 'createdAt' - 'updatedAt' - 'lastOnlineAt') AS subscriber;
SELECT novu.set_credentials('user-42', 'fcm', '{"deviceTokens": ["fcm-token-of-adas-phone"]}') -> 'channels' AS channels;
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

run "5. What the outbox holds (novu.messages)" <<'SQL'
SELECT transaction_id, workflow_id, subscriber_id, channel, status, created_at::time(0) AS at
  FROM novu.messages ORDER BY created_at;
SQL

echo
echo "Cluster: psql -h $tmp/pg -p $PGPORT -U postgres   (stopped when this script exits)"
