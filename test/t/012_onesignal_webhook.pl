# 012_onesignal_webhook.pl: OneSignal (PROTOCOLS.md 4) and Novu's push webhook (4a) end
# to end against their strict mocks.
#
# OneSignal: identical content to many subscription ids goes out in few requests; content
# rendered per subscriber does not share one; the current API (Key) and the legacy one
# (Basic); invalid_player_ids prune only those ids; a request whose answer was lost is sent
# again with the same idempotency_key and OneSignal does not deliver it twice; 503 and 429
# retry; ids that are not UUIDs are refused.
# Push webhook: Novu's body with the subscriber and the payload, signed (the mock checks
# X-Novu-Signature over the exact bytes); a wrong secret is a configuration error; 404 drops
# the message and keeps the token; 503 retries.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('onesignal', $mocks, 'novu.workers' => 2);
my $json = JSON::PP->new->canonical;

my $APP = '0b5e1a2c-3d4f-4a6b-8c7d-9e0f1a2b3c4d';
my $KEY = 'os_v2_app_novutestrestapikey0000000000000000000000';
my $LEGACY_APP = '7c9e6679-7425-40de-944b-e07fc1f90ae7';
my $LEGACY_KEY = 'legacyrestkey0123456789abcdefghij';

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }
sub uuid { return sprintf('%08x-%04x-4%03x-a%03x-%012x', $_[0], 0xbeef, 0x123, 0x456, $_[0] * 7919); }

NovuTest::control($mocks, 'POST', '/config', { onesignal => { apps => { $LEGACY_APP => $LEGACY_KEY } } });
q1("SELECT novu.create_integration('one-signal', jsonb_build_object('applicationId', '$APP', 'apiKey', '$KEY',
    'endpoint', '$mocks->{urls}{onesignal}'), 'os-mock')");
q1("SELECT novu.create_integration('one-signal', jsonb_build_object('applicationId', '$LEGACY_APP', 'apiKey', '$LEGACY_KEY',
    'endpoint', '$mocks->{urls}{onesignal}'), 'os-legacy')");
q1("SELECT novu.create_integration('push-webhook', jsonb_build_object('webhookUrl', '$mocks->{urls}{webhook}/novu/push',
    'secretKey', 'novu-push-webhook-secret'), 'wh-mock')");
q1("SELECT novu.create_integration('push-webhook', jsonb_build_object('webhookUrl', '$mocks->{urls}{webhook}/novu/push',
    'secretKey', 'not-the-secret'), 'wh-wrong')");

q1(q{SELECT novu.create_workflow('os-same', '[{"type": "push", "title": "Sale", "content": "Everything -20% today", "data": {"campaign": "c1"}}]')});
q1(q{SELECT novu.create_workflow('os-each', '[{"type": "push", "title": "Hi {{subscriber.firstName}}", "content": "Your code {{payload.code}}"}]')});

sub identify
{
	my ($sub, $integration, $provider, @tokens) = @_;
	my $profile = { firstName => "F$sub", channels => [ { providerId => $provider, integrationIdentifier => $integration,
		credentials => { deviceTokens => \@tokens } } ] };
	q1('SELECT novu.identify(' . lit($sub) . ', ' . lit($json->encode($profile)) . '::jsonb)');
}

sub trigger
{
	my ($wf, $to, $tx, $payload, $overrides) = @_;
	q1("SELECT novu.trigger('$wf', " . lit($json->encode($to)) . '::jsonb, ' . lit($json->encode($payload // {}))
		  . '::jsonb, ' . lit($json->encode($overrides // {})) . '::jsonb, ' . lit($tx) . ')');
}

sub wait_final
{
	my ($tx, $count) = @_;
	return NovuTest::wait_for($node, "SELECT count(*) = $count AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0"
		  . ' FROM novu.messages WHERE transaction_id = ' . lit($tx), 30);
}

sub statuses
{
	my ($tx) = @_;
	return q1(q{SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM (SELECT status, count(*) n FROM novu.messages}
		  . ' WHERE transaction_id = ' . lit($tx) . ' GROUP BY status) s');
}

sub os_requests { return [ grep { $_->{path} =~ /notifications/ } @{ NovuTest::requests($mocks, 'onesignal') } ]; }

# ---------------------------------------------------------------------------
# OneSignal: batching
# ---------------------------------------------------------------------------
my @subs = map { "os-$_" } 1 .. 60;
my %id_of;
for my $i (1 .. 60) { $id_of{"os-$i"} = uuid($i); identify("os-$i", 'os-mock', 'one-signal', uuid($i)); }
trigger('os-same', \@subs, 'os-tx-same');
ok(wait_final('os-tx-same', 60), '60 OneSignal messages final');
is(statuses('os-tx-same'), 'sent:60', 'all 60 sent');
my $reqs = os_requests();
my $ids = 0;
$ids += scalar @{ $_->{body}{include_subscription_ids} } for @$reqs;
is($ids, 60, 'every subscription id was sent once');
cmp_ok(scalar @$reqs, '<=', 6, sprintf('identical content shares requests: %d request(s) for 60 ids', scalar @$reqs));
my $r0 = $reqs->[0];
is($r0->{api}, 'current', 'current API for an os_v2 key');
like($r0->{headers}{authorization}, qr/^Key os_v2_/, 'Authorization: Key');
is($r0->{body}{app_id}, $APP, 'app_id is the integration\'s applicationId');
is_deeply($r0->{body}{contents}, { en => 'Everything -20% today' }, 'contents.en');
is_deeply($r0->{body}{headings}, { en => 'Sale' }, 'headings.en');
is($r0->{body}{data}{campaign}, 'c1', 'data from the step');
like($r0->{body}{idempotency_key} // '', qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'an idempotency_key UUID');
my $nid = q1("SELECT provider_message_id FROM novu.messages WHERE transaction_id = 'os-tx-same' LIMIT 1");
is($nid, $r0->{response}{body}{id}, 'the notification id is the provider message id') if @$reqs == 1;
ok(length($nid) == 36, 'a notification id was recorded');

# content rendered per subscriber: one request each
NovuTest::control($mocks, 'DELETE', '/requests');
trigger('os-each', [ @subs[0 .. 4] ], 'os-tx-each', { code => 'X1' });
ok(wait_final('os-tx-each', 5), 'per-subscriber content final');
$reqs = os_requests();
is(scalar @$reqs, 5, 'content that differs is not batched: 5 requests');
is($reqs->[0]{body}{headings}{en} =~ /^Hi Fos-\d+$/ ? 1 : 0, 1, 'headings rendered per subscriber');

# legacy key: the v1 API with Basic
identify('os-legacy-1', 'os-legacy', 'one-signal', uuid(1001));
NovuTest::control($mocks, 'DELETE', '/requests');
trigger('os-same', 'os-legacy-1', 'os-tx-legacy');
ok(wait_final('os-tx-legacy', 1), 'legacy message final');
is(statuses('os-tx-legacy'), 'sent:1', 'legacy: sent');
$reqs = os_requests();
is($reqs->[0]{api}, 'legacy', 'a key of the old form uses /api/v1/notifications');
is($reqs->[0]{headers}{authorization}, "Basic $LEGACY_KEY", 'with Authorization: Basic <key>');

# invalid ids are pruned alone
NovuTest::set_tokens($mocks, 'onesignal', 'invalid', uuid(3), uuid(4));
trigger('os-same', [ @subs[0 .. 9] ], 'os-tx-inv');
ok(wait_final('os-tx-inv', 10), 'invalid-id batch final');
is(statuses('os-tx-inv'), 'failed:2,sent:8', 'the two invalid ids failed, the eight others were sent');
is(q1("SELECT count(*) FROM novu.device_tokens WHERE device_token IN ('" . uuid(3) . "', '" . uuid(4) . "')"), 0,
	'the invalid ids are pruned');
is(q1("SELECT count(*) FROM novu.device_tokens WHERE device_token IN ('" . join("','", map { uuid($_) } 1, 2, 5 .. 10) . "')"), 8,
	'the other ids are kept');
NovuTest::set_tokens($mocks, 'onesignal', 'ok', uuid(3), uuid(4));

# a lost answer: the retry carries the same idempotency_key, OneSignal delivers once
identify('os-lost', 'os-mock', 'one-signal', uuid(2001));
NovuTest::set_tokens($mocks, 'onesignal', 'drop:1', uuid(2001));
NovuTest::control($mocks, 'DELETE', '/requests');
trigger('os-same', 'os-lost', 'os-tx-lost');
ok(wait_final('os-tx-lost', 1), 'lost-answer message final');
my $m = NovuTest::message($node, 'os-tx-lost', uuid(2001));
is($m->{status} . '/' . $m->{attempts}, 'sent/2', 'lost answer: sent at the second attempt');
$reqs = os_requests();
is(scalar @$reqs, 2, 'two requests reached OneSignal');
is($reqs->[0]{body}{idempotency_key}, $reqs->[1]{body}{idempotency_key}, 'with the same idempotency_key');
is(NovuTest::control($mocks, 'GET', '/received?provider=onesignal-delivered')->{ uuid(2001) }, 1,
	'and OneSignal delivered the notification once');

# 503 and 429 retry
identify('os-503', 'os-mock', 'one-signal', uuid(3001));
identify('os-429', 'os-mock', 'one-signal', uuid(3002));
NovuTest::set_tokens($mocks, 'onesignal', 'fail:503::1', uuid(3001));
NovuTest::set_tokens($mocks, 'onesignal', 'fail:429:1:1', uuid(3002));
trigger('os-each', [ 'os-503', 'os-429' ], 'os-tx-retry', { code => 'R' });
ok(wait_final('os-tx-retry', 2), 'retry messages final');
is(NovuTest::message($node, 'os-tx-retry', uuid(3001))->{attempts}, 2, '503: sent at the second attempt');
is(NovuTest::message($node, 'os-tx-retry', uuid(3002))->{attempts}, 2, '429: sent at the second attempt');
is(statuses('os-tx-retry'), 'sent:2', 'both sent');

# not a UUID: refused, nothing written
my ($ret, $out, $err) = $node->psql('postgres', "SELECT novu.identify('os-bad', '{\"channels\": [{\"providerId\": \"one-signal\", "
	  . "\"integrationIdentifier\": \"os-mock\", \"credentials\": {\"deviceTokens\": [\"player-1\"]}}]}')");
isnt($ret, 0, 'a OneSignal id that is not a UUID is refused');
like($err, qr/not a valid OneSignal device token.*\n.*UUID/s, 'naming the form');
is(q1("SELECT count(*) FROM novu.subscribers WHERE subscriber_id = 'os-bad'"), 0, 'nothing written');

# ---------------------------------------------------------------------------
# Push webhook
# ---------------------------------------------------------------------------
sub wh_requests { return NovuTest::requests($mocks, 'webhook'); }
identify('wh-1', 'wh-mock', 'push-webhook', 'wh-device-1');
NovuTest::control($mocks, 'DELETE', '/requests');
trigger('os-each', 'wh-1', 'wh-tx-1', { code => 'W7', shop => 'north' }, { 'push-webhook' => { sound => 'bell' } });
ok(wait_final('wh-tx-1', 1), 'push webhook message final');
$m = NovuTest::message($node, 'wh-tx-1', 'wh-device-1');
is($m->{status}, 'sent', 'push webhook: sent');
my $w = wh_requests()->[0];
is($w->{response}{status}, 200, 'the receiver verified X-Novu-Signature and answered 200');
is_deeply($w->{body}{target}, ['wh-device-1'], 'target is the device token');
is($w->{body}{title}, 'Hi Fwh-1', 'title rendered');
is($w->{body}{content}, 'Your code W7', 'content rendered');
is($w->{body}{overrides}{sound}, 'bell', 'overrides travel in the body');
is($w->{body}{payload}{shop}, 'north', 'payload carries the trigger payload');
is($w->{body}{payload}{subscriber}{subscriberId}, 'wh-1', 'and the subscriber');
is($m->{provider_message_id}, $w->{response}{body}{id}, 'the receiver\'s id is the provider message id');

identify('wh-2', 'wh-wrong', 'push-webhook', 'wh-device-2');
trigger('os-each', 'wh-2', 'wh-tx-2', { code => 'W8' });
ok(wait_final('wh-tx-2', 1), 'wrong-secret message final');
$m = NovuTest::message($node, 'wh-tx-2', 'wh-device-2');
is($m->{status} . '/' . $m->{attempts}, 'failed/1', 'a wrong secret: failed at once');
like($m->{last_error} // '', qr/secretKey|401/, 'as a configuration error naming secretKey');

identify('wh-3', 'wh-mock', 'push-webhook', 'wh-device-3', 'wh-device-4');
NovuTest::set_tokens($mocks, 'webhook', 'not-found', 'wh-device-3');
NovuTest::set_tokens($mocks, 'webhook', 'fail:503::1', 'wh-device-4');
trigger('os-each', 'wh-3', 'wh-tx-3', { code => 'W9' });
ok(wait_final('wh-tx-3', 2), 'webhook outcome messages final');
is(NovuTest::message($node, 'wh-tx-3', 'wh-device-3')->{status}, 'failed', '404: failed');
is(q1("SELECT count(*) FROM novu.device_tokens WHERE device_token = 'wh-device-3'"), 1, '404: the token is kept');
$m = NovuTest::message($node, 'wh-tx-3', 'wh-device-4');
is($m->{status} . '/' . $m->{attempts}, 'sent/2', '503: sent at the second attempt');

$node->stop;
done_testing();
