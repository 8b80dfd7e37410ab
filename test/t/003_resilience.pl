# 003_resilience.pl: the delivery guarantee under crashes and odd states
# (DESIGN.md section 4: at-least-once; nothing committed is lost; a duplicate
# only for a request in flight at a crash).
#
#  1. kill -9 of the delivery worker mid-delivery: all sent, duplicates bounded
#  2. kill -9 of the postmaster mid-delivery (plus triggers not yet fanned out)
#  3. SIGTERM with a hung provider: fast shutdown in about a second, redelivery
#  4. three workers share 1000 messages, each token accepted exactly once
#  5. novu.database_name names a missing database: logged once, no crash loop
#  6. DROP EXTENSION under a running worker, CREATE EXTENSION again (also both in one transaction)
#  7. a rolled-back transaction sends nothing, a committed one meanwhile does
# (run in the order 1, 2, 3, 4, 7, 6 on one node; 5 on a second node started
# at the beginning, so that its log covers the whole run)
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();

# Node for sections 1-4, 6, 7: a crashed worker must reinitialize the cluster
# instead of shutting it down (PostgreSQL::Test::Cluster turns that off).
# one worker (sections 1-3 kill and follow it; section 4 runs three)
my $node = NovuTest::new_node('resilience', $mocks,
	restart_after_crash => 'on',
	'novu.workers' => 1,
	'novu.batch_size' => 50);
NovuTest::create_integrations($node, $mocks);

# Node for section 5, started now so that its log covers the whole run.
my $later = NovuTest::new_node('later', $mocks, 'novu.database_name' => "'later_db'");
my $later_started = time();

my $WORKFLOW = q{SELECT novu.create_workflow('ping', '[{"type": "push",
    "title": "Ping {{payload.n}}", "content": "for {{subscriber.subscriberId}}"}]')};
$node->safe_psql('postgres', $WORKFLOW);

######################################################################
# helpers


sub log_size { return -s $_[0]->logfile; }

sub log_since
{
	my ($n, $offset) = @_;
	return slurp_file($n->logfile, $offset);
}

# Wait (bounded) until the log after $offset matches $re.
sub wait_log
{
	my ($n, $re, $offset, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() < $deadline)
	{
		return 1 if log_since($n, $offset) =~ $re;
		usleep(100_000);
	}
	diag("timed out waiting for log line $re");
	return 0;
}

sub count_matches
{
	my ($text, $re) = @_;
	my $count = () = $text =~ /$re/mg;
	return $count;
}

# Whether a process still exists.  A zombie counts too: a new postmaster
# refuses to start while the PID in postmaster.pid answers kill 0.
sub process_alive
{
	my ($pid) = @_;
	return kill(0, $pid) ? 1 : 0;
}

# Subscribers $prefix1..$prefix$count, each with one FCM token $fcm<i> and/or
# one Expo token ExponentPushToken[$expo<i>].
sub make_subscribers
{
	my ($n, $prefix, $count, %tok) = @_;
	my $db = $tok{db} // 'postgres';
	my @channels;
	push @channels, qq{jsonb_build_object('providerId', 'fcm', 'credentials',
	    jsonb_build_object('deviceTokens', jsonb_build_array('$tok{fcm}' || i)))} if $tok{fcm};
	push @channels, qq{jsonb_build_object('providerId', 'expo', 'credentials',
	    jsonb_build_object('deviceTokens', jsonb_build_array('ExponentPushToken[$tok{expo}' || i || ']')))} if $tok{expo};
	$n->safe_psql($db, "SELECT count(novu.identify('$prefix' || i, jsonb_build_object('channels', jsonb_build_array("
		  . join(', ', @channels) . ")))) FROM generate_series(1, $count) i");
}

# A trigger of the 'ping' workflow for subscribers $prefix1..$prefix$count.
sub trigger_sql
{
	my ($prefix, $count, $tx) = @_;
	return qq{SELECT novu.trigger('ping', (SELECT jsonb_agg('$prefix' || i) FROM generate_series(1, $count) i),
	    '{"n": 1}', '{}', '$tx')};
}

# Tokens of @tokens missing from an /accepted map, and those accepted more than once.
sub accepted_figures
{
	my ($acc, @tokens) = @_;
	my @missing = grep { !($acc->{$_} // 0) } @tokens;
	my @dups = grep { ($acc->{$_} // 0) > 1 } @tokens;
	return (\@missing, \@dups);
}

my $WORKER_PIDS = q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'};
my $NOVU_DIED = qr/background worker "novu[^"]*" \(PID \d+\) (?:exited with exit code|was terminated by signal)/;
# Background workers log without an application name (%q in log_line_prefix),
# so within a window where the test itself runs no failing statement, any
# ERROR/FATAL/PANIC line is the server's own.
my $NOVU_ERROR = qr/^\S+ \S+ \S+ \[\d+\] (?:\S+ )?(?:ERROR|FATAL|PANIC):/;

######################################################################
# 1. kill -9 of the delivery worker mid-delivery
{
	my @tokens = map { "k1-$_" } 1 .. 200;
	make_subscribers($node, 'r1-', 200, fcm => 'k1-');
	NovuTest::reset_mocks($mocks);
	NovuTest::set_tokens($mocks, 'fcm', 'slow:1500', @tokens);
	NovuTest::query($node, trigger_sql('r1-', 200, 'tx-s1'));

	# batches of 50, 1.5 s each: once the first is recorded the second is in
	# flight for about 1.5 s; kill in the middle of it
	ok(NovuTest::wait_for($node, q{SELECT count(*) FILTER (WHERE status = 'sent') >= 50
	    AND count(*) FILTER (WHERE status = 'sending') > 0 FROM novu.deliveries WHERE transaction_id = 'tx-s1'}, 30),
		'kill worker: first batch sent, the next one in flight');
	usleep(400_000);
	my ($sending, $sent, $wpid) = split /\|/, NovuTest::query($node, qq{SELECT count(*) FILTER (WHERE status = 'sending'),
	    count(*) FILTER (WHERE status = 'sent'), ($WORKER_PIDS) FROM novu.deliveries WHERE transaction_id = 'tx-s1'});
	like($wpid, qr/^\d+$/, 'kill worker: one delivery worker runs');
	my $off = log_size($node);
	ok(kill('KILL', $wpid), "kill worker: SIGKILL sent to the delivery worker (PID $wpid)");
	ok(wait_log($node, qr/background worker "novu delivery worker[^"]*" \(PID $wpid\) was terminated by signal 9/, $off, 20),
		'kill worker: the postmaster saw the worker die by signal 9');
	ok(wait_log($node, qr/all server processes terminated; reinitializing/, $off, 20),
		'kill worker: crash restart (restart_after_crash = on)');

	ok(NovuTest::poll_until($node, q{SELECT count(*) = 200 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s1'}, 60),
		'kill worker: after the restart every message ends sent');
	ok(NovuTest::poll_until($node, qq{SELECT count(*) = 1 AND min(pid) <> $wpid FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 10),
		'kill worker: a new delivery worker runs');

	my $reclaimed = NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-s1' AND attempts > 1});
	my ($missing, $dups) = accepted_figures(NovuTest::accepted($mocks, 'fcm'), @tokens);
	cmp_ok($sending, '>', 0, "kill worker: messages were in flight at the kill ($sending sending, $sent sent)");
	is(scalar @$missing, 0, 'kill worker: every token was accepted at least once')
	  or diag('missing: ' . join(', ', @$missing[0 .. ($#$missing < 9 ? $#$missing : 9)]));
	cmp_ok(scalar @$dups, '<=', $sending, 'kill worker: duplicates at most the messages in flight at the kill');
	diag(sprintf('kill -9 worker: %d sending and %d sent at the kill; %d claimed again; %d duplicate(s) accepted',
			$sending, $sent, $reclaimed, scalar @$dups));
}

######################################################################
# 2. kill -9 of the postmaster mid-delivery
{
	my @tokens = map { "k2-$_" } 1 .. 200;
	my @late_tokens = map { "kl2-$_" } 1 .. 20;
	make_subscribers($node, 'r2-', 200, fcm => 'k2-');
	make_subscribers($node, 'l2-', 20, fcm => 'kl2-');
	NovuTest::reset_mocks($mocks);
	NovuTest::set_tokens($mocks, 'fcm', 'slow:1500', @tokens);
	# a late request that leaves before the kill is still unanswered at it (the
	# worker's commits are asynchronous: one answered just before the kill could
	# be lost and sent again); the one after the restart is answered at once
	NovuTest::set_tokens($mocks, 'fcm', 'slow:5000:1', @late_tokens);
	NovuTest::query($node, trigger_sql('r2-', 200, 'tx-s2'));

	ok(NovuTest::wait_for($node, q{SELECT count(*) FILTER (WHERE status = 'sent') >= 50
	    AND count(*) FILTER (WHERE status = 'sending') > 0 FROM novu.deliveries WHERE transaction_id = 'tx-s2'}, 30),
		'kill postmaster: first batch sent, the next one in flight');
	usleep(400_000);

	# commit one more trigger, take a snapshot, and SIGKILL the postmaster right
	# away (the worker, woken at commit, may or may not have fanned it out yet)
	my @snap = split /\n/, $node->safe_psql('postgres', trigger_sql('l2-', 20, 'tx-s2-late') . qq{;
	    SELECT count(*) FILTER (WHERE status = 'sending') || '|' || count(*) FILTER (WHERE status = 'sent')
	      FROM novu.deliveries WHERE transaction_id = 'tx-s2';
	    SELECT status FROM novu.events WHERE transaction_id = 'tx-s2-late';
	    SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE pid <> pg_backend_pid();});
	my $pm_pid = $node->{_pid};
	my $off = log_size($node);
	$node->kill9;
	my ($sending, $sent) = split /\|/, $snap[1];
	note("kill postmaster: the late trigger's outbox row was '$snap[2]' at the kill");

	# the orphaned server processes notice the postmaster's death and exit
	note('snapshot before the kill: ' . join(' / ', @snap));
	my @pids = grep { /^\d+$/ } ($pm_pid, split(/,/, $snap[3] // ''));
	my $deadline = time() + 30;
	usleep(100_000) while time() < $deadline && grep { process_alive($_) } @pids;
	is(join(',', grep { process_alive($_) } @pids), '', 'kill postmaster: every server process is gone');

	ok($node->start(fail_ok => 1), 'kill postmaster: the node starts again');
	like(log_since($node, $off), qr/database system was not properly shut down; automatic recovery in progress/,
		'kill postmaster: startup ran crash recovery');
	ok(NovuTest::poll_until($node, q{SELECT count(*) = 220 AND bool_and(status = 'sent') FROM novu.messages
	    WHERE transaction_id IN ('tx-s2', 'tx-s2-late')}, 60),
		'kill postmaster: every message ends sent, the late trigger included');

	my $reclaimed = NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-s2' AND attempts > 1});
	my $acc = NovuTest::accepted($mocks, 'fcm');
	my ($missing, $dups) = accepted_figures($acc, @tokens);
	cmp_ok($sending, '>', 0, "kill postmaster: messages were in flight at the kill ($sending sending, $sent sent)");
	is(scalar @$missing, 0, 'kill postmaster: every token was accepted at least once');
	cmp_ok(scalar @$dups, '<=', $sending, 'kill postmaster: duplicates at most the messages in flight at the kill');
	my ($late_missing, $late_dups) = accepted_figures($acc, @late_tokens);
	is(scalar(@$late_missing) + scalar(@$late_dups), 0, 'kill postmaster: the late trigger reached each token exactly once');
	diag(sprintf('kill -9 postmaster: %d sending and %d sent at the kill; %d claimed again; %d duplicate(s) accepted',
			$sending, $sent, $reclaimed, scalar @$dups));
}

######################################################################
# 3. SIGTERM with a hung provider: fast shutdown does not wait for it
{
	my @tokens = map { "k3-$_" } 1 .. 20;
	make_subscribers($node, 'r3-', 20, fcm => 'k3-');
	# the requests must hang, not time out
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.request_timeout = '120s'; SELECT pg_reload_conf();});
	ok(NovuTest::wait_workers_reloaded($node), 'hung provider: the workers wait 120 s for an answer');
	NovuTest::reset_mocks($mocks);
	NovuTest::set_tokens($mocks, 'fcm', 'slow:60000', @tokens);
	NovuTest::query($node, trigger_sql('r3-', 20, 'tx-s3'));
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 20 FROM novu.deliveries WHERE transaction_id = 'tx-s3' AND status = 'sending'}, 20),
		'hung provider: 20 messages in flight');
	usleep(1_000_000);

	my $t0 = time();
	my $stopped = $node->stop('fast', fail_ok => 1);
	my $stop_s = time() - $t0;
	ok($stopped, 'hung provider: pg_ctl stop -m fast succeeds');
	cmp_ok($stop_s, '<', 5, 'hung provider: fast shutdown does not wait for the provider');
	diag(sprintf('pg_ctl stop -m fast with requests hanging on the provider: %.2f s', $stop_s));

	NovuTest::reset_mocks($mocks);    # the tokens answer at once again
	$node->start;
	my $t1 = time();
	# the lease is 5 x 120 s + 30 s: only the reclaim of a dead worker's rows delivers them now
	ok(NovuTest::poll_until($node, q{SELECT count(*) = 20 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s3'}, 30),
		'hung provider: after the restart the messages are delivered (claimed again at once, not after the lease)');
	diag(sprintf('hung provider: delivered %.2f s after the restart', time() - $t1));
	my ($missing, $dups) = accepted_figures(NovuTest::accepted($mocks, 'fcm'), @tokens);
	is(scalar @$missing, 0, 'hung provider: every token accepted');
	$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.request_timeout; SELECT pg_reload_conf();});
}

######################################################################
# 4. three workers never send one message twice in normal operation
{
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.workers = 3; ALTER SYSTEM SET novu.batch_size = 20; SELECT pg_reload_conf();});
	ok(NovuTest::poll_until($node, q{SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 20),
		'three workers: novu.workers = 3 on reload starts three delivery workers');
	my @fcm = map { "k4-$_" } 1 .. 500;
	my @expo = map { "ExponentPushToken[x4-$_]" } 1 .. 500;
	make_subscribers($node, 'r4-', 500, fcm => 'k4-', expo => 'x4-');
	NovuTest::reset_mocks($mocks);
	# a little latency, so that the batches overlap
	NovuTest::set_tokens($mocks, 'fcm', 'slow:200', @fcm);
	NovuTest::set_tokens($mocks, 'expo', 'slow:200', @expo);
	my $t0 = time();
	NovuTest::query($node, trigger_sql('r4-', 500, 'tx-s4'));
	ok(NovuTest::poll_until($node, q{SELECT count(*) = 1000 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s4'}, 90),
		'three workers: 1000 messages (FCM and Expo) sent');
	my $took = time() - $t0;

	my ($fm, $fd) = accepted_figures(NovuTest::accepted($mocks, 'fcm'), @fcm);
	my ($em, $ed) = accepted_figures(NovuTest::accepted($mocks, 'expo'), @expo);
	is(scalar(@$fm) + scalar(@$em), 0, 'three workers: every token accepted');
	is(scalar(@$fd) + scalar(@$ed), 0, 'three workers: no token accepted twice');
	is(NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-s4' AND attempts <> 1}), '0',
		'three workers: every message claimed exactly once');
	my $share = NovuTest::query($node, q{SELECT string_agg(n::text, '/' ORDER BY n DESC) FROM (SELECT count(*) AS n FROM novu.deliveries
	    WHERE transaction_id = 'tx-s4' GROUP BY claimed_by) s});
	is(NovuTest::query($node, qq{SELECT count(DISTINCT d.claimed_by) = 3 AND bool_and(d.claimed_by::text = ANY (string_to_array(($WORKER_PIDS), ',')))
	    FROM novu.deliveries d WHERE d.transaction_id = 'tx-s4'}), 't',
		"three workers: all three workers took part (messages per worker: $share)");
	diag(sprintf('three workers: 1000 messages in %.1f s, shared %s', $took, $share));

	$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.workers; ALTER SYSTEM RESET novu.batch_size; SELECT pg_reload_conf();});
	ok(NovuTest::poll_until($node, q{SELECT count(*) = current_setting('novu.workers')::int FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 20),
		'three workers: back to the default number of workers on reload');
}

######################################################################
# 7. a rolled-back transaction sends nothing; a committed one meanwhile does
{
	make_subscribers($node, 'r7-', 100, fcm => 'k7-');
	make_subscribers($node, 'c7-', 1, fcm => 'kc7-');
	NovuTest::reset_mocks($mocks);
	my $bg = $node->background_psql('postgres');
	$bg->query_safe('BEGIN');
	$bg->query_safe(trigger_sql('r7-', 100, 'tx-s7-rolled-back'));
	NovuTest::query($node, trigger_sql('c7-', 1, 'tx-s7-committed'));
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 1 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s7-committed'}, 20),
		'rollback: a trigger committed while another transaction is open is delivered');
	$bg->query_safe('ROLLBACK');
	$bg->quit;
	# one more committed trigger: once it is sent, the worker has had a full
	# cycle (and a poll) after the rollback
	usleep(1_200_000);
	NovuTest::query($node, trigger_sql('c7-', 1, 'tx-s7-after'));
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 1 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s7-after'}, 20),
		'rollback: a trigger committed after the rollback is delivered');
	is_deeply(NovuTest::accepted($mocks, 'fcm'), { 'kc7-1' => 2 },
		'rollback: the mock accepted only the two committed messages, none of the 100 rolled back');
	is(NovuTest::query($node, q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-s7-rolled-back'}), '0',
		'rollback: the rolled-back trigger left no message');
}

######################################################################
# 6. DROP EXTENSION under a running worker, then CREATE EXTENSION again
{
	my $off = log_size($node);
	$node->safe_psql('postgres', 'DROP EXTENSION novu');
	ok(wait_log($node, qr/novu: extension "novu" is not installed in database "postgres"; delivery waits/, $off, 15),
		'drop extension: the worker says it waits');
	usleep(3_000_000);
	my $log = log_since($node, $off);
	is(count_matches($log, qr/novu: extension "novu" is not installed in database "postgres"/), 1,
		'drop extension: logged once, not every poll');
	is(count_matches($log, $NOVU_ERROR), 0, 'drop extension: no ERROR/FATAL in the server log')
	  or diag(join("\n", grep { /$NOVU_ERROR/ } split /\n/, $log));
	is(count_matches($log, $NOVU_DIED), 0, 'drop extension: no novu worker died');
	is(NovuTest::query($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}), '1',
		'drop extension: the worker keeps running');

	$off = log_size($node);
	$node->safe_psql('postgres', 'CREATE EXTENSION novu');
	NovuTest::create_integrations($node, $mocks);
	$node->safe_psql('postgres', $WORKFLOW);
	make_subscribers($node, 'r6-', 3, fcm => 'k6-');
	NovuTest::reset_mocks($mocks);
	NovuTest::query($node, trigger_sql('r6-', 3, 'tx-s6'));
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 3 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s6'}, 20),
		'drop extension: after CREATE EXTENSION a trigger is delivered');
	is_deeply(NovuTest::accepted($mocks, 'fcm'), { 'k6-1' => 1, 'k6-2' => 1, 'k6-3' => 1 },
		'drop extension: each token accepted once');
	$log = log_since($node, $off);
	is(count_matches($log, qr/novu: extension ready, delivery resumes/), 1, 'drop extension: "delivery resumes" logged once');
	is(count_matches($log, $NOVU_ERROR), 0, 'drop extension: no ERROR/FATAL in the server log after re-creation')
	  or diag(join("\n", grep { /$NOVU_ERROR/ } split /\n/, $log));

	# DROP and CREATE in one transaction, between two units of work of a
	# worker that keeps the extension's OID (src/queue/work.c): the next unit
	# of work finds the new extension, not the one it knew
	$off = log_size($node);
	$node->safe_psql('postgres', 'BEGIN; DROP EXTENSION novu; CREATE EXTENSION novu; COMMIT');
	NovuTest::create_integrations($node, $mocks);
	$node->safe_psql('postgres', $WORKFLOW);
	make_subscribers($node, 'r6b-', 2, fcm => 'k6b-');
	NovuTest::reset_mocks($mocks);
	NovuTest::query($node, trigger_sql('r6b-', 2, 'tx-s6b'));
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s6b'}, 20),
		'drop and create in one transaction: a trigger is delivered by the new extension');
	is_deeply(NovuTest::accepted($mocks, 'fcm'), { 'k6b-1' => 1, 'k6b-2' => 1 },
		'drop and create in one transaction: each token accepted once');
	$log = log_since($node, $off);
	is(count_matches($log, $NOVU_ERROR), 0, 'drop and create in one transaction: no ERROR/FATAL in the server log')
	  or diag(join("\n", grep { /$NOVU_ERROR/ } split /\n/, $log));
	is(count_matches($log, $NOVU_DIED), 0, 'drop and create in one transaction: no novu worker died');
}

$node->stop;

######################################################################
# 5. the database is missing: logged once, no crash loop, delivery once it exists
{
	my $waited = time() - $later_started;
	usleep(int((3.5 - $waited) * 1_000_000)) if $waited < 3.5;
	$waited = time() - $later_started;
	my $log = log_since($later, 0);
	is(count_matches($log, qr/novu: database "later_db" does not exist; delivery waits until it does/), 1,
		sprintf('missing database: logged exactly once in %.0f s', $waited));
	is(count_matches($log, $NOVU_DIED), 0, 'missing database: no novu worker exited (no crash loop)')
	  or diag(join("\n", grep { /$NOVU_DIED/ } split /\n/, $log));
	is(count_matches($log, $NOVU_ERROR), 0, 'missing database: no ERROR/FATAL in the server log');
	is($later->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE backend_type = 'novu launcher') || '/'
	    || count(*) FILTER (WHERE backend_type = 'novu delivery worker') FROM pg_stat_activity}), '1/0',
		'missing database: the launcher runs, no delivery worker');

	my $off = log_size($later);
	$later->safe_psql('postgres', 'CREATE DATABASE later_db');
	ok(NovuTest::poll_until($later, q{SELECT count(*) = current_setting('novu.workers')::int FROM pg_stat_activity WHERE backend_type = 'novu delivery worker' AND datname = 'later_db'}, 15),
		'missing database: the delivery workers start once it exists');
	$later->safe_psql('later_db', 'CREATE EXTENSION novu');
	my $sa = slurp_file("$mocks->{dir}/fcm-service-account.json");
	$later->safe_psql('later_db', sprintf(q{SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', $sa$%s$sa$::jsonb,
	    'endpoint', '%s'), 'fcm-mock')}, $sa, $mocks->{urls}{fcm}));
	$later->safe_psql('later_db', $WORKFLOW);
	make_subscribers($later, 'r5-', 2, fcm => 'k5-', db => 'later_db');
	NovuTest::reset_mocks($mocks);
	$later->safe_psql('later_db', trigger_sql('r5-', 2, 'tx-s5'));
	ok(NovuTest::poll_until($later, q{SELECT count(*) = 2 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-s5'}, 30, 'later_db'),
		'missing database: a trigger in the new database is delivered');
	is_deeply(NovuTest::accepted($mocks, 'fcm'), { 'k5-1' => 1, 'k5-2' => 1 }, 'missing database: each token accepted once');
	$log = log_since($later, $off);
	is(count_matches($log, $NOVU_DIED), 0, 'missing database: still no novu worker exited');
	$later->stop;
}

done_testing();
