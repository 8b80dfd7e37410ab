# 001_delivery.pl: committed triggers reach the strict mock providers (FCM with
# OAuth, APNs over HTTP/2 with an ES256 token, Expo), each good token exactly
# once, with Novu's message mapping; rollback sends nothing; a repeated
# transactionId sends once; a commit wakes the worker at once; the fan-out
# creates unknown recipients; the express fan-out of plain triggers and the
# general one write the same messages.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();
# pg_stat_statements: test 8 looks at which fan-out statements the workers ran
my $node = NovuTest::new_node('delivery', $mocks,
	shared_preload_libraries => "'novu, pg_stat_statements'");
NovuTest::create_integrations($node, $mocks);

$node->safe_psql('postgres', <<'SQL');
SELECT novu.create_workflow('order-shipped', '[{"type": "push",
    "title": "Order {{payload.orderId}} shipped",
    "content": "Hi {{subscriber.firstName}}, {{payload.items.size}} items",
    "data": {"screen": "orders", "ref": "{{payload.orderId}}"}}]');
SELECT novu.identify('alice', '{"firstName": "Alice", "channels": [
    {"providerId": "fcm", "credentials": {"deviceTokens": ["fcm-alice"]}},
    {"providerId": "apns", "credentials": {"deviceTokens": ["a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"]}},
    {"providerId": "expo", "credentials": {"deviceTokens": ["ExponentPushToken[alice]"]}}]}');
SQL

# 1. one trigger, three providers
NovuTest::query($node, q{SELECT novu.trigger('order-shipped', '"alice"',
    '{"orderId": 42, "items": ["a", "b"], "total": 9.5, "gift": true, "meta": {"k": 1}}', '{}', 'tx-1')});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 3 FROM novu.messages WHERE transaction_id = 'tx-1' AND status = 'sent'}),
	'the three messages of one trigger end sent');

my $fcm = NovuTest::requests($mocks, 'fcm');
is(scalar @$fcm, 1, 'FCM received one request');
my $m = $fcm->[0]{body}{message};
is($m->{token}, 'fcm-alice', 'FCM: token');
is($m->{notification}{title}, 'Order 42 shipped', 'FCM: title rendered');
is($m->{notification}{body}, 'Hi Alice, 2 items', 'FCM: body rendered with subscriber and filter');
is_deeply($m->{data}, { orderId => '42', items => '["a", "b"]', total => '9.5', gift => 'true',
		meta => '{"k": 1}', screen => 'orders', ref => '42' },
	'FCM: data is the payload plus the step data, every value a string');
is($fcm->[0]{response}{status}, 200, 'FCM answered 200');
is($fcm->[0]{httpVersion}, '2', 'FCM over HTTP/2');
like($fcm->[0]{headers}{authorization}, qr/^Bearer \S+$/, 'FCM: bearer access token');
is(scalar @{ NovuTest::requests($mocks, 'oauth') }, 1, 'one OAuth token request');

my $apns = NovuTest::requests($mocks, 'apns');
is(scalar @$apns, 1, 'APNs received one request');
is($apns->[0]{path}, '/3/device/a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'APNs: path');
is($apns->[0]{httpVersion}, '2', 'APNs over HTTP/2');
is($apns->[0]{headers}{'apns-topic'}, 'com.novu.test', 'APNs: apns-topic is the applicationId');
is($apns->[0]{headers}{'apns-push-type'}, 'alert', 'APNs: apns-push-type alert');
is($apns->[0]{headers}{'apns-priority'}, '10', 'APNs: apns-priority 10');
is_deeply($apns->[0]{body}{aps}, { alert => { title => 'Order 42 shipped', body => 'Hi Alice, 2 items' } },
	'APNs: aps.alert');
is($apns->[0]{body}{orderId}, 42, 'APNs: payload keys at the top level');
is($apns->[0]{response}{status}, 200, 'APNs answered 200 (the ES256 provider token verified)');

my $expo = NovuTest::expo_sends($mocks);
is(scalar @$expo, 1, 'Expo received one request');
is_deeply([ map { $_->{to} } @{ $expo->[0]{body} } ], ['ExponentPushToken[alice]'], 'Expo: one message in an array');
is($expo->[0]{body}[0]{data}{orderId}, 42, 'Expo: data is the payload as an object');

is(NovuTest::query($node, q{SELECT string_agg(provider_id || '=' || (provider_message_id IS NOT NULL)::text, ',' ORDER BY provider_id)
    FROM novu.messages WHERE transaction_id = 'tx-1'}),
	'apns=true,expo=true,fcm=true', 'provider message ids are stored');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.execution_details WHERE transaction_id = 'tx-1' AND detail = 'Message sent'}),
	'3', 'the activity log says "Message sent" three times');
is(NovuTest::query($node, q{SELECT sum(sent) FROM novu.stat_providers}), '3', 'stat_providers counts three sent');

# 2. overrides: Novu's two forms, trigger over step, deep merge
# (the OAuth token requests are counted across sections 1 and 2: each of the two
# delivery workers fetches one token at most, whichever triggers it happens to take)
my $oauth_requests = scalar @{ NovuTest::requests($mocks, 'oauth') };
NovuTest::reset_mocks($mocks);
NovuTest::query($node, q{SELECT novu.trigger('order-shipped', '"alice"', '{"orderId": 43, "items": []}',
    '{"fcm": {"android": {"priority": "HIGH"}, "data": {"extra": 7}},
      "apns": {"headers": {"apns-collapse-id": "order-43"}, "aps": {"sound": "default"}},
      "providers": {"expo": {"sound": "default", "priority": "high"}}}', 'tx-overrides')});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 3 FROM novu.messages WHERE transaction_id = 'tx-overrides' AND status = 'sent'}),
	'messages with overrides are sent');
$m = NovuTest::requests($mocks, 'fcm')->[0]{body}{message};
is($m->{android}{priority}, 'HIGH', 'FCM: overrides.fcm.android merged');
is($m->{data}{extra}, '7', 'FCM: override data merged and stringified');
is($m->{data}{ref}, '43', 'FCM: step data kept');
$apns = NovuTest::requests($mocks, 'apns')->[0];
is($apns->{headers}{'apns-collapse-id'}, 'order-43', 'APNs: overrides.apns.headers become headers');
is($apns->{body}{aps}{sound}, 'default', 'APNs: overrides.apns deep-merged into aps');
is($apns->{body}{aps}{alert}{title}, 'Order 43 shipped', 'APNs: alert kept by the deep merge');
is(NovuTest::expo_sends($mocks)->[0]{body}[0]{priority}, 'high', 'Expo: overrides.providers.expo merged');
# each delivery worker (two) keeps the token it fetched: the second trigger may go to
# the other one, which fetches its own once
$oauth_requests += scalar @{ NovuTest::requests($mocks, 'oauth') };
cmp_ok($oauth_requests, '<=', 2, "the OAuth access token was reused (one per worker; $oauth_requests so far)");
NovuTest::reset_mocks($mocks);
NovuTest::query($node, q{SELECT novu.trigger('order-shipped', '"alice"', '{"orderId": 44}', '{}', 'tx-again-1')});
NovuTest::query($node, q{SELECT novu.trigger('order-shipped', '"alice"', '{"orderId": 45}', '{}', 'tx-again-2')});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 6 FROM novu.messages WHERE transaction_id LIKE 'tx-again-%' AND status = 'sent'}),
	'two more triggers are sent');
$oauth_requests += scalar @{ NovuTest::requests($mocks, 'oauth') };
cmp_ok($oauth_requests, '<=', 2, "and no worker asked for a token again ($oauth_requests token requests in all)");

# 3. a rolled-back trigger sends nothing; a repeated transactionId sends once
NovuTest::reset_mocks($mocks);
$node->safe_psql('postgres', q{BEGIN; SELECT novu.trigger('order-shipped', '"alice"', '{"orderId": 666}', '{}', 'tx-rolled-back'); ROLLBACK;});
NovuTest::query($node, q{SELECT novu.trigger('order-shipped', '"alice"', '{"orderId": 44}', '{}', 'tx-dup')});
is(NovuTest::query($node, q{SELECT novu.trigger('order-shipped', '"alice"', '{"orderId": 45}', '{}', 'tx-dup') ->> 'status'}),
	'duplicate', 'a repeated transactionId answers duplicate');
ok(NovuTest::wait_for($node, q{SELECT count(*) = 3 FROM novu.messages WHERE transaction_id = 'tx-dup' AND status = 'sent'}),
	'the first trigger of tx-dup is sent');
usleep(500_000);
is_deeply(NovuTest::accepted($mocks, 'fcm'), { 'fcm-alice' => 1 }, 'FCM got exactly one request: none for the rollback, one for tx-dup');
is(scalar(grep { ($_->{body}{message}{notification}{title} // '') =~ /666|45/ } @{ NovuTest::requests($mocks, 'fcm') }), 0,
	'nothing of the rolled-back trigger nor of the duplicate was sent');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-rolled-back'}), '0',
	'the rolled-back trigger left no message');

# 4. a commit wakes the worker at once: with a one-minute poll, delivery still takes milliseconds
$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.poll_interval = '60s'; SELECT pg_reload_conf();});
ok(NovuTest::wait_old_poll_spent($node),
	'wake-up: the workers poll once a minute');
NovuTest::reset_mocks($mocks);
my @latencies;
for my $i (1 .. 5)
{
	# the second statement runs right after the first one's commit: its clock bounds the commit time
	my $out = $node->safe_psql('postgres', qq{SELECT novu.trigger('order-shipped', '"alice"', '{"orderId": $i}', '{}', 'tx-wake-$i');
	    SELECT extract(epoch FROM clock_timestamp())});
	my $committed = (split /\n/, $out)[-1];
	ok(NovuTest::wait_for($node, qq{SELECT count(*) = 3 FROM novu.messages WHERE transaction_id = 'tx-wake-$i' AND status = 'sent'}, 10),
		"trigger $i delivered with a 60 s poll interval");
	my ($req) = grep { ($_->{body}{message}{notification}{title} // '') eq "Order $i shipped" } @{ NovuTest::requests($mocks, 'fcm') };
	push @latencies, $req->{time} / 1000.0 - $committed if $req;
}
@latencies = sort { $a <=> $b } @latencies;
my $worst = $latencies[-1] // 99;
diag(sprintf('commit to FCM mock receipt: %s ms', join(', ', map { sprintf('%.1f', $_ * 1000) } @latencies)));
cmp_ok($worst, '<', 1.0, 'every trigger reached the mock within a second of its commit (woken at commit, not by the poll)');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.poll_interval; SELECT pg_reload_conf();});

# 5. Expo batches up to 100 messages per request, tickets mapped back in order
NovuTest::reset_mocks($mocks);
$node->safe_psql('postgres', q{
SELECT novu.identify('expo-' || i, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'expo', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('ExponentPushToken[e' || i || ']'))))))
  FROM generate_series(1, 150) i;
SELECT novu.trigger('order-shipped', (SELECT jsonb_agg('expo-' || i) FROM generate_series(1, 150) i), '{"orderId": 7}', '{}', 'tx-expo-150');
});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 150 FROM novu.messages WHERE transaction_id = 'tx-expo-150' AND status = 'sent'}),
	'150 Expo messages sent');
$expo = NovuTest::expo_sends($mocks);
is_deeply([ sort { $a <=> $b } map { scalar @{ $_->{body} } } @$expo ], [ 50, 100 ], 'in two requests of 100 and 50');
is(NovuTest::query($node, q{SELECT count(DISTINCT provider_message_id) FROM novu.messages WHERE transaction_id = 'tx-expo-150'}),
	'150', 'each message got its own ticket id');

# 6. broadcast: every subscriber, the ones without a device token skipped with the reason
NovuTest::reset_mocks($mocks);
NovuTest::query($node, q{SELECT novu.identify('no-device')});
NovuTest::query($node, q{SELECT novu.broadcast('order-shipped', '{"orderId": 8}', '{}', 'tx-broadcast')});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 0 FROM novu.messages WHERE transaction_id = 'tx-broadcast' AND status IN ('pending', 'sending')}),
	'broadcast fanned out and delivered');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-broadcast' AND status = 'sent'}),
	'153', 'broadcast: alice (3 devices) and 150 Expo subscribers sent');
is(NovuTest::query($node, q{SELECT last_error FROM novu.messages WHERE transaction_id = 'tx-broadcast' AND subscriber_id = 'no-device'}),
	'Subscriber has no device token', 'broadcast: a subscriber without device is skipped with the reason');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.notifications WHERE transaction_id = 'tx-broadcast'}),
	'152', 'broadcast: one notification per subscriber');

# 7. a recipient named by a plain subscriberId that does not exist: the trigger
# does not create it, the worker's fan-out does (as novu_worker), once, with an
# empty profile; a rolled-back trigger creates nothing; a subscriber deleted
# after its trigger is not brought back
NovuTest::reset_mocks($mocks);
$node->safe_psql('postgres', q{
BEGIN;
SELECT novu.trigger('order-shipped', '"ghost-rolled-back"', '{"orderId": 9}', '{}', 'tx-ghost-rb');
ROLLBACK;
BEGIN;
SELECT novu.identify('ghost-deleted');
SELECT novu.trigger('order-shipped', '"ghost-deleted"', '{"orderId": 9}', '{}', 'tx-ghost-deleted');
SELECT novu.delete_subscriber('ghost-deleted');
COMMIT;
SELECT novu.trigger('order-shipped', '["ghost-1", "alice"]', '{"orderId": 9}', '{}', 'tx-ghost-1');
SELECT novu.trigger('order-shipped', '"ghost-1"', '{"orderId": 9}', '{}', 'tx-ghost-2');
});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 0 FROM novu.messages WHERE transaction_id LIKE 'tx-ghost-%' AND status IN ('pending', 'sending')}),
	'triggers to unknown subscribers fanned out');
is(NovuTest::query($node, q{SELECT string_agg(subscriber_id || ' ' || coalesce(first_name, '-') || ' ' || data::text, ', ' ORDER BY subscriber_id)
    FROM novu.subscribers WHERE subscriber_id LIKE 'ghost-%'}),
	'ghost-1 - {}', 'the fan-out created the unknown subscriber once, with an empty profile; nothing else');
is(NovuTest::query($node, q{SELECT string_agg(transaction_id || ' ' || subscriber_id || ' ' || status || ' ' || coalesce(last_error, '-'), ', '
    ORDER BY transaction_id, subscriber_id) FROM novu.messages WHERE transaction_id LIKE 'tx-ghost-%' AND subscriber_id LIKE 'ghost-%'}),
	'tx-ghost-1 ghost-1 skipped Subscriber has no device token, tx-ghost-2 ghost-1 skipped Subscriber has no device token, '
	  . 'tx-ghost-deleted ghost-deleted skipped Subscriber not found',
	'its messages are skipped for want of a device token; the subscriber deleted after its trigger is not found');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-ghost-1' AND subscriber_id = 'alice' AND status = 'sent'}),
	'3', 'the known recipient of the same trigger is served');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.events WHERE transaction_id = 'tx-ghost-rb'}), '0', 'the rolled-back trigger left nothing');

# 8. plain triggers committed together: a few go by the express fan-out (one
# statement, src/queue/express.c), more than it takes go on by novu._fanout in
# the same claim; both write the same messages: each step's providers, the
# actor, the payload and the profile in the templates, each token once
NovuTest::reset_mocks($mocks);
$node->safe_psql('postgres', q{
SELECT novu.create_workflow('two-steps', '[
    {"type": "push", "providers": ["fcm"], "title": "A {{payload.n}}", "content": "for {{subscriber.firstName}}"},
    {"type": "push", "title": "B {{payload.n}}", "content": "{{actor.firstName}} to {{subscriber.firstName}}"}]');
SELECT novu.identify('ex-' || i, jsonb_build_object('firstName', 'Ex' || i, 'channels', jsonb_build_array(
    jsonb_build_object('providerId', 'fcm', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-ex-' || i))),
    jsonb_build_object('providerId', 'expo', 'credentials',
        jsonb_build_object('deviceTokens', jsonb_build_array('ExponentPushToken[ex-' || i || ']'))))))
  FROM generate_series(1, 40) i;
});
# a restart: workers that start afresh try the express way first (after the
# general fan-out took test 7's unknown recipients, they leave it for a while)
$node->restart;
$node->safe_psql('postgres', q{CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset()});
$node->safe_psql('postgres', q{
BEGIN;
SELECT novu.trigger('two-steps', to_jsonb('ex-' || i), jsonb_build_object('n', i), '{}', 'tx-ex-' || i,
                    '{"subscriberId": "boss", "firstName": "Boss"}')
  FROM generate_series(1, 40) i;
COMMIT;
});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 120 FROM novu.messages WHERE transaction_id LIKE 'tx-ex-%' AND status = 'sent'}),
	'40 triggers in one commit: their 120 messages end sent');
is_deeply(NovuTest::accepted($mocks, 'fcm'), { map { ("fcm-ex-$_" => 2) } 1 .. 40 },
	'FCM: each token accepted twice (both steps), once per step');
is_deeply(NovuTest::accepted($mocks, 'expo'), { map { ("ExponentPushToken[ex-$_]" => 1) } 1 .. 40 },
	'Expo: each token accepted once (the step restricted to FCM left it out)');
my %fcm_texts;
for my $r (@{ NovuTest::requests($mocks, 'fcm') })
{
	my $msg = $r->{body}{message};
	push @{ $fcm_texts{ $msg->{token} } }, "$msg->{notification}{title}: $msg->{notification}{body}";
}
is_deeply([ sort @{ $fcm_texts{'fcm-ex-7'} } ], [ 'A 7: for Ex7', 'B 7: Boss to Ex7' ],
	'FCM: payload, profile and actor rendered in both steps');
is(scalar(grep { join('|', sort @{ $fcm_texts{"fcm-ex-$_"} }) eq "A $_: for Ex$_|B $_: Boss to Ex$_" } 1 .. 40), 40,
	'FCM: every subscriber got its own texts');
is(NovuTest::query($node, q{SELECT string_agg(DISTINCT attempts || ' ' || step_index, ',') FROM novu.deliveries WHERE transaction_id LIKE 'tx-ex-%'}),
	'1 0,1 1', 'each message sent at its first attempt, from both steps');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.events WHERE transaction_id LIKE 'tx-ex-%' AND status = 'processed'}),
	'40', 'every trigger marked processed');
my ($express_rows, $general_calls) = split /\|/, NovuTest::query($node, q{
    SELECT coalesce(sum(s.rows) FILTER (WHERE s.query LIKE 'WITH c AS MATERIALIZED%'), 0),
           coalesce(sum(s.calls) FILTER (WHERE s.query LIKE '%novu._fanout(%'), 0)
      FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'novu_worker'});
cmp_ok($express_rows, '>=', 32, 'the express statement leased the messages of at least 16 triggers');
cmp_ok($general_calls, '>=', 1, 'novu._fanout took the rest in the same claim');

$node->stop;
done_testing();
