# 004_housekeeping.pl: finished messages, activity and outbox rows older than
# novu.retention are deleted by the worker; pending work and recent history stay.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use Config;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('housekeeping', $mocks, 'novu.retention' => "'6s'");
NovuTest::create_integrations($node, $mocks);

$node->safe_psql('postgres', q{
SELECT novu.create_workflow('w', '[{"type": "push", "title": "T", "content": "C"}]');
SELECT novu.identify('h1', '{"channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["hk-1"]}}]}');
SELECT novu.trigger('w', '"h1"', '{}', '{}', 'tx-old');
SELECT novu.create_workflow('later', '[{"type": "delay", "amount": 1, "unit": "seconds"},
                                       {"type": "push", "title": "T", "content": "C"}]');
SELECT novu.trigger('later', '"h1"', '{}', '{}', 'tx-delayed');
});
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'tx-old'}),
	'the message is sent');
is(NovuTest::query($node, q{SELECT count(*) > 0 FROM novu.execution_details WHERE transaction_id = 'tx-old'}), 't',
	'it has activity');
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'tx-delayed'}),
	'the delayed message is sent');
is(NovuTest::query($node, q{SELECT status FROM novu.step_runs WHERE transaction_id = 'tx-delayed'}), 'done',
	'its delay step is done');

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
ok(NovuTest::wait_for($node, q{SELECT NOT EXISTS (SELECT FROM novu.step_runs WHERE transaction_id = 'tx-delayed')
    AND NOT EXISTS (SELECT FROM novu.deliveries WHERE transaction_id = 'tx-delayed')}, 30),
	'and so are a finished delay step and its message');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-pending' AND status = 'pending'}),
	'1', 'the pending message is kept');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.events WHERE transaction_id = 'tx-pending'}),
	'1', 'and so is its outbox row (its transactionId stays taken)');
is(NovuTest::query($node, q{SELECT novu.trigger('w', '"h2"', '{}', '{}', 'tx-pending') ->> 'status'}),
	'duplicate', 'a retained transactionId is still a duplicate');

# A message waiting for its retry when its integration is deleted fails with
# "Integration deleted" at the retry, and is not sent again
my $sa = slurp_file("$mocks->{dir}/fcm-service-account.json");
$node->safe_psql('postgres', sprintf(q{SELECT novu.create_integration('fcm',
    jsonb_build_object('serviceAccount', $sa$%s$sa$::jsonb, 'endpoint', '%s'), 'fcm-doomed')}, $sa, $mocks->{urls}{fcm}));
# (Retry-After 30 s: the retry cannot come before the deletion; the test makes it due after)
NovuTest::set_tokens($mocks, 'fcm', 'fail:503:30', 'hk-3');
$node->safe_psql('postgres', q{
SELECT novu.identify('h3');
SELECT novu.set_credentials('h3', 'fcm', '{"deviceTokens": ["hk-3"]}', 'fcm-doomed');
SELECT novu.trigger('w', '"h3"', '{}', '{}', 'tx-doomed');
});
ok(NovuTest::wait_for($node, q{SELECT status = 'pending' AND attempts = 1 FROM novu.messages WHERE transaction_id = 'tx-doomed'}),
	'a message of integration fcm-doomed waits for its retry');
is(NovuTest::query($node, q{SELECT novu.delete_integration('fcm-doomed')}), 't', 'its integration is deleted');
NovuTest::query($node, q{UPDATE novu.deliveries SET next_attempt_at = now() WHERE transaction_id = 'tx-doomed' AND status = 'pending'});
ok(NovuTest::wait_for($node, q{SELECT status <> 'pending' FROM novu.messages WHERE transaction_id = 'tx-doomed'}, 30),
	'the message is final after its retry time');
is(NovuTest::query($node, q{SELECT status || ': ' || last_error FROM novu.messages WHERE transaction_id = 'tx-doomed'}),
	'failed: Integration deleted', 'it failed: Integration deleted');
is(scalar(grep { $_->{body}{message}{token} eq 'hk-3' } @{ NovuTest::requests($mocks, 'fcm') }), 1,
	'and the provider received it once (the first attempt)');

# A backlog is worked off at the rate a worker deletes, not a fixed number of
# rows a minute (5,000 per table until 0.19.0): 60,000 finished messages, their
# activity and 30,000 outbox rows, all older than the retention.  (A retention
# of 20 s: housekeeping comes every 10 s, and 0.18.0 took 5,000 rows per table
# then, two minutes for this backlog.)
{
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.retention = '20s'; SELECT pg_reload_conf();});
	# (housekeeping walks rows in id order, up to the first one made after the
	# cutoff: the rows made before the backlog are made an hour old too)
	$node->safe_psql('postgres', q{
UPDATE novu.deliveries SET created_at = created_at - interval '1 hour';
UPDATE novu.events SET created_at = created_at - interval '1 hour';
UPDATE novu.execution_details SET created_at = created_at - interval '1 hour';
});
	$node->safe_psql('postgres', q{
INSERT INTO novu.events (transaction_id, workflow_id, recipients, status, created_at, processed_at)
SELECT 'bulk-' || i, 'w', ARRAY['h1'], 'processed', now() - interval '1 hour', now() - interval '1 hour'
  FROM generate_series(1, 30000) i;
INSERT INTO novu.deliveries (transaction_id, workflow_id, subscriber_id, channel, provider_id, device_token,
                             status, attempts, created_at, updated_at)
SELECT 'bulk-' || (i % 30000 + 1), 'w', 'h1', 'push', 'fcm', 'hk-bulk-' || i, 'sent', 1,
       now() - interval '1 hour', now() - interval '1 hour'
  FROM generate_series(1, 60000) i;
INSERT INTO novu.execution_details (transaction_id, status, detail, created_at)
SELECT 'bulk-' || (i % 30000 + 1), 'Success', 'Message sent', now() - interval '1 hour'
  FROM generate_series(1, 60000) i;
});
	my $t0 = time();
	ok(NovuTest::wait_for($node, q{SELECT NOT EXISTS (SELECT FROM novu.deliveries WHERE transaction_id LIKE 'bulk-%')
    AND NOT EXISTS (SELECT FROM novu.execution_details WHERE transaction_id LIKE 'bulk-%')
    AND NOT EXISTS (SELECT FROM novu.events WHERE transaction_id LIKE 'bulk-%')}, 60),
		'a backlog of 150,000 old rows is deleted within a minute');
	diag(sprintf('backlog of 150,000 rows deleted in %.1f s', time() - $t0));
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.retention = '6s'; SELECT pg_reload_conf();});
	$node->safe_psql('postgres', q{SELECT novu.trigger('w', '"h1"', '{}', '{}', 'tx-after-backlog')});
	ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'tx-after-backlog'}, 20),
		'delivery went on meanwhile');
}

# Workers of a database without the extension wait for it (the role exists once any
# database has the extension): they must not spin.  Measured as the workers' CPU time
# over a window of two seconds (spinning workers used one core each).
sub workers_cpu_s
{
	my $pids = $node->safe_psql('postgres', q{SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
	    WHERE backend_type = 'novu delivery worker' AND datname = 'other'});
	my ($ticks, $n) = (0, 0);
	for my $pid (split / /, $pids)
	{
		open(my $fh, '<', "/proc/$pid/stat") or next;
		my @f = split / /, (split /\) /, <$fh>)[1];
		close $fh;
		$ticks += $f[11] + $f[12];		# utime + stime (fields 14 and 15)
		$n++;
	}
	return ($ticks / 100.0, $n);
}
$node->safe_psql('postgres', q{CREATE DATABASE other});
$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.database_name = 'other'});
$node->safe_psql('postgres', q{SELECT pg_reload_conf()});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM pg_stat_activity
    WHERE backend_type = 'novu delivery worker' AND datname = 'other'}, 30),
	'the delivery workers move to a database without the extension');
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM pg_stat_activity
    WHERE backend_type = 'novu delivery worker' AND datname = 'other' AND state_change < now() - interval '1 second'}, 10),
	'and settle');
my ($cpu0, $nw) = workers_cpu_s();
my $t0 = time();
select(undef, undef, undef, 2.0);	# the measurement window
my ($cpu1) = workers_cpu_s();
cmp_ok($cpu1 - $cpu0, '<', 0.3, sprintf('they wait for the extension: %.2f s of CPU in %.1f s (%d workers)',
	$cpu1 - $cpu0, time() - $t0, $nw));

# novu.worker_time_slice: the workers ask the kernel for that CPU time slice
# (Linux 6.12 or later shows it as se.slice in /proc/PID/sched, in ns); a
# reload applies a new value; 0 gives the kernel's default back
sub worker_slices
{
	my @pids = split /,/, $node->safe_psql('postgres', q{SELECT string_agg(pid::text, ',' ORDER BY pid)
	    FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
	my @slices;
	for my $pid (@pids)
	{
		open(my $fh, '<', "/proc/$pid/sched") or return ();
		my ($ns) = map { /^se\.slice\s*:\s*(\d+)/ ? $1 : () } <$fh>;
		close $fh;
		return () unless defined $ns;
		push @slices, $ns;
	}
	return @slices;
}
sub slices_become
{
	my ($want, $timeout) = @_;
	my $deadline = time() + $timeout;
	while (time() < $deadline)
	{
		my @s = worker_slices();
		return 1 if @s && !grep { !$want->($_) } @s;
		usleep(50_000);
	}
	diag('worker slices: ' . join(' ', worker_slices()));
	return 0;
}
# whether this kernel takes a custom slice at all (Linux 6.12 or later): asked for
# this test process itself (sched_setattr, x86_64's syscall 314), then given back
sub kernel_takes_custom_slices
{
	return 0 unless $Config{archname} =~ /^x86_64/;
	my $attr = pack('LLQlLQQQ', 48, 0, 0, 0, 0, 300_000, 0, 0);
	return 0 if syscall(314, 0, $attr, 0) != 0;
	my $ok = 0;
	if (open(my $fh, '<', "/proc/$$/sched"))
	{
		my ($ns) = map { /^se\.slice\s*:\s*(\d+)/ ? $1 : () } <$fh>;
		$ok = defined $ns && $ns == 300_000;
		close $fh;
	}
	my $default = pack('LLQlLQQQ', 48, 0, 0, 0, 0, 0, 0, 0);
	syscall(314, 0, $default, 0);
	return $ok;
}
SKIP:
{
	skip 'this kernel takes no custom time slice (they came with Linux 6.12)', 3
	  unless kernel_takes_custom_slices() && worker_slices();
	ok(slices_become(sub { $_[0] == 100_000 }, 10), 'the workers run with a 0.1 ms time slice by default');
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.worker_time_slice = '2ms'; SELECT pg_reload_conf();});
	ok(slices_become(sub { $_[0] == 2_000_000 }, 20), 'a reload applies a new time slice');
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.worker_time_slice = 0; SELECT pg_reload_conf();});
	ok(slices_become(sub { $_[0] != 2_000_000 && $_[0] != 100_000 }, 20), '0 gives the kernel\'s default back');
}


$node->stop;
done_testing();
