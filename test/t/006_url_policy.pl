# 006_url_policy.pl: the outbound URL policy (DESIGN section 5), as attacks.
#
# Every URL the workers call is https only, and the address it resolves to is
# checked when a connection is opened: loopback, private, link-local, ... are
# refused unless novu.allowed_private_networks lists them.  A refused transfer
# fails its message at once as a configuration error of the integration (never
# an endless retry) and never stops another integration.  Redirects are not
# followed.  Text from a provider's answer is stored only as a short, sanitised
# reason.
#
# The cluster starts with novu.allowed_private_networks = '' (nothing private
# allowed); the policy is changed with ALTER SYSTEM + reload between steps, so
# the workers' reload path (and its effect on open connections) is tested too.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('urlpolicy', $mocks, 'novu.allowed_private_networks' => "''");
my $json = JSON::PP->new->canonical;
my %port = %{ $mocks->{ports} };

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }

# Set the policy (ALTER SYSTEM + reload), wait until new sessions see it and the
# workers have re-read it.  Never dies, so that on a build without the setting the
# attacks below still run (and fail one by one).
sub set_policy
{
	my ($value) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', 'ALTER SYSTEM SET novu.allowed_private_networks = ' . lit($value));
	ok($rc == 0, "policy set to '$value'") or diag($err);
	return if $rc != 0;
	$node->reload;
	NovuTest::wait_for($node, 'SELECT current_setting(\'novu.allowed_private_networks\') = ' . lit($value), 20);
	NovuTest::wait_workers_reloaded($node);
}

# Trigger workflow "ping" for some subscribers in one transaction.
sub trigger
{
	my ($tx, @subs) = @_;
	q1("SELECT novu.trigger('ping', " . lit($json->encode(\@subs)) . "::jsonb, '{}', '{}', " . lit($tx) . ')');
}

# The message of a transaction to one device token, as a hash (empty if none).
sub msg { return NovuTest::message($node, @_); }

# Wait until the message of a transaction to a token is final (sent/failed) or has been retried.
sub wait_settled
{
	my ($tx, $token, $timeout) = @_;
	return NovuTest::wait_for($node, 'SELECT EXISTS (SELECT FROM novu.messages WHERE transaction_id = ' . lit($tx)
		  . ' AND device_token = ' . lit($token) . " AND (status IN ('sent', 'failed') OR attempts > 1))", $timeout // 30);
}

# Requests a mock received, FCM ones matched on the body's message.token.
sub fcm_requests_for
{
	my ($token) = @_;
	return scalar grep { ($_->{body}{message}{token} // '') eq $token } @{ NovuTest::requests($mocks, 'fcm') };
}

my $policy_reason = qr/address (127\.0\.0\.1|::1) \(loopback\) refused by the outbound URL policy \(novu\.allowed_private_networks\)/;

# ---------------------------------------------------------------------------
# 1. nothing private allowed: a literal loopback endpoint is refused when stored
# ---------------------------------------------------------------------------
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT novu.create_integration('expo', jsonb_build_object('endpoint', 'https://127.0.0.1:$port{expo}'), 'expo-early')");
	isnt($rc, 0, 'stored: a literal loopback endpoint is refused when nothing private is allowed');
	like($err, qr/endpoint .*127\.0\.0\.1.*outbound URL policy/, 'stored: the error names the field and the policy');
}

# ---------------------------------------------------------------------------
# 2. the mocks' network allowed: integrations, subscribers, one delivery
# ---------------------------------------------------------------------------
set_policy('127.0.0.0/8');
NovuTest::create_integrations($node, $mocks);    # fcm-mock, apns-mock, expo-mock on 127.0.0.1
$node->safe_psql('postgres', <<"SQL");
SELECT novu.create_integration('expo', '{"endpoint": "https://localhost:$port{expo}"}', 'expo-localhost');
SELECT novu.create_integration('expo', '{"endpoint": "https://127.0.0.2:$port{expo}"}', 'expo-dot2');
SELECT novu.create_workflow('ping', '[{"type": "push", "title": "Ping", "content": "pong"}]');
SELECT novu.identify('u-ok', '{"channels": [{"providerId": "fcm", "integrationIdentifier": "fcm-mock",
    "credentials": {"deviceTokens": ["fcm-ok"]}}]}');
SELECT novu.identify('u-local', '{"channels": [{"providerId": "expo", "integrationIdentifier": "expo-localhost",
    "credentials": {"deviceTokens": ["ExponentPushToken[local]"]}}]}');
SELECT novu.identify('u-dot2', '{"channels": [{"providerId": "expo", "integrationIdentifier": "expo-dot2",
    "credentials": {"deviceTokens": ["ExponentPushToken[dot2]"]}}]}');
SELECT novu.identify('u-redir', '{"channels": [{"providerId": "fcm", "integrationIdentifier": "fcm-mock",
    "credentials": {"deviceTokens": ["fcm-redir"]}}]}');
SELECT novu.identify('u-long', '{"channels": [{"providerId": "apns", "integrationIdentifier": "apns-mock",
    "credentials": {"deviceTokens": ["ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"]}}]}');
SELECT novu.identify('u-long-fcm', '{"channels": [{"providerId": "fcm", "integrationIdentifier": "fcm-mock",
    "credentials": {"deviceTokens": ["fcm-long"]}}]}');
SQL

# URLs stored by the application role: a browser's push endpoint and a chat webhook, on a
# host name (stored: only literal addresses are refused then; connecting: see section 3)
my ($vapid_pub, $vapid_priv) = split / /,
  `node -e "const e=require('crypto').createECDH('prime256v1');e.generateKeys();const k=e.getPrivateKey();console.log(e.getPublicKey('base64url')+' '+Buffer.concat([Buffer.alloc(32-k.length),k]).toString('base64url'))"`;
chomp $vapid_priv;
my $wp_local = NovuTest::control($mocks, 'POST', '/webpush/subscriptions',
	{ service => 'mozilla', host => 'localhost', applicationServerKey => $vapid_pub })->{subscriptions}[0];
my $chat_port = $port{chat};
my $discord_local = "https://localhost:$chat_port/api/webhooks/112233445566778899/local";
q1("SELECT novu.create_integration('web-push', jsonb_build_object('vapidPublicKey', '$vapid_pub', 'vapidPrivateKey', '$vapid_priv',
    'subject', 'mailto:ops\@example.com'), 'wp-policy') IS NOT NULL");
q1(q{SELECT novu.create_integration('discord', '{}', 'discord-policy') IS NOT NULL});
q1(q{SELECT novu.create_workflow('ping-chat', '[{"type": "chat", "content": "pong"}]') IS NOT NULL});
q1("SELECT novu.identify('u-wp-local', jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'web-push', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array(" . lit(JSON::PP->new->canonical->encode($wp_local)) . "))))))");
q1("SELECT novu.identify('u-chat-local', '{}') IS NOT NULL");
q1("SELECT novu.set_credentials('u-chat-local', 'discord', jsonb_build_object('webhookUrl', " . lit($discord_local) . ")) IS NOT NULL");

trigger('tx-open', 'u-ok');
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'tx-open'}),
	'allowed: FCM delivers (an OAuth token is cached and a connection is open)');

# ---------------------------------------------------------------------------
# 3. nothing private allowed: a host name resolving to loopback, and an open
#    connection, are refused when a connection is opened
# ---------------------------------------------------------------------------
set_policy('');
NovuTest::reset_mocks($mocks);
trigger('tx-dns', 'u-local');
ok(wait_settled('tx-dns', 'ExponentPushToken[local]'), 'localhost: the message settles');
my $m = msg('tx-dns', 'ExponentPushToken[local]');
is($m->{status}, 'failed', 'localhost: failed at once (a configuration error, not retried)');
is($m->{attempts}, 1, 'localhost: one attempt');
like($m->{last_error} // '', $policy_reason, 'localhost: the reason names the refused address and the setting');
is(scalar @{ NovuTest::requests($mocks, 'expo') }, 0, 'localhost: the mock received nothing');
is(q1(q{SELECT count(*) FROM novu.execution_details e JOIN novu.messages m ON m.id = e.message_id
    WHERE m.transaction_id = 'tx-dns' AND e.detail LIKE 'Integration configuration error: address %'}),
	'1', 'localhost: the activity log says "Integration configuration error"');
like(q1(q{SELECT last_error FROM novu.stat_providers WHERE integration_identifier = 'expo-localhost'}),
	$policy_reason, 'localhost: stat_providers shows the reason');

# the same for a web-push endpoint and a chat webhook URL the application stored
trigger('tx-wp-local', 'u-wp-local');
$node->safe_psql('postgres', q{SELECT novu.trigger('ping-chat', '"u-chat-local"', '{}', '{}', 'tx-chat-local')});
for my $c ([ 'tx-wp-local', JSON::PP->new->canonical->encode($wp_local), 'web-push endpoint', 'webpush' ],
	[ 'tx-chat-local', $discord_local, 'discord webhook URL', 'chat' ])
{
	my ($tx, $target, $what, $mock) = @$c;
	ok(wait_settled($tx, $target), "$what on localhost: the message settles");
	my $mm = msg($tx, $target);
	is($mm->{status} . '/' . $mm->{attempts}, 'failed/1', "$what on localhost: failed at once");
	like($mm->{last_error} // '', $policy_reason, "$what on localhost: refused by the policy when connecting");
	is(scalar @{ NovuTest::requests($mocks, $mock) }, 0, "$what on localhost: the mock received nothing");
}

trigger('tx-reuse', 'u-ok');
ok(wait_settled('tx-reuse', 'fcm-ok'), 'open connection: the message settles');
$m = msg('tx-reuse', 'fcm-ok');
is($m->{status}, 'failed', 'open connection: a connection opened before the policy changed is not reused');
like($m->{last_error} // '', $policy_reason, 'open connection: refused by the policy');
is(fcm_requests_for('fcm-ok'), 0, 'open connection: FCM received nothing');

# ---------------------------------------------------------------------------
# 4. only 127.0.0.1 allowed: 127.0.0.2 is refused by the policy (not a
#    connection error), while another integration keeps delivering
# ---------------------------------------------------------------------------
set_policy('127.0.0.1/32');
NovuTest::reset_mocks($mocks);
trigger('tx-dot2', 'u-dot2', 'u-ok');
ok(wait_settled('tx-dot2', 'ExponentPushToken[dot2]'), '127.0.0.2: the message settles');
$m = msg('tx-dot2', 'ExponentPushToken[dot2]');
is($m->{status}, 'failed', '127.0.0.2: failed at once');
is($m->{attempts}, 1, '127.0.0.2: not retried');
like($m->{last_error} // '',
	qr/^address 127\.0\.0\.2 \(loopback\) refused by the outbound URL policy \(novu\.allowed_private_networks\)$/,
	'127.0.0.2: refused by the policy, not a connection error');
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'tx-dot2' AND device_token = 'fcm-ok'}),
	'127.0.0.2: the other integration of the same trigger delivers');
is(scalar @{ NovuTest::requests($mocks, 'expo') }, 0, '127.0.0.2: the Expo mock received nothing');
my @warnings = grep { /refused by the outbound URL policy/ } split /\n/, slurp_file($node->logfile);
ok(scalar(@warnings) >= 1, 'the refusal is logged as a WARNING for the integration');

# ---------------------------------------------------------------------------
# 5. a redirect is not followed
# ---------------------------------------------------------------------------
NovuTest::set_tokens($mocks, 'fcm', 'redirect:307:1', 'fcm-redir');
trigger('tx-redir', 'u-redir');
ok(wait_settled('tx-redir', 'fcm-redir'), 'redirect: the message settles');
$m = msg('tx-redir', 'fcm-redir');
is(fcm_requests_for('fcm-redir'), 1, 'redirect: one request, the 307 is not followed');
is($m->{status}, 'failed', 'redirect: the message fails (the endpoint is misconfigured)');
like($m->{last_error} // '', qr/^HTTP 307 redirect not followed/, 'redirect: the reason says so');

# ---------------------------------------------------------------------------
# 6. an unknown server's long error text is not stored verbatim
# ---------------------------------------------------------------------------
my $secret = 'TAIL-SECRET-' . ('s' x 16);
my $long = "Internal proxy failure\n\e[31mstack: " . ('at internal.service.local:8443 ' x 30) . $secret;
NovuTest::control($mocks, 'POST', '/tokens', { provider => 'apns',
		token => 'ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12',
		state => { state => 'fail', status => 400, reason => $long, count => 1 } });
NovuTest::set_tokens($mocks, 'fcm', "fail:500::1:$long", 'fcm-long');
trigger('tx-long', 'u-long', 'u-long-fcm');
ok(wait_settled('tx-long', 'ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12'), 'long body: APNs message settles');
ok(wait_settled('tx-long', 'fcm-long'), 'long body: FCM message settles');
$m = msg('tx-long', 'ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12');
is($m->{status}, 'failed', 'long body: the APNs message failed');
like($m->{last_error} // '', qr/^Internal proxy failure \S*stack: at internal/, 'long body: the start of the reason is kept');
ok(length($m->{last_error} // '') <= 200, 'long body: last_error is at most 200 bytes (' . length($m->{last_error} // '') . ')');
unlike($m->{last_error} // '', qr/[\x00-\x1f\x7f]/, 'long body: no control characters in last_error');
my $stored = q1(q{SELECT string_agg(coalesce(m.last_error, '') || ' ' || coalesce(e.detail, ''), ' ')
    FROM novu.messages m LEFT JOIN novu.execution_details e ON e.message_id = m.id WHERE m.transaction_id = 'tx-long'})
  . q1(q{SELECT string_agg(coalesce(last_error, ''), ' ') FROM novu.stat_providers});
unlike($stored, qr/TAIL-SECRET/, 'long body: the end of the text is in no message, activity row or statistic');
unlike($stored, qr/\e/, 'long body: no escape sequence is stored');
unlike(slurp_file($node->logfile), qr/TAIL-SECRET/, 'long body: nor in the server log');

done_testing();
