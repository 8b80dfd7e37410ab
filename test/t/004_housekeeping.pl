# 004_housekeeping.pl: finished messages, activity and outbox rows older than
# novu.retention are deleted by the worker; pending work and recent history stay.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('housekeeping', $mocks, 'novu.retention' => "'3s'");
NovuTest::create_integrations($node, $mocks);

$node->safe_psql('postgres', q{
SELECT novu.create_workflow('w', '[{"type": "push", "title": "T", "content": "C"}]');
SELECT novu.identify('h1', '{"channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["hk-1"]}}]}');
SELECT novu.trigger('w', '"h1"', '{}', '{}', 'tx-old');
});
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'tx-old'}),
	'the message is sent');
is(NovuTest::query($node, q{SELECT count(*) > 0 FROM novu.execution_details WHERE transaction_id = 'tx-old'}), 't',
	'it has activity');

# a message that stays pending (its retry is far away) must survive housekeeping
NovuTest::set_tokens($mocks, 'fcm', 'fail:503:3600', 'hk-2');
$node->safe_psql('postgres', q{
SELECT novu.identify('h2', '{"channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["hk-2"]}}]}');
SELECT novu.trigger('w', '"h2"', '{}', '{}', 'tx-pending');
});
ok(NovuTest::wait_for($node, q{SELECT status = 'pending' AND attempts = 1 FROM novu.messages WHERE transaction_id = 'tx-pending'}),
	'a second message waits for its retry');

ok(NovuTest::wait_for($node, q{SELECT NOT EXISTS (SELECT FROM novu.deliveries WHERE transaction_id = 'tx-old')
    AND NOT EXISTS (SELECT FROM novu.execution_details WHERE transaction_id = 'tx-old')
    AND NOT EXISTS (SELECT FROM novu.events WHERE transaction_id = 'tx-old')}, 30),
	'after the retention, the finished message, its activity and its outbox row are deleted');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-pending' AND status = 'pending'}),
	'1', 'the pending message is kept');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.events WHERE transaction_id = 'tx-pending'}),
	'1', 'and so is its outbox row (its transactionId stays taken)');
is(NovuTest::query($node, q{SELECT novu.trigger('w', '"h2"', '{}', '{}', 'tx-pending') ->> 'status'}),
	'duplicate', 'a retained transactionId is still a duplicate');

$node->stop;
done_testing();
