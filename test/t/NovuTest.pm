# NovuTest.pm: shared helpers of the end-to-end TAP tests.
#
#   my $mocks = NovuTest::start_mocks();            # test CA, keys and the strict mock providers
#   my $node  = NovuTest::new_node('main', $mocks);  # a cluster with novu preloaded, extension created
#   NovuTest::create_integrations($node, $mocks);   # fcm-mock, apns-mock (sandbox), expo-mock
#   NovuTest::wait_for($node, $sql);                 # poll until the query returns 't'
#   NovuTest::requests($mocks, 'fcm')                # what a mock received
#
# The clusters are PostgreSQL::Test::Cluster nodes (run as an unprivileged user).
package NovuTest;

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $ROOT = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
my $http = HTTP::Tiny->new(timeout => 30);
my $json = JSON::PP->new->canonical->allow_nonref;

# Make the certificates and start the mock providers; returns a hash describing them.
# start_mocks(config => {...}) starts them with that configuration (server.js
# --config: settings read at startup only, such as fcm.maxConcurrentStreams).
sub start_mocks
{
	my (%opt) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $base = $ENV{NOVU_MOCK_PORT_BASE} // (20000 + ($$ % 600) * 20);
	chmod 0755, $dir;
	system('sh', "$ROOT/test/certs/make-certs.sh", $dir, $base + 1) == 0
	  or die "make-certs.sh failed";
	my @config;
	if ($opt{config})
	{
		open(my $fh, '>', "$dir/mock-config.json") or die "cannot write $dir/mock-config.json: $!";
		print $fh encode_json({ config => $opt{config} });
		close $fh;
		@config = ('--config', "$dir/mock-config.json");
	}
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ 'node', "$ROOT/test/mocks/server.js", '--certs', $dir, '--port-base', $base, @config ],
		\$in, \$out, \$err, IPC::Run::timeout(30));
	eval { $h->pump until $out =~ /\n/; 1 } or die "mock providers did not start (port base $base): $@ $err";
	my $ready = decode_json((split /\n/, $out)[0]);
	die "mocks not ready: $err" unless $ready->{ready};
	my $mocks = {
		handle => $h,
		dir => $dir,
		ports => $ready->{ports},
		urls => $ready->{urls},
		control => "http://127.0.0.1:$ready->{ports}{control}",
	};
	# reap the mocks when the test ends
	push @NovuTest::all_mocks, $mocks;
	return $mocks;
}

END
{
	for my $m (@NovuTest::all_mocks)
	{
		eval { $m->{handle}->signal('TERM'); $m->{handle}->finish; };
	}
}

# GET/POST/DELETE on the mocks' control API; returns the decoded JSON.
sub control
{
	my ($mocks, $method, $path, $body) = @_;
	my $res = $http->request($method, "$mocks->{control}$path",
		{ headers => { 'content-type' => 'application/json' },
		  (defined $body ? (content => encode_json($body)) : ()) });
	die "control $method $path: $res->{status} $res->{content}" unless $res->{success};
	return decode_json($res->{content});
}

# Requests a mock received (provider: fcm, apns, expo, oauth), oldest first.
sub requests
{
	my ($mocks, $provider) = @_;
	return control($mocks, 'GET', "/requests?provider=$provider")->{requests};
}

# Requests each token had accepted by a provider: { token => count }.
sub accepted
{
	my ($mocks, $provider) = @_;
	return control($mocks, 'GET', "/accepted?provider=$provider");
}

# Script the behaviour of device tokens: set_tokens($mocks, 'fcm', 'dead', @tokens).
sub set_tokens
{
	my ($mocks, $provider, $state, @tokens) = @_;
	control($mocks, 'POST', '/tokens', { provider => $provider, tokens => \@tokens, state => $state });
}

# Forget requests, token states and config between test steps (issued OAuth
# access tokens too with forget_oauth => 1).
sub reset_mocks
{
	my ($mocks, %opt) = @_;
	control($mocks, 'POST', '/reset', { oauthTokens => ($opt{forget_oauth} ? JSON::PP::true : JSON::PP::false) });
}

# A cluster with novu preloaded and the extension created in "postgres".
sub new_node
{
	my ($name, $mocks, %conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	# the key encrypting integration secrets, readable by the server only
	my $key = $node->data_dir . '/novu.key';
	{
		my $old = umask(077);
		open(my $fh, '>', $key) or die "cannot write $key: $!";
		print $fh unpack('H*', join('', map { chr(int(rand(256))) } 1 .. 32)), "\n";
		close $fh;
		umask($old);
	}
	my %settings = (
		shared_preload_libraries => "'novu'",
		'novu.database_name' => "'postgres'",
		'novu.ca_file' => "'$mocks->{dir}/ca.pem'",
		'novu.poll_interval' => 1000,
		'novu.retry_initial_delay' => 200,
		'novu.retry_max_delay' => 2000,
		'novu.request_timeout' => 3000,
		'novu.expo_receipt_delay' => 500,
		max_worker_processes => 16,
		'novu.secret_key_file' => "'$key'",
		# the mocks listen on loopback, which the URL policy refuses by default
		'novu.allowed_private_networks' => "'127.0.0.1/32'",
		%conf);
	$node->append_conf('postgresql.conf', join('', map { "$_ = $settings{$_}\n" } sort keys %settings));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION novu');
	return $node;
}

# Integrations pointing at the mocks: fcm-mock, apns-mock (sandbox host), expo-mock.
sub create_integrations
{
	my ($node, $mocks) = @_;
	my $sa = slurp_file("$mocks->{dir}/fcm-service-account.json");
	my $p8 = slurp_file("$mocks->{dir}/apns-key.p8");
	$node->safe_psql('postgres', sprintf(<<'SQL', q($) . $sa . q($), $mocks->{urls}{fcm}, $p8, $mocks->{urls}{apnsSandbox}, $mocks->{urls}{expo}));
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', $%s$::jsonb, 'endpoint', '%s'), 'fcm-mock');
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', $$%s$$, 'apiKey', 'ABC123DEFG',
    'projectName', 'TEAM123456', 'applicationId', 'com.novu.test', 'secure', false, 'endpoint', '%s'), 'apns-mock');
SELECT novu.create_integration('expo', jsonb_build_object('endpoint', '%s'), 'expo-mock');
SQL
}

# Poll until the query returns 't' (default timeout 60 s); returns true if it did.
sub wait_for
{
	my ($node, $sql, $timeout) = @_;
	$timeout //= 60;
	my $deadline = time() + $timeout;
	while (time() < $deadline)
	{
		my $r = $node->safe_psql('postgres', $sql);
		return 1 if $r eq 't';
		usleep(50_000);
	}
	diag("timed out waiting for: $sql");
	return 0;
}

# Poll until the query returns 't', tolerating a server that is down or
# restarting (a crash restart); bounded by $timeout seconds (default 60).
sub poll_until
{
	my ($node, $sql, $timeout, $db) = @_;
	my $deadline = time() + ($timeout // 60);
	while (time() < $deadline)
	{
		my ($ret, $out) = $node->psql($db // 'postgres', $sql);
		return 1 if defined $ret && $ret == 0 && $out eq 't';
		usleep(50_000);
	}
	diag("timed out waiting for: $sql");
	return 0;
}

# Wait until every delivery worker has re-read the configuration after a
# reload: a worker re-reads it at the top of each turn of its loop, so once
# each has begun two turns since now (its pg_stat_activity state changed), it
# has.  Returns true if they did within the timeout (default 20 s).
sub wait_workers_reloaded
{
	my ($node, $timeout) = @_;
	for (1 .. 2)
	{
		my $t0 = $node->safe_psql('postgres', 'SELECT pg_catalog.now()');
		return 0 unless wait_for($node, "SELECT count(*) > 0 AND bool_and(state_change > '$t0'::timestamptz)
		    FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'", $timeout // 20);
	}
	return 1;
}

# After a reload that lengthens novu.poll_interval: wait until a claim the old
# (1 s) interval scheduled has run.  The workers take the new value at once, on
# SIGHUP; an idle one shows no activity until its next poll, so
# wait_workers_reloaded would wait out the new interval.
sub wait_old_poll_spent
{
	my ($node) = @_;
	return wait_for($node, q{SELECT pg_conf_load_time() < now() - interval '1500 milliseconds'}, 10);
}

# A query's single value.
sub query
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

# The message of a transaction to one device token, as a hash (empty if none).
sub message
{
	my ($node, $tx, $token) = @_;
	my $lit = sub { my $v = shift; $v =~ s/'/''/g; "'$v'" };
	my $r = query($node, 'SELECT row_to_json(m) FROM novu.messages m WHERE transaction_id = ' . $lit->($tx)
		  . ' AND device_token = ' . $lit->($token) . ' ORDER BY id LIMIT 1');
	return $r eq '' ? {} : decode($r);
}

# Decode JSON text (for values read with query()).
sub decode { return $json->decode($_[0]); }

# Expo send requests only (the log also holds getReceipts calls).
sub expo_sends
{
	my ($mocks) = @_;
	return [ grep { $_->{path} =~ m{/push/send$} } @{ requests($mocks, 'expo') } ];
}

1;
