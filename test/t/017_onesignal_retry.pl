# 017_onesignal_retry.pl: a retried OneSignal request never delivers twice.
#
# A OneSignal request carries up to 2000 subscription ids of messages with
# identical content and an idempotency_key; OneSignal delivers a key once
# (PROTOCOLS.md 4) and answers a repeat with the first result.  So a request
# whose answer was lost must be sent again with exactly the ids and the key of
# its first attempt: a retry that carries a part of it, or it merged with
# another, has another key and is delivered again to the ids that already got
# it.
#
#  1. 100 messages of identical content (two triggers) go out with
#     novu.batch_size 20 as requests of up to 20 ids; OneSignal processes every
#     one of them and the answer is lost (the mock's faults under load: the
#     connection is destroyed after processing, or the answer comes after the
#     client's timeout).
#  2. Before the retries: one subscriber is deleted (its message is canceled
#     and leaves its request), the batch size drops to 7 and the retries come
#     due together, so that two workers claiming 7 at a time meet every group.
#  3. Every retried request has the key and the ids of its first attempt (less
#     the canceled one), no id is in two keys, a retry carried more ids than
#     the batch size, and OneSignal delivered each id exactly once.
#  4. 40 more go out in requests of up to 20 that OneSignal processes and
#     answers late; both workers are stopped meanwhile.  The new workers take
#     the dead ones' messages (leased by no live worker) with batch size 7: the
#     same checks as in 3 (the keys were recorded before the requests went out).
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('osretry', $mocks,
	'novu.workers' => 2,
	'novu.batch_size' => 20,
	# 3 s: long enough for a request on a slow machine, short beside the
	# mock's slow answers (6 s) that stand for lost ones
	'novu.request_timeout' => 3000,
	# the retries wait for the test to make them due (step 2)
	'novu.retry_initial_delay' => 600000,
	'novu.retry_max_delay' => 600000);
my $json = JSON::PP->new->canonical;

my $APP = '0b5e1a2c-3d4f-4a6b-8c7d-9e0f1a2b3c4d';
my $KEY = 'os_v2_app_novutestrestapikey0000000000000000000000';

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }
sub uuid { return sprintf('%08x-%04x-4%03x-a%03x-%012x', $_[0], 0xcafe, 0x321, 0x654, $_[0] * 7919); }

q1("SELECT novu.create_integration('one-signal', jsonb_build_object('applicationId', '$APP', 'apiKey', '$KEY',
    'endpoint', '$mocks->{urls}{onesignal}'), 'os-mock')");
q1(q{SELECT novu.create_workflow('os-all', '[{"type": "push", "title": "News", "content": "Same for everyone", "data": {"k": "v"}}]')});

my %sub_of;
$node->safe_psql('postgres', join(";\n", map {
	my $profile = { channels => [ { providerId => 'one-signal', integrationIdentifier => 'os-mock',
		credentials => { deviceTokens => [ uuid($_) ] } } ] };
	$sub_of{ uuid($_) } = "osr-$_";
	"SELECT novu.identify('osr-$_', " . lit($json->encode($profile)) . '::jsonb)' } 1 .. 141));

# Poll the mock until OneSignal processed (delivered) each of the ids (30 s at most).
sub processed
{
	my (@ids) = @_;
	my $deadline = time() + 30;
	while (time() < $deadline)
	{
		my $d = NovuTest::control($mocks, 'GET', '/received?provider=onesignal-delivered');
		return 1 if !grep { !$d->{$_} } @ids;
		usleep(50_000);
	}
	return 0;
}

# 1. every first attempt is processed by OneSignal and its answer lost
NovuTest::control($mocks, 'POST', '/config', { faults => { every => { onesignal => 1 }, kinds => [ 'drop', 'slow' ],
	max => 0, slowMs => 6000 } });
my $TXS = "('osr-a', 'osr-b')";
q1('SELECT novu.trigger(' . lit('os-all') . ', ' . lit($json->encode([ map { "osr-$_" } 1 .. 60 ])) . "::jsonb, '{}', '{}', 'osr-a')");
q1('SELECT novu.trigger(' . lit('os-all') . ', ' . lit($json->encode([ map { "osr-$_" } 61 .. 100 ])) . "::jsonb, '{}', '{}', 'osr-b')");
ok(NovuTest::wait_for($node, "SELECT count(*) = 100 AND bool_and(status = 'pending' AND attempts = 1)
    FROM novu.messages WHERE transaction_id IN $TXS", 60),
	'the 100 first attempts lost their answers and wait for a retry');
my $delivered = NovuTest::control($mocks, 'GET', '/received?provider=onesignal-delivered');
is(scalar(grep { ($delivered->{ uuid($_) } // 0) == 1 } 1 .. 100), 100, 'OneSignal processed every first attempt');
my $first = NovuTest::requests($mocks, 'onesignal');
cmp_ok(scalar @$first, '>', 1, sprintf('identical content in more than one request (%d)', scalar @$first));

# 2. a member leaves its group; smaller claims; the retries come due together
NovuTest::control($mocks, 'POST', '/config', { faults => { every => { onesignal => 0 } } });
is(q1("SELECT novu.delete_subscriber('osr-5')"), 't', 'a subscriber of a lost request is deleted');
# (the retries are answered at once: a generous timeout, so that none times out again)
$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.batch_size = 7; ALTER SYSTEM SET novu.request_timeout = '10s';
    SELECT pg_reload_conf();});
ok(NovuTest::wait_workers_reloaded($node), 'the workers claim 7 messages at a time');
q1("UPDATE novu.deliveries SET next_attempt_at = now() WHERE status = 'pending' AND transaction_id IN $TXS");
ok(NovuTest::wait_for($node, "SELECT count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0
    FROM novu.messages WHERE transaction_id IN $TXS", 60), 'the retries are final');
is(q1("SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM (SELECT status, count(*) n
    FROM novu.messages WHERE transaction_id IN $TXS GROUP BY status) s"), 'canceled:1,sent:99',
	'99 sent, the deleted subscriber\'s message canceled');
is(q1("SELECT count(*) FROM novu.messages WHERE transaction_id IN $TXS AND status = 'sent' AND attempts <> 2"), 0,
	'each sent at its second attempt');

# What OneSignal saw of the requests of some ids since the log was cleared: each
# retried request carried the ids of its first attempt (less those canceled since)
# under its key, no id went out under two keys, each lost request was retried
# once (answered from its key), one retry carried more ids than the batch size,
# and OneSignal delivered each id exactly once.
sub check_requests
{
	my ($what, $nfirst, $canceled, @ids) = @_;
	my %mine = map { $_ => 1 } @ids;
	my @reqs = grep { grep { $mine{$_} } @{ $_->{body}{include_subscription_ids} // [] } }
	  @{ NovuTest::requests($mocks, 'onesignal') };
	my (%ids_of_key, %keys_of_id, @mismatch);
	my $biggest_retry = 0;
	for my $r (@reqs)
	{
		my $key = $r->{body}{idempotency_key} // 'none';
		my @sent = sort @{ $r->{body}{include_subscription_ids} };
		$keys_of_id{$_}{$key} = 1 for @sent;
		if (!exists $ids_of_key{$key})
		{
			$ids_of_key{$key} = \@sent;
			next;
		}
		my $want = join(',', grep { !$canceled->{$_} } @{ $ids_of_key{$key} });
		push @mismatch, "$key: first [" . join(',', @{ $ids_of_key{$key} }) . '] retry [' . join(',', @sent) . ']'
		  if join(',', @sent) ne $want;
		$biggest_retry = @sent if @sent > $biggest_retry;
	}
	is(scalar @mismatch, 0, "$what: every retried request carried the ids of its first attempt under its key")
	  or diag(join("\n", @mismatch[ 0 .. ($#mismatch < 4 ? $#mismatch : 4) ]));
	is(scalar(grep { keys %{ $keys_of_id{$_} } != 1 } keys %keys_of_id), 0, "$what: no subscription id was sent under two keys");
	is(scalar(keys %ids_of_key), $nfirst, "$what: the retries used no key of their own");
	is(scalar(grep { $_->{idempotentReplay} } @reqs), $nfirst, "$what: each lost request was retried once, answered from its key");
	cmp_ok($biggest_retry, '>', 7, "$what: a retried request is claimed whole, past the batch size ($biggest_retry ids)");
	my $delivered = NovuTest::control($mocks, 'GET', '/received?provider=onesignal-delivered');
	my @twice = grep { ($delivered->{$_} // 0) != 1 } @ids;
	is(scalar @twice, 0, "$what: OneSignal delivered each subscription id exactly once")
	  or diag('delivered more or less than once: '
		  . join(', ', map { "$sub_of{$_} x" . ($delivered->{$_} // 0) } @twice[ 0 .. ($#twice < 9 ? $#twice : 9) ]));
}

# 3. what OneSignal saw
check_requests('lost answers', scalar @$first, { uuid(5) => 1 }, map { uuid($_) } 1 .. 100);

# 4. the workers stop while requests are in flight, processed and not answered
NovuTest::control($mocks, 'DELETE', '/requests');
NovuTest::control($mocks, 'POST', '/config', { faults => { every => { onesignal => 1 }, kinds => [ 'slow' ], slowMs => 60000 } });
$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.batch_size = 20; ALTER SYSTEM SET novu.request_timeout = '120s';
    SELECT pg_reload_conf();});
ok(NovuTest::wait_workers_reloaded($node), 'the workers claim 20 messages at a time again');
q1('SELECT novu.trigger(' . lit('os-all') . ', ' . lit($json->encode([ map { "osr-$_" } 101 .. 140 ])) . "::jsonb, '{}', '{}', 'osr-c')");
my @c_ids = map { uuid($_) } 101 .. 140;
ok(NovuTest::wait_for($node, "SELECT count(*) = 40 AND bool_and(status = 'sending')
    FROM novu.messages WHERE transaction_id = 'osr-c'", 30), 'the 40 messages are in flight');
ok(processed(@c_ids), 'OneSignal processed the 40, their answers are pending');
my $first_c = scalar @{ NovuTest::requests($mocks, 'onesignal') };
NovuTest::control($mocks, 'POST', '/config', { faults => { every => { onesignal => 0 } } });
# (the same request timeout: a lease longer than the new workers' own is not taken for a dead worker's)
$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.batch_size = 7; SELECT pg_reload_conf();});
ok(NovuTest::wait_for($node, "SELECT current_setting('novu.batch_size') = '7'", 10), 'new workers will claim 7 at a time');
my $old_pids = q1("SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'");
is(q1("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'"),
	2, 'both delivery workers are stopped mid-request');
ok(NovuTest::wait_for($node, "SELECT count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0
    FROM novu.messages WHERE transaction_id = 'osr-c'", 60), 'new workers finish them');
is(q1("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker' AND pid NOT IN ($old_pids)"), 2,
	'two new delivery workers run');
is(q1("SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM (SELECT status, count(*) n
    FROM novu.messages WHERE transaction_id = 'osr-c' GROUP BY status) s"), 'sent:40', 'all 40 sent');
check_requests('stopped workers', $first_c, {}, @c_ids);

# 5. a database restored to an earlier point makes delivery ids again: the
#    idempotency key also covers the transactionIds, so OneSignal does not
#    answer the new notification with the old one's result (nothing delivered)
$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.batch_size = 20; SELECT pg_reload_conf();});
ok(NovuTest::wait_workers_reloaded($node), 'section 5: the workers claim 20 messages at a time');
my $next_id = q1('SELECT last_value + 1 FROM novu.deliveries_id_seq');
q1('SELECT novu.trigger(' . lit('os-all') . ', ' . lit($json->encode(['osr-141'])) . "::jsonb, '{}', '{}', 'osr-d')");
ok(NovuTest::wait_for($node, "SELECT count(*) = 1 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'osr-d'", 30),
	'section 5: the first notification is sent');
# the restore, as far as the ids go: the history is gone and the sequence is back
q1("DELETE FROM novu.deliveries WHERE transaction_id = 'osr-d'");
q1("SELECT setval('novu.deliveries_id_seq', $next_id - 1)");
q1('SELECT novu.trigger(' . lit('os-all') . ', ' . lit($json->encode(['osr-141'])) . "::jsonb, '{}', '{}', 'osr-e')");
ok(NovuTest::wait_for($node, "SELECT count(*) = 1 AND bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'osr-e'", 30),
	'section 5: the second notification is recorded sent');
is(q1("SELECT id FROM novu.deliveries WHERE transaction_id = 'osr-e'"), $next_id, 'section 5: with the id of the first');
my @keys = map { $_->{body}{idempotency_key} // 'none' } grep { grep { $_ eq uuid(141) } @{ $_->{body}{include_subscription_ids} // [] } }
	@{ NovuTest::requests($mocks, 'onesignal') };
is(scalar @keys, 2, 'section 5: two requests carried the subscription');
isnt($keys[0], $keys[1], 'section 5: under two idempotency keys');
is(NovuTest::control($mocks, 'GET', '/received?provider=onesignal-delivered')->{ uuid(141) } // 0, 2,
	'section 5: OneSignal delivered both notifications');

$node->stop;
done_testing();
