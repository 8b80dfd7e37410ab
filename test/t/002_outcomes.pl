# 002_outcomes.pl: every class of PROTOCOLS.md section 7 end to end, checked on
# both sides (what the strict mocks received and answered, and what the database
# recorded): REMOVE_TOKEN per provider (and through Expo receipts), RETRY_BACKOFF
# (Retry-After honoured, max_attempts, one provider's outage not delaying
# another), REAUTH_THEN_RETRY (FCM plain 401), CONFIG_ERROR (tokens kept, logged
# once), DROP_MESSAGE (APNs payload over 4096 bytes never sent), the dead-token
# circuit breaker, and APNs certificate authentication.
# Also: a hanging provider does not hold back the others' messages (the pipeline
# never waits for a whole round), and two APNs token-auth integrations of one
# team do not break each other (each integration has its own connections).
# An attempt whose request never reached the provider whole (nothing listening,
# a stream refused and not sent again, a body stopped by flow control) says so.
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

my $started = time();
my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('outcomes', $mocks);
NovuTest::create_integrations($node, $mocks);
my $json = JSON::PP->new->canonical;

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }
sub urlenc { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; return $s; }

# An APNs-looking device token (even-length hex, 64 chars) unique per label.
sub hex_token { my ($label) = @_; my $h = unpack('H*', $label); return substr($h . ('0' x 64), 0, 64); }

# Create or update a subscriber with tokens: identify($id, [providerId, integration, [tokens]], ...).
sub identify
{
	my ($sub, @channels) = @_;
	my $profile = { channels => [ map { +{ providerId => $_->[0], integrationIdentifier => $_->[1],
					credentials => { deviceTokens => $_->[2] } } } @channels ] };
	q1('SELECT novu.identify(' . lit($sub) . ', ' . lit($json->encode($profile)) . '::jsonb)');
}

# Trigger workflow "outcomes" for one or several subscribers; returns the commit time (epoch s).
sub trigger
{
	my ($tx, $to, $payload) = @_;
	my $recipients = $json->encode($to);
	my $out = $node->safe_psql('postgres',
		'SELECT novu.trigger(\'outcomes\', ' . lit($recipients) . '::jsonb, ' . lit($json->encode($payload // { n => 1 }))
		  . "::jsonb, '{}', " . lit($tx) . "); SELECT extract(epoch FROM clock_timestamp())");
	return (split /\n/, $out)[-1];
}

# The message of a transaction to one device token, as a hash (empty if none).
sub msg { return NovuTest::message($node, @_); }

# The activity log of that message, oldest first.
sub details
{
	my ($tx, $token) = @_;
	my $r = q1('SELECT COALESCE(json_agg(e.detail ORDER BY e.id), \'[]\') FROM novu.execution_details e'
		  . ' JOIN novu.deliveries d ON d.id = e.message_id WHERE d.transaction_id = ' . lit($tx)
		  . ' AND d.device_token = ' . lit($token));
	return NovuTest::decode($r);
}

# A subscriber's device tokens stored for one integration (from get_subscriber's channels).
sub tokens_of
{
	my ($sub, $ident) = @_;
	return NovuTest::decode(q1(q{SELECT COALESCE((SELECT c -> 'credentials' -> 'deviceTokens'
	    FROM jsonb_array_elements(novu.get_subscriber(} . lit($sub) . q{) -> 'channels') c
	   WHERE c ->> 'integrationIdentifier' = } . lit($ident) . q{), '[]')}));
}

sub pstat
{
	my ($ident, $col) = @_;
	return q1("SELECT $col FROM novu.stat_providers WHERE integration_identifier = " . lit($ident));
}

# What a mock received for one token, oldest first.
# (FCM requests are matched on the body's message.token: the mock only tags a request with
# its token once authentication and payload checks passed.)
sub token_requests
{
	my ($provider, $token) = @_;
	return [ grep { ($_->{body}{message}{token} // '') eq $token } @{ NovuTest::requests($mocks, 'fcm') } ]
	  if $provider eq 'fcm';
	return NovuTest::control($mocks, 'GET', "/requests?provider=$provider&token=" . urlenc($token))->{requests};
}

sub statuses { return join(',', map { $_->{response} ? $_->{response}{status} : 'none' } @{ $_[0] }); }

# Wait until no message of these transactions is pending or sending (and they exist).
sub wait_done
{
	my ($like, $count, $timeout) = @_;
	return NovuTest::wait_for($node, "SELECT count(*) = $count AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0"
		  . " FROM novu.messages WHERE transaction_id LIKE " . lit($like), $timeout // 20);
}

sub server_log { return PostgreSQL::Test::Utils::slurp_file($node->logfile); }

# More integrations: a misconfigured APNs one (wrong Team ID: 403 InvalidProviderToken),
# a second FCM one for the circuit breaker (its own one-minute window), and APNs
# certificate auth against the mock's client-certificate listeners.
my $p8 = slurp_file("$mocks->{dir}/apns-key.p8");
my $sa = slurp_file("$mocks->{dir}/fcm-service-account.json");
my %pem = map { $_ => slurp_file("$mocks->{dir}/$_") } qw(apns-cert.pem apns-cert.key apns-cert-sandbox.pem apns-cert-sandbox.key);
$node->safe_psql('postgres', sprintf(<<'SQL',
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', $p8$%s$p8$, 'apiKey', 'ABC123DEFG',
    'projectName', 'WRONGTEAM1', 'applicationId', 'com.novu.test', 'secure', false, 'endpoint', '%s'), 'apns-wrongteam');
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', $sa$%s$sa$::jsonb, 'endpoint', '%s'), 'fcm-breaker');
SELECT novu.create_integration('apns', jsonb_build_object('certificate', $c$%s$c$, 'privateKey', $k$%s$k$,
    'applicationId', 'com.novu.test', 'secure', true, 'endpoint', '%s'), 'apns-cert');
SELECT novu.create_integration('apns', jsonb_build_object('certificate', $c$%s$c$, 'privateKey', $k$%s$k$,
    'applicationId', 'com.novu.test', 'secure', false, 'endpoint', '%s'), 'apns-cert-sandbox');
SELECT novu.create_workflow('outcomes', '[{"type": "push", "title": "T {{payload.n}}", "content": "C"}]');
SQL
	$p8, $mocks->{urls}{apnsSandbox}, $sa, $mocks->{urls}{fcm},
	$pem{'apns-cert.pem'}, $pem{'apns-cert.key'}, $mocks->{urls}{apnsCert},
	$pem{'apns-cert-sandbox.pem'}, $pem{'apns-cert-sandbox.key'}, $mocks->{urls}{apnsCertSandbox}));

# One delivery per integration first: the circuit breaker has seen them
# deliver, so that 1's dead-token answers are judged at once, not held for a
# sample of good answers that a slow machine could bring too late.
{
	identify('warm-1', [ 'fcm', 'fcm-mock', ['fcm-warm-1'] ], [ 'apns', 'apns-mock', [ hex_token('warm-1') ] ],
		[ 'expo', 'expo-mock', ['ExponentPushToken[warm-1]'] ]);
	trigger('tx-warm-1', 'warm-1');
	ok(wait_done('tx-warm-1', 3, 30) && q1(q{SELECT bool_and(status = 'sent') FROM novu.messages WHERE transaction_id = 'tx-warm-1'}) eq 't',
		'warm-up: one message sent per integration');
}

# ===========================================================================
# 1. REMOVE_TOKEN, per provider; the good token of the same subscriber is kept
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my %apns = map { $_ => hex_token("rm-apns-$_") } qw(dead bad expired good good2 again);
	my %t = (
		fcm_dead => 'fcm-rm-dead', fcm_bad => 'fcm-rm-bad', fcm_apnsdead => 'fcm-rm-apns-dead', fcm_good => 'fcm-rm-good',
		expo_dead => 'ExponentPushToken[rm-dead]', expo_good => 'ExponentPushToken[rm-good]');
	NovuTest::set_tokens($mocks, 'fcm', 'dead', $t{fcm_dead});
	NovuTest::set_tokens($mocks, 'fcm', 'bad', $t{fcm_bad});
	NovuTest::set_tokens($mocks, 'fcm', 'apns-dead', $t{fcm_apnsdead});
	NovuTest::set_tokens($mocks, 'apns', 'bad', $apns{bad});
	NovuTest::set_tokens($mocks, 'expo', 'dead', $t{expo_dead});
	# APNs answers 410 with the time since which it knows the token to be invalid
	# (the mock: when the token's state was set).  "again" went dead, then the
	# device registered it again: APNs' time is older than the registration.
	NovuTest::set_tokens($mocks, 'apns', 'dead', $apns{again});
	identify('rm-1',
		[ 'fcm', 'fcm-mock', [ @t{qw(fcm_dead fcm_bad fcm_apnsdead fcm_good)} ] ],
		[ 'apns', 'apns-mock', [ @apns{qw(dead bad expired good good2 again)} ] ],
		[ 'expo', 'expo-mock', [ @t{qw(expo_dead expo_good)} ] ]);
	NovuTest::set_tokens($mocks, 'apns', 'dead', $apns{dead});
	NovuTest::set_tokens($mocks, 'apns', 'expired', $apns{expired});
	my %pruned0 = map { $_ => pstat($_, 'tokens_pruned') } qw(fcm-mock apns-mock expo-mock);

	trigger('tx-rm-1', 'rm-1');
	ok(wait_done('tx-rm-1', 12), 'REMOVE_TOKEN: the 12 messages of the trigger are final');

	my @cases = (
		[ 'fcm', $t{fcm_dead}, qr/^UNREGISTERED\b/, '404 UNREGISTERED', 404 ],
		[ 'fcm', $t{fcm_bad}, qr/^INVALID_ARGUMENT\b.*registration token/, '400 invalid registration token', 400 ],
		[ 'fcm', $t{fcm_apnsdead}, qr/Unregistered/, '400 with ApnsError 410 Unregistered', 400 ],
		[ 'apns', $apns{dead}, qr/^Unregistered\b/, '410 Unregistered', 410 ],
		[ 'apns', $apns{bad}, qr/^BadDeviceToken\b/, '400 BadDeviceToken', 400 ],
		[ 'apns', $apns{expired}, qr/^ExpiredToken\b/, '410 ExpiredToken', 410 ]);
	for my $c (@cases)
	{
		my ($provider, $token, $reason, $what, $http) = @$c;
		my $m = msg('tx-rm-1', $token);
		is($m->{status}, 'failed', "$provider $what: message failed");
		like($m->{last_error} // '', $reason, "$provider $what: last_error has the provider's reason");
		my $reqs = token_requests($provider, $token);
		is(statuses($reqs), "$http", "$provider $what: the mock got exactly one request and answered $http (no retry)");
		my $d = details('tx-rm-1', $token);
		ok((grep { /^Token removed: (.*)$/s && $1 =~ $reason } @$d) == 1, "$provider $what: activity says \"Token removed: <reason>\"")
		  or diag(explain $d);
	}
	is(token_requests('apns', $apns{dead})->[0]{response}{body}{reason}, 'Unregistered', 'APNs mock answered reason Unregistered');
	is(token_requests('fcm', $t{fcm_dead})->[0]{response}{body}{error}{details}[0]{errorCode}, 'UNREGISTERED',
		'FCM mock answered FcmError UNREGISTERED');

	my $em = msg('tx-rm-1', $t{expo_dead});
	is($em->{status}, 'failed', 'Expo DeviceNotRegistered ticket: message failed');
	like($em->{last_error} // '', qr/^DeviceNotRegistered\b/, 'Expo DeviceNotRegistered ticket: reason in last_error');
	ok((grep { /^Token removed: DeviceNotRegistered/ } @{ details('tx-rm-1', $t{expo_dead}) }) == 1,
		'Expo DeviceNotRegistered ticket: activity "Token removed: DeviceNotRegistered..."');
	my $expo = NovuTest::expo_sends($mocks);
	is(scalar @$expo, 1, 'Expo: one send request for both tokens');
	my %ticket = map { $expo->[0]{tokens}[$_] => $expo->[0]{response}{body}{data}[$_] } 0 .. $#{ $expo->[0]{tokens} // [] };
	is($ticket{ $t{expo_dead} }{details}{error}, 'DeviceNotRegistered', 'Expo mock gave the dead token a DeviceNotRegistered ticket');

	for my $good ([ 'fcm', $t{fcm_good} ], [ 'apns', $apns{good} ], [ 'expo', $t{expo_good} ])
	{
		my $m = msg('tx-rm-1', $good->[1]);
		is($m->{status}, 'sent', "$good->[0]: the good token of the same subscriber is sent");
		is(statuses(token_requests($good->[0], $good->[1])), '200', "$good->[0]: the good token got one 200")
		  if $good->[0] ne 'expo';
	}
	is_deeply(tokens_of('rm-1', 'fcm-mock'), [ $t{fcm_good} ], 'FCM: dead, invalid and APNs-dead tokens removed, the good one kept');
	is_deeply([ sort @{ tokens_of('rm-1', 'apns-mock') } ], [ sort($apns{good}, $apns{good2}, $apns{again}) ],
		'APNs: Unregistered, BadDeviceToken and ExpiredToken tokens removed; the good ones kept, and the one registered after APNs\' time');
	my $again = msg('tx-rm-1', $apns{again});
	is($again->{status} . ': ' . ($again->{last_error} // ''), 'failed: Unregistered',
		'APNs 410 for a token registered again after its time: that message fails');
	my $ts = token_requests('apns', $apns{again})->[0]{response}{body}{timestamp};
	ok(defined $ts && $ts =~ /^\d+$/, 'the APNs mock answered a timestamp (ms)');
	like(join('|', @{ details('tx-rm-1', $apns{again}) }), qr/Token removed: Unregistered \(invalid since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z; kept if registered again after that\)/,
		'its activity says since when, and that a later registration keeps the token');
	is_deeply(tokens_of('rm-1', 'expo-mock'), [ $t{expo_good} ], 'Expo: DeviceNotRegistered token removed, the good one kept');
	is(pstat('fcm-mock', 'tokens_pruned') - $pruned0{'fcm-mock'}, 3, 'stat_providers: fcm-mock counts 3 tokens pruned');
	is(pstat('apns-mock', 'tokens_pruned') - $pruned0{'apns-mock'}, 3, 'stat_providers: apns-mock counts 3 tokens pruned');
	is(pstat('expo-mock', 'tokens_pruned') - $pruned0{'expo-mock'}, 1, 'stat_providers: expo-mock counts 1 token pruned');

	# the pruned tokens are not targeted any more
	NovuTest::reset_mocks($mocks);
	trigger('tx-rm-2', 'rm-1');
	ok(wait_done('tx-rm-2', 5), 'a second trigger makes 5 messages only (the good tokens, and the one registered again)');
	is(q1(q{SELECT string_agg(provider_id || ':' || status, ',' ORDER BY provider_id) FROM novu.messages WHERE transaction_id = 'tx-rm-2'}),
		'apns:sent,apns:sent,apns:sent,expo:sent,fcm:sent', 'second trigger: the five tokens kept are sent');
	is(scalar(@{ token_requests('fcm', $t{fcm_dead}) }) + scalar(@{ token_requests('apns', $apns{dead}) }), 0,
		'second trigger: no request for a pruned token');
}

# ===========================================================================
# 2. Expo receipts: ticket ok, receipt DeviceNotRegistered -> sent, then failed
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my ($dead, $ok) = ('ExponentPushToken[rc-dead]', 'ExponentPushToken[rc-ok]');
	NovuTest::set_tokens($mocks, 'expo', 'receipt-dead', $dead);
	identify('rc-1', [ 'expo', 'expo-mock', [ $dead, $ok ] ]);
	my $pruned0 = pstat('expo-mock', 'tokens_pruned');
	trigger('tx-rc-1', 'rc-1');
	ok(NovuTest::wait_for($node, q{SELECT status = 'failed' FROM novu.messages WHERE transaction_id = 'tx-rc-1'
	    AND device_token = 'ExponentPushToken[rc-dead]'}, 20), 'receipt DeviceNotRegistered: the message ends failed');
	my $m = msg('tx-rc-1', $dead);
	like($m->{last_error} // '', qr/^DeviceNotRegistered\b/, 'receipt: last_error has DeviceNotRegistered');
	ok(defined $m->{sent_at} && defined $m->{provider_message_id}, 'receipt: it had been sent first (sent_at and ticket id kept)');
	my $d = details('tx-rc-1', $dead);
	is($d->[0], 'Message sent', 'receipt: activity first says "Message sent"');
	like($d->[-1] // '', qr/^Token removed: DeviceNotRegistered.*\(receipt\)$/, 'receipt: then "Token removed: DeviceNotRegistered ... (receipt)"');
	is_deeply(tokens_of('rc-1', 'expo-mock'), [$ok], 'receipt: the dead token is pruned, the ok one kept');
	is(pstat('expo-mock', 'tokens_pruned') - $pruned0, 1, 'receipt: stat_providers counts the pruned token');

	my $ok_msg = msg('tx-rc-1', $ok);
	my @receipts = grep { $_->{path} =~ m{/getReceipts$} } @{ NovuTest::requests($mocks, 'expo') };
	my %asked = map { $_ => 1 } map { @{ $_->{body}{ids} // [] } } @receipts;
	ok($asked{ $m->{provider_message_id} // '' } && $asked{ $ok_msg->{provider_message_id} // '' },
		'receipt: getReceipts asked for both tickets');
	is($ok_msg->{status}, 'sent', 'receipt ok: the other message stays sent after its receipt was checked');
	is_deeply([ grep { !/^Message sent$/ } @{ details('tx-rc-1', $ok) } ], [], 'receipt ok: no other activity for it');
	my ($sent) = grep { $_->{path} =~ m{/push/send$} } @{ NovuTest::requests($mocks, 'expo') };
	is_deeply([ map { $_->{status} } @{ $sent->{response}{body}{data} // [] } ], [ 'ok', 'ok' ], 'receipt: Expo gave both tickets ok');
}

# ===========================================================================
# 3. RETRY_BACKOFF: Retry-After honoured, max_attempts, no cross-provider delay
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my %apns_out = map { $_ => hex_token("out-apns-$_") } 1 .. 3;
	my $apns429 = hex_token('rt-apns-429');
	NovuTest::set_tokens($mocks, 'apns', 'fail:503', values %apns_out);
	NovuTest::set_tokens($mocks, 'fcm', 'fail:503:2:1', 'fcm-rt-503ra');
	NovuTest::set_tokens($mocks, 'fcm', 'fail:429:1:1', 'fcm-rt-429');
	NovuTest::set_tokens($mocks, 'apns', 'fail:429:1:1', $apns429);
	NovuTest::set_tokens($mocks, 'fcm', 'fail:503', 'fcm-rt-always');
	my $apns_ra3 = hex_token('rt-apns-ra3');
	NovuTest::set_tokens($mocks, 'apns', 'fail:503:3:1', $apns_ra3);
	NovuTest::set_tokens($mocks, 'fcm', 'fail:429::1', 'fcm-quota');
	NovuTest::set_tokens($mocks, 'expo', 'fail:429:1:1', 'ExponentPushToken[rt-429]');
	identify("out-$_", [ 'fcm', 'fcm-mock', ["fcm-out-$_"] ], [ 'apns', 'apns-mock', [ $apns_out{$_} ] ]) for 1 .. 3;
	identify('rt-503ra', [ 'fcm', 'fcm-mock', ['fcm-rt-503ra'] ]);
	identify('rt-429', [ 'fcm', 'fcm-mock', ['fcm-rt-429'] ], [ 'apns', 'apns-mock', [$apns429] ],
		[ 'expo', 'expo-mock', ['ExponentPushToken[rt-429]'] ]);
	identify('rt-always', [ 'fcm', 'fcm-mock', ['fcm-rt-always'] ]);
	identify('rt-ra3', [ 'apns', 'apns-mock', [$apns_ra3] ]);
	identify('rt-date', [ 'fcm', 'fcm-mock', ['fcm-rt-date'] ]);
	identify('quota-1', [ 'fcm', 'fcm-mock', ['fcm-quota'] ]);

	# the HTTP-date: 10-11 s ahead, set just before the triggers (a slow machine's
	# psql calls must not eat the margin above retry_max_delay checked below)
	my @day = qw(Sun Mon Tue Wed Thu Fri Sat);
	my @mon = qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec);
	my $date_epoch = int(time()) + 11;
	my @g = gmtime($date_epoch);
	my $http_date = sprintf('%s, %02d %s %04d %02d:%02d:%02d GMT', $day[ $g[6] ], $g[3], $mon[ $g[4] ], $g[5] + 1900, $g[2], $g[1], $g[0]);
	NovuTest::set_tokens($mocks, 'fcm', { state => 'fail', status => 503, retryAfter => $http_date, count => 1 }, 'fcm-rt-date');

	# the APNs outage trigger first: its FCM messages must not wait for APNs' retries
	my $committed = trigger('tx-rt-outage', [ 'out-1', 'out-2', 'out-3' ]);
	trigger('tx-rt-503ra', 'rt-503ra');
	trigger('tx-rt-429', 'rt-429');
	trigger('tx-rt-always', 'rt-always');
	trigger('tx-rt-ra3', 'rt-ra3');
	trigger('tx-rt-date', 'rt-date');
	trigger('tx-quota-1', 'quota-1');

	ok(NovuTest::wait_for($node, q{SELECT count(*) FILTER (WHERE status = 'sent') = 3 FROM novu.messages
	    WHERE transaction_id = 'tx-rt-outage' AND provider_id = 'fcm'}, 10), 'outage: the FCM messages are sent');
	my $sent_at = q1(q{SELECT extract(epoch FROM max(sent_at)) FROM novu.messages WHERE transaction_id = 'tx-rt-outage' AND provider_id = 'fcm'});
	cmp_ok($sent_at - $committed, '<', 1.0, 'outage: the FCM messages were recorded sent within a second of the commit');
	my @fcm_times = map { $_->{time} / 1000.0 } grep { ($_->{token} // '') =~ /^fcm-out-/ } @{ NovuTest::requests($mocks, 'fcm') };
	is(scalar @fcm_times, 3, 'outage: FCM mock got one request per FCM token');
	cmp_ok((sort { $b <=> $a } @fcm_times)[0] - $committed, '<', 1.0, 'outage: they reached the FCM mock within a second');

	ok(wait_done('tx-rt-%', 13, 30), 'retries: every message of the retry triggers is final');

	# 503 with Retry-After: 2, once
	my $m = msg('tx-rt-503ra', 'fcm-rt-503ra');
	is($m->{status}, 'sent', '503 + Retry-After 2 once: sent');
	is($m->{attempts}, 2, '503 + Retry-After 2 once: attempts = 2');
	my $r = token_requests('fcm', 'fcm-rt-503ra');
	is(statuses($r), '503,200', '503 + Retry-After 2 once: the mock answered 503 then 200');
	is($r->[0]{response}{headers}{'retry-after'}, '2', 'the 503 carried Retry-After: 2');
	my $gap = @$r == 2 ? ($r->[1]{time} - $r->[0]{time}) / 1000.0 : 0;
	cmp_ok($gap, '>=', 1.95, sprintf('the retry came %.3f s after the first request (Retry-After 2 honoured)', $gap));
	cmp_ok($gap, '<', 5, 'and not much later');
	like(details('tx-rt-503ra', 'fcm-rt-503ra')->[0] // '', qr/^Retry 2 scheduled in 2\.0 s: UNAVAILABLE/,
		'activity: "Retry 2 scheduled in 2.0 s: UNAVAILABLE..."');

	# 429 with Retry-After: 1, once (FCM QUOTA_EXCEEDED and APNs TooManyRequests)
	for my $c ([ 'fcm', 'fcm-rt-429', 'QUOTA_EXCEEDED' ], [ 'apns', $apns429, 'TooManyRequests' ],
		[ 'expo', 'ExponentPushToken[rt-429]', 'TOO_MANY_REQUESTS' ])
	{
		my ($provider, $token, $reason) = @$c;
		$m = msg('tx-rt-429', $token);
		is($m->{status}, 'sent', "$provider 429 + Retry-After 1 once: sent after a retry");
		is($m->{attempts}, 2, "$provider 429 + Retry-After 1 once: attempts = 2");
		$r = token_requests($provider, $token);
		is(statuses($r), '429,200', "$provider 429: the mock answered 429 then 200");
		$gap = @$r == 2 ? ($r->[1]{time} - $r->[0]{time}) / 1000.0 : 0;
		cmp_ok($gap, '>=', 0.95, sprintf("$provider 429: the retry came %.3f s later (Retry-After 1 honoured)", $gap));
		like(details('tx-rt-429', $token)->[0] // '', qr/^Retry 2 scheduled in 1\.0 s: $reason/,
			"$provider 429: activity \"Retry 2 scheduled in 1.0 s: $reason...\"");
	}

	# Retry-After above novu.retry_max_delay (3 s > 2 s) and as an HTTP-date (10-11 s after it was
	# set; the retry waits until that second, however long the first request took to go out)
	for my $c ([ 'apns', $apns_ra3, 'tx-rt-ra3', 2.95, 'Retry-After 3 (above retry_max_delay)' ],
		[ 'fcm', 'fcm-rt-date', 'tx-rt-date', undef, "Retry-After: $http_date" ])
	{
		my ($provider, $token, $tx, $min, $what) = @$c;
		$m = msg($tx, $token);
		is($m->{status} . '/' . $m->{attempts}, 'sent/2', "$provider $what: sent on the second attempt");
		$r = token_requests($provider, $token);
		is(statuses($r), '503,200', "$provider $what: the mock answered 503 then 200");
		$gap = @$r == 2 ? ($r->[1]{time} - $r->[0]{time}) / 1000.0 : 0;
		if (!defined $min)
		{
			$min = $date_epoch - $r->[0]{time} / 1000.0 - 0.05;
			cmp_ok($min, '>', 2, sprintf("$provider $what: the date was %.1f s ahead of the first request, beyond retry_max_delay", $min));
		}
		cmp_ok($gap, '>=', $min, sprintf("$provider $what: the retry waited %.3f s", $gap));
	}

	# QUOTA_EXCEEDED without Retry-After: the retry waits at least a minute
	$m = msg('tx-quota-1', 'fcm-quota');
	is($m->{status}, 'pending', 'QUOTA_EXCEEDED without Retry-After: still waiting to retry');
	like(details('tx-quota-1', 'fcm-quota')->[0] // '', qr/^Retry 2 scheduled in 6\d\.\d s: QUOTA_EXCEEDED/,
		'QUOTA_EXCEEDED without Retry-After: "Retry 2 scheduled in 60 s or more"');
	is(statuses(token_requests('fcm', 'fcm-quota')), '429', 'QUOTA_EXCEEDED without Retry-After: no second request within seconds');
	q1(q{SELECT novu.cancel('tx-quota-1')});

	# 503 every time: failed after exactly max_attempts requests
	$m = msg('tx-rt-always', 'fcm-rt-always');
	is($m->{status}, 'failed', '503 every time: failed');
	is($m->{attempts}, 5, '503 every time: attempts = novu.max_attempts (5)');
	like($m->{last_error} // '', qr/^UNAVAILABLE\b/, '503 every time: last_error names UNAVAILABLE');
	is(statuses(token_requests('fcm', 'fcm-rt-always')), '503,503,503,503,503', '503 every time: exactly 5 requests reached the mock');
	my $d = details('tx-rt-always', 'fcm-rt-always');
	is(scalar(grep { /^Retry [2-5] scheduled in [\d.]+ s: UNAVAILABLE/ } @$d), 4, '503 every time: 4 "Retry N scheduled" rows');
	like($d->[-1] // '', qr/^Failed after 5 attempts: UNAVAILABLE/, '503 every time: activity "Failed after 5 attempts: UNAVAILABLE..."');
	is_deeply(tokens_of('rt-always', 'fcm-mock'), ['fcm-rt-always'], '503 every time: the token is kept');

	# the APNs outage itself: retried to the end, tokens kept
	is(q1(q{SELECT string_agg(DISTINCT status || '/' || attempts, ',') FROM novu.messages WHERE transaction_id = 'tx-rt-outage' AND provider_id = 'apns'}),
		'failed/5', 'outage: the APNs messages failed after 5 attempts');
	is(q1(q{SELECT string_agg(DISTINCT split_part(last_error, ':', 1), ',') FROM novu.messages WHERE transaction_id = 'tx-rt-outage' AND provider_id = 'apns'}),
		'ServiceUnavailable', 'outage: with the reason ServiceUnavailable');
	is(join(',', map { scalar @{ token_requests('apns', $apns_out{$_}) } } 1 .. 3), '5,5,5', 'outage: 5 requests per APNs token');
	is_deeply(tokens_of('out-1', 'apns-mock'), [ $apns_out{1} ], 'outage: APNs tokens kept');
	is(q1(q{SELECT string_agg(DISTINCT attempts::text, ',') FROM novu.messages WHERE transaction_id = 'tx-rt-outage' AND provider_id = 'fcm'}),
		'1', 'outage: the FCM messages took one attempt each');
}

# A hanging provider (APNs answers after 2.5 s) must not hold back FCM messages
# triggered meanwhile: they go out and are recorded within a second.
{
	NovuTest::reset_mocks($mocks);
	my $slow = hex_token('slow-apns');
	NovuTest::set_tokens($mocks, 'apns', 'slow:2500:1', $slow);
	identify('slow-1', [ 'apns', 'apns-mock', [$slow] ]);
	identify('slow-2', [ 'fcm', 'fcm-mock', ['fcm-slow-2'] ]);
	trigger('tx-slow-1', 'slow-1');
	usleep(300_000);
	my $committed = trigger('tx-slow-2', 'slow-2');
	ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'tx-slow-2'}, 10),
		'hanging APNs: the FCM message triggered meanwhile is sent');
	my $r = token_requests('fcm', 'fcm-slow-2');
	my $latency = @$r ? $r->[0]{time} / 1000.0 - $committed : 99;
	my $sent_at = q1(q{SELECT extract(epoch FROM sent_at) FROM novu.messages WHERE transaction_id = 'tx-slow-2'});
	{
		cmp_ok($latency, '<', 1.0, sprintf('hanging APNs: the FCM request reached the mock %.3f s after its commit', $latency));
		cmp_ok($sent_at - $committed, '<', 1.0, sprintf('hanging APNs: and was recorded sent %.3f s after its commit', $sent_at - $committed));
	}
	ok(wait_done('tx-slow-1', 1, 10), 'hanging APNs: the slow APNs message is final');
	is(msg('tx-slow-1', $slow)->{status}, 'sent', 'hanging APNs: the slow APNs message is sent too');
}

# ===========================================================================
# 4. REAUTH_THEN_RETRY: FCM 401 UNAUTHENTICATED without FcmError
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	NovuTest::control($mocks, 'POST', '/config', { fcm => { unauthNext => 1 } });
	identify('ra-1', [ 'fcm', 'fcm-mock', ['fcm-ra-1'] ]);
	trigger('tx-ra-1', 'ra-1');
	ok(wait_done('tx-ra-1', 1, 15), 'reauth: the message is final');
	my $m = msg('tx-ra-1', 'fcm-ra-1');
	is($m->{status}, 'sent', 'reauth: the message is sent');
	my $r = token_requests('fcm', 'fcm-ra-1');
	is(statuses($r), '401,200', 'reauth: FCM answered 401 then 200');
	ok(!defined $r->[0]{response}{body}{error}{details}, 'reauth: the 401 had no FcmError detail');
	# the worker that took the message may have fetched its first token just before
	# (each worker has its own): count the requests after the 401
	my $oauth = [ grep { @$r && $_->{time} > $r->[0]{time} } @{ NovuTest::requests($mocks, 'oauth') } ];
	is(scalar @$oauth, 1, 'reauth: one new OAuth token request after the 401');
	is($oauth->[0]{response}{status}, 200, 'reauth: the OAuth mock issued a token');
	my $issued = $oauth->[0]{response}{body}{access_token} // 'none';
	ok(@$r == 2 && $r->[0]{headers}{authorization} ne $r->[1]{headers}{authorization}, 'reauth: the retry used another bearer token');
	is($r->[1]{headers}{authorization} // '', "Bearer $issued", 'reauth: the retry used the freshly issued access token');
	cmp_ok($oauth->[0]{time}, '>', $r->[0]{time}, 'reauth: the token was requested after the 401');
	ok(!grep({ /^Token removed|configuration error/ } @{ details('tx-ra-1', 'fcm-ra-1') }), 'reauth: not treated as a dead token or config error');
}

# ===========================================================================
# 5. CONFIG_ERROR: APNs 403 InvalidProviderToken; tokens kept, logged once
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my @subs = map { "cfg-$_" } 1 .. 5;
	my %tok = map { $_ => hex_token("cfg-apns-$_") } @subs;
	identify($_, [ 'apns', 'apns-wrongteam', [ $tok{$_} ] ]) for @subs;
	my $log_offset = length(server_log());
	trigger('tx-cfg-1', \@subs);
	ok(wait_done('tx-cfg-1', 5, 15), 'config error: the 5 messages are final');
	is(q1(q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-cfg-1' AND status = 'failed' AND last_error ~ '^InvalidProviderToken'}),
		'5', 'config error: all 5 failed with InvalidProviderToken');
	is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id = 'tx-cfg-1' AND detail ~ '^Integration configuration error: InvalidProviderToken'}),
		'5', 'config error: activity "Integration configuration error: InvalidProviderToken" for each');
	is_deeply([ map { @{ tokens_of($_, 'apns-wrongteam') } } @subs ], [ map { $tok{$_} } @subs ], 'config error: every token is kept');
	is(pstat('apns-wrongteam', 'tokens_pruned'), '0', 'config error: stat_providers counts no pruned token');
	my @reqs = map { @{ token_requests('apns', $tok{$_}) } } @subs;
	ok(@reqs >= 1 && @reqs <= 5, sprintf('config error: %d request(s) reached the mock, none retried', scalar @reqs));
	is(scalar(grep { ($_->{response}{status} // 0) == 403 && ($_->{response}{body}{reason} // '') eq 'InvalidProviderToken' } @reqs),
		scalar @reqs, 'config error: the mock answered 403 InvalidProviderToken (wrong Team ID)');
	like($reqs[0]{authError} // '', qr/iss WRONGTEAM1/, 'config error: the mock saw the wrong team in the JWT');

	# a second trigger: failed again, still logged once
	trigger('tx-cfg-2', ['cfg-1']);
	ok(wait_done('tx-cfg-2', 1, 15), 'config error: a later message is final');
	is(msg('tx-cfg-2', $tok{'cfg-1'})->{status}, 'failed', 'config error: a later message fails too');
	my $log = substr(server_log(), $log_offset);
	my @warnings = $log =~ /(WARNING:\s+novu: integration "apns-wrongteam" \(apns\) is misconfigured: [^\n]*)/g;
	is(scalar @warnings, 1, 'config error: the "is misconfigured" WARNING is logged exactly once') or diag(explain \@warnings);
	like($warnings[0] // '', qr/InvalidProviderToken/, 'config error: the WARNING names the reason');
	is_deeply(tokens_of('cfg-1', 'apns-wrongteam'), [ $tok{'cfg-1'} ], 'config error: the token is still kept');
}

# ===========================================================================
# 6. DROP_MESSAGE: payload too large
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my $apns = hex_token('drop-apns');
	identify('drop-1', [ 'apns', 'apns-mock', [$apns] ], [ 'fcm', 'fcm-mock', ['fcm-drop-1'] ],
		[ 'expo', 'expo-mock', ['ExponentPushToken[drop-1]'] ]);
	trigger('tx-drop-1', 'drop-1', { n => 1, big => 'x' x 5000 });
	ok(wait_done('tx-drop-1', 3, 15), 'drop: the messages are final');
	my $m = msg('tx-drop-1', $apns);
	is($m->{status}, 'failed', 'drop APNs: a payload over 4096 bytes fails');
	like($m->{last_error} // '', qr/^PayloadTooLarge/, 'drop APNs: last_error says PayloadTooLarge');
	is($m->{attempts}, 1, 'drop APNs: not retried');
	is(scalar @{ token_requests('apns', $apns) }, 0, 'drop APNs: no request reached the APNs mock for that token');
	is(scalar @{ NovuTest::requests($mocks, 'apns') }, 0, 'drop APNs: no APNs request at all');
	like(details('tx-drop-1', $apns)->[-1] // '', qr/^Message dropped: PayloadTooLarge/, 'drop APNs: activity "Message dropped: PayloadTooLarge..."');
	is_deeply(tokens_of('drop-1', 'apns-mock'), [$apns], 'drop APNs: the token is kept');

	# FCM and Expo reject the same payload: dropped as payload errors, tokens kept
	$m = msg('tx-drop-1', 'fcm-drop-1');
	is($m->{status} . '/' . $m->{attempts}, 'failed/1', 'drop FCM: too-big message failed at once');
	is(statuses(token_requests('fcm', 'fcm-drop-1')), '400', 'drop FCM: one request, the mock answered 400');
	like(details('tx-drop-1', 'fcm-drop-1')->[-1] // '', qr/^Message dropped: /, 'drop FCM: activity "Message dropped: ..."');
	is_deeply(tokens_of('drop-1', 'fcm-mock'), ['fcm-drop-1'], 'drop FCM: a payload error does not prune the token');
	$m = msg('tx-drop-1', 'ExponentPushToken[drop-1]');
	is($m->{status}, 'failed', 'drop Expo: too-big message failed');
	like($m->{last_error} // '', qr/^MessageTooBig/, 'drop Expo: last_error says MessageTooBig');
	is_deeply(tokens_of('drop-1', 'expo-mock'), ['ExponentPushToken[drop-1]'], 'drop Expo: the token is kept');
}

# ===========================================================================
# 7. Circuit breaker: every token of an integration "dead" at once
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my @subs = map { "cb-$_" } 1 .. 30;
	my @toks = map { "fcm-cb-$_" } 1 .. 30;
	NovuTest::set_tokens($mocks, 'fcm', 'mismatch', @toks);
	$node->safe_psql('postgres', q{SELECT novu.identify('cb-' || i, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
	    'providerId', 'fcm', 'integrationIdentifier', 'fcm-breaker', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-cb-' || i))))))
	  FROM generate_series(1, 30) i});
	my $log_offset = length(server_log());
	trigger('tx-cb-1', \@subs);
	ok(wait_done('tx-cb-1', 30, 20), 'breaker: the 30 messages are final');
	my $r = NovuTest::requests($mocks, 'fcm');
	is(scalar(grep { ($_->{response}{status} // 0) == 403 && ($_->{response}{body}{error}{details}[0]{errorCode} // '') eq 'SENDER_ID_MISMATCH' } @$r),
		30, 'breaker: the FCM mock answered 403 SENDER_ID_MISMATCH to all 30');
	is(q1(q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-cb-1' AND status = 'failed'}), '30', 'breaker: the 30 messages failed');
	is(q1(q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-cb-1' AND last_error ~ 'SENDER_ID_MISMATCH' AND last_error ~* 'pruning suspended'}),
		'30', 'breaker: each reason names SENDER_ID_MISMATCH and says pruning is suspended');
	is(q1(q{SELECT count(*) FROM novu.device_tokens t JOIN novu.integrations i ON i.id = t.integration_id
	    WHERE i.identifier = 'fcm-breaker' AND t.device_token LIKE 'fcm-cb-%'}), '30', 'breaker: none of the 30 tokens is deleted');
	is_deeply(tokens_of('cb-17', 'fcm-breaker'), ['fcm-cb-17'], 'breaker: a subscriber still has its token');
	is(pstat('fcm-breaker', 'tokens_pruned'), '0', 'breaker: stat_providers counts no pruned token');
	is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id = 'tx-cb-1' AND detail ~ '^Token removed'}), '0',
		'breaker: no "Token removed" activity');
	my $log = substr(server_log(), $log_offset);
	like($log, qr/WARNING:\s+novu: integration "fcm-breaker": \d+ of \d+ answers in the last minute reported the device token dead; token pruning is suspended/,
		'breaker: the WARNING about suspended pruning is logged');
}

# ===========================================================================
# 8. APNs certificate authentication
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my ($prod, $sandbox) = (hex_token('cert-prod'), hex_token('cert-sandbox'));
	identify('cert-1', [ 'apns', 'apns-cert', [$prod] ], [ 'apns', 'apns-cert-sandbox', [$sandbox] ]);
	trigger('tx-cert-1', 'cert-1');
	ok(wait_done('tx-cert-1', 2, 15), 'cert: the messages are final');
	for my $c ([ 'production', $prod, 'apns-cert' ], [ 'sandbox', $sandbox, 'apns-cert-sandbox' ])
	{
		my ($env, $token, $ident) = @$c;
		my $m = msg('tx-cert-1', $token);
		is($m->{status}, 'sent', "cert $env: sent");
		ok(defined $m->{provider_message_id}, "cert $env: the apns-id is stored");
		my $r = token_requests('apns', $token);
		is(statuses($r), '200', "cert $env: the certificate listener answered 200 once");
		is($r->[0]{auth} // '', 'cert', "cert $env: it came to the client-certificate listener");
		is($r->[0]{env} // '', $env, "cert $env: in the $env environment");
		ok(!exists $r->[0]{headers}{authorization}, "cert $env: without an authorization header");
		is($r->[0]{headers}{'apns-topic'}, 'com.novu.test', "cert $env: apns-topic is the applicationId");
		is($r->[0]{certificate}{subject}{UID} // '', 'com.novu.test', "cert $env: the client certificate was presented");
	}
}

# ===========================================================================
# 9. Two correctly configured APNs token-auth integrations of one team (one .p8
#    key, e.g. two apps): neither may be hit by a configuration error
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	$node->safe_psql('postgres', sprintf(<<'SQL', $p8, $mocks->{urls}{apnsSandbox}));
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', $p8$%s$p8$, 'apiKey', 'ABC123DEFG',
    'projectName', 'TEAM123456', 'applicationId', 'com.novu.test', 'secure', false, 'endpoint', '%s'), 'apns-mock-2');
SQL
	my ($t1, $t2) = (hex_token('two-apns-1'), hex_token('two-apns-2'));
	identify('two-1', [ 'apns', 'apns-mock', [$t1] ], [ 'apns', 'apns-mock-2', [$t2] ]);
	trigger('tx-two-1', 'two-1');
	ok(wait_done('tx-two-1', 2, 15), 'two APNs integrations: the messages are final');
	my @reqs = (@{ token_requests('apns', $t1) }, @{ token_requests('apns', $t2) });
	is(scalar @reqs, 2, 'two APNs integrations: one request each');
	is(q1(q{SELECT string_agg(integration_identifier || ':' || status || COALESCE(' ' || last_error, ''), ', '
	    ORDER BY integration_identifier) FROM novu.messages WHERE transaction_id = 'tx-two-1'}),
		'apns-mock:sent, apns-mock-2:sent', 'two APNs integrations: both messages are sent');
	is(join(',', map { $_->{response}{status} . ($_->{response}{body} ? " $_->{response}{body}{reason}" : '') } @reqs),
		'200,200', 'two APNs integrations: APNs never saw the provider token change on a connection');
}

# ===========================================================================
# 10. A request curl never sent (nothing listens at the endpoint): retried, and
#     the activity log says the provider cannot have seen that attempt
# ===========================================================================
{
	my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 1)
	  or die "no free port: $!";
	my $port = $sock->sockport;
	close $sock;
	$node->safe_psql('postgres', qq{SELECT novu.create_integration('expo', '{"endpoint": "https://127.0.0.1:$port"}', 'expo-nobody')});
	identify('nobody-1', [ 'expo', 'expo-nobody', ['ExponentPushToken[nobody-1]'] ]);
	trigger('tx-nobody-1', 'nobody-1');
	ok( NovuTest::wait_for($node, q{SELECT EXISTS (SELECT FROM novu.execution_details
	        WHERE transaction_id = 'tx-nobody-1' AND status = 'Pending'
	          AND detail ~ '^Retry 2 scheduled in [0-9.]+ s: Couldn''t connect to server .*; the request was not sent$')}, 20),
		'nobody listening: the attempt is retried, and logged as a request that was not sent');
	like(q1(q{SELECT last_error FROM novu.messages WHERE transaction_id = 'tx-nobody-1'}), qr/; the request was not sent$/,
		'nobody listening: the message\'s last error says so too');
	$node->safe_psql('postgres', q{SELECT novu.delete_integration('expo-nobody')});
}

# ===========================================================================
# 11. A stream the provider refused, never sent again: libcurl resends a
#     refused stream on its own (it was not processed, RFC 9113 8.7), and gives
#     up after five.  That attempt never reached the provider: the activity log
#     says so, so that the provider's count (one request, from the retry) is
#     explained by the attempts recorded (two).  The mock refuses exactly the
#     six streams libcurl sends in one attempt (the request and its five
#     resends), then takes the next: no race with the retry's due time, which
#     is 100-300 ms here.
# ===========================================================================
{
	my $t = hex_token('refused-every-time');
	identify('refused-1', [ 'apns', 'apns-mock', [$t] ]);
	NovuTest::set_tokens($mocks, 'apns', 'refuse:6', $t);
	trigger('tx-refused-1', 'refused-1');
	ok( NovuTest::wait_for($node, q{SELECT EXISTS (SELECT FROM novu.execution_details WHERE transaction_id = 'tx-refused-1'
	        AND status = 'Pending')}, 30),
		'refused stream: the attempt ended and a retry is scheduled');
	ok(wait_done('tx-refused-1', 1, 30), 'refused stream: the message is final');
	like(q1(q{SELECT string_agg(detail, E'\n' ORDER BY id) FROM novu.execution_details
	    WHERE transaction_id = 'tx-refused-1' AND status = 'Pending'}),
		qr/\ARetry 2 scheduled in [0-9.]+ s: .*; the request was refused unprocessed and not sent again\z/,
		'refused stream: the activity log says the provider refused that attempt unprocessed');
	my @reqs = @{ token_requests('apns', $t) };
	my $refused = grep { ($_->{response}{status} // '') eq 'refused' } @reqs;
	is($refused, 6, 'refused stream: libcurl sent it again on its own, five times, then gave up');
	is(q1(q{SELECT status || ' ' || attempts FROM novu.deliveries WHERE transaction_id = 'tx-refused-1'}), 'sent 2',
		'refused stream: sent at the second attempt');
	is(NovuTest::control($mocks, 'GET', '/received?provider=apns')->{$t} // 0, 1,
		'refused stream: the provider received (processed) one request: the second attempt');
}

# ===========================================================================
# 12. A request whose body never left (the provider's SETTINGS give every new
#     stream a send window of 0): its headers went out, its body did not, and
#     the request timed out.  No provider acts on a request it did not get
#     whole: the activity log says that attempt was not sent whole.
# ===========================================================================
{
	# one worker: each has its own connections, and the window closes on those open;
	# the retry 2.5-7.5 s later, when the test has opened the window again
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.request_timeout = '1500ms'; ALTER SYSTEM SET novu.workers = 1;
	    ALTER SYSTEM SET novu.retry_initial_delay = '5s'; SELECT pg_reload_conf();});
	ok( NovuTest::wait_for($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 20)
		  && NovuTest::wait_workers_reloaded($node),
		'window 0: one worker, with the shorter request timeout');
	my ($w, $t) = (hex_token('window-warm'), hex_token('window-stuck'));
	identify('window-1', [ 'apns', 'apns-mock', [$w] ]);
	identify('window-2', [ 'apns', 'apns-mock', [$t] ]);
	trigger('tx-window-1', 'window-1');
	ok(wait_done('tx-window-1', 1, 20), 'window 0: a first message opened the connection');
	cmp_ok(NovuTest::control($mocks, 'POST', '/window?provider=apns&size=0')->{connections}, '>=', 1,
		'window 0: the provider closed the send window of its open connection');
	trigger('tx-window-2', 'window-2');
	ok( NovuTest::wait_for($node, q{SELECT EXISTS (SELECT FROM novu.execution_details WHERE transaction_id = 'tx-window-2'
	        AND status = 'Pending')}, 20),
		'window 0: the attempt timed out and a retry is scheduled');
	NovuTest::control($mocks, 'POST', '/window?provider=apns&size=65535');
	ok(wait_done('tx-window-2', 1, 30), 'window 0: the message is final');
	like(q1(q{SELECT string_agg(detail, E'\n' ORDER BY id) FROM novu.execution_details
	    WHERE transaction_id = 'tx-window-2' AND status = 'Pending'}),
		qr/\ARetry 2 scheduled in [0-9.]+ s: Timeout was reached .*; the request was not sent whole\z/,
		'window 0: the activity log says the request was not sent whole');
	# by path: a request cut short never reached the checks that log its token
	like(statuses([ grep { ($_->{path} // '') eq "/3/device/$t" } @{ NovuTest::requests($mocks, 'apns') } ]), qr/\A(aborted|none),200\z/,
		'window 0: the provider saw the first request cut short (no answer), then the retry');
	is(q1(q{SELECT status || ' ' || attempts FROM novu.deliveries WHERE transaction_id = 'tx-window-2'}), 'sent 2',
		'window 0: sent at the second attempt');
	is(NovuTest::control($mocks, 'GET', '/received?provider=apns')->{$t} // 0, 1,
		'window 0: the provider received one whole request: the second attempt');
	$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.request_timeout; ALTER SYSTEM RESET novu.workers;
	    ALTER SYSTEM RESET novu.retry_initial_delay; SELECT pg_reload_conf();});
}

# ===========================================================================
# 11. The token server's lifetime, whatever it says; APNs background priority
# ===========================================================================
{
	# expires_in past int8 (1e19) raised "bigint out of range" in the worker,
	# which dropped its whole batch and did so again at every claim
	NovuTest::reset_mocks($mocks, forget_oauth => 1);
	NovuTest::control($mocks, 'POST', '/config', { oauth => { tokenLifetime => 1e19 }, fcm => { unauthNext => 1 } });
	identify('life-1', [ 'fcm', 'fcm-mock', ['fcm-life-1'] ]);
	identify('life-2', [ 'apns', 'apns-mock', [ hex_token('life-2') ] ]);
	$node->safe_psql('postgres', q{BEGIN;
		SELECT novu.trigger('outcomes', '"life-1"', '{}', '{}', 'tx-life-1');
		SELECT novu.trigger('outcomes', '"life-2"', '{}', '{}', 'tx-life-2');
		COMMIT;});
	ok(wait_done('tx-life-1', 1, 20) && wait_done('tx-life-2', 1, 20), 'lifetime 1e19: both messages are final');
	is(msg('tx-life-1', 'fcm-life-1')->{status}, 'sent', 'lifetime 1e19: the FCM message is sent with the new token');
	is(msg('tx-life-2', hex_token('life-2'))->{status}, 'sent', 'lifetime 1e19: the APNs message beside it is sent');
	unlike(server_log(), qr/bigint out of range/, 'lifetime 1e19: no "bigint out of range" in the log');
	NovuTest::control($mocks, 'POST', '/config', { oauth => { tokenLifetime => 3600 } });

	# a background push goes with apns-priority 5 (Apple answers 10 with BadPriority)
	NovuTest::reset_mocks($mocks);
	my $bg = hex_token('bg-1');
	identify('bg-1', [ 'apns', 'apns-mock', [$bg] ]);
	$node->safe_psql('postgres', q{SELECT novu.trigger('outcomes', '"bg-1"', '{}',
		'{"apns": {"headers": {"apns-push-type": "background"}}}', 'tx-bg-1');
		SELECT novu.trigger('outcomes', '"bg-1"', '{}',
		'{"apns": {"headers": {"apns-push-type": "background", "apns-priority": "10"}}}', 'tx-bg-2');});
	ok(wait_done('tx-bg-1', 1, 20) && wait_done('tx-bg-2', 1, 20), 'background: both messages are final');
	is(msg('tx-bg-1', $bg)->{status}, 'sent', 'background: sent');
	my $r = [ grep { ($_->{path} // '') eq "/3/device/$bg" } @{ NovuTest::requests($mocks, 'apns') } ];
	is(scalar @$r, 1, 'background: one request (the one with priority 10 is not sent)');
	is($r->[0]{headers}{'apns-priority'} // 'none', '5', 'background: apns-priority 5 by default');
	is(msg('tx-bg-2', $bg)->{status}, 'failed', 'background with priority 10: refused before sending');
	like(join("\n", @{ details('tx-bg-2', $bg) }), qr/apns-push-type background needs apns-priority 5, not 10/,
		'background with priority 10: the activity log says why');
}

my $elapsed = time() - $started;
diag(sprintf('002_outcomes ran in %.1f s', $elapsed));
$node->stop;
done_testing();
