# 010_load_faults.pl: a load through each provider while the mocks break
# connections, and no request reaches a provider more often than the
# extension recorded an attempt to send it.
#
# The issue: a request reaches the provider once per attempt the extension
# records; at-least-once stays, hidden duplicates go.  The mocks count every
# request they received, per token, whatever they answered (GET /received),
# except a stream they refused unprocessed, which a client may resend
# (RFC 9113 8.7); each message's attempts are novu.deliveries.attempts.
#
#  1. No faults, 300 subscribers, each with an APNs, an FCM and an Expo token:
#     every token is received exactly as often as attempted.
#  2. The load: 2,000 subscribers (6,000 messages, one trigger each) while the
#     mocks inject a fault into every Nth request they would deliver, the
#     kinds in turn (test/mocks/README.md, "Faults under load"):
#       goaway  GOAWAY whose last-stream-id is below streams the mock already
#               received: those are refused, unprocessed (and resent by curl)
#       reset   RST_STREAM on the one stream
#       drop    the request is processed, then the connection is destroyed:
#               its answer and those of every request in flight on it are lost
#       error   the same after a GOAWAY(INTERNAL_ERROR) saying every request in
#               flight may have been processed (nghttp2 servers send it after
#               too many resets)
#       slow    the answer comes after the client's timeout
#     Every message must end sent (novu.max_attempts is high enough), and no
#     token may be received more often than attempted: a request curl resends
#     on its own after its connection broke before the answer (libcurl 7.88
#     does, "Connection died, retrying a fresh connect") may well have been
#     processed already, and the extension never recorded it.
#
# The other direction, an attempt the mock never saw, is no duplicate but
# cannot be ruled out under faults, so phase 2 checks what can be: a token
# whose attempts all got an answer was received exactly that often, and any
# other token at least as often as its attempts that got an answer (each
# attempt the mock missed ended without one: the history explains it).  Such
# attempts come from
#   - requests crossing a break: the mock holds a breaking connection's
#     requests and breaks it only once no stream arrived for a while, but the
#     workers send continuously, and a stream written just as the mock breaks
#     the connection is ignored by the server's HTTP/2 library (nghttp2 drops
#     new streams once it sent GOAWAY) or lost with the socket;
#   - requests libcurl never wrote that still ended an attempt: a stream
#     refused 5 times (see phase 1; under faults, connections are new all the
#     time), a transfer that timed out waiting for a connection.
# The summary prints how many there were.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $CLEAN = 300;    # phase 1 subscribers
my $N = 2000;       # phase 2 subscribers: one message per provider each
my @PROVIDERS = qw(apns fcm expo);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('load', $mocks,
	# a slow answer (3 s) is past the timeout; retries come back quickly
	'novu.request_timeout' => 2000,
	'novu.retry_initial_delay' => 200,
	'novu.retry_max_delay' => 1000,
	# a message may meet several faults (their number is bounded below)
	'novu.max_attempts' => 25);
NovuTest::create_integrations($node, $mocks);
$node->safe_psql('postgres', q{SELECT novu.create_workflow('load', '[{"type": "push",
    "title": "Load {{payload.n}}", "content": "for {{subscriber.firstName}}"}]')});

my %ig = (apns => 'apns-mock', fcm => 'fcm-mock', expo => 'expo-mock');

# Subscribers $prefix-1 .. $prefix-$n, each with a token of every provider
# (named after the prefix and the number), and one trigger each, in one
# transaction, transaction ids $prefix-<i>.
sub trigger_load
{
	my ($prefix, $n) = @_;
	my %token_sql = (
		apns => qq{lpad(to_hex(i), 60, '0') || '$prefix'},
		fcm => qq{'fcm-$prefix-' || i},
		expo => qq{'ExponentPushToken[$prefix-' || i || ']'});
	# APNs tokens are hex: the prefix is too
	die "prefix must be hex: $prefix" unless $prefix =~ /^[0-9a-f]{4}$/;
	my $sql = qq{INSERT INTO novu.subscribers (subscriber_id, first_name)
	    SELECT '$prefix-' || i, 'S' || i FROM generate_series(1, $n) i;\n};
	for my $p (@PROVIDERS)
	{
		$sql .= qq{INSERT INTO novu.subscriber_channels (subscriber_id, integration_id)
		    SELECT '$prefix-' || i, ig.id FROM generate_series(1, $n) i, novu.integrations ig
		     WHERE ig.identifier = '$ig{$p}';
		  INSERT INTO novu.device_tokens (integration_id, device_token, subscriber_id)
		    SELECT ig.id, $token_sql{$p}, '$prefix-' || i FROM generate_series(1, $n) i, novu.integrations ig
		     WHERE ig.identifier = '$ig{$p}';\n};
	}
	$node->safe_psql('postgres', $sql);
	NovuTest::query($node, qq{SELECT count(novu.trigger('load', to_jsonb('$prefix-' || i),
	    jsonb_build_object('n', i), '{}', '$prefix-' || i)) FROM generate_series(1, $n) i});
}

# Wait until the 3 * $n messages of $prefix are final (Expo receipts checked too).
sub wait_final
{
	my ($prefix, $n, $timeout) = @_;
	my $total = 3 * $n;
	ok( NovuTest::wait_for($node, qq{SELECT count(*) = $total AND count(*) FILTER (WHERE status IN ('pending', 'sending')
		    OR receipt_at IS NOT NULL) = 0 FROM novu.deliveries WHERE transaction_id LIKE '$prefix-%'}, $timeout),
		"$prefix: all $total messages are final within $timeout s");
	is( NovuTest::query($node, qq{SELECT string_agg(s, ', ') FROM (SELECT provider_id || ' ' || status || ': ' || count(*) AS s
	    FROM novu.deliveries WHERE transaction_id LIKE '$prefix-%' AND status <> 'sent'
	    GROUP BY provider_id, status ORDER BY 1) x}),
		'', "$prefix: every message was sent");
}

# A retry for a transport error (the messages of http.c and curl's), not for
# an HTTP status: that attempt ended without an answer.  So did an FCM attempt
# whose OAuth token request failed: its message was never sent.
my $NO_ANSWER = "'^Retry \\d+ scheduled in [0-9.]+ s: ("
  . join('|', 'OAuth token request failed',
	'connection lost before the answer', 'Timeout was reached', 'Transferred a partial file',
	'Stream error in the HTTP/2 framing layer', 'Error in the HTTP2 framing layer',
	'Failure when receiving data', 'Failed sending data', 'Server returned nothing',
	'SSL connect error', q{Couldn''t connect}) . ")'";

# An attempt that provably never reached the provider: curl never sent its
# request, or not whole, or the server refused its stream unprocessed and curl
# did not send it again (http.c says so), or its OAuth token request failed first.
my $UNSENT = "'(; the request was (not sent|not sent whole|refused unprocessed and not sent again)\$|^Retry \\d+ scheduled in [0-9.]+ s: OAuth token request failed)'";

# Compare, per token of $provider, what the mock received with the attempts
# recorded for the messages of $prefix (less those never sent, see $UNSENT).  Returns a hash: tokens received more
# often than attempted (dup), less often (unseen, with the missing total in
# missing), less often than their answered attempts (unexplained), received
# without a message (unknown), and the retries recorded.
sub compare_counts
{
	my ($prefix, $provider) = @_;
	my $received = NovuTest::control($mocks, 'GET', "/received?provider=$provider");
	my %r = (dup => [], unseen => [], unexplained => [], unknown => [], missing => 0, retries => 0);
	my %attempts;
	for my $row (split /\n/, NovuTest::query($node, qq{
	    SELECT d.device_token, d.attempts - coalesce(e.unsent, 0), coalesce(e.lost, 0), d.id
	      FROM novu.deliveries d
	      LEFT JOIN (SELECT message_id, count(*) FILTER (WHERE detail ~ $NO_ANSWER) AS lost,
	                        count(*) FILTER (WHERE detail ~ $UNSENT) AS unsent
	                   FROM novu.execution_details
	                  WHERE transaction_id LIKE '$prefix-%'
	                  GROUP BY message_id) e ON e.message_id = d.id
	     WHERE d.transaction_id LIKE '$prefix-%' AND d.provider_id = '$provider'}))
	{
		# attempts: those that may have reached the provider (unsent ones left out)
		my ($token, $n, $lost, $id) = split /\|/, $row;
		my $got = $received->{$token} // 0;
		$attempts{$token} = $n;
		$r{retries} += $n - 1;
		my $what = "$token: received $got, attempts $n (message $id)";
		if ($got > $n) { push @{ $r{dup} }, $what; }
		elsif ($got < $n)
		{
			push @{ $r{unseen} }, $what;
			$r{missing} += $n - $got;
			push @{ $r{unexplained} }, $what if $n - $got > $lost;
		}
	}
	$r{unknown} = [ grep { !exists $attempts{$_} } sort keys %$received ];
	return \%r;
}

# Up to 5 examples of $provider, each with its message's history and what the
# mock saw of its token: every request (connection, stream, fault, outcome)
# and the breaks of the connections they came on.
sub examples
{
	my ($provider, @list) = @_;
	my $out = '';
	for my $what (@list[ 0 .. ($#list < 4 ? $#list : 4) ])
	{
		my ($token, $id) = $what =~ /^(.*): received .*\(message (\d+)\)$/;
		$out .= "  $what\n    "
		  . NovuTest::query($node, qq{SELECT string_agg(to_char(created_at, 'HH24:MI:SS.MS') || ' ' || detail, E'\\n    '
		       ORDER BY id) FROM novu.execution_details WHERE message_id = $id}) . "\n";
		my $t = $token =~ s/'/''/gr;
		$out .= "    deliveries of the token: "
		  . NovuTest::query($node, qq{SELECT string_agg(id || ' ' || status || ' attempts ' || attempts || ' tx ' || transaction_id, '; ' ORDER BY id)
		       FROM novu.deliveries WHERE device_token = '$t'}) . "\n";
		$out .= mock_history($provider, $token);
	}
	return $out;
}

# The mock's log of the requests for one token, and the breaks of their connections.
sub mock_history
{
	my ($provider, $token) = @_;
	my $t = $token;
	$t =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord($1))/ge;
	my $log = NovuTest::control($mocks, 'GET', "/requests?provider=$provider&token=$t");
	my $out = '';
	my %conns;
	for my $e (@{ $log->{requests} })
	{
		my $r = $e->{response} // {};
		$conns{ $e->{connId} // '' } = 1;
		$out .= sprintf("    mock: seq %s conn %s stream %s at %s fault %s -> %s at %s\n",
			$e->{seq}, $e->{connId} // '-', $e->{streamId} // '-', $e->{time} // '-',
			$e->{fault} // 'none', $r->{status} // 'no answer', $r->{time} // '-');
	}
	my $events = NovuTest::control($mocks, 'GET', "/requests?provider=$provider&events=1");
	for my $e (@{ $events->{requests} })
	{
		next unless $e->{event} && defined $e->{connId} && $conns{ $e->{connId} };
		$out .= "    mock event: " . join(' ', map { "$_=" . ($e->{$_} // '') }
			qw(seq event kind connId streamId held waitedMs quiet open reading time)) . "\n";
	}
	return $out;
}

######################################################################
# 0. the mocks count only whole requests: a body that went out without its
#    END_STREAM, its stream then canceled, is half a request no server acts on
#    (the extension calls such an attempt "not sent whole")

for my $case ([ 'fcm', '/v1/projects/novu-test/messages:send', '{"message":{"token":"fcm-half-1"}}', 'fcm-half-1' ],
	[ 'expo', '/--/api/v2/push/send', '[{"to":"ExponentPushToken[half-1]","title":"t"}]', 'ExponentPushToken[half-1]' ])
{
	my ($p, $path, $body, $token) = @$case;
	my $probe = `node $FindBin::Bin/../mocks/selftest-h2.js halfbody $mocks->{ports}{$p} $mocks->{dir}/ca.pem '$path' '$body'`;
	like($probe, qr/"canceled":true/, "$p: half a request was sent and canceled");
	my $aborted = 0;
	for (my $deadline = time() + 10; time() < $deadline && !$aborted; Time::HiRes::sleep(0.05))
	{
		my $log = NovuTest::control($mocks, 'GET', "/requests?provider=$p");
		$aborted = grep { (($_->{response} // {})->{status} // '') eq 'aborted' } @{ $log->{requests} };
	}
	ok($aborted, "$p: the mock logged the half request as aborted");
	is(NovuTest::control($mocks, 'GET', "/received?provider=$p")->{$token} // 0, 0,
		"$p: half a request is not counted as received");
}
NovuTest::reset_mocks($mocks);

######################################################################
# 1. no faults: exact counts

trigger_load('c1ea', $CLEAN);
wait_final('c1ea', $CLEAN, 60);
for my $p (@PROVIDERS)
{
	my $r = compare_counts('c1ea', $p);
	is(scalar(@{ $r->{unknown} }), 0, "no faults, $p: no token received without a message");
	is(scalar(@{ $r->{dup} }), 0, "no faults, $p: no token received more often than attempted")
	  or diag(examples($p, @{ $r->{dup} }));
	# APNs refuses all but one stream of a fresh connection until a request
	# authenticates it; libcurl 7.88 closes the connection of each refused
	# stream and gives up after 5 ("Connection died, tried 5 times before
	# giving up"), an attempt that never reached APNs, unless the pool warms
	# a new connection up with one request first
	is(scalar(@{ $r->{unseen} }), 0, "no faults, $p: every token received exactly as often as attempted")
	  or diag("$p: " . scalar(@{ $r->{unseen} }) . " tokens attempted more often than received, e.g.\n"
		  . examples($p, @{ $r->{unseen} }));
}

######################################################################
# 2. the load, with faults

# About one request in 50 of APNs and FCM (an Expo request carries up to 100
# messages: one in 3), the five kinds in turn.  A broken connection makes up
# to 100 requests fail and be retried, and retries meet faults too: at most
# 30 faults per provider keep that from growing without end.
NovuTest::reset_mocks($mocks);
NovuTest::control($mocks, 'POST', '/config', {
	faults => {
		every => { apns => 50, fcm => 50, expo => 3 },
		kinds => [qw(goaway reset drop error slow)],
		max => 30,
		slowMs => 3000 } });

my $t0 = time();
trigger_load('10ad', $N);
wait_final('10ad', $N, 100);
my $elapsed = time() - $t0;

my $faults = NovuTest::control($mocks, 'GET', '/faults');
my ($retries, $missing, @unseen) = (0, 0);
for my $p (@PROVIDERS)
{
	my $r = compare_counts('10ad', $p);
	is(scalar(@{ $r->{unknown} }), 0, "faults, $p: no token received without a message");
	is(scalar(@{ $r->{dup} }), 0, "faults, $p: no token received more often than attempted (no hidden resend)")
	  or diag("$p: " . scalar(@{ $r->{dup} }) . " tokens received more often than attempted, e.g.\n"
		  . examples($p, @{ $r->{dup} }));
	is(scalar(@{ $r->{unexplained} }), 0,
		"faults, $p: each token was received at least as often as its attempts that got an answer")
	  or diag("$p: " . scalar(@{ $r->{unexplained} }) . " tokens, e.g.\n" . examples($p, @{ $r->{unexplained} }));
	for my $kind (qw(goaway reset drop error slow))
	{
		cmp_ok($faults->{$p}{byKind}{$kind} // 0, '>', 0, "faults, $p: $kind faults were injected");
	}
	$retries += $r->{retries};
	$missing += $r->{missing};
	push @unseen, "$p " . scalar(@{ $r->{unseen} });
}
cmp_ok($retries, '>', 0, 'faults: the extension recorded retries');

my $refused = 0;
$refused += $faults->{$_}{refused} // 0 for @PROVIDERS;
diag(sprintf("%d messages in %.1f s; faults injected: %s;\nrequests refused unprocessed (resent by curl): %d; "
	  . "retries recorded: %d (at most %s attempts for a message);\nattempts the mocks never saw: %d (tokens: %s)",
	3 * $N, $elapsed,
	join(', ', map {
		my $f = $faults->{$_};
		"$_ $f->{injected} (" . join(' ', map { "$_ $f->{byKind}{$_}" } sort keys %{ $f->{byKind} }) . ')'
	} @PROVIDERS),
	$refused,
	$retries, NovuTest::query($node, q{SELECT max(attempts) FROM novu.deliveries WHERE transaction_id LIKE '10ad-%'}),
	$missing, join(', ', @unseen)));
diag("retries by reason:\n" . NovuTest::query($node, q{
    SELECT provider_id || ' ' || count(*) || ' ' || reason FROM (
      SELECT provider_id, regexp_replace(regexp_replace(detail, '^Retry \d+ scheduled in [0-9.]+ s: ', ''),
               '\d+', 'N', 'g') AS reason
        FROM novu.execution_details WHERE transaction_id LIKE '10ad-%' AND detail ~ '^Retry') r
     GROUP BY provider_id, reason ORDER BY provider_id, count(*) DESC}));

done_testing();
