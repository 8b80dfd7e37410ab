# 022_workers.pl: the launcher and the workers' own failures.
#   1. The launcher restarted (pg_terminate_backend) while messages are in
#      flight adopts the running worker: no second worker in its slot, no
#      message sent twice, one attempt each.
#   2. A worker that cannot connect (CONNECT revoked) is started again after
#      growing delays, not forked without end; once it may connect it runs.
#   3. A worker whose every cycle fails pauses longer each time (1, 2, 4 s ...).
#   4. An integration a worker has not used for novu.integration_idle_timeout
#      is dropped with its connections (and decrypted secrets); the next
#      message loads it again.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('workers', $mocks, 'novu.workers' => 1, 'novu.request_timeout' => 20000);
NovuTest::create_integrations($node, $mocks);

sub q1 { return NovuTest::query($node, $_[0]); }
sub log_size { return -s $node->logfile; }
sub log_since { return slurp_file($node->logfile, $_[0]); }

sub count_matches
{
	my ($text, $re) = @_;
	my $count = () = $text =~ /$re/mg;
	return $count;
}

sub worker_pids
{
	return q1(q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
}

sub launcher_pid
{
	return q1(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'novu launcher'});
}

q1(q{SELECT novu.create_workflow('wk', '[{"type": "push", "title": "t", "content": "c"}]')});
my @tokens = map { "wk-tok-$_" } 1 .. 20;
for my $i (1 .. 20)
{
	q1("SELECT novu.identify('wk-$i', '{\"channels\": [{\"providerId\": \"fcm\", \"integrationIdentifier\": \"fcm-mock\","
		  . " \"credentials\": {\"deviceTokens\": [\"wk-tok-$i\"]}}]}')");
}
ok(NovuTest::wait_for($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 30),
	'one delivery worker runs');

######################################################################
# 1. launcher restarted with messages in flight
{
	NovuTest::set_tokens($mocks, 'fcm', 'slow:9000', @tokens);
	my $worker = worker_pids();
	my $launcher = launcher_pid();
	q1(q{SELECT novu.trigger('wk', to_jsonb(array_agg('wk-' || i)), '{}', '{}', 'wk-tx') FROM generate_series(1, 20) i});
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 20 FROM novu.deliveries WHERE transaction_id = 'wk-tx' AND status = 'sending'}, 20),
		'launcher restart: 20 messages in flight');
	q1(qq{SELECT pg_terminate_backend($launcher)});
	ok(NovuTest::wait_for($node, qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'novu launcher' AND pid <> $launcher}, 30),
		'launcher restart: a new launcher runs');
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 20 FROM novu.deliveries WHERE transaction_id = 'wk-tx' AND status = 'sent'}, 40),
		'launcher restart: every message sent');
	is(q1(q{SELECT string_agg(DISTINCT attempts::text, ',') FROM novu.deliveries WHERE transaction_id = 'wk-tx'}), '1',
		'launcher restart: one attempt each');
	my $accepted = NovuTest::accepted($mocks, 'fcm');
	is(scalar(grep { ($accepted->{$_} // 0) != 1 } @tokens), 0, 'launcher restart: the provider got each message once');
	is(worker_pids(), $worker, 'launcher restart: the same one worker runs, adopted');
	NovuTest::reset_mocks($mocks);
}

######################################################################
# 2. a worker that cannot connect is started again after growing delays
{
	my $off = log_size();
	q1(q{REVOKE CONNECT ON DATABASE postgres FROM PUBLIC; REVOKE CONNECT ON DATABASE postgres FROM novu_worker});
	my $worker = worker_pids();
	q1(qq{SELECT pg_terminate_backend($worker)});
	ok(NovuTest::poll_until($node, q{SELECT true}, 1), 'connect revoked: the server answers');
	my $deadline = time() + 60;
	usleep(100_000) until log_since($off) =~ /next start in 8 s/ || time() > $deadline;
	like(log_since($off), qr/delivery worker 0 stopped 4 time\(s\) in a row soon after it started; next start in 8 s/,
		'connect revoked: the launcher holds the worker back longer each time');
	is(count_matches(log_since($off), qr/FATAL:  permission denied for database "postgres"/), 4,
		'connect revoked: four tries until then (after 0, 1, 2 and 4 s), not one per moment');
	q1(q{GRANT CONNECT ON DATABASE postgres TO PUBLIC});
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 40),
		'connect granted: the worker runs again');
	q1(q{SELECT novu.trigger('wk', '"wk-1"', '{}', '{}', 'wk-after-connect')});
	ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'wk-after-connect'}, 30),
		'connect granted: delivery goes on');
}

######################################################################
# 3. every cycle fails: the pause grows
{
	my $off = log_size();
	q1(q{REVOKE SELECT ON novu.events FROM novu_worker});
	my $re = qr/^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*ERROR:  permission denied for table events/m;
	my $deadline = time() + 60;
	my @at;
	while (time() < $deadline)
	{
		@at = log_since($off) =~ /$re/g;
		last if @at >= 4;
		usleep(100_000);
	}
	q1(q{GRANT SELECT ON novu.events TO novu_worker});
	is(scalar(@at) >= 4, 1, 'cycle errors: logged') or diag(log_since($off));
	my @s = map { my ($h, $m, $sec) = /(\d\d):(\d\d):(\d\d\.\d+)$/; $h * 3600 + $m * 60 + $sec } @at[0 .. 3];
	my @gaps = map { $s[$_] - $s[$_ - 1] } 1 .. 3;
	cmp_ok($gaps[2], '>=', 3.5, 'cycle errors: the third pause is about 4 s (1, 2, 4 s)')
	  or diag("gaps: @gaps");
	cmp_ok($gaps[2], '>', $gaps[0] + 1.5, 'cycle errors: the pauses grow') or diag("gaps: @gaps");
	q1(q{SELECT novu.trigger('wk', '"wk-2"', '{}', '{}', 'wk-after-errors')});
	ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'wk-after-errors'}, 60),
		'cycle errors: once fixed, delivery goes on');
}

######################################################################
# 4. an integration unused for novu.integration_idle_timeout is dropped
{
	my $fcm_connections = sub { NovuTest::control($mocks, 'GET', '/stats')->{connections}{fcm} };
	$node->append_conf('postgresql.conf', "novu.integration_idle_timeout = '2s'\n");
	$node->reload;
	ok(NovuTest::wait_workers_reloaded($node), 'idle integration: the worker read the setting');
	q1(q{SELECT novu.trigger('wk', '"wk-3"', '{}', '{}', 'wk-idle-1')});
	ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'wk-idle-1'}, 30),
		'idle integration: a message sent');
	cmp_ok($fcm_connections->(), '>=', 1, 'idle integration: the worker keeps its connection to FCM open');
	my $deadline = time() + 20;
	usleep(100_000) while $fcm_connections->() > 0 && time() < $deadline;
	is($fcm_connections->(), 0, 'idle integration: unused for 2 s, it is dropped with its connection');
	q1(q{SELECT novu.trigger('wk', '"wk-4"', '{}', '{}', 'wk-idle-2')});
	ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'wk-idle-2'}, 30),
		'idle integration: the next message loads it again and is sent');
}

$node->stop;
done_testing();
