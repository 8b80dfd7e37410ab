# 018_request_deadline.pl: novu.request_timeout is the time a provider has to
# answer a request, counted from when the request is sent.  A transfer that
# waits for a free stream (every connection of the pool full) has not been
# sent: that wait must not eat the provider's time, or a request goes out
# moments before its timeout, reaches the provider, and is recorded as a
# failed attempt and sent again (a notification twice).  And a transfer that
# never got a connection within the timeout ends as "not sent".
#
# The FCM mock allows one stream per connection (SETTINGS
# MAX_CONCURRENT_STREAMS 1), so a pool of four connections carries four
# requests and the fifth waits in libcurl for a connection.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use IO::Socket::INET;
use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks(config => { fcm => { maxConcurrentStreams => 1 } });
my $node = NovuTest::new_node('deadline', $mocks, 'novu.workers' => 1, 'novu.request_timeout' => 3000);
NovuTest::create_integrations($node, $mocks);
$node->safe_psql('postgres', q{SELECT novu.create_workflow('deadline', '[{"type": "push", "title": "T", "content": "C"}]')});

sub q1 { return NovuTest::query($node, $_[0]); }

# One subscriber per token, one trigger for all of them in one transaction.
sub trigger_all
{
	my ($tx, @tokens) = @_;
	my $sql = '';
	for my $t (@tokens)
	{
		$sql .= "SELECT novu.identify('$t', jsonb_build_object('channels', jsonb_build_array(jsonb_build_object("
		  . "'providerId', 'fcm', 'integrationIdentifier', 'fcm-mock', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('$t'))))));\n";
	}
	$sql .= "SELECT novu.trigger('deadline', '" . JSON::PP->new->encode([@tokens]) . "'::jsonb, '{}', '{}', '$tx');";
	$node->safe_psql('postgres', "BEGIN;\n$sql\nCOMMIT;");
}

# APNs tokens (hex) named after a prefix, one subscriber each, one trigger for all.
sub trigger_apns
{
	my ($tx, $prefix, $count) = @_;
	my @tokens = map { substr(unpack('H*', "deadline-$prefix-$_") . ('0' x 64), 0, 64) } 1 .. $count;
	my $sql = join('', map { "SELECT novu.identify('$prefix-$_', jsonb_build_object('channels', jsonb_build_array(jsonb_build_object("
		  . "'providerId', 'apns', 'integrationIdentifier', 'apns-mock', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('$tokens[$_ - 1]'))))));\n" } 1 .. $count);
	$sql .= "SELECT novu.trigger('deadline', '" . JSON::PP->new->encode([ map { "$prefix-$_" } 1 .. $count ]) . "'::jsonb, '{}', '{}', '$tx');";
	return ($sql, @tokens);
}

# Exact accounting: the provider received each token once per attempt that was sent.
sub check_received_per_attempt
{
	my ($label, $tx, $provider, @tokens) = @_;
	my $received = NovuTest::control($mocks, 'GET', "/received?provider=$provider");
	my %unsent = map { split /\|/ } split /\n/, q1(qq{SELECT d.device_token || '|' || count(*) FILTER (WHERE e.detail LIKE '%; the request was not sent')
	    FROM novu.deliveries d JOIN novu.execution_details e ON e.message_id = d.id AND e.status = 'Pending'
	   WHERE d.transaction_id = '$tx' GROUP BY d.device_token});
	my %attempts = map { split /\|/ } split /\n/, q1(qq{SELECT device_token || '|' || attempts FROM novu.deliveries WHERE transaction_id = '$tx'});
	is(join(',', map { ($received->{$_} // 0) == $attempts{$_} - ($unsent{$_} // 0) ? 1 : "$_:" . ($received->{$_} // 0) . "/$attempts{$_}" } @tokens),
		join(',', (1) x scalar @tokens), "$label: the provider received each token once per attempt that was sent")
	  or diag(q1(qq{SELECT string_agg(e.message_id || ' ' || e.status || ' ' || e.detail, E'\n' ORDER BY e.id) FROM novu.execution_details e WHERE e.transaction_id = '$tx'}));
}

# a first message opens a connection and fetches the OAuth token
trigger_all('tx-warm', 'deadline-warm');
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'tx-warm'}, 30),
	'warm-up: the first message is sent');

# Four answers take 2 s each and hold the four connections; four more
# requests, handed to curl once the four were received, wait for them, then
# get answers that take 1.3 s.  Sent at about 2 s, answered at about 3.3 s:
# past 3 s from the start of the wait, well within 3 s of their sending.
my @hold = map { "deadline-hold-$_" } 1 .. 4;
my @wait = map { "deadline-wait-$_" } 1 .. 4;
NovuTest::set_tokens($mocks, 'fcm', 'slow:2000:1', @hold);
NovuTest::set_tokens($mocks, 'fcm', 'slow:1300:1', @wait);
trigger_all('tx-hold', @hold);
sub holds_received
{
	my $r = NovuTest::control($mocks, 'GET', '/received?provider=fcm');
	return 4 == grep { ($r->{$_} // 0) == 1 } @hold;
}
my $until = time() + 20;
usleep(20_000) until holds_received() || time() > $until;
ok(holds_received(), 'the provider has the four holding requests');
trigger_all('tx-wait', @wait);
ok(NovuTest::wait_for($node, q{SELECT count(*) = 8 AND bool_and(status = 'sent')
    FROM novu.deliveries WHERE transaction_id IN ('tx-hold', 'tx-wait')}, 30),
	'all eight messages are sent');
is(q1(q{SELECT string_agg(DISTINCT attempts::text, ',') FROM novu.deliveries WHERE transaction_id IN ('tx-hold', 'tx-wait')}), '1',
	'each at its first attempt: the wait for a connection did not count against the provider');
is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id IN ('tx-hold', 'tx-wait') AND status = 'Pending'}), '0',
	'no attempt timed out');
my $received = NovuTest::control($mocks, 'GET', '/received?provider=fcm');
is(join(',', map { $received->{$_} // 0 } @hold, @wait), join(',', (1) x 8), 'the provider received each request once');

# An answer that comes after the timeout: the attempt fails as one the
# provider may have processed (it did: the mock counts it), and the retry is
# a second recorded attempt and a second request.
NovuTest::set_tokens($mocks, 'fcm', 'slow:4000:1', 'deadline-late');
trigger_all('tx-late', 'deadline-late');
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'tx-late'}, 30),
	'late answer: the message is sent in the end');
like(q1(q{SELECT string_agg(detail, E'\n' ORDER BY id) FROM novu.execution_details WHERE transaction_id = 'tx-late' AND status = 'Pending'}),
	qr/\ARetry 2 scheduled in [0-9.]+ s: Timeout was reached \(no answer within 3000 ms of starting to send the request \(novu.request_timeout\)\)\z/,
	'late answer: the activity says the provider had its 3000 ms from the send');
is(q1(q{SELECT attempts FROM novu.deliveries WHERE transaction_id = 'tx-late'}) . ' ' . (NovuTest::control($mocks, 'GET', '/received?provider=fcm')->{'deadline-late'} // 0),
	'2 2', 'late answer: two attempts recorded, two requests received');

# A request is sent within its message's lease, or not at all.  The lease
# (5 x novu.request_timeout + 30 s) must outlast the request and the record
# of its answer, or another worker could claim the message while its request
# is still going out; so a request that has waited in the worker until less
# than 3 x the timeout plus 20 s of the lease is left is not sent (deliver.c,
# LEASE_MS).  With a 1 s timeout that is 12 s after the claim.  A cold APNs pool sends one
# request at a time until an answer came on its connection, and every first
# request here is answered only after the timeout: fifteen messages of one
# claim go out one a second, and the last ones are past that point.  The
# timeout is raised to 10 s by a reload once the first has timed out: the
# requests of the claim keep the timeout their lease was made for (1 s), or
# they would run past the lease.
{
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.request_timeout = '1s'; SELECT pg_reload_conf();});
	ok(NovuTest::wait_workers_reloaded($node), 'lease: the worker runs with a 1 s request timeout');
	my ($sql, @late) = trigger_apns('tx-lease', 'lease', 15);
	NovuTest::set_tokens($mocks, 'apns', 'slow:1500:1', @late);
	$node->safe_psql('postgres', "BEGIN;\n$sql\nCOMMIT;");
	ok(NovuTest::wait_for($node, q{SELECT count(*) > 0 FROM novu.execution_details WHERE transaction_id = 'tx-lease' AND status = 'Pending'}, 20),
		'lease: the first request timed out');
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.request_timeout = '10s'; SELECT pg_reload_conf();});
	ok(NovuTest::wait_workers_reloaded($node), 'lease: the worker now runs with a 10 s request timeout');
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 15 AND bool_and(status = 'sent') FROM novu.deliveries WHERE transaction_id = 'tx-lease'}, 90),
		'lease: all fifteen are sent in the end');
	my @first = split /\n/, q1(q{SELECT DISTINCT ON (message_id) detail FROM novu.execution_details
	    WHERE transaction_id = 'tx-lease' AND status = 'Pending' ORDER BY message_id, id});
	my $late = grep { /\ARetry 2 scheduled in [0-9.]+ s: Operation was aborted by an application callback \(not sent: it waited until too little of its message's lease was left\); the request was not sent\z/
		  || /\ARetry 2 scheduled in [0-9.]+ s: Timeout was reached \(not sent: it waited until too little of its message's lease was left\); the request was not sent\z/ } @first;
	my $timed_out = grep { /\ARetry 2 scheduled in [0-9.]+ s: Timeout was reached \(no answer within 1000 ms of starting to send the request/ } @first;
	# (on a slow machine the first TLS handshake may take longer than the 1 s connect timeout)
	my $unconnected = grep { /\ARetry 2 scheduled in [0-9.]+ s: Timeout was reached \((Connection timed out after \d+ milliseconds|no connection or stream for the request within 1000 ms \(novu.request_timeout\))\); the request was not sent\z/ } @first;
	cmp_ok($late, '>=', 1, "lease: the last ones were not sent at their first attempt ($late)");
	cmp_ok($timed_out, '>=', 3, "lease: the first ones went out and timed out ($timed_out)");
	is($late + $timed_out + $unconnected, 15, 'lease: every first attempt is one of those') or diag(join("\n", @first));
	check_received_per_attempt('lease', 'tx-lease', 'apns', @late);
	$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.request_timeout; SELECT pg_reload_conf();});
	ok(NovuTest::wait_workers_reloaded($node), 'lease: back to the 3 s timeout');
}

# A resend past the send-by time.  A request went out in time, its
# connection died without an answer once the claim's send-by time had passed,
# and curl resends it on a fresh connection: the provider may have processed
# it, so the resend is refused as curl's own resend ("the provider may have
# received the request"), and never reads "not sent", which would hide a
# duplicate.  With a 4 s timeout the send-by time is 18 s after the claim (a
# 42 s lease, less 4 s and 20 s); a cold APNs pool (a new worker) whose first
# answers never come sends one request per 4 s, each timing out: the fifth
# goes out about 16 s after the claim, and its connection is destroyed at
# 18.5 s, before its own timeout.  The sixth is still waiting at 18 s: not
# sent.
{
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.request_timeout = '4s'; SELECT pg_reload_conf();});
	my $old = q1(q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
	is(q1(q{SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}),
		1, 'resend: the worker is stopped (its successor starts with cold connections)');
	ok(NovuTest::wait_for($node, "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker' AND pid NOT IN ($old)", 30),
		'resend: a new worker runs');
	my ($sql, @tok) = trigger_apns('tx-resend', 'resend', 6);
	NovuTest::set_tokens($mocks, 'apns', 'slow:60000:1', @tok);
	$node->safe_psql('postgres', "BEGIN;\n$sql\nCOMMIT;");
	ok(NovuTest::wait_for($node, q{SELECT clock_timestamp() > min(created_at) + interval '18.5 s'
	    FROM novu.deliveries WHERE transaction_id = 'tx-resend'}, 40), 'resend: 18.5 s after the claim');
	my $received = NovuTest::control($mocks, 'GET', '/received?provider=apns');
	is(join(',', map { $received->{$_} // 0 } @tok), '1,1,1,1,1,0', 'resend: five requests went out, one at a time, the sixth did not');
	NovuTest::control($mocks, 'POST', '/disconnect?provider=apns&hard=1');
	ok(NovuTest::wait_for($node, q{SELECT count(*) = 6 AND bool_and(status = 'sent') FROM novu.deliveries WHERE transaction_id = 'tx-resend'}, 60),
		'resend: all six are sent in the end');
	my %first = map { split /\|/, $_, 2 } split /\n/, q1(q{SELECT DISTINCT ON (e.message_id) d.device_token || '|' || e.detail
	    FROM novu.execution_details e JOIN novu.deliveries d ON d.id = e.message_id
	   WHERE e.transaction_id = 'tx-resend' AND e.status = 'Pending' ORDER BY e.message_id, e.id});
	like($first{ $tok[$_] } // '', qr/\ARetry 2 scheduled in [0-9.]+ s: Timeout was reached \(no answer within 4000 ms of starting to send the request \(novu.request_timeout\)\)\z/,
		'resend: request ' . ($_ + 1) . ' went out and timed out') for 0 .. 3;
	like($first{ $tok[4] } // '', qr/\ARetry 2 scheduled in [0-9.]+ s: connection lost before the answer; the provider may have received the request\z/,
		'resend: the fifth, whose connection died after the send-by time, may have been received, and says so');
	like($first{ $tok[5] } // '', qr/\(not sent: it waited until too little of its message's lease was left\); the request was not sent\z/,
		'resend: the sixth was not sent');
	check_received_per_attempt('resend', 'tx-resend', 'apns', @tok);
	$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.request_timeout; SELECT pg_reload_conf();});
	ok(NovuTest::wait_workers_reloaded($node), 'resend: back to the 3 s timeout');
}

# A request that never gets a connection ends as "not sent\": an FCM
# integration whose endpoint accepts TCP connections and never answers the
# TLS handshake.  Two messages: libcurl opens one connection and holds the
# second transfer until it knows whether that connection multiplexes
# (PIPEWAIT), so the second ends at the request timeout without ever having
# had a connection (the first at the connect timeout or at that one,
# whichever comes first).
my $silent = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
  or die "cannot listen: $!";
my $port = $silent->sockport;
my $sa = slurp_file("$mocks->{dir}/fcm-service-account.json");
$node->safe_psql('postgres', "SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', \$sa\$$sa\$sa\$::jsonb,"
	  . " 'endpoint', 'https://127.0.0.1:$port'), 'fcm-silent')");
$node->safe_psql('postgres', q{SELECT novu.identify(s, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'fcm', 'integrationIdentifier', 'fcm-silent', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array(s))))))
    FROM unnest(ARRAY['deadline-silent-1', 'deadline-silent-2']) s;
    SELECT novu.trigger('deadline', '["deadline-silent-1", "deadline-silent-2"]', '{}', '{}', 'tx-silent')});
ok(NovuTest::wait_for($node, q{SELECT count(DISTINCT message_id) = 2 FROM novu.execution_details WHERE transaction_id = 'tx-silent' AND status = 'Pending'}, 20),
	'silent endpoint: both first attempts failed');
my @silent = split /\n/, q1(q{SELECT DISTINCT ON (message_id) detail FROM novu.execution_details
    WHERE transaction_id = 'tx-silent' AND status = 'Pending' ORDER BY message_id, id});
is(scalar(grep { /\ARetry 2 scheduled in [0-9.]+ s: Timeout was reached \(.*\); the request was not sent\z/ } @silent), 2,
	'silent endpoint: each attempt timed out and was not sent');
cmp_ok(scalar(grep { /\(no connection or stream for the request within 3000 ms \(novu.request_timeout\)\)/ } @silent), '>=', 1,
	'silent endpoint: the second never had a connection, and says so (the first may end at the connect timeout just before)')
  or diag(join("\n", @silent));
close($silent);

# The lease leaves room for one request of the worker's own between an
# answer and its record (deliver.c, LEASE_MS), so the worker records what it
# holds before each such wait.  One claim with a message for APNs and one for
# each of two new FCM integrations (each fetches its OAuth token first, the
# token server answering 1.5 s late): the APNs request goes out first and is
# answered during the first token wait; it is recorded before the second,
# not after both.
NovuTest::control($mocks, 'POST', '/config', { oauth => { delayMs => 1500 } });
for my $name ('fcm-two', 'fcm-three')
{
	$node->safe_psql('postgres', "SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', \$sa\$$sa\$sa\$::jsonb,"
		  . " 'endpoint', '$mocks->{urls}{fcm}'), '$name')");
}
my $hold_apns = substr(unpack('H*', 'deadline-hold-apns') . ('0' x 64), 0, 64);
$node->safe_psql('postgres', qq{
SELECT novu.identify('hold-apns', jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'apns', 'integrationIdentifier', 'apns-mock', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('$hold_apns'))))));
SELECT novu.identify(s, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'fcm', 'integrationIdentifier', replace(s, 'hold-', 'fcm-'), 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array(s))))))
    FROM unnest(ARRAY['hold-two', 'hold-three']) s;
SELECT novu.trigger('deadline', '["hold-apns", "hold-two", "hold-three"]', '{}', '{}', 'tx-own-waits');});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 3 AND bool_and(status = 'sent') FROM novu.deliveries WHERE transaction_id = 'tx-own-waits'}, 30),
	'own waits: the three messages are sent');
NovuTest::control($mocks, 'POST', '/config', { oauth => { delayMs => 0 } });
my %recorded = map { split /=/ } split /\n/, q1(q{SELECT subscriber_id || '=' || extract(epoch FROM created_at)
    FROM novu.execution_details WHERE transaction_id = 'tx-own-waits' AND detail = 'Message sent'});
is(q1(q{SELECT max(attempts) FROM novu.deliveries WHERE transaction_id = 'tx-own-waits'}), '1', 'own waits: one attempt each');
cmp_ok($recorded{'hold-three'} - $recorded{'hold-apns'}, '>', 1.0,
	sprintf('own waits: the APNs answer was recorded before the second token wait (%.2f s before the last FCM one)',
		$recorded{'hold-three'} - $recorded{'hold-apns'}));

done_testing();
