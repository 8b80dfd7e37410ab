# 006_secrets.pl: integration secrets at rest (DESIGN section 5), written as
# attacks. The table and pg_dump hold no usable secret; a ciphertext copied to
# another integration does not decrypt (its messages fail with a configuration
# error, nothing is sent); a wrong, missing or group-readable key file is
# refused clearly, without a key byte in any message; rotation re-encrypts and
# FCM and APNs still deliver through the mocks with the new key only; an
# upgrade from 0.3.0 without a key keeps delivering with the clear secrets
# until novu.reencrypt_secrets() moves them out of clear text.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('secrets', $mocks);
NovuTest::create_integrations($node, $mocks);

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { my ($n, $sql) = @_; return NovuTest::query($n, $sql); }

# An APNs device token (64 hex characters) per label.
sub hex_token { my ($label) = @_; return substr(unpack('H*', $label) . ('0' x 64), 0, 64); }

# Write a key file (64 hex characters, mode 0600 unless given); returns its path and hex.
sub write_key
{
	my ($path, $mode, $content) = @_;
	$content //= join('', map { sprintf('%02x', int(rand(256))) } 1 .. 32);
	open(my $fh, '>', $path) or die "cannot write $path: $!";
	print $fh "  $content\n";
	close $fh;
	chmod($mode // 0600, $path);
	return $content;
}

# Run SQL, expecting an error: returns psql's stderr ('' if it succeeded).
sub sql_error
{
	my ($n, $sql) = @_;
	my ($ret, $out, $err) = $n->psql('postgres', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return $ret == 0 ? '' : $err;
}

# Set (or with undef, reset) key settings and reload.
sub set_keys
{
	my ($n, %set) = @_;
	my $sql = '';
	for my $name (sort keys %set)
	{
		$sql .= defined $set{$name} ? "ALTER SYSTEM SET novu.$name = " . lit($set{$name}) . ";\n"
		  : "ALTER SYSTEM RESET novu.$name;\n";
	}
	$n->safe_psql('postgres', $sql . 'SELECT pg_reload_conf();');
	NovuTest::wait_workers_reloaded($n);
}

# Trigger the workflow for a subscriber; wait until its messages are final; returns { provider => "status: error" }.
sub deliver
{
	my ($n, $tx, $sub) = @_;
	q1($n, "SELECT novu.trigger('sec-wf', " . lit(qq{"$sub"}) . ", '{}', '{}', " . lit($tx) . ')');
	NovuTest::wait_for($n, "SELECT count(*) > 0 AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0"
		  . ' FROM novu.messages WHERE transaction_id = ' . lit($tx), 30)
	  or diag("messages of $tx not final");
	my %r = map { my ($p, $s) = split /\|/, $_, 2; ($p => $s) }
	  split /\n/, q1($n, "SELECT provider_id || '|' || status || COALESCE(': ' || last_error, '')"
		  . ' FROM novu.messages WHERE transaction_id = ' . lit($tx) . ' ORDER BY provider_id');
	return \%r;
}

# Requests a mock received for one device token.
sub received
{
	my ($provider, $token) = @_;
	return scalar grep { ($_->{path} // '') =~ /\Q$token\E/ || (($_->{body}{message}{token} // '') eq $token) }
	  @{ NovuTest::requests($mocks, $provider) };
}

# A server log without the entries that quote statement texts (LOG: statement, STATEMENT:).
sub novu_log_entries
{
	my ($text) = @_;
	my @entries;
	for my $line (split /\n/, $text)
	{
		if ($line =~ /^\d{4}-\d\d-\d\d / || !@entries) { push @entries, $line; }
		else { $entries[-1] .= "\n$line"; }
	}
	return join("\n", grep { !/^[^\n]*(LOG:  statement: |STATEMENT:  )/ } @entries);
}

my $sa = NovuTest::decode(slurp_file("$mocks->{dir}/fcm-service-account.json"));
my $p8 = slurp_file("$mocks->{dir}/apns-key.p8");
# lines from the middle of each PEM: what an attacker would find
my $sa_line = (split /\n/, $sa->{private_key})[3];
my $p8_line = (split /\n/, $p8)[2];
my $key1_path = $node->data_dir . '/novu.key';
my $key1 = slurp_file($key1_path);
$key1 =~ s/\s+//g;
my $apns_alice = hex_token('alice');

$node->safe_psql('postgres', qq{
SELECT novu.create_workflow('sec-wf', '[{"type": "push", "title": "Secret {{payload.n}}", "content": "c"}]');
SELECT novu.identify('alice', jsonb_build_object('channels', jsonb_build_array(
    jsonb_build_object('providerId', 'fcm', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-alice'))),
    jsonb_build_object('providerId', 'apns', 'integrationIdentifier', 'apns-mock',
                       'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('$apns_alice'))),
    jsonb_build_object('providerId', 'expo', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('ExponentPushToken[alice]'))))));
});

# ---------------------------------------------------------------------------
# 1. the table and pg_dump hold no usable secret
# ---------------------------------------------------------------------------
my $rows = q1($node, q{SELECT string_agg(identifier || ' ' || credentials::text, E'\n' ORDER BY identifier) FROM novu.integrations});
unlike($rows, qr/PRIVATE KEY/, 'stored rows: no PEM');
ok(index($rows, $sa_line) < 0, 'stored rows: no byte of the FCM service account key');
ok(index($rows, $p8_line) < 0, 'stored rows: no byte of the APNs .p8 key');
like($rows, qr/"private_key": "novu:v1:[0-9a-f]{16}:[A-Za-z0-9_-]+"/, 'stored rows: serviceAccount.private_key is a novu:v1 envelope');
like($rows, qr/"secretKey": "novu:v1:[0-9a-f]{16}:[A-Za-z0-9_-]+"/, 'stored rows: the APNs secretKey is a novu:v1 envelope');
like($rows, qr/"client_email": "\Q$sa->{client_email}\E"/, 'stored rows: the settings that are not secret stay readable');

my ($dump, $dump_err) = run_command([ 'pg_dump', '--data-only', '-t', 'novu.integrations', '-d', $node->connstr('postgres') ]);
like($dump, qr/fcm-mock/, 'pg_dump --data-only -t novu.integrations dumps the integrations');
unlike($dump, qr/PRIVATE KEY/, 'pg_dump: no PEM');
ok(index($dump, $sa_line) < 0 && index($dump, $p8_line) < 0, 'pg_dump: no byte of either private key');
like($dump, qr/novu:v1:/, 'pg_dump: the secrets are there, encrypted');
ok(index($dump, $key1) < 0, 'pg_dump: no key');

# ---------------------------------------------------------------------------
# 2. the worker decrypts: FCM (OAuth with the decrypted RSA key) and APNs (ES256) deliver
# ---------------------------------------------------------------------------
my $r = deliver($node, 'tx-sec-1', 'alice');
is_deeply($r, { apns => 'sent', expo => 'sent', fcm => 'sent' }, 'encrypted integrations deliver');
is(scalar @{ NovuTest::requests($mocks, 'oauth') }, 1, 'FCM signed its OAuth assertion with the decrypted key');

# ---------------------------------------------------------------------------
# 3. a ciphertext copied to another integration does not decrypt there: its messages
#    fail with a configuration error and nothing is sent
# ---------------------------------------------------------------------------
my $other_p8 = `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null`;
my $apns_bob = hex_token('bob');
$node->safe_psql('postgres', sprintf(<<'SQL', $other_p8, $mocks->{urls}{apnsSandbox}, $apns_bob));
SELECT novu.create_integration('apns', jsonb_build_object('secretKey', $p8$%s$p8$, 'apiKey', 'ABC123DEFG',
    'projectName', 'TEAM123456', 'applicationId', 'com.novu.test', 'secure', false, 'endpoint', '%s'), 'apns-swap');
SELECT novu.identify('bob', '{"channels": [{"providerId": "apns", "integrationIdentifier": "apns-swap",
    "credentials": {"deviceTokens": ["%s"]}}]}');
-- the attacker: a table writer (or a doctored backup) moves the working key's ciphertext
-- over; the table's trigger refuses a sealed value the row does not hold, so the
-- writer goes around it (a superuser, or a restore of a doctored dump)
ALTER TABLE novu.integrations DISABLE TRIGGER seal_secrets;
UPDATE novu.integrations SET credentials = jsonb_set(credentials, '{secretKey}',
       (SELECT credentials -> 'secretKey' FROM novu.integrations WHERE identifier = 'apns-mock'))
 WHERE identifier = 'apns-swap';
ALTER TABLE novu.integrations ENABLE TRIGGER seal_secrets;
SQL
NovuTest::reset_mocks($mocks);
my $log_at = -s $node->logfile;
$r = deliver($node, 'tx-sec-swap', 'bob');
like($r->{apns} // '', qr/^failed: .*does not decrypt/, 'copied ciphertext: the message fails, "does not decrypt"');
is(received('apns', $apns_bob), 0, 'copied ciphertext: APNs received nothing for it');
is(q1($node, "SELECT count(*) FROM novu.device_tokens WHERE device_token = '$apns_bob'"), '1',
	'copied ciphertext: a configuration error keeps the token');
my $log = slurp_file($node->logfile, $log_at);
like($log, qr/integration "apns-swap" \(apns\) is misconfigured: cannot decrypt its secrets/, 'the worker logs the configuration error');

# ---------------------------------------------------------------------------
# 4. missing, unreadable, group-readable or malformed key files: clear refusals,
#    never a key byte; integrations without secrets need no key
# ---------------------------------------------------------------------------
set_keys($node, secret_key_file => '');
my $err = sql_error($node, q{SELECT novu.create_integration('expo', '{"apiKey": "expo-PLANTED-token"}', 'expo-nokey')});
like($err, qr/ERROR:  55000: cannot store secret apiKey of integration "expo-nokey": no encryption key is configured/,
	'no key file: storing a secret is refused (55000)');
like($err, qr/HINT:  Set novu.secret_key_file to a file made with openssl rand -hex 32, mode 0600/, 'no key file: the hint says how to make one');
unlike($err, qr/PLANTED/, 'no key file: the refusal does not echo the secret');
is(q1($node, q{SELECT novu.create_integration('expo', '{}', 'expo-plain')}), 'expo-plain',
	'no key file: an integration without a secret is still created');

my $missing = $node->basedir . '/no-such.key';
set_keys($node, secret_key_file => $missing);
$err = sql_error($node, q{SELECT novu.create_integration('expo', '{"apiKey": "x"}', 'expo-nokey')});
like($err, qr/ERROR:  F0000: could not open novu.secret_key_file "\Q$missing\E": No such file or directory/, 'missing key file: refused');
like($err, qr/HINT:  Make it with: umask 077; openssl rand -hex 32/, 'missing key file: the hint says how to make it');

my $key2_path = $node->basedir . '/novu-2.key';
my $key2 = write_key($key2_path, 0644);
set_keys($node, secret_key_file => $key2_path);
$err = sql_error($node, q{SELECT novu.create_integration('expo', '{"apiKey": "x"}', 'expo-nokey')});
like($err, qr/ERROR:  F0000: novu.secret_key_file "\Q$key2_path\E" has group or world access/, 'key file mode 0644: refused');
like($err, qr/DETAIL:  Its permissions are 0644/, 'key file mode 0644: the detail gives the mode');
like($err, qr/HINT:  Run chmod 0600 "\Q$key2_path\E"/, 'key file mode 0644: the hint says chmod 0600');
ok(index($err, $key2) < 0, 'key file mode 0644: the key is not in the message');

my $bad_path = $node->basedir . '/bad.key';
write_key($bad_path, 0600, 'PLANTEDKEYMATERIAL' x 3);
set_keys($node, secret_key_file => $bad_path);
$err = sql_error($node, q{SELECT novu.create_integration('expo', '{"apiKey": "x"}', 'expo-nokey')});
like($err, qr/novu.secret_key_file "\Q$bad_path\E" does not hold a 256-bit key/, 'malformed key file: refused');
unlike($err, qr/PLANTEDKEY/, 'malformed key file: its content is not echoed');
is(q1($node, q{SELECT count(*) FROM novu.integrations WHERE identifier = 'expo-nokey'}), '0', 'nothing was stored by the refused calls');

# ---------------------------------------------------------------------------
# 5. rotation: new key current, old key previous; re-encrypt; the old key goes away;
#    FCM and APNs deliver with the new key alone
# ---------------------------------------------------------------------------
chmod(0600, $key2_path);
set_keys($node, secret_key_file => $key2_path, previous_secret_key_file => $key1_path);
my $kid_before = q1($node, q{SELECT split_part(credentials #>> '{serviceAccount,private_key}', ':', 3) FROM novu.integrations WHERE identifier = 'fcm-mock'});
$err = sql_error($node, 'SELECT novu.reencrypt_secrets()');
like($err, qr/secret secretKey of integration "apns-swap" does not decrypt with key $kid_before/,
	'rotation verifies every secret and names the tampered one');
is(q1($node, q{SELECT count(*) FROM novu.integrations WHERE credentials::text LIKE '%novu:v1:' || } . lit($kid_before) . q{ || '%'}), '3',
	'a failed rotation changes nothing');
q1($node, q{SELECT novu.delete_integration('apns-swap')});
is(q1($node, 'SELECT novu.reencrypt_secrets()'), '2', 'rotation re-encrypts the two integrations with secrets');
my $kids = q1($node, q{SELECT string_agg(DISTINCT x[1], ',') FROM novu.integrations,
    regexp_matches(credentials::text, 'novu:v1:([0-9a-f]{16}):', 'g') x});
isnt($kids, $kid_before, 'every secret is under the new key id');
unlike($kids, qr/,/, 'one key id only');
is(q1($node, 'SELECT novu.reencrypt_secrets()'), '0', 'a second run has nothing to do');
my $admin_err = sql_error($node, q{CREATE ROLE sec_admin IN ROLE novu_admin; SET ROLE sec_admin; SELECT novu.reencrypt_secrets()});
like($admin_err, qr/permission denied for function reencrypt_secrets/, 'novu_admin cannot run the rotation');

set_keys($node, previous_secret_key_file => undef);
unlink $key1_path or die "unlink $key1_path: $!";
$node->restart;
NovuTest::reset_mocks($mocks, forget_oauth => 1);
$r = deliver($node, 'tx-sec-rotated', 'alice');
is_deeply($r, { apns => 'sent', expo => 'sent', fcm => 'sent' }, 'after rotation FCM and APNs deliver with the new key only');
is(received('apns', $apns_alice), 1, 'APNs mock accepted the ES256 token signed with the decrypted .p8');
is(scalar @{ NovuTest::requests($mocks, 'oauth') }, 1, 'FCM got a new OAuth token with the decrypted service account key');

# ---------------------------------------------------------------------------
# 6. the wrong key: nothing decrypts, nothing is sent, the reason names the key ids;
#    the right key back (reload, no restart) and the worker delivers again
# ---------------------------------------------------------------------------
my $key3_path = $node->basedir . '/novu-3.key';
my $key3 = write_key($key3_path);
set_keys($node, secret_key_file => $key3_path);
$node->restart;
NovuTest::reset_mocks($mocks, forget_oauth => 1);
$log_at = -s $node->logfile;
$r = deliver($node, 'tx-sec-wrongkey', 'alice');
like($r->{fcm} // '', qr/^failed: .*encrypted with key [0-9a-f]{16}, which is neither the key of novu.secret_key_file/,
	'wrong key: the FCM message fails naming the key ids');
like($r->{apns} // '', qr/^failed: /, 'wrong key: the APNs message fails');
is($r->{expo}, 'sent', 'wrong key: an integration without secrets still delivers');
is(received('apns', $apns_alice) + received('fcm', 'fcm-alice') + scalar @{ NovuTest::requests($mocks, 'oauth') }, 0,
	'wrong key: neither FCM, its OAuth endpoint nor APNs received anything');
$log = slurp_file($node->logfile, $log_at);
ok(index($log, $key2) < 0 && index($log, $key3) < 0, 'wrong key: no key in the server log');
unlike($log, qr/PRIVATE KEY/, 'wrong key: no PEM in the server log');

set_keys($node, secret_key_file => $key2_path);
$r = deliver($node, 'tx-sec-rightkey', 'alice');
is_deeply($r, { apns => 'sent', expo => 'sent', fcm => 'sent' }, 'the right key back: delivery resumes without a restart');

# no secret in the views either
my $views = q1($node, q{SELECT (SELECT json_agg(m)::text FROM novu.messages m) || (SELECT json_agg(s)::text FROM novu.stat_providers s)
    || (SELECT json_agg(e)::text FROM novu.execution_details e) || novu.list_integrations()::text});
ok(index($views, $sa_line) < 0 && index($views, $p8_line) < 0 && $views !~ /PRIVATE KEY|novu:v1:/,
	'messages, stat_providers, execution_details and list_integrations show no secret');
# (PostgreSQL itself logs statement texts, secrets included, with log_statement = all as
# the test clusters have it, and failing statements with log_min_error_statement: those
# entries are left out; everything novu logs is checked)
$log = novu_log_entries(slurp_file($node->logfile));
ok(index($log, $sa_line) < 0 && index($log, $p8_line) < 0 && index($log, $key2) < 0 && index($log, $key1) < 0,
	'the whole server log (but for statement texts) holds no secret and no key');

$node->stop;

# ---------------------------------------------------------------------------
# 7. upgrade from 0.3.0 without a key: a WARNING, delivery goes on with the clear
#    secrets; once a key is configured, novu.reencrypt_secrets() moves them out
# ---------------------------------------------------------------------------
my $old = NovuTest::new_node('legacy', $mocks, 'novu.secret_key_file' => "''");
$old->safe_psql('postgres', q{DROP EXTENSION novu; CREATE EXTENSION novu VERSION '0.3.0'});
NovuTest::create_integrations($old, $mocks);
$old->safe_psql('postgres', qq{
SELECT novu.create_workflow('sec-wf', '[{"type": "push", "title": "Secret {{payload.n}}", "content": "c"}]');
SELECT novu.identify('alice', jsonb_build_object('channels', jsonb_build_array(
    jsonb_build_object('providerId', 'fcm', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-alice'))),
    jsonb_build_object('providerId', 'apns', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('$apns_alice'))))));
});
like(q1($old, q{SELECT string_agg(credentials::text, ' ') FROM novu.integrations}), qr/PRIVATE KEY/, '0.3.0 stored the keys in clear');
my ($ret, $out, $upgrade_err) = $old->psql('postgres', 'ALTER EXTENSION novu UPDATE');
is($ret, 0, 'ALTER EXTENSION novu UPDATE without a key file succeeds');
like($upgrade_err, qr/WARNING:  the secrets of 2 integrations stay in clear text: novu.secret_key_file is not set/,
	'the upgrade warns that the secrets stay in clear');
like($upgrade_err, qr/HINT:  .*then run SELECT novu.reencrypt_secrets\(\);/, 'the warning says how to move them out');
is(q1($old, q{SELECT extversion = default_version FROM pg_extension, pg_available_extensions WHERE extname = 'novu' AND name = 'novu'}), 't',
	'the extension is at the library\'s version');

NovuTest::reset_mocks($mocks, forget_oauth => 1);
$r = deliver($old, 'tx-legacy-1', 'alice');
is_deeply($r, { apns => 'sent', fcm => 'sent' }, 'clear secrets left by 0.3.0 still deliver');
my $err_legacy = sql_error($old, q{SELECT novu.update_integration('fcm-mock', '{"name": "FCM"}')});
is($err_legacy, '', 'an integration with a clear secret can still be changed without a key');
$err_legacy = sql_error($old, q{SELECT novu.create_integration('expo', '{"apiKey": "x"}')});
like($err_legacy, qr/no encryption key is configured/, '... but no new secret can be stored');

my $legacy_key = $old->data_dir . '/novu.key';
set_keys($old, secret_key_file => $legacy_key);
is(q1($old, 'SELECT novu.reencrypt_secrets()'), '2', 'with a key configured, reencrypt_secrets encrypts the two integrations');
$rows = q1($old, q{SELECT string_agg(credentials::text, ' ') FROM novu.integrations});
unlike($rows, qr/PRIVATE KEY/, 'no PEM is left in clear');
ok(index($rows, $sa_line) < 0 && index($rows, $p8_line) < 0, 'no key byte is left in clear');
($dump) = run_command([ 'pg_dump', '--data-only', '-t', 'novu.integrations', '-d', $old->connstr('postgres') ]);
ok($dump =~ /novu:v1:/ && $dump !~ /PRIVATE KEY/ && index($dump, $sa_line) < 0, 'pg_dump after the move: encrypted only');
$old->restart;
NovuTest::reset_mocks($mocks, forget_oauth => 1);
$r = deliver($old, 'tx-legacy-2', 'alice');
is_deeply($r, { apns => 'sent', fcm => 'sent' }, 'after the move FCM and APNs deliver, decrypting');
$old->stop;

done_testing();
