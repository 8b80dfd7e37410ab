# 021_lock_waits.pl: an application transaction left open never stops delivery.
# One worker (so that a stall shows); while an application holds, uncommitted:
#   1. a subscriber it is creating (novu.identify) that a committed trigger
#      names: the worker sets that trigger aside and delivers the others; once
#      the application commits, the trigger goes to the subscriber it created,
#      with the device token given in that transaction;
#   2. novu.delete_messages of a message a worker is sending: the message is
#      left to complete (recorded 'sent' while the application still holds its
#      transaction), and the others go on;
#   3. the device token a provider has just called dead (set_credentials
#      again): the worker records the answer without pruning it, and goes on.
#   6. novu.cancel of a digest's only event, whose window a new event of the
#      same key then reaches (the fan-out merge, and the step after a delay);
#   7. novu.delete_subscriber of a subscriber whose in-app message a worker
#      is storing in the feed.
# In each, no worker waits on a lock (pg_stat_activity).
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('lock_waits', $mocks, 'novu.workers' => 1);
NovuTest::create_integrations($node, $mocks);

sub q1 { return NovuTest::query($node, $_[0]); }

sub identify_sql
{
	my ($sub, $token) = @_;
	return "SELECT novu.identify('$sub', '{\"channels\": [{\"providerId\": \"fcm\", \"integrationIdentifier\": \"fcm-mock\","
	  . " \"credentials\": {\"deviceTokens\": [\"$token\"]}}]}')";
}

sub trigger_sql
{
	my ($sub, $tx) = @_;
	return "SELECT novu.trigger('locks', '\"$sub\"', '{}', '{}', '$tx')";
}

sub sent { return "SELECT count(*) = 1 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = '$_[0]'"; }

# no delivery worker waits on a heavyweight lock (row locks are waited for as locks on transactions)
sub workers_waiting
{
	return q1(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker' AND wait_event_type = 'Lock'});
}

q1(q{SELECT novu.create_workflow('locks', '[{"type": "push", "title": "t", "content": "c"}]')});
q1(identify_sql('dave', 'tok-dave'));
q1(identify_sql('erin', 'tok-erin'));
q1(identify_sql('frank', 'tok-frank'));

######################################################################
# 1. a subscriber an open transaction is creating
{
	my $app = $node->background_psql('postgres');
	$app->query_safe('BEGIN');
	$app->query_safe(identify_sql('carol', 'tok-carol'));
	q1(trigger_sql('carol', 'tx-carol'));
	q1(trigger_sql('dave', 'tx-dave-1'));
	ok(NovuTest::wait_for($node, sent('tx-dave-1'), 20),
		'identify held: a trigger to another subscriber is delivered meanwhile');
	ok(NovuTest::wait_for($node, q{SELECT status = 'pending' AND retry_at IS NOT NULL FROM novu.events WHERE transaction_id = 'tx-carol'}, 20),
		'identify held: the trigger naming the subscriber being created is set aside, pending');
	q1(trigger_sql('dave', 'tx-dave-2'));
	ok(NovuTest::wait_for($node, sent('tx-dave-2'), 20),
		'identify held: a trigger committed after the set-aside one is delivered too');
	is(workers_waiting(), '0', 'identify held: no worker waits on a lock');
	is(q1(q{SELECT string_agg(status, ',') FROM novu.messages WHERE transaction_id = 'tx-carol'}), 'pending',
		'identify held: its message shows pending');
	is(q1(q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-carol'}), '0',
		'identify held: nothing fanned out for the subscriber yet');
	$app->query_safe('COMMIT');
	$app->quit;
	ok(NovuTest::wait_for($node, sent('tx-carol'), 20),
		'identify committed: the set-aside trigger is delivered');
	is(q1(q{SELECT device_token FROM novu.messages WHERE transaction_id = 'tx-carol'}), 'tok-carol',
		'identify committed: to the device token given in that transaction');
	is(NovuTest::accepted($mocks, 'fcm')->{'tok-carol'}, 1, 'identify committed: the provider got it once');
}

######################################################################
# 1a. a set-aside trigger comes due while the express fan-out runs: plain
#     triggers committed meanwhile go the express way (one statement for a
#     few plain triggers, src/queue/express.c), which leaves set-aside ones to
#     the general fan-out.  The general fan-out must still run, at the poll,
#     or the set-aside trigger waits for good (until some trigger the express
#     way declines comes).
{
	my $app = $node->background_psql('postgres');
	$app->query_safe('BEGIN');
	$app->query_safe(identify_sql('gina', 'tok-gina'));
	q1(trigger_sql('gina', 'tx-gina'));
	ok(NovuTest::wait_for($node, q{SELECT status = 'pending' AND retry_at IS NOT NULL FROM novu.events WHERE transaction_id = 'tx-gina'}, 20),
		'express meanwhile: the trigger naming the subscriber being created is set aside');
	# 20 plain triggers, one after the other, each its own fan-out: the express
	# way (which declined the trigger above, and then stays off for 16
	# fan-outs) is taken again
	my $plain = 0;
	for my $i (1 .. 20)
	{
		q1(trigger_sql('dave', "tx-plain-$i"));
		$plain++ if NovuTest::wait_for($node, sent("tx-plain-$i"), 20);
	}
	is($plain, 20, 'express meanwhile: the plain triggers are delivered');
	$app->query_safe('COMMIT');
	$app->quit;
	ok(NovuTest::wait_for($node, sent('tx-gina'), 30),
		'express meanwhile: once its subscriber is committed, the set-aside trigger is delivered')
	  or diag(q1(q{SELECT status || ' retry_at ' || COALESCE((retry_at - now())::text, '-') FROM novu.events WHERE transaction_id = 'tx-gina'}));
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 1 FROM novu.deliveries WHERE transaction_id = 'tx-gina' AND status = 'sent'
	    AND created_at < (SELECT retry_at FROM novu.events WHERE transaction_id = 'tx-gina') + interval '5 seconds'}, 5),
		'express meanwhile: within seconds of its retry time (the next poll), not at some later decline');
}

######################################################################
# 1b. many subscribers an open transaction is creating (an import): the
#     worker's wait for them is bounded in all, the triggers are set aside
#     for a second from the clock (not from their transaction's start), and a
#     trigger to an existing subscriber goes meanwhile
{
	my $app = $node->background_psql('postgres');
	$app->query_safe('BEGIN');
	$app->query_safe(q{SELECT count(novu.identify('imp-' || i)) FROM generate_series(1, 2000) i});
	q1(q{SELECT count(novu.trigger('locks', to_jsonb('imp-' || i), '{}', '{}', 'tx-imp-' || i)) FROM generate_series(1, 2000) i});
	q1(trigger_sql('dave', 'tx-dave-imp'));
	ok(NovuTest::wait_for($node, sent('tx-dave-imp'), 15),
		'import held: a trigger to an existing subscriber is delivered meanwhile');
	ok(NovuTest::wait_for($node, q{SELECT count(*) > 0 FROM novu.events WHERE transaction_id LIKE 'tx-imp-%' AND retry_at > now()}, 15),
		'import held: the triggers naming them are set aside into the future');
	is(workers_waiting(), '0', 'import held: no worker is held on a lock for long')
	  or diag(q1(q{SELECT string_agg(wait_event_type || ':' || wait_event || ' ' || (now() - xact_start), ', ') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}));
	$app->query_safe('ROLLBACK');
	$app->quit;
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 2000 FROM novu.events WHERE transaction_id LIKE 'tx-imp-%' AND status = 'processed'}, 60),
		'import rolled back: the set-aside triggers are fanned out (their subscribers created empty)')
	  or diag(q1(q{SELECT string_agg(status || ' ' || n || ' retry_at ' || COALESCE(lo::text, '-') || ' .. ' || COALESCE(hi::text, '-'), '; ')
	      || ' (now ' || now() || ')' FROM (SELECT status, count(*) n, min(retry_at - now()) lo, max(retry_at - now()) hi
	      FROM novu.events WHERE transaction_id LIKE 'tx-imp-%' GROUP BY status) s}) . "\n"
	    . q1(q{SELECT string_agg(state || ' ' || COALESCE(wait_event_type || ':' || wait_event, '-') || ' ' || left(query, 80), E'\n')
	      FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}));
}

######################################################################
# 2. delete_messages of a message being sent, held open
{
	NovuTest::set_tokens($mocks, 'fcm', 'slow:2000', 'tok-erin');
	# the session is open before the trigger: only the deletion runs within the 2 s
	my $app = $node->background_psql('postgres');
	$app->query_safe('BEGIN');
	q1(trigger_sql('erin', 'tx-slow'));
	ok(NovuTest::wait_for($node, q{SELECT status = 'sending' FROM novu.messages WHERE transaction_id = 'tx-slow'}, 20),
		'delete held: the slow message is in flight');
	is($app->query_safe(q{SELECT novu.delete_messages('tx-slow')}), '0',
		'delete held: a message being sent is not deleted (it completes, as with cancel)');
	ok(NovuTest::wait_for($node, sent('tx-slow'), 20),
		'delete held: its answer is recorded while the deleting transaction is still open');
	q1(trigger_sql('dave', 'tx-dave-3'));
	ok(NovuTest::wait_for($node, sent('tx-dave-3'), 20), 'delete held: the others go on');
	is(workers_waiting(), '0', 'delete held: no worker waits on a lock');
	$app->query_safe('COMMIT');
	$app->quit;
	is(q1(q{SELECT novu.delete_messages('tx-slow')}), '1', 'delete: once recorded, the message is deleted');
}

######################################################################
# 3. a dead device token an open transaction holds (set_credentials again)
{
	NovuTest::set_tokens($mocks, 'fcm', 'dead', 'tok-frank');
	my $app = $node->background_psql('postgres');
	$app->query_safe('BEGIN');
	$app->query_safe(q{SELECT novu.set_credentials('frank', 'fcm', '{"deviceTokens": ["tok-frank"]}', 'fcm-mock')});
	q1(trigger_sql('frank', 'tx-dead'));
	ok(NovuTest::wait_for($node, q{SELECT status = 'failed' FROM novu.messages WHERE transaction_id = 'tx-dead'}, 20),
		'token held: the dead-token answer is recorded while the token is held');
	q1(trigger_sql('dave', 'tx-dave-4'));
	ok(NovuTest::wait_for($node, sent('tx-dave-4'), 20), 'token held: the others go on');
	is(workers_waiting(), '0', 'token held: no worker waits on a lock');
	$app->query_safe('COMMIT');
	$app->quit;
	is(q1(q{SELECT count(*) FROM novu.device_tokens WHERE device_token = 'tok-frank'}), '1',
		'token held: the token the transaction kept is not pruned behind its back');
	q1(trigger_sql('frank', 'tx-dead-2'));
	ok(NovuTest::wait_for($node, q{SELECT status = 'failed' FROM novu.messages WHERE transaction_id = 'tx-dead-2'}
		  . q{ AND NOT EXISTS (SELECT FROM novu.device_tokens WHERE device_token = 'tok-frank')}, 20),
		'token released: the next dead answer prunes it');
}

######################################################################
# 4. a due retry held by a deletion not committed yet: the worker does not
#    claim again every moment until it is released
{
	q1(q{ALTER SYSTEM SET track_functions = 'all'; SELECT pg_reload_conf();});
	# Retry-After: 5 s, so that the retry is not taken before the deletion
	# below holds it (200 ms, the test cluster's first retry, was a race); the
	# session is open before the trigger, so only the deletion runs meanwhile
	NovuTest::set_tokens($mocks, 'fcm', 'fail:503:5:1', 'tok-dave');
	my $app = $node->background_psql('postgres');
	$app->query_safe('BEGIN');
	q1(trigger_sql('dave', 'tx-retry'));
	ok(NovuTest::wait_for($node, q{SELECT status = 'pending' AND attempts = 1 FROM novu.deliveries WHERE transaction_id = 'tx-retry'}, 20),
		'retry held: the message waits for its retry');
	is($app->query_safe(q{SELECT novu.delete_messages('tx-retry')}), '1', 'retry held: a deletion not committed holds it');
	ok(NovuTest::wait_for($node, q{SELECT next_attempt_at < now() - interval '100 ms' FROM novu.deliveries WHERE transaction_id = 'tx-retry'}, 20),
		'retry held: its retry is due');
	my $calls = sub { q1(q{SELECT COALESCE(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = '_claim_groups'}) };
	my $c0 = $calls->();
	usleep(2_000_000);	# the measurement window
	my $c1 = $calls->();
	cmp_ok($c1 - $c0, '<', 40, "retry held: the worker claims a few times a second, not every moment ($c0 -> $c1 in 2 s)");
	$app->query_safe('ROLLBACK');
	$app->quit;
	ok(NovuTest::wait_for($node, sent('tx-retry'), 20), 'retry released: the retry is sent');
}

######################################################################
# 5. a row written by hand with attempts at the integer's end fails at its
#    claim; the claim goes on for the others
{
	q1(q{INSERT INTO novu.deliveries (transaction_id, workflow_id, subscriber_id, channel, provider_id, device_token,
	                                  status, attempts, next_attempt_at)
	     VALUES ('tx-poison', 'locks', 'dave', 'push', 'fcm', 'tok-dave', 'pending', 2147483647, now())});
	q1(trigger_sql('dave', 'tx-after-poison'));
	ok(NovuTest::wait_for($node, sent('tx-after-poison'), 20), 'poison row: the others are delivered');
	ok(NovuTest::wait_for($node, q{SELECT status = 'failed' AND last_error LIKE 'no attempt left%' FROM novu.deliveries WHERE transaction_id = 'tx-poison'}, 20),
		'poison row: it fails, with the reason');
}

######################################################################
# 6. a digest window an open cancel holds: the fan-out of a new event of the
#    same key (and a delay that runs on into that digest) waits a moment at
#    most, is set aside, and the others go on; once the cancel commits, the
#    event opens a new window; had it rolled back, it merges into the old one
{
	q1(q{SELECT novu.create_workflow('locks-digest', '[{"type": "digest", "amount": 4, "unit": "seconds"},
	                                                   {"type": "push", "title": "{{step.total_count}} events", "content": "c"}]')});
	q1(q{SELECT novu.create_workflow('locks-delay-digest', '[{"type": "delay", "amount": 1, "unit": "seconds"},
	                                                         {"type": "digest", "amount": 4, "unit": "seconds"},
	                                                         {"type": "push", "title": "{{step.total_count}} events", "content": "c"}]')});
	for my $wf ('locks-digest', 'locks-delay-digest')
	{
		my $t = $wf eq 'locks-digest' ? 'dg' : 'dd';
		q1("SELECT novu.trigger('$wf', '\"erin\"', '{}', '{}', 'tx-$t-1')");
		ok(NovuTest::wait_for($node, "SELECT count(*) = 1 FROM novu.step_runs WHERE kind = 'digest' AND status = 'waiting' AND workflow_id = '$wf'", 20),
			"$wf: the window is open");
		my $app = $node->background_psql('postgres');
		$app->query_safe('BEGIN');
		is($app->query_safe("SELECT novu.cancel('tx-$t-1')"), 't', "$wf: its only event canceled, not committed");
		q1("SELECT novu.trigger('$wf', '\"erin\"', '{}', '{}', 'tx-$t-2')");
		# the delay before the digest runs out first: the worker reaches the window then
		ok(NovuTest::wait_for($node, "SELECT count(*) = 1 FROM novu.step_runs WHERE kind = 'delay' AND transaction_id = 'tx-$t-2'"
			  . " AND created_at < now() - interval '1500 ms'", 20), "$wf: the delay before the digest is over")
		  if $t eq 'dd';
		q1(trigger_sql('dave', "tx-dave-$t"));
		ok(NovuTest::wait_for($node, sent("tx-dave-$t"), 20), "$wf: a trigger behind the held window is delivered meanwhile");
		is(workers_waiting(), '0', "$wf: no worker waits on a lock")
		  or diag(q1(q{SELECT string_agg(wait_event_type || ':' || wait_event || ' ' || (now() - xact_start), ', ') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}));
		$app->query_safe('COMMIT');
		$app->quit;
		ok(NovuTest::wait_for($node, "SELECT count(*) = 1 FROM novu.digest_events m JOIN novu.step_runs r ON r.id = m.digest_id"
			  . " WHERE m.transaction_id = 'tx-$t-2' AND m.status = 'merged' AND r.transaction_id = 'tx-$t-2'", 30),
			"$wf: once the cancel commits, the new event leads a window of its own");
		ok(NovuTest::wait_for($node, sent("tx-$t-2"), 30), "$wf: and its digest is sent");
		is(q1("SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'tx-$t-1'"), '0', "$wf: nothing for the canceled event");
	}
}

######################################################################
# 7. a subscriber an open delete_subscriber holds while a worker stores its
#    in-app message: the store does not wait for the deletion; the message is
#    stored after a rollback, and canceled after a commit
{
	q1(q{SELECT novu.create_workflow('locks-inbox', '[{"type": "in_app", "content": "hello {{subscriber.subscriberId}}"}]')});
	q1(q{SELECT novu.identify('gina')});
	q1(q{SELECT novu.identify('hank')});
	for my $end ('ROLLBACK', 'COMMIT')
	{
		my $app = $node->background_psql('postgres');
		$app->query_safe('BEGIN');
		is($app->query_safe(q{SELECT novu.delete_subscriber('gina')}), 't', "$end: the deletion holds gina");
		q1("SELECT novu.trigger('locks-inbox', '\"gina\"', '{}', '{}', 'tx-inbox-$end')");
		q1("SELECT novu.trigger('locks-inbox', '\"hank\"', '{}', '{}', 'tx-inbox-hank-$end')");
		ok(NovuTest::wait_for($node, "SELECT count(*) = 1 FROM novu.in_app_messages WHERE transaction_id = 'tx-inbox-hank-$end'", 20),
			"$end: another subscriber's in-app message is stored meanwhile");
		ok(NovuTest::wait_for($node, "SELECT count(*) = 1 FROM novu.deliveries WHERE transaction_id = 'tx-inbox-$end' AND status = 'pending' AND attempts = 0", 20),
			"$end: the held one waits, pending, no attempt counted");
		is(workers_waiting(), '0', "$end: no worker waits on a lock")
		  or diag(q1(q{SELECT string_agg(wait_event_type || ':' || wait_event || ' ' || (now() - xact_start), ', ') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}));
		$app->query_safe($end);
		$app->quit;
		if ($end eq 'ROLLBACK')
		{
			ok(NovuTest::wait_for($node, "SELECT count(*) = 1 FROM novu.in_app_messages WHERE transaction_id = 'tx-inbox-$end' AND subscriber_id = 'gina'", 20),
				'rolled back: the message is stored in her feed');
		}
		else
		{
			ok(NovuTest::wait_for($node, "SELECT status NOT IN ('pending', 'sending') FROM novu.deliveries WHERE transaction_id = 'tx-inbox-$end'", 20),
				'committed: the message ends, the subscriber is gone');
			like(q1("SELECT status || ': ' || COALESCE(last_error, '') FROM novu.deliveries WHERE transaction_id = 'tx-inbox-$end'"),
				qr/^(canceled: Subscriber deleted|failed: Subscriber not found)$/, 'committed: not delivered, with the reason');
			is(q1(q{SELECT count(*) FROM novu.in_app_messages WHERE subscriber_id = 'gina'}), '0', 'committed: nothing in a feed');
		}
	}
}

$node->stop;
done_testing();
