-- workflows: create/update/delete/get with step validation; templates parsed at creation.
\set VERBOSITY terse

SELECT jsonb_pretty(no_ts(novu.create_workflow('order-shipped', '[
    {"type": "push", "name": "Push", "title": "Order {{payload.orderId}} shipped",
     "content": "Hi {{subscriber.firstName | default: \"there\"}}, {{payload.items.size}} items are on their way",
     "data": {"orderId": "{{payload.orderId}}", "screen": "orders"},
     "overrides": {"fcm": {"android": {"priority": "HIGH"}}},
     "providers": ["fcm", "apns"]}
]', 'Order shipped')));

SELECT no_ts(novu.create_workflow('empty-workflow', '[]'));
SELECT no_ts(novu.create_workflow('inactive-workflow', '[{"type": "push", "title": "t", "content": "c"}]', NULL, false, false));
SELECT no_ts(novu.create_workflow('security-alert', '[{"type": "push", "title": "Security", "content": "New login"}]', 'Security alert', true));

SELECT no_ts(novu.update_workflow('empty-workflow', '{"name": "Empty", "critical": true}'));
SELECT no_ts(novu.update_workflow('empty-workflow', '{"critical": false}')) ->> 'critical';
SELECT no_ts(novu.update_workflow('security-alert', '{"steps": [{"type": "push", "title": "Security", "content": "New login from {{payload.city}}"}]}')) -> 'steps';
SELECT novu.get_workflow('security-alert') ->> 'name';

SELECT novu.create_workflow('to-delete', '[]') IS NOT NULL;
SELECT novu.delete_workflow('to-delete'), novu.delete_workflow('to-delete');

-- errors, each writes nothing
SELECT novu.create_workflow('order-shipped', '[]');
SELECT novu.create_workflow('', '[]');
SELECT novu.create_workflow('has space', '[]');
SELECT novu.create_workflow('w1', '{"type": "push"}');
SELECT novu.create_workflow('w1', '["push"]');
SELECT novu.create_workflow('w1', '[{"title": "t", "content": "c"}]');
SELECT novu.create_workflow('w1', '[{"type": "sms", "content": "c"}]');
SELECT novu.create_workflow('w1', '[{"type": "email", "content": "c"}]');
SELECT novu.create_workflow('w1', '[{"type": "carrier-pigeon", "content": "c"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": ""}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": 1, "content": "c"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "Hi {{subscriber.firstName"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "{% if payload.x %}open", "content": "c"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "{{ payload.x | sha256 }}"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "c", "data": {"k": "{{ oops"}}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "c", "data": ["x"]}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "c", "overrides": "x"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "c", "providers": ["gcm"]}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "c", "if": "payload.x"}]');
SELECT novu.create_workflow('w1', '[{"type": "push", "title": "t", "content": "c", "subject": "x"}]');
SELECT novu.create_workflow('w1', '[]', NULL, NULL);
SELECT novu.update_workflow('nope', '{"name": "x"}');
SELECT novu.update_workflow('order-shipped', '{"colour": "red"}');
SELECT novu.update_workflow('order-shipped', '{"active": "no"}');
SELECT novu.update_workflow('order-shipped', '{"steps": [{"type": "push", "title": "{{", "content": "c"}]}');
SELECT novu.get_workflow('nope');
SELECT workflow_id, name, critical, active, jsonb_array_length(steps) AS steps FROM novu.workflows ORDER BY 1;
