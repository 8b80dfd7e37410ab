# 019_durable_claim.pl: with novu.durable_claims, a message's claim is on
# disk before its request goes out.
#
# The workers commit their own transactions asynchronously; the WAL writer
# writes an asynchronous commit some time later (up to wal_writer_delay), and
# a server crash before that undoes it.  An undone claim leaves the trigger
# pending again: after the restart it is fanned out again and its message is
# sent again as a first attempt, while the first request may well have
# reached the provider: a duplicate that no attempt counts.  The worker must
# flush a claim's commit itself before sending (queue/work.c,
# novu_end_work_durable).  novu.durable_claims is off by default: it costs a
# WAL flush on the way of every claim (the README gives the figures).
#
# To make the race deterministic the WAL writer is stopped (SIGSTOP) while the
# trigger is fanned out and sent: an asynchronous commit then stays in the WAL
# buffers until the crash.  The worker is killed (SIGKILL) while the provider
# holds the request; the postmaster reinitializes the cluster.  Afterwards the
# provider must have received the token exactly as often as the attempts
# recorded for it.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();
# a crashed worker must reinitialize the cluster (PostgreSQL::Test::Cluster turns that off)
my $node = NovuTest::new_node('durable', $mocks, restart_after_crash => 'on', 'novu.workers' => 1,
	'novu.durable_claims' => 'on');
NovuTest::create_integrations($node, $mocks);
$node->safe_psql('postgres', q{SELECT novu.create_workflow('durable', '[{"type": "push", "title": "T", "content": "C"}]')});


sub received
{
	my ($token) = @_;
	return NovuTest::control($mocks, 'GET', '/received?provider=fcm')->{$token} // 0;
}

sub q1 { return NovuTest::query($node, $_[0]); }

# one subscriber with one FCM token, and a first message (the OAuth token, the connection)
sub identify
{
	my ($s, $t) = @_;
	$node->safe_psql('postgres', "SELECT novu.identify('$s', jsonb_build_object('channels', jsonb_build_array(jsonb_build_object("
		  . "'providerId', 'fcm', 'integrationIdentifier', 'fcm-mock', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('$t'))))))");
}
identify('durable-warm', 'durable-warm-token');
$node->safe_psql('postgres', q{SELECT novu.trigger('durable', '"durable-warm"', '{}', '{}', 'tx-warm')});
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'tx-warm'}, 30),
	'warm-up: the first message is sent');

identify('durable-1', 'durable-token-1');
# the provider holds its answer: the request is in flight at the kill
NovuTest::set_tokens($mocks, 'fcm', 'slow:3000:1', 'durable-token-1');
my $walwriter = q1(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'});
like($walwriter, qr/^\d+$/, 'the WAL writer runs');
my $worker = q1(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
like($worker, qr/^\d+$/, 'one delivery worker runs');

ok(kill('STOP', $walwriter), 'the WAL writer is stopped: an asynchronous commit now stays unwritten');
# the application's commit is synchronous: the trigger itself is on disk
$node->safe_psql('postgres', q{SELECT novu.trigger('durable', '"durable-1"', '{}', '{}', 'tx-durable')});
my $deadline = time() + 20;
usleep(20_000) until received('durable-token-1') > 0 || time() > $deadline;
is(received('durable-token-1'), 1, 'the provider has the request');
ok(kill('KILL', $worker), 'the delivery worker is killed while the provider holds the request');
ok(kill('CONT', $walwriter), 'the WAL writer goes on (and ends with the other processes)');

ok(NovuTest::poll_until($node, qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker' AND pid <> $worker}, 60),
	'after the crash restart a new delivery worker runs');
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 AND bool_and(status = 'sent') FROM novu.deliveries WHERE transaction_id = 'tx-durable'}, 60),
	'the message is sent in the end, once');
my $attempts = q1(q{SELECT attempts FROM novu.deliveries WHERE transaction_id = 'tx-durable'});
is(received('durable-token-1') . '/' . $attempts, '2/2',
	'the provider received the token once per recorded attempt: the claim outlived the crash, and the resend is a counted attempt');
is(q1(q{SELECT count(*) FROM novu.events WHERE transaction_id = 'tx-durable' AND status = 'processed'}), '1',
	'the trigger was fanned out once');

$node->stop;
done_testing();
