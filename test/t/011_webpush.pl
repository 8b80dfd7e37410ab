# 011_webpush.pl: Web Push end to end (PROTOCOLS.md 5, RFC 8030/8291/8292) against the
# strict push-service mock, which decrypts every message with the subscription's
# private key and verifies the VAPID JWT (signature, aud, exp, sub, k).
#
# 1. Delivery to subscriptions of four push services (FCM, Mozilla, Apple, WNS paths), over
#    HTTP/2 and over an HTTP/1.1-only service: the browser reads exactly the rendered
#    notification; TTL defaults to 4 weeks; TTL, Urgency and Topic come from overrides;
#    one VAPID JWT per origin, reused.
# 2. Outcomes: 410 and 404 prune the subscription; 429 with Retry-After and a 503 retry;
#    a subscription bound to another VAPID key (403) is a configuration error that keeps
#    it; a notification over one 4096-byte record fails before sending; a 413 fails at once.
# 3. Bad subscriptions are refused naming the field, and nothing is written; a rolled-back
#    trigger sends nothing.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('webpush', $mocks, 'novu.workers' => 2);
my $json = JSON::PP->new->canonical;

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }

# A VAPID key pair (raw, base64url), made by Node's crypto (an implementation of its own).
sub vapid_keys
{
	my $out = `node -e "const e=require('crypto').createECDH('prime256v1');e.generateKeys();const k=e.getPrivateKey();console.log(e.getPublicKey('base64url')+' '+Buffer.concat([Buffer.alloc(32-k.length),k]).toString('base64url'))"`;
	chomp $out;
	return split / /, $out;
}

my ($vapid_pub, $vapid_priv) = vapid_keys();
my ($other_pub) = vapid_keys();
q1("SELECT novu.create_integration('web-push', jsonb_build_object('vapidPublicKey', " . lit($vapid_pub)
	  . ", 'vapidPrivateKey', " . lit($vapid_priv) . ", 'subject', 'mailto:ops\@example.com'), 'wp-mock')");

# Subscriptions from the mock, as a browser's PushSubscription.toJSON() gives them.
sub subscribe
{
	my (%o) = @_;
	my $r = NovuTest::control($mocks, 'POST', '/webpush/subscriptions',
		{ service => $o{service} // 'mozilla', count => $o{count} // 1,
		  applicationServerKey => $o{key} // $vapid_pub, ($o{http1} ? (http1 => JSON::PP::true) : ()) });
	return @{ $r->{subscriptions} };
}

sub identify
{
	my ($sub, @subscriptions) = @_;
	my $profile = { firstName => "Ada-$sub", channels => [ { providerId => 'web-push', integrationIdentifier => 'wp-mock',
		credentials => { deviceTokens => [ map { $json->encode($_) } @subscriptions ] } } ] };
	q1('SELECT novu.identify(' . lit($sub) . ', ' . lit($json->encode($profile)) . '::jsonb)');
}

sub trigger
{
	my ($sub, $tx, $payload, $overrides) = @_;
	q1("SELECT novu.trigger('wp-flow', " . lit($json->encode($sub)) . '::jsonb, ' . lit($json->encode($payload // {}))
		  . '::jsonb, ' . lit($json->encode($overrides // {})) . '::jsonb, ' . lit($tx) . ')');
}

sub wait_final
{
	my ($tx, $count) = @_;
	return NovuTest::wait_for($node, "SELECT count(*) = $count AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0"
		  . ' FROM novu.messages WHERE transaction_id = ' . lit($tx), 30);
}

sub msg
{
	my ($tx, $subscription) = @_;
	return NovuTest::message($node, $tx, $json->encode($subscription));
}

sub wp_requests
{
	my ($endpoint) = @_;
	my $r = NovuTest::control($mocks, 'GET', '/requests?provider=webpush&token=' . uri_escape($endpoint));
	return $r->{requests};
}

sub uri_escape { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord($1))/ge; return $s; }

sub stored { return q1('SELECT count(*) FROM novu.device_tokens WHERE device_token = ' . lit($json->encode($_[0]))); }

q1(q{SELECT novu.create_workflow('wp-flow', '[{"type": "push", "title": "Hello {{subscriber.firstName}}",
      "content": "Order {{payload.order}} shipped", "data": {"url": "/orders/{{payload.order}}"}}]')});

# ---------------------------------------------------------------------------
# 1. Delivery to four services, h2 and http/1.1
# ---------------------------------------------------------------------------
my %subs;
$subs{$_} = [ subscribe(service => $_) ] for qw(fcm mozilla apple wns);
$subs{h1} = [ subscribe(service => 'mozilla', http1 => 1) ];
identify('wp-1', map { @{ $subs{$_} } } sort keys %subs);
trigger('wp-1', 'wp-tx-1', { order => 42 });
ok(wait_final('wp-tx-1', 5), 'five web-push messages reach a final state');
for my $k (sort keys %subs)
{
	my $s = $subs{$k}[0];
	my $m = msg('wp-tx-1', $s);
	is($m->{status}, 'sent', "$k: sent");
	my $r = wp_requests($s->{endpoint});
	is(scalar @$r, 1, "$k: one request");
	next unless @$r;
	my $e = $r->[0];
	is($e->{response}{status}, 201, "$k: the push service answered 201");
	is_deeply($e->{payload}, { title => 'Hello Ada-wp-1', body => 'Order 42 shipped', data => { order => 42, url => '/orders/42' } },
		"$k: the browser decrypts the rendered notification");
	is($e->{ttl}, 2419200, "$k: TTL defaults to 4 weeks");
	is($e->{vapid}{k}, $vapid_pub, "$k: k= is the integration's VAPID public key");
	my ($origin) = $s->{endpoint} =~ m{^(https://[^/]+)};
	is($e->{vapid}{claims}{aud}, $origin, "$k: aud is the endpoint's origin");
	is($e->{vapid}{claims}{sub}, 'mailto:ops@example.com', "$k: sub is the integration's subject");
	cmp_ok($e->{vapid}{claims}{exp} - time(), '<=', 86400, "$k: exp is at most 24 h ahead");
	is($e->{httpVersion}, $k eq 'h1' ? '1.1' : '2', "$k: HTTP/" . ($k eq 'h1' ? '1.1 where the service offers no HTTP/2' : '2'));
	is($e->{headers}{'content-encoding'}, 'aes128gcm', "$k: Content-Encoding aes128gcm");
	is($m->{provider_message_id}, $e->{response}{headers}{location}, "$k: the Location of the push message is its provider message id");
}

# the same origin reuses its JWT; overrides set TTL, Urgency and Topic and merge into the notification
my @more = subscribe(service => 'mozilla', count => 3);
identify('wp-2', @more);
trigger('wp-2', 'wp-tx-2', { order => 7 },
	{ 'web-push' => { headers => { TTL => '60', urgency => 'high', Topic => 'order-7' }, icon => '/i.png',
		actions => [ { action => 'open', title => 'Open' } ] } });
ok(wait_final('wp-tx-2', 3), 'three messages with overrides final');
my %jwts;
for my $s (@more)
{
	is(msg('wp-tx-2', $s)->{status}, 'sent', 'override message sent');
	my ($e) = @{ wp_requests($s->{endpoint}) };
	next unless $e;
	is($e->{ttl}, 60, 'TTL from overrides.headers');
	is($e->{urgency}, 'high', 'Urgency from overrides.headers');
	is($e->{topic}, 'order-7', 'Topic from overrides.headers');
	is($e->{payload}{icon}, '/i.png', 'icon merged into the notification');
	is($e->{payload}{actions}[0]{action}, 'open', 'actions merged into the notification');
	ok(!exists $e->{payload}{headers}, 'headers are not part of the notification');
	my ($t) = $e->{vapid}{header} =~ /t=([^,\s]+)/;
	$jwts{$t}++;
}
my $mozilla_jwts = grep { 1 } keys %jwts;
is($mozilla_jwts, 1, 'one VAPID JWT for one origin, reused');

# ---------------------------------------------------------------------------
# 2. Outcomes
# ---------------------------------------------------------------------------
my ($gone, $expired, $rate, $down, $bound_other, $big, $too_large) =
  (subscribe(), subscribe(service => 'fcm'), subscribe(), subscribe(service => 'apple'),
	subscribe(key => $other_pub), subscribe(), subscribe());
NovuTest::set_tokens($mocks, 'webpush', 'gone', $gone->{endpoint});
NovuTest::set_tokens($mocks, 'webpush', 'expired', $expired->{endpoint});
NovuTest::set_tokens($mocks, 'webpush', 'fail:429:1:1', $rate->{endpoint});
NovuTest::set_tokens($mocks, 'webpush', 'fail:503:0:1', $down->{endpoint});
identify('wp-3', $gone, $expired, $rate, $down, $bound_other);
trigger('wp-3', 'wp-tx-3', { order => 3 });
ok(wait_final('wp-tx-3', 5), 'outcome messages final');

my $m = msg('wp-tx-3', $gone);
is($m->{status}, 'failed', '410: failed');
is(stored($gone), 0, '410: the subscription is removed');
$m = msg('wp-tx-3', $expired);
is($m->{status}, 'failed', '404: failed');
is(stored($expired), 0, '404: the expired subscription is removed');
$m = msg('wp-tx-3', $rate);
is($m->{status} . '/' . $m->{attempts}, 'sent/2', '429 + Retry-After: sent at the second attempt');
my $r = wp_requests($rate->{endpoint});
my $gap = @$r == 2 ? ($r->[1]{time} - $r->[0]{time}) / 1000 : 0;
cmp_ok($gap, '>=', 0.95, sprintf('429: the retry waited %.2f s (Retry-After 1)', $gap));
$m = msg('wp-tx-3', $down);
is($m->{status} . '/' . $m->{attempts}, 'sent/2', '503: sent at the second attempt');
$m = msg('wp-tx-3', $bound_other);
is($m->{status}, 'failed', 'a subscription bound to another VAPID key: failed');
like($m->{last_error} // '', qr/VAPID|403/, 'with the reason');
is(stored($bound_other), 1, 'and the subscription is kept (the configuration is wrong, not the browser)');

# a notification larger than one record fails before any request; a 413 fails at once
identify('wp-4', $big);
trigger('wp-4', 'wp-tx-4', { order => 'x' x 5000 });
ok(wait_final('wp-tx-4', 1), 'oversized notification final');
$m = msg('wp-tx-4', $big);
is($m->{status} . '/' . $m->{attempts}, 'failed/1', 'over 3993 bytes: failed at the first attempt');
is(scalar @{ wp_requests($big->{endpoint}) }, 0, 'over 3993 bytes: nothing was sent');
NovuTest::control($mocks, 'POST', '/config', { webpush => { maxBody => 200 } });
identify('wp-5', $too_large);
trigger('wp-5', 'wp-tx-5', { order => 'y' x 300 });
ok(wait_final('wp-tx-5', 1), '413 message final');
$m = msg('wp-tx-5', $too_large);
is($m->{status} . '/' . $m->{attempts}, 'failed/1', '413: failed without a retry');
is(scalar @{ wp_requests($too_large->{endpoint}) }, 1, '413: one request');
NovuTest::control($mocks, 'POST', '/config', { webpush => { maxBody => 4096 } });

# ---------------------------------------------------------------------------
# 3. Bad subscriptions, rollback
# ---------------------------------------------------------------------------
my ($good) = subscribe();
my %bad = (
	'p256dh off the curve' => { %$good, keys => { %{ $good->{keys} }, p256dh => 'BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } },
	'auth of 15 bytes' => { %$good, keys => { %{ $good->{keys} }, auth => 'AAAAAAAAAAAAAAAAAAAA' } },
	'http endpoint' => { %$good, endpoint => 'http://push.example.com/x' },
	'private endpoint' => { %$good, endpoint => 'https://10.1.2.3/wpush/v2/x' },
);
my %expect = ('p256dh off the curve' => qr/p256dh.*P-256/, 'auth of 15 bytes' => qr/auth.*16 bytes/,
	'http endpoint' => qr/https/, 'private endpoint' => qr/endpoint/);
for my $what (sort keys %bad)
{
	my $profile = { channels => [ { providerId => 'web-push', integrationIdentifier => 'wp-mock',
		credentials => { deviceTokens => [ $json->encode($bad{$what}) ] } } ] };
	my ($ret, $out, $err) = $node->psql('postgres',
		'SELECT novu.identify(' . lit("wp-bad-$what") . ', ' . lit($json->encode($profile)) . '::jsonb)');
	isnt($ret, 0, "$what: refused");
	like($err, $expect{$what}, "$what: the error names the problem");
	is(q1('SELECT count(*) FROM novu.subscribers WHERE subscriber_id = ' . lit("wp-bad-$what")), 0, "$what: nothing written");
}

my ($rolled) = subscribe();
identify('wp-6', $rolled);
$node->safe_psql('postgres', "BEGIN; SELECT novu.trigger('wp-flow', '\"wp-6\"', '{}', '{}', 'wp-tx-rb'); ROLLBACK;");
identify('wp-7', subscribe());
trigger('wp-7', 'wp-tx-7', {});
ok(wait_final('wp-tx-7', 1), 'a later trigger is delivered');
is(scalar @{ wp_requests($rolled->{endpoint}) }, 0, 'the rolled-back trigger sent nothing');

$node->stop;
done_testing();
