# 014_topics.pl: a trigger naming a topic of 10,000 subscribers (and a second,
# overlapping topic, and some members listed directly too) reaches FCM's mock
# once per member, never the actor (a member of both topics), and nothing
# else; the workers fan it out by chunks; the actor is in the templates.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $members = 10_000;

my $mocks = NovuTest::start_mocks();
# a generous request timeout: on a loaded machine a slow answer must not turn
# into a retry (at-least-once would then send that message twice, which this
# test would count as a fan-out duplicate)
my $node = NovuTest::new_node('topics', $mocks, 'novu.request_timeout' => 30000);
NovuTest::create_integrations($node, $mocks);

# m00001 .. m10000, one FCM token each, loaded set-based (the API's path for
# subscribers is tested elsewhere); "outsider" is in no topic; "ada" is the
# actor, a member of both topics
$node->safe_psql('postgres', <<SQL);
SELECT novu.create_workflow('new-post', '[{"type": "push",
    "title": "{{actor.firstName}} posted",
    "content": "Hi {{subscriber.firstName}}: {{payload.title}}"}]');
INSERT INTO novu.subscribers (subscriber_id, first_name)
SELECT 'm' || lpad(i::text, 5, '0'), 'M' || i FROM generate_series(1, $members) i;
INSERT INTO novu.subscriber_channels (subscriber_id, integration_id)
SELECT s.subscriber_id, i.id FROM novu.subscribers s, novu.integrations i WHERE i.identifier = 'fcm-mock';
INSERT INTO novu.device_tokens (integration_id, device_token, subscriber_id)
SELECT c.integration_id, 'fcm-' || c.subscriber_id, c.subscriber_id FROM novu.subscriber_channels c;
SELECT novu.identify('outsider', '{"firstName": "Out", "channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["fcm-outsider"]}}]}');
SELECT novu.identify('ada', '{"firstName": "Ada", "channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["fcm-ada"]}}]}');
SELECT novu.create_topic('everyone', 'Everyone');
SELECT novu.create_topic('first-hundred');
SQL

# members through the API, 500 per call (its limit)
my $failed = 0;
for (my $from = 1; $from <= $members; $from += 500)
{
	my $to = $from + 499;
	my $r = NovuTest::decode(NovuTest::query($node, qq{
		SELECT novu.add_topic_subscribers('everyone',
			(SELECT jsonb_agg('m' || lpad(i::text, 5, '0')) FROM generate_series($from, $to) i))}));
	$failed += scalar @{ $r->{failed}{notFound} };
}
is($failed, 0, 'every member was added');
NovuTest::query($node, q{SELECT novu.add_topic_subscribers('everyone', '["ada"]')});
NovuTest::query($node, q{SELECT novu.add_topic_subscribers('first-hundred',
	(SELECT jsonb_agg('m' || lpad(i::text, 5, '0')) FROM generate_series(1, 100) i) || '["ada"]')});
is(NovuTest::query($node, q{SELECT novu.topic_subscribers('everyone', 0, 1) ->> 'totalCount'}),
	$members + 1, 'the topic has 10,001 members, the actor included');

# the trigger: both topics, three members listed directly (one twice), the
# outsider, and the actor as a subscriberId
my $res = NovuTest::decode(NovuTest::query($node, q{
	SELECT novu.trigger('new-post',
		'[{"type": "Topic", "topicKey": "everyone"}, "m00007", {"type": "Topic", "topicKey": "first-hundred"},
		  "m09999", "outsider", "m00007", {"subscriberId": "m05000"}]',
		'{"title": "Topics"}', '{}', 'tx-topic', '"ada"')}));
is($res->{status}, 'processed', 'the trigger is processed');
is(NovuTest::query($node, q{SELECT kind || ' ' || topics::text FROM novu.events WHERE transaction_id = 'tx-topic'}),
	'topic {everyone,first-hundred}', 'one outbox row of kind topic keeps the topic keys');

my $expected = $members + 1;    # every member but the actor, and the outsider
ok(NovuTest::wait_for($node, qq{SELECT count(*) = $expected FROM novu.deliveries
	WHERE transaction_id = 'tx-topic' AND status = 'sent'}, 300),
	"$expected messages end sent");
ok(NovuTest::wait_for($node, q{SELECT status = 'processed' FROM novu.events WHERE transaction_id = 'tx-topic'}),
	'the outbox row is processed');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-topic'}),
	$expected, 'one delivery row per recipient, no more');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-topic' AND subscriber_id = 'ada'}),
	'0', 'no delivery row for the actor');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.execution_details
	WHERE transaction_id = 'tx-topic' AND detail LIKE 'Fan-out failed%'}), '0', 'no fan-out failure logged');

# what the mock received: each member's token once, the actor's never
my $accepted = NovuTest::accepted($mocks, 'fcm');
my @tokens = keys %$accepted;
is(scalar @tokens, $expected, "FCM accepted $expected distinct tokens");
my @twice = grep { $accepted->{$_} != 1 } @tokens;
is(scalar @twice, 0, 'each token exactly once');
for my $t (@twice)
{
	diag("$t accepted $accepted->{$t} times; its messages: " . NovuTest::query($node, qq{
		SELECT string_agg(format('id %s status %s attempts %s error %s', id, status, attempts, last_error), '; ')
		  FROM novu.deliveries WHERE device_token = '$t'}));
}
ok(!exists $accepted->{'fcm-ada'}, 'the actor got nothing');
is(scalar(grep { !exists $accepted->{ sprintf('fcm-m%05d', $_) } } 1 .. $members), 0, 'every member got its message');
ok(exists $accepted->{'fcm-outsider'}, 'the recipient listed directly outside the topics got its message');
is(scalar(grep { $_ !~ /^fcm-(m\d{5}|outsider)$/ } @tokens), 0, 'nothing else was sent');

my $requests = NovuTest::requests($mocks, 'fcm');
is(scalar @$requests, $expected, "FCM received $expected requests");
is(scalar(grep { ($_->{body}{message}{notification}{title} // '') ne 'Ada posted' } @$requests), 0,
	'every title renders the actor: "Ada posted"');
my ($one) = grep { $_->{body}{message}{token} eq 'fcm-m00042' } @$requests;
is($one->{body}{message}{notification}{body}, 'Hi M42: Topics', 'the body renders the member and the payload');

# a second trigger of the topic without an actor reaches the actor too
NovuTest::reset_mocks($mocks);
NovuTest::query($node, q{SELECT novu.trigger('new-post', '{"type": "Topic", "topicKey": "first-hundred"}', '{"title": "Again"}', '{}', 'tx-topic-2')});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 101 FROM novu.deliveries WHERE transaction_id = 'tx-topic-2' AND status = 'sent'}),
	'without an actor, all 101 members of the small topic get it');
ok(exists NovuTest::accepted($mocks, 'fcm')->{'fcm-ada'}, 'the actor is notified when not the actor');

$node->stop;
done_testing();
