#!/bin/bash
# test/mocks/selftest.sh: exercises every behaviour of the mock providers with curl and small
# node clients. Prints "N passed, M failed" last; exits non-zero on any failure.
#   VERBOSE=1 test/mocks/selftest.sh     also print each passing check
set -u

M=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$M/../.." && pwd)
T=$(mktemp -d /tmp/novu-mocks-selftest.XXXXXX)
CERTS=$T/certs
B=$T/body H=$T/headers
PASS=0 FAILN=0 SERVER_PID=
START=$(date +%s)

cleanup() {
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

pass() { PASS=$((PASS + 1)); [ -n "${VERBOSE:-}" ] && echo "ok   - $1"; return 0; }
fail() { FAILN=$((FAILN + 1)); echo "FAIL - $1: $2"; return 0; }
# eq NAME EXPECTED ACTUAL
eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected [$2] got [$3]"; fi; }
# ok NAME SHELL-CONDITION...
ok() { local n=$1; shift; if "$@"; then pass "$n"; else fail "$n" "condition failed: $*"; fi; }
# body_has NAME FIXED-STRING   (in the last response body)
body_has() { if grep -qF -- "$2" "$B"; then pass "$1"; else fail "$1" "body lacks [$2]; body: $(head -c 400 "$B")"; fi; }
body_lacks() { if grep -qF -- "$2" "$B"; then fail "$1" "body has [$2]: $(head -c 400 "$B")"; else pass "$1"; fi; }
body_eq() { eq "$1" "$2" "$(cat "$B")"; }
hdr_has() { if grep -qiF -- "$2" "$H"; then pass "$1"; else fail "$1" "headers lack [$2]: $(tr -d '\r' < "$H" | tr '\n' '|')"; fi; }
# status_body NAME STATUS BODY-EXACT
status_body() { eq "$1 (status)" "$2" "$CODE"; body_eq "$1 (body)" "$3"; }
# apns_reason NAME STATUS REASON
apns_reason() { status_body "$1" "$2" "{\"reason\":\"$3\"}"; }
# JSON helpers: jv FILE 'js expression over j'   /   js 'expr' JSON-STRING
jv() { node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const v=eval(process.argv[2]);console.log(typeof v==="object"?JSON.stringify(v):String(v))' "$1" "$2"; }
js() { node -e 'const j=JSON.parse(process.argv[2]);const v=eval(process.argv[1]);console.log(typeof v==="object"?JSON.stringify(v):String(v))' "$1" "$2"; }

# call URL [curl args...]: sets CODE TIME HVER RC; body in $B, headers in $H
call() {
    local u=$1; shift
    local out
    RC=0
    out=$(curl -s -o "$B" -D "$H" -w '%{http_code} %{time_total} %{http_version}' --cacert "$CERTS/ca.pem" --max-time 10 "$@" "$u") || RC=$?
    read -r CODE TIME HVER <<< "$out"
    [ -f "$B" ] || : > "$B"
}
ctl() { local m=$1 p=$2; shift 2; curl -s -X "$m" "$CTL$p" -H 'content-type: application/json' "$@"; }
tok() { local r; r=$(ctl POST /tokens -d "{\"provider\":\"$1\",\"token\":\"$2\",\"state\":\"$3\"}")
        case $r in *'"ok":true'*) ;; *) fail "POST /tokens $*" "$r" ;; esac; }
cfg() { local r; r=$(ctl POST /config -d "$1"); case $r in '{"error":'*) fail "POST /config $1" "$r" ;; esac; }
reset() { ctl POST /reset > /dev/null; }
lastlog() { ctl GET "/requests?provider=$1&limit=1${3:-}" > "$T/log.json"; jv "$T/log.json" "j.requests[0].$2"; }

# =============================================================================================
# certificates
# =============================================================================================
out=$("$ROOT/test/certs/make-certs.sh" "$CERTS" 2>&1); rc=$?
eq "make-certs exits 0" 0 "$rc"
eq "make-certs prints nothing" "" "$out"
for f in ca.pem ca.key server.pem server.key fcm-service-account.json apns-key.p8 apns.json \
         apns-ca.pem apns-ca.key apns-cert.pem apns-cert.key apns-cert-sandbox.pem apns-cert-sandbox.key; do
    ok "make-certs created $f" test -s "$CERTS/$f"
done
sum1=$(cat "$CERTS"/*.pem "$CERTS"/*.key "$CERTS"/*.p8 | md5sum)
t0=$(date +%s%N)
out=$(FCM_TOKEN_URI=https://127.0.0.1:1/token "$ROOT/test/certs/make-certs.sh" "$CERTS" 2>&1)
t1=$(date +%s%N)
eq "make-certs rerun prints nothing" "" "$out"
eq "make-certs rerun keeps keys (idempotent)" "$sum1" "$(cat "$CERTS"/*.pem "$CERTS"/*.key "$CERTS"/*.p8 | md5sum)"
ok "make-certs rerun < 2 s" test $(((t1 - t0) / 1000000)) -lt 2000
eq "FCM_TOKEN_URI sets token_uri" "https://127.0.0.1:1/token" "$(jv "$CERTS/fcm-service-account.json" j.token_uri)"
eq "server cert verifies against ca.pem" "$CERTS/server.pem: OK" "$(openssl verify -CAfile "$CERTS/ca.pem" "$CERTS/server.pem" 2>&1)"
eq "apns client cert verifies against apns-ca.pem" "$CERTS/apns-cert.pem: OK" "$(openssl verify -CAfile "$CERTS/apns-ca.pem" "$CERTS/apns-cert.pem" 2>&1)"
ok "apns client cert does not verify against ca.pem" bash -c "! openssl verify -CAfile '$CERTS/ca.pem' '$CERTS/apns-cert.pem' >/dev/null 2>&1"
ok "server cert has localhost + 127.0.0.1" bash -c "openssl x509 -in '$CERTS/server.pem' -noout -ext subjectAltName | grep -q 'DNS:localhost, IP Address:127.0.0.1'"
ok "apns-key.p8 is PKCS#8 EC P-256" bash -c "head -1 '$CERTS/apns-key.p8' | grep -q 'BEGIN PRIVATE KEY' && openssl pkey -in '$CERTS/apns-key.p8' -noout -text | grep -q prime256v1"
eq "service account fields" 'service_account novu-test sender@novu-test.iam.gserviceaccount.com 40 true' \
   "$(jv "$CERTS/fcm-service-account.json" '[j.type,j.project_id,j.client_email,j.private_key_id.length,j.private_key.startsWith("-----BEGIN PRIVATE KEY-----\n")].join(" ")')"
ok "service account key is RSA-2048" bash -c "openssl pkey -in '$CERTS/fcm-key.pem' -noout -text | grep -q '2048 bit'"

# =============================================================================================
# start the server on free ports, then point token_uri at its OAuth port
# =============================================================================================
node "$M/server.js" --certs "$CERTS" --port-base 0 > "$T/ready" 2> "$T/server.err" &
SERVER_PID=$!
for _ in $(seq 1 100); do [ -s "$T/ready" ] && break; sleep 0.05; done
READY=$(head -1 "$T/ready")
eq "server prints the ready line" true "$(js j.ready "$READY" 2>/dev/null)"
P() { js "j.ports.$1" "$READY"; }
CTL=http://127.0.0.1:$(P control)
OAUTH=https://localhost:$(P oauth)
FCM=https://localhost:$(P fcm)
AP=$(P apns) AS=$(P apnsSandbox) ACP=$(P apnsCert) ACS=$(P apnsCertSandbox)
EXPO=https://localhost:$(P expo)
FCM_TOKEN_URI=https://127.0.0.1:$(P oauth)/token "$ROOT/test/certs/make-certs.sh" "$CERTS"
ok "all listeners on 127.0.0.1" test "$(js 'Object.values(j.urls).every(u=>u.includes("//127.0.0.1:"))' "$READY")" = true

eq "control /health" true "$(ctl GET /health | node -pe 'JSON.parse(require("fs").readFileSync(0)).ready')"
eq "control rejects a bad token state" 400 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$CTL/tokens" -d '{"provider":"fcm","token":"x","state":"zombie"}')"
eq "control rejects an unknown config key" 400 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$CTL/config" -d '{"fcm":{"unauthNxt":1}}')"
eq "control rejects an unknown provider" 400 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$CTL/tokens" -d '{"provider":"gcm","token":"x","state":"dead"}')"

# =============================================================================================
# OAuth token endpoint
# =============================================================================================
SA=$CERTS/fcm-service-account.json
GT='grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer'
oauth() { call "$OAUTH/token" --data-urlencode "$GT" --data-urlencode "assertion=$1" "${@:2}"; }
ASSERT=$(node "$M/jwt.js" oauth --sa "$SA")
oauth "$ASSERT"
eq "oauth: valid assertion -> 200" 200 "$CODE"
AT=$(jv "$B" j.access_token)
eq "oauth: token response shape" "Bearer 3600 true" "$(jv "$B" '[j.token_type,j.expires_in,j.access_token.length>20].join(" ")')"
eq "oauth: served over h2" 2 "$HVER"
oauth "$ASSERT" --http1.1
eq "oauth: http/1.1 works too" "200 1.1" "$CODE $HVER"
eq "oauth: log shows ALPN/TLS" "http/1.1 TLSv1.3" "$(lastlog oauth alpn) $(lastlog oauth tls)"
call "$OAUTH/token" -H 'content-type: application/json' -d "{\"assertion\":\"$ASSERT\"}"
eq "oauth: JSON body -> 400 invalid_request" "400 invalid_request" "$CODE $(jv "$B" j.error)"
call "$OAUTH/token" --data-urlencode "grant_type=client_credentials" --data-urlencode "assertion=$ASSERT"
eq "oauth: wrong grant_type -> unsupported_grant_type" "400 unsupported_grant_type" "$CODE $(jv "$B" j.error)"
call "$OAUTH/token" --data-urlencode "$GT"
eq "oauth: missing assertion -> invalid_request" "400 invalid_request" "$CODE $(jv "$B" j.error)"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --tamper)"
status_body "oauth: bad signature" 400 '{"error":"invalid_grant","error_description":"Invalid JWT Signature."}'
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --kid 0000000000000000000000000000000000000000)"
eq "oauth: unknown kid -> invalid_grant" "400 invalid_grant" "$CODE $(jv "$B" j.error)"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --no-kid)"
eq "oauth: assertion without kid accepted" 200 "$CODE"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --alg RS384)"
eq "oauth: alg != RS256 -> invalid_grant" "400 invalid_grant" "$CODE $(jv "$B" j.error)"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --aud https://oauth2.googleapis.com/token)"
eq "oauth: aud != token_uri -> invalid_grant" "400 invalid_grant" "$CODE $(jv "$B" j.error)"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --iss other@novu-test.iam.gserviceaccount.com)"
eq "oauth: wrong iss -> invalid_grant" "400 invalid_grant" "$CODE $(jv "$B" j.error)"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --scope https://www.googleapis.com/auth/userinfo.email)"
status_body "oauth: wrong scope" 400 '{"error":"invalid_scope","error_description":"Invalid OAuth scope or ID token audience provided."}'
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --scope 'https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/cloud-platform')"
eq "oauth: cloud-platform scope accepted" 200 "$CODE"
NOW=$(date +%s)
TIMEMSG='{"error":"invalid_grant","error_description":"Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."}'
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --iat "$NOW" --exp $((NOW + 3601)))"
status_body "oauth: exp-iat > 3600" 400 "$TIMEMSG"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --iat $((NOW - 4000)) --exp $((NOW - 400)))"
status_body "oauth: expired assertion" 400 "$TIMEMSG"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --iat $((NOW + 600)) --exp $((NOW + 1200)))"
status_body "oauth: iat in the future" 400 "$TIMEMSG"
oauth "$(node "$M/jwt.js" oauth --sa "$SA" --iat $((NOW + 30)) --exp $((NOW + 1800)))"
eq "oauth: iat within skew accepted" 200 "$CODE"
call "$OAUTH/other" -d x=1
eq "oauth: unknown path -> 404" 404 "$CODE"
cfg '{"oauth":{"proxy502Next":1}}'
oauth "$ASSERT"
eq "oauth: proxy502Next -> non-JSON 502" "502 text/html" "$CODE $(grep -i '^content-type' "$H" | tr -d '\r' | awk '{print $2}')"
oauth "$ASSERT"
eq "oauth: after the proxy fault -> 200" 200 "$CODE"
tok oauth sender@novu-test.iam.gserviceaccount.com 'fail:503:7:1'
oauth "$ASSERT"
eq "oauth: scripted fail:503:7:1" "503 internal_failure" "$CODE $(jv "$B" j.error)"
hdr_has "oauth: scripted Retry-After" "retry-after: 7"
oauth "$ASSERT"
eq "oauth: then ok again" 200 "$CODE"
tok oauth sender@novu-test.iam.gserviceaccount.com dead
oauth "$ASSERT"
eq "oauth: dead service account -> invalid_grant" "400 invalid_grant" "$CODE $(jv "$B" j.error)"
reset

# =============================================================================================
# FCM HTTP v1
# =============================================================================================
FURL=$FCM/v1/projects/novu-test/messages:send
fcm() { call "$FURL" -H "authorization: Bearer $AT" -H 'content-type: application/json' --data-binary "$1" "${@:2}"; }
msg() { echo "{\"message\":{\"token\":\"$1\",\"notification\":{\"title\":\"t\",\"body\":\"b\"},\"data\":{\"k\":\"v\"}}}"; }
fcm "$(msg tok-good-1)"
eq "fcm: valid send -> 200 over h2" "200 2" "$CODE $HVER"
ok "fcm: success name" bash -c "grep -qE '^\{\"name\":\"projects/novu-test/messages/[^\"]+\"\}$' '$B'"
eq "fcm: log has method/path/version/alpn/tls/conn/stream" "POST /v1/projects/novu-test/messages:send 2 h2 TLSv1.3 true true" \
   "$(lastlog fcm 'method') $(lastlog fcm 'path') $(lastlog fcm 'httpVersion') $(lastlog fcm 'alpn') $(lastlog fcm 'tls') $(lastlog fcm 'connId>0') $(lastlog fcm 'streamId>0')"
eq "fcm: log has parsed body, bearer header, response" "tok-good-1 Bearer 200 true" \
   "$(lastlog fcm 'body.message.token') $(lastlog fcm 'headers.authorization.split(" ")[0]') $(lastlog fcm 'response.status') $(lastlog fcm 'time>1e12')"
fcm "$(msg tok-good-2)" --http1.1
eq "fcm: http/1.1 via ALPN works" "200 1.1 http/1.1" "$CODE $HVER $(lastlog fcm alpn)"
eq "fcm: accepted counter per token" '{"tok-good-1":1,"tok-good-2":1}' "$(ctl GET '/accepted?provider=fcm')"
call "$FURL" -H 'content-type: application/json' --data-binary "$(msg a)"
eq "fcm: no bearer -> 401 UNAUTHENTICATED" "401 UNAUTHENTICATED" "$CODE $(jv "$B" j.error.status)"
body_lacks "fcm: 401 has no FcmError" "FcmError"
call "$FURL" -H 'authorization: Bearer ya29.not-issued' -H 'content-type: application/json' --data-binary "$(msg a)"
eq "fcm: unknown access token -> 401" 401 "$CODE"
call "$FCM/v1/projects/other-proj/messages:send" -H "authorization: Bearer $AT" -H 'content-type: application/json' --data-binary "$(msg a)"
eq "fcm: other project -> 403 PERMISSION_DENIED" "403 PERMISSION_DENIED" "$CODE $(jv "$B" j.error.status)"
body_lacks "fcm: 403 project has no FcmError" "FcmError"
call "$FURL" -H "authorization: Bearer $AT"
status_body "fcm: GET" 404 '{"error":{"code":404,"message":"Method not found.","status":"NOT_FOUND"}}'
call "$FCM/v1/projects/novu-test/messages" -H "authorization: Bearer $AT" -d '{}'
eq "fcm: unknown path -> 404 HTML" "404 text/html;" "$CODE $(grep -i '^content-type' "$H" | tr -d '\r' | awk '{print $2}')"
call "$FURL" -H "authorization: Bearer $AT" --data-binary "$(msg a)"
eq "fcm: form content-type -> 400" 400 "$CODE"
fcm '{"message":{"token":"a",}}'
eq "fcm: invalid JSON -> 400 INVALID_ARGUMENT" "400 INVALID_ARGUMENT" "$CODE $(jv "$B" j.error.status)"
fcm '{"message":{"token":"a"},"to":"x"}'
eq "fcm: unknown top-level field" "400 Invalid JSON payload received. Unknown name \"to\": Cannot find field." "$CODE $(jv "$B" j.error.message)"
fcm '{"message":{"token":"a","android":{"bogus":1}}}'
eq "fcm: unknown nested field" "Invalid JSON payload received. Unknown name \"bogus\" at 'message.android': Cannot find field." "$(jv "$B" j.error.message)"
eq "fcm: unknown field -> BadRequest violation, no FcmError" "google.rpc.BadRequest 1" "$(jv "$B" 'j.error.details.map(d=>d["@type"].split("/")[1]).join(",")+" "+j.error.details[0].fieldViolations.length')"
fcm '{"validate_only":false,"message":{"token":"snake-camel","fcm_options":{"analytics_label":"l"},"android":{"collapse_key":"c","restrictedPackageName":"p","direct_boot_ok":true,"ttl":"3.5s","priority":"HIGH","notification":{"click_action":"a","channelId":"ch","notification_priority":"PRIORITY_HIGH","color":"#ff0000","eventTime":"2024-01-01T00:00:00Z","vibrate_timings":["1s","0.5s"]}},"apns":{"headers":{"apns-priority":"10"},"payload":{"aps":{"alert":"x"}},"fcmOptions":{"image":"https://x/y.png"}},"webpush":{"headers":{"TTL":"15"},"fcm_options":{"link":"https://x"}}}}'
eq "fcm: snake_case and camelCase field names accepted" 200 "$CODE"
fcm '{"message":{"token":"a","data":{"n":12}}}'
status_body "fcm: non-string data value" 400 '{"error":{"code":400,"message":"Invalid value at '"'"'message.data[0].value'"'"' (TYPE_STRING), 12","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.data[0].value","description":"Invalid value at '"'"'message.data[0].value'"'"' (TYPE_STRING), 12"}]}]}}'
fcm '{"message":{"token":"a","data":{"b":"x","2":true}}}'
eq "fcm: data index follows source order" "Invalid value at 'message.data[1].value' (TYPE_STRING), true" "$(jv "$B" j.error.message)"
fcm '{"message":{"token":"a","apns":{"headers":{"apns-priority":10}}}}'
eq "fcm: apns.headers values must be strings" "Invalid value at 'message.apns.headers[0].value' (TYPE_STRING), 10" "$(jv "$B" j.error.message)"
fcm '{"message":{"token":"a","data":[]}}'
eq "fcm: list for a non-repeated field" "Invalid JSON payload received. Unknown name \"data\" at 'message': Proto field is not repeating, cannot start list." "$(jv "$B" j.error.message)"
fcm '{"message":{"token":"a","android":{"priority":"URGENT"}}}'
eq "fcm: bad enum" "400 Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), \"URGENT\"" "$CODE $(jv "$B" j.error.message)"
fcm '{"message":{"token":"a","android":{"ttl":"10"}}}'
eq "fcm: bad ttl format" "400 Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), \"10\"" "$CODE $(jv "$B" j.error.message)"
fcm '{"message":{"token":"a","android":{"ttl":"2419201s"}}}'
eq "fcm: ttl > 4 weeks -> 400 + FcmError" "400 INVALID_ARGUMENT" "$CODE $(jv "$B" j.error.details[0].errorCode)"
fcm '{"message":{"token":"a","apns":{"payload":"x"}}}'
eq "fcm: apns.payload must be an object" 400 "$CODE"
fcm '{"message":{"token":"a","topic":"news"}}'
eq "fcm: two targets -> 400 INVALID_ARGUMENT + FcmError" "400 INVALID_ARGUMENT" "$CODE $(jv "$B" j.error.details[0].errorCode)"
fcm '{"message":{"notification":{"title":"x"}}}'
eq "fcm: no target -> 400" 400 "$CODE"
fcm '{"message":{"topic":"/topics/news"}}'
eq "fcm: /topics/ prefix -> 400" 400 "$CODE"
fcm '{"message":{"topic":"news","data":{"a":"b"}}}'
eq "fcm: topic target -> 200" 200 "$CODE"
fcm '{"message":{"token":"a","data":{"from":"x"}}}'
eq "fcm: reserved data key from -> 400" "400 INVALID_ARGUMENT" "$CODE $(jv "$B" j.error.details[0].errorCode)"
fcm '{"message":{"token":"a","data":{"google.x":"y"}}}'
eq "fcm: reserved prefix google. -> 400" 400 "$CODE"
BIG=$(head -c 4100 /dev/zero | tr '\0' x)
fcm "{\"message\":{\"token\":\"a\",\"data\":{\"k\":\"$BIG\"}}}"
eq "fcm: payload > 4096 bytes -> 400" "400 INVALID_ARGUMENT" "$CODE $(jv "$B" j.error.details[0].errorCode)"
fcm "{\"message\":{\"token\":\"a\",\"data\":{\"k\":\"${BIG:0:4000}\"}}}"
eq "fcm: payload 4001 bytes -> 200" 200 "$CODE"
fcm '{"validate_only":true,"message":{"token":"vo-token"}}'
status_body "fcm: validate_only" 200 '{"name":"projects/novu-test/messages/fake_message_id"}'
eq "fcm: validate_only not counted" '' "$(ctl GET '/accepted?provider=fcm' | node -pe 'JSON.parse(require("fs").readFileSync(0))["vo-token"]||""')"
fcm "$(msg 'has space')"
status_body "fcm: malformed token" 400 '{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}]}}'
tok fcm t-dead dead; fcm "$(msg t-dead)"
status_body "fcm: dead token" 404 '{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}'
tok fcm t-bad bad; fcm "$(msg t-bad)"
eq "fcm: bad token" "400 The registration token is not a valid FCM registration token INVALID_ARGUMENT" "$CODE $(jv "$B" j.error.message) $(jv "$B" j.error.details[0].errorCode)"
tok fcm t-mm mismatch; fcm "$(msg t-mm)"
status_body "fcm: mismatch token" 403 '{"error":{"code":403,"message":"SenderId mismatch","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"SENDER_ID_MISMATCH"}]}}'
tok fcm t-ad apns-dead; fcm "$(msg t-ad)"
eq "fcm: iOS dead token (ApnsError 410)" "400 APNs device token is disabled. 410 Unregistered" "$CODE $(jv "$B" j.error.message) $(jv "$B" j.error.details[1].statusCode) $(jv "$B" j.error.details[1].reason)"
tok fcm t-aa apns-auth; fcm "$(msg t-aa)"
eq "fcm: THIRD_PARTY_AUTH_ERROR" "401 THIRD_PARTY_AUTH_ERROR" "$CODE $(jv "$B" j.error.details[0].errorCode)"
tok fcm t-503 'fail:503:2:1'; fcm "$(msg t-503)"
eq "fcm: fail:503:2:1 -> 503 UNAVAILABLE" "503 UNAVAILABLE" "$CODE $(jv "$B" j.error.details[0].errorCode)"
hdr_has "fcm: Retry-After 2" "retry-after: 2"
fcm "$(msg t-503)"
eq "fcm: ... then ok" 200 "$CODE"
tok fcm t-429 'fail:429:60'; fcm "$(msg t-429)"; c1=$CODE; fcm "$(msg t-429)"
eq "fcm: fail:429:60 -> 429 QUOTA_EXCEEDED, sticky" "429 429 QUOTA_EXCEEDED RESOURCE_EXHAUSTED" "$c1 $CODE $(jv "$B" j.error.details[0].errorCode) $(jv "$B" j.error.status)"
tok fcm t-500 'fail:500::1'; fcm "$(msg t-500)"
eq "fcm: fail:500 -> INTERNAL" "500 INTERNAL" "$CODE $(jv "$B" j.error.status)"
tok fcm t-502 'fail:502::1'; fcm "$(msg t-502)"
eq "fcm: fail:502 -> HTML" "502 text/html" "$CODE $(grep -i '^content-type' "$H" | tr -d '\r' | awk '{print $2}')"
tok fcm t-redir 'redirect:307:1'; fcm "$(msg t-redir)"
eq "fcm: redirect:307 -> 307, Location = the same URL" "307 $FURL" "$CODE $(grep -i '^location' "$H" | tr -d '\r' | awk '{print $2}')"
fcm "$(msg t-redir)"
eq "fcm: redirect:307:1 then ok" 200 "$CODE"
tok fcm t-slow 'slow:400:1'; fcm "$(msg t-slow)"
ok "fcm: slow:400 delays >= 0.4 s" node -e "process.exit($TIME>=0.4&&$CODE===200?0:1)"
tok fcm t-reset 'reset:2'; fcm "$(msg t-reset)"; rc1=$RC; fcm "$(msg t-reset)" --http1.1
eq "fcm: reset -> RST_STREAM on h2 (curl 92), socket closed on http/1.1" "92 true" "$rc1 $([ "$RC" -ne 0 ] && echo true)"
eq "fcm: reset logged" reset "$(lastlog fcm response.status)"
tok fcm t-drop 'drop:1'; fcm "$(msg t-drop)"
ok "fcm: drop closes the connection" test "$RC" -ne 0
fcm "$(msg t-drop)"
eq "fcm: after drop:1 -> 200" 200 "$CODE"
cfg '{"fcm":{"unauthNext":1}}'
fcm "$(msg t-re)"; c1=$CODE; fcm "$(msg t-re)"
eq "fcm: unauthNext=1 -> 401 then 200 with the same token" "401 200" "$c1 $CODE"
cfg '{"fcm":{"proxy502Next":1}}'
fcm "$(msg t-px)"
eq "fcm: proxy502Next -> non-JSON 502" "502" "$CODE"
body_has "fcm: proxy body is HTML" "<html>"
cfg '{"oauth":{"tokenLifetime":60}}'
oauth "$ASSERT"; SHORT=$(jv "$B" j.access_token)
eq "oauth: configurable lifetime" 60 "$(jv "$B" j.expires_in)"
cfg '{"clockOffset":61}'
call "$FURL" -H "authorization: Bearer $SHORT" -H 'content-type: application/json' --data-binary "$(msg t-exp)"
eq "fcm: expired access token -> 401" 401 "$CODE"
cfg '{"clockOffset":0}'
call "$FURL" -H "authorization: Bearer $SHORT" -H 'content-type: application/json' --data-binary "$(msg t-exp)"
eq "fcm: same token before expiry -> 200" 200 "$CODE"
reset

# =============================================================================================
# APNs (token auth)
# =============================================================================================
P8=$CERTS/apns-key.p8
AJWT=$(node "$M/jwt.js" apns --key "$P8")
DT=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
# apns PORT PATH-TOKEN [curl args]  - a well-formed request; extra args add headers/body
apns_raw() { local p=$1 t=$2; shift 2; call "https://localhost:$p/3/device/$t" --http2 "$@"; }
apns() { local p=$1 t=$2; shift 2
    apns_raw "$p" "$t" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' -H 'apns-push-type: alert' \
        -H 'apns-priority: 10' -H 'content-type: application/json' "$@"; }
AB='{"aps":{"alert":{"title":"t","body":"b"}}}'
apns "$AP" "$DT" --data-binary "$AB" -H 'apns-id: 123e4567-e89b-12d3-a456-426614174000'
eq "apns: valid -> 200 over h2" "200 2" "$CODE $HVER"
eq "apns: success body is empty" "" "$(cat "$B")"
hdr_has "apns: apns-id echoed" "apns-id: 123e4567-e89b-12d3-a456-426614174000"
apns "$AP" "$DT" --data-binary "$AB"
ok "apns: apns-id generated (lowercase UUID)" grep -qE '^apns-id: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$H"
apns "$AS" "$DT" --data-binary "$AB"
eq "apns sandbox: valid -> 200" 200 "$CODE"
hdr_has "apns sandbox: apns-unique-id" "apns-unique-id:"
eq "apns: log has env/auth/conn/stream/jwt" "sandbox token true true ES256" "$(lastlog apns env) $(lastlog apns auth) $(lastlog apns 'connId>0') $(lastlog apns 'streamId>0') $(lastlog apns jwt.header.alg)"
call "https://localhost:$AP/3/device/$DT" --http1.1 -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
ok "apns: HTTP/1.1 client fails (no ALPN h2 fallback)" test "$RC" -ne 0 -a "$CODE" = 000
eq "apns: refused TLS handshake logged (events=1)" tls-error "$(lastlog apns event '&events=1')"
ok "apns: ... but not listed as a request" test "$(lastlog apns event)" != tls-error
R=$(node "$M/selftest-h2.js" noalpn "$AP" "$CERTS/ca.pem")
eq "apns: TLS without ALPN is closed" true "$(js j.closed "$R")"
eq "apns: no-ALPN connection logged as refused" refused "$(lastlog apns event '&events=1')"
call "https://localhost:$AP/3/device/$DT" --http2 --tls-max 1.1 -H "authorization: bearer $AJWT" --data-binary "$AB"
ok "apns: TLS 1.1 refused" test "$RC" -ne 0
call "https://localhost:$AP/3/device/$DT" --http2 --tlsv1.2 --tls-max 1.2 -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
eq "apns: TLS 1.2 accepted" 200 "$CODE"
R=$(node "$M/selftest-h2.js" settings "$AP" "$CERTS/ca.pem" "$AJWT")
eq "apns: MAX_CONCURRENT_STREAMS 1 until a valid JWT, then raised" "1 1000 200" "$(js '[j.initial,j.after,j.status].join(" ")' "$R")"
R=$(node "$M/selftest-h2.js" concurrent "$AP" "$CERTS/ca.pem" "$AJWT" 3)
eq "apns: streams beyond the limit are refused (REFUSED_STREAM)" '["200","rst:7","rst:7"]' "$(js 'j.results.map(String)' "$R")"
R=$(node "$M/selftest-h2.js" certsettings "$ACP" "$CERTS/ca.pem" "$CERTS/apns-cert.pem" "$CERTS/apns-cert.key")
eq "apns cert: connection starts with 1000 streams" 1000 "$(js j.initial "$R")"

# provider token checks
apns_raw "$AP" "$DT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: no authorization" 403 MissingProviderToken
apns_raw "$AP" "$DT" -H "authorization: Basic $AJWT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: non-bearer scheme" 403 InvalidProviderToken
apns_raw "$AP" "$DT" -H "authorization: bearer ${AJWT%.*}" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: 2-part JWT" 403 InvalidProviderToken
apns_raw "$AP" "$DT" -H "authorization: bearer $(node "$M/jwt.js" apns --key "$P8" --der)" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: DER-encoded ES256 signature rejected" 403 InvalidProviderToken
eq "apns: DER rejection explained in the log" "signature is $(lastlog apns jwt.signatureBytes) bytes, not raw 64-byte R||S" "$(lastlog apns authError)"
apns_raw "$AP" "$DT" -H "authorization: bearer $(node "$M/jwt.js" apns --key "$P8" --tamper)" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: bad signature" 403 InvalidProviderToken
apns_raw "$AP" "$DT" -H "authorization: bearer $(node "$M/jwt.js" apns --key "$P8" --kid ZZZ123DEFG)" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: unknown kid" 403 InvalidProviderToken
apns_raw "$AP" "$DT" -H "authorization: bearer $(node "$M/jwt.js" apns --key "$P8" --iss OTHER12345)" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: wrong team (iss)" 403 InvalidProviderToken
apns_raw "$AP" "$DT" -H "authorization: bearer $(node "$M/jwt.js" apns --key "$P8" --alg ES384)" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: alg != ES256" 403 InvalidProviderToken
apns_raw "$AP" "$DT" -H "authorization: bearer $(node "$M/jwt.js" apns --key "$P8" --age 3700)" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: iat older than 1 h" 403 ExpiredProviderToken
apns_raw "$AP" "$DT" -H "authorization: bearer $(node "$M/jwt.js" apns --key "$P8" --iat $(($(date +%s) + 600)))" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: iat in the future" 403 InvalidProviderToken
J2=$(node "$M/jwt.js" apns --key "$P8" --age 5)
R=$(node "$M/selftest-h2.js" churn "$AP" "$CERTS/ca.pem" "$AJWT" "$J2")
eq "apns: new JWT on the same connection < 20 min -> 429 TooManyProviderTokenUpdates; other connection ok" \
   '200 429 {"reason":"TooManyProviderTokenUpdates"} 200 200' "$(js '[j.first,j.second,j.secondBody,j.again,j.newConnection].join(" ")' "$R")"

# method / path / headers
apns "$AP" "$DT" -X GET
apns_reason "apns: GET" 405 MethodNotAllowed
apns_raw "$AP" "" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: no device token" 400 MissingDeviceToken
call "https://localhost:$AP/3/devices/$DT" --http2 -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: bad path" 404 BadPath
apns "$AP" "xyz123" --data-binary "$AB"
apns_reason "apns: non-hex token" 400 BadDeviceToken
apns "$AP" "abc" --data-binary "$AB"
apns_reason "apns: odd-length token" 400 BadDeviceToken
apns "$AP" "$DT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns: duplicate header" 400 DuplicateHeaders
apns "$AP" "$DT" -H 'apns-id: not-a-uuid' --data-binary "$AB"
apns_reason "apns: bad apns-id" 400 BadMessageId
apns "$AP" "$DT" -H 'apns-expiration: tomorrow' --data-binary "$AB"
apns_reason "apns: bad apns-expiration" 400 BadExpirationDate
apns "$AP" "$DT" -H 'apns-expiration: 0' --data-binary "$AB"
eq "apns: apns-expiration 0 accepted" 200 "$CODE"
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' -H 'apns-priority: 7' --data-binary "$AB"
apns_reason "apns: bad apns-priority" 400 BadPriority
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' -H 'apns-push-type: sms' --data-binary "$AB"
apns_reason "apns: bad apns-push-type" 400 InvalidPushType
apns "$AP" "$DT" -H "apns-collapse-id: $(head -c 65 /dev/zero | tr '\0' c)" --data-binary "$AB"
apns_reason "apns: collapse id > 64 bytes" 400 BadCollapseId
apns "$AP" "$DT" -H "apns-collapse-id: $(head -c 64 /dev/zero | tr '\0' c)" --data-binary "$AB"
eq "apns: collapse id of 64 bytes accepted" 200 "$CODE"
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" --data-binary "$AB"
apns_reason "apns: no apns-topic (token auth)" 400 MissingTopic
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.other.app' --data-binary "$AB"
apns_reason "apns: topic of another bundle" 400 BadTopic
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' -H 'apns-push-type: voip' --data-binary "$AB"
apns_reason "apns: voip push without .voip topic" 400 BadTopic
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test.voip' -H 'apns-push-type: voip' --data-binary "$AB"
eq "apns: voip push to .voip topic" 200 "$CODE"
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' -H 'apns-push-type: background' --data-binary '{"aps":{"content-available":1}}'
apns_reason "apns: background without priority 5" 400 BadPriority
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' -H 'apns-push-type: background' -H 'apns-priority: 5' --data-binary '{"aps":{"content-available":1}}'
eq "apns: background with priority 5" 200 "$CODE"

# payload
apns "$AP" "$DT" -X POST
apns_reason "apns: empty body" 400 PayloadEmpty
PAD=$(head -c 4100 /dev/zero | tr '\0' x)
apns "$AP" "$DT" --data-binary "{\"aps\":{},\"p\":\"${PAD:0:4080}\"}"
apns_reason "apns: 4097-byte payload" 413 PayloadTooLarge
apns "$AP" "$DT" --data-binary "{\"aps\":{},\"p\":\"${PAD:0:4079}\"}"
eq "apns: 4096-byte payload accepted" 200 "$CODE"
apns_raw "$AP" "$DT" -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test.voip' -H 'apns-push-type: voip' --data-binary "{\"aps\":{},\"p\":\"${PAD:0:4900}\"}"
eq "apns: voip allows 5120 bytes" 200 "$CODE"
apns "$AP" "$DT" --data-binary 'not json'
apns_reason "apns: non-JSON payload" 400 BadPayload
apns "$AP" "$DT" --data-binary '{"alert":"no aps"}'
apns_reason "apns: payload without aps" 400 BadPayload
apns "$AP" "$DT" --data-binary "$AB" -H 'content-encoding: gzip'
apns_reason "apns: compressed payload" 400 BadPayload

# token registry
tok apns "$DT" dead
apns "$AP" "$DT" --data-binary "$AB"
eq "apns: dead token -> 410 Unregistered + timestamp (ms)" "410 Unregistered true" "$CODE $(jv "$B" j.reason) $(jv "$B" 'Number.isInteger(j.timestamp)&&j.timestamp>1e12')"
tok apns "$DT" expired; apns "$AP" "$DT" --data-binary "$AB"
eq "apns: expired token -> 410 ExpiredToken" "410 ExpiredToken" "$CODE $(jv "$B" j.reason)"
tok apns "$DT" bad; apns "$AP" "$DT" --data-binary "$AB"
apns_reason "apns: bad token" 400 BadDeviceToken
tok apns "$DT" mismatch; apns "$AP" "$DT" --data-binary "$AB"
apns_reason "apns: token of another topic" 400 DeviceTokenNotForTopic
tok apns "$DT" sandbox-only; apns "$AP" "$DT" --data-binary "$AB"
apns_reason "apns: sandbox token on production (wrong secure flag)" 400 BadDeviceToken
apns "$AS" "$DT" --data-binary "$AB"
eq "apns: sandbox token on sandbox" 200 "$CODE"
tok apns "$DT" 'fail:429:5:1'; apns "$AP" "$DT" --data-binary "$AB"
apns_reason "apns: fail:429 -> TooManyRequests" 429 TooManyRequests
hdr_has "apns: scripted retry-after" "retry-after: 5"
apns "$AP" "$DT" --data-binary "$AB"
eq "apns: ... then ok" 200 "$CODE"
tok apns "$DT" 'fail:503::1'; apns "$AP" "$DT" --data-binary "$AB"
apns_reason "apns: fail:503 -> ServiceUnavailable" 503 ServiceUnavailable
tok apns "$DT" 'fail:500::1'; apns "$AP" "$DT" --data-binary "$AB"
apns_reason "apns: fail:500 -> InternalServerError" 500 InternalServerError
eq "control: object-form token state" true "$(ctl POST /tokens -d "{\"provider\":\"apns\",\"token\":\"$DT\",\"state\":{\"state\":\"fail\",\"status\":400,\"reason\":\"IdleTimeout\",\"count\":1}}" | node -pe 'JSON.parse(require("fs").readFileSync(0)).ok')"
apns "$AP" "$DT" --data-binary "$AB"
apns_reason "apns: object state with custom reason" 400 IdleTimeout
tok apns "$DT" 'redirect:302:1'; apns "$AP" "$DT" --data-binary "$AB"
eq "apns: redirect:302 -> 302 with Location /3/device/<token>" "302 true" "$CODE $(grep -qi "^location: https://.*/3/device/$DT" "$H" && echo true)"
tok apns "$DT" 'slow:300:1'; apns "$AP" "$DT" --data-binary "$AB"
ok "apns: slow:300 delays >= 0.3 s" node -e "process.exit($TIME>=0.3&&$CODE===200?0:1)"
tok apns "$DT" 'reset:1'; apns "$AP" "$DT" --data-binary "$AB"
eq "apns: reset -> RST_STREAM (curl 92)" 92 "$RC"
tok apns "$DT" 'drop:1'; apns "$AP" "$DT" --data-binary "$AB"
ok "apns: drop closes the connection" test "$RC" -ne 0
cfg '{"apns":{"shutdownNext":1}}'
R=$(node "$M/selftest-h2.js" goaway "$AP" "$CERTS/ca.pem" "$AJWT")
eq "apns: shutdownNext -> 503 Shutdown + GOAWAY with reason" '503 {"reason":"Shutdown"} {"reason":"Shutdown"}' "$(js '[j.status,j.body,j.goaway&&j.goaway.data].join(" ")' "$R")"

# certificate auth
acert() { local p=$1; shift; call "https://localhost:$p/3/device/$DT" --http2 --cert "$CERTS/apns-cert.pem" --key "$CERTS/apns-cert.key" "$@"; }
acert "$ACP" -H 'apns-topic: com.novu.test' -H 'apns-push-type: alert' --data-binary "$AB"
eq "apns cert: client certificate, no JWT -> 200" 200 "$CODE"
eq "apns cert: topics read from the certificate" '["com.novu.test","com.novu.test.voip","com.novu.test.complication"]' "$(lastlog apns certificate.topics)"
acert "$ACS" -H 'apns-topic: com.novu.test' --data-binary "$AB"
eq "apns cert: universal certificate on sandbox" 200 "$CODE"
acert "$ACP" --data-binary "$AB"
apns_reason "apns cert: multi-topic certificate needs apns-topic" 400 MissingTopic
acert "$ACP" -H 'apns-topic: com.other.app' --data-binary "$AB"
apns_reason "apns cert: topic not in certificate" 400 BadTopic
acert "$ACP" -H 'apns-topic: com.novu.test.voip' -H 'apns-push-type: voip' --data-binary "$AB"
eq "apns cert: voip topic" 200 "$CODE"
call "https://localhost:$ACP/3/device/$DT" --http2 --cert "$CERTS/apns-cert-sandbox.pem" --key "$CERTS/apns-cert-sandbox.key" -H 'apns-topic: com.novu.test' --data-binary "$AB"
apns_reason "apns cert: sandbox certificate on production" 403 BadCertificateEnvironment
call "https://localhost:$ACS/3/device/$DT" --http2 --cert "$CERTS/apns-cert-sandbox.pem" --key "$CERTS/apns-cert-sandbox.key" -H 'apns-topic: com.novu.test' --data-binary "$AB"
eq "apns cert: sandbox certificate on sandbox" 200 "$CODE"
call "https://localhost:$ACP/3/device/$DT" --http2 -H "authorization: bearer $AJWT" -H 'apns-topic: com.novu.test' --data-binary "$AB"
ok "apns cert: no client certificate -> handshake refused" test "$RC" -ne 0 -a "$CODE" = 000
call "https://localhost:$ACP/3/device/$DT" --http2 --cert "$CERTS/server.pem" --key "$CERTS/server.key" -H 'apns-topic: com.novu.test' --data-binary "$AB"
ok "apns cert: certificate from another CA -> refused" test "$RC" -ne 0 -a "$CODE" = 000
eq "apns cert: refused handshakes logged" tls-error "$(lastlog apns event '&events=1')"
reset

# =============================================================================================
# Expo
# =============================================================================================
SEND=$EXPO/--/api/v2/push/send
RCPT=$EXPO/--/api/v2/push/getReceipts
expo() { call "$1" -H 'content-type: application/json' -H 'accept: application/json' --data-binary "$2" "${@:3}"; }
E1='ExponentPushToken[aaaaaaaaaaaaaaaaaaaaaa]'
E2='ExpoPushToken[bbbbbbbbbbbbbbbbbbbbbb]'
E3='ExponentPushToken[cccccccccccccccccccccc]'
expo "$SEND" "[{\"to\":\"$E1\",\"title\":\"t\",\"body\":\"b\",\"data\":{\"x\":1}},{\"to\":\"$E2\",\"body\":\"b\"}]"
eq "expo: 2 messages -> 2 ok tickets over h2" "200 2 ok,ok true" "$CODE $HVER $(jv "$B" 'j.data.map(t=>t.status).join()') $(jv "$B" 'j.data.every(t=>/^[0-9A-F-]{36}$/.test(t.id))')"
expo "$SEND" "{\"to\":\"$E1\",\"body\":\"b\"}" --http1.1
eq "expo: single object over http/1.1" "200 1.1 1" "$CODE $HVER $(jv "$B" j.data.length)"
expo "$SEND" "[{\"to\":[\"$E1\",\"$E2\"],\"body\":\"b\"},{\"to\":\"$E3\",\"body\":\"c\"}]"
eq "expo: a 'to' array expands in order" 3 "$(jv "$B" j.data.length)"
eq "expo: log lists the recipients in order" "[\"$E1\",\"$E2\",\"$E3\"]" "$(lastlog expo tokens)"
printf '[{"to":"%s","body":"gz"}]' "$E1" | gzip -c > "$T/body.gz"
call "$SEND" -H 'content-type: application/json' -H 'content-encoding: gzip' --data-binary "@$T/body.gz"
eq "expo: gzip request body with content-encoding" "200 ok gzip" "$CODE $(jv "$B" 'j.data[0].status') $(lastlog expo contentEncoding)"
call "$SEND" -H 'content-type: application/json' --data-binary "@$T/body.gz"
eq "expo: gzip body without content-encoding -> 400" "400 VALIDATION_ERROR" "$CODE $(jv "$B" 'j.errors[0].code')"
call "$SEND" -H 'content-type: application/json' -H 'content-encoding: gzip' --data-binary "[{\"to\":\"$E1\"}]"
eq "expo: content-encoding gzip with a plain body -> 400" 400 "$CODE"
call "$SEND" -H 'content-type: application/json' -H 'accept-encoding: gzip' --data-binary "[{\"to\":\"$E1\"}]"
hdr_has "expo: response gzipped when accepted" "content-encoding: gzip"
eq "expo: gzipped response decodes" ok "$(gzip -dc < "$B" | node -pe 'JSON.parse(require("fs").readFileSync(0)).data[0].status')"
ALL=$(node -e 'const a=[];for(let i=0;i<101;i++)a.push({to:`ExponentPushToken[t${i}]`,body:"b"});console.log(JSON.stringify(a))')
expo "$SEND" "$ALL"
status_body "expo: 101 recipients" 400 '{"errors":[{"code":"PUSH_TOO_MANY_NOTIFICATIONS","message":"You are trying to send more than 100 push notifications in one request"}]}'
expo "$SEND" "$(js 'JSON.stringify(j.slice(0,100))' "$ALL")"
eq "expo: 100 recipients -> 100 tickets" "200 100" "$CODE $(jv "$B" j.data.length)"
expo "$SEND" '[{"to":"not-a-token","body":"b"}]'
eq "expo: malformed token -> 400 VALIDATION_ERROR" "400 VALIDATION_ERROR" "$CODE $(jv "$B" 'j.errors[0].code')"
cfg '{"expo":{"malformedToken":"ticket"}}'
expo "$SEND" "[{\"to\":\"not-a-token\",\"body\":\"b\"},{\"to\":\"$E1\"}]"
eq "expo: malformedToken=ticket -> DeviceNotRegistered ticket" "200 error DeviceNotRegistered ok" "$CODE $(jv "$B" 'j.data[0].status') $(jv "$B" 'j.data[0].details.error') $(jv "$B" 'j.data[1].status')"
reset
expo "$SEND" "[{\"to\":\"$E1\",\"data\":[1,2]}]"
status_body "expo: data must be an object (array)" 400 '{"errors":[{"code":"VALIDATION_ERROR","message":"\"[0].data\" must be of type object"}]}'
expo "$SEND" "[{\"to\":\"$E1\",\"data\":\"{}\"}]"
eq "expo: data must be an object (string)" 400 "$CODE"
expo "$SEND" "[{\"to\":\"$E1\",\"bogus\":1}]"
eq "expo: unknown field -> 400" "400 \"[0].bogus\" is not allowed" "$CODE $(jv "$B" 'j.errors[0].message')"
expo "$SEND" "[{\"to\":\"$E1\",\"priority\":\"urgent\"}]"
eq "expo: bad priority -> 400" 400 "$CODE"
expo "$SEND" '[{"body":"no to"}]'
eq "expo: missing to -> 400" 400 "$CODE"
expo "$SEND" "[{\"to\":\"$E1\",\"badge\":\"1\"}]"
eq "expo: badge must be a number" 400 "$CODE"
expo "$SEND" "[{\"to\":\"$E1\",\"title\":\"t\",\"subtitle\":\"s\",\"body\":\"b\",\"sound\":\"default\",\"ttl\":60,\"expiration\":1700000000,\"priority\":\"high\",\"badge\":1,\"channelId\":\"c\",\"categoryId\":\"k\",\"mutableContent\":true,\"data\":{\"a\":{\"b\":[1]}}}]"
eq "expo: all documented fields accepted" 200 "$CODE"
expo "$SEND" "[{\"to\":\"$E1\"}]" -X GET
eq "expo: GET -> 405" 405 "$CODE"
tok expo "$E2" dead; tok expo "$E3" mismatch
expo "$SEND" "[{\"to\":[\"$E1\",\"$E2\",\"$E3\"],\"body\":\"b\"}]"
eq "expo: tickets per token state, in order" "ok error error DeviceNotRegistered $E2 MismatchSenderId" \
   "$(jv "$B" 'j.data.map(t=>t.status).join(" ")') $(jv "$B" 'j.data[1].details.error') $(jv "$B" 'j.data[1].details.expoPushToken') $(jv "$B" 'j.data[2].details.error')"
eq "expo: DeviceNotRegistered message" "\"$E2\" is not a registered push notification recipient" "$(jv "$B" 'j.data[1].message')"
tok expo "$E3" 'ticket-error:MessageRateExceeded'
expo "$SEND" "[{\"to\":\"$E3\"}]"
eq "expo: ticket-error:<Code>" MessageRateExceeded "$(jv "$B" 'j.data[0].details.error')"
expo "$SEND" "[{\"to\":\"$E1\",\"data\":{\"k\":\"${BIG}\"}}]"
eq "expo: message > 4096 bytes -> MessageTooBig ticket" "200 MessageTooBig" "$CODE $(jv "$B" 'j.data[0].details.error')"
R1='ExponentPushToken[receipt-dead-token]'
tok expo "$R1" receipt-dead
expo "$SEND" "[{\"to\":\"$E1\"},{\"to\":\"$R1\"}]"
eq "expo: receipt-dead is ok at send" "ok ok" "$(jv "$B" 'j.data.map(t=>t.status).join(" ")')"
ID1=$(jv "$B" 'j.data[0].id') ID2=$(jv "$B" 'j.data[1].id')
expo "$RCPT" "{\"ids\":[\"$ID1\",\"$ID2\",\"00000000-0000-0000-0000-000000000000\"]}"
eq "expo: receipts ok / DeviceNotRegistered / unknown omitted" "200 ok error DeviceNotRegistered 2" \
   "$CODE $(jv "$B" "j.data['$ID1'].status") $(jv "$B" "j.data['$ID2'].status") $(jv "$B" "j.data['$ID2'].details.error") $(jv "$B" 'Object.keys(j.data).length')"
tok expo "$E1" 'receipt-error:InvalidCredentials'
expo "$SEND" "[{\"to\":\"$E1\"}]"; ID3=$(jv "$B" 'j.data[0].id')
expo "$RCPT" "{\"ids\":[\"$ID3\"]}"
eq "expo: receipt-error:<Code>" InvalidCredentials "$(jv "$B" "j.data['$ID3'].details.error")"
IDS=$(node -e 'console.log(JSON.stringify({ids:Array.from({length:1001},(_,i)=>`id-${i}`)}))')
expo "$RCPT" "$IDS"
status_body "expo: > 1000 receipt ids" 400 '{"errors":[{"code":"PUSH_TOO_MANY_RECEIPTS","message":"You are trying to get more than 1000 receipts in one request"}]}'
expo "$RCPT" "$(js '({ids:j.ids.slice(0,1000)})' "$IDS")"
eq "expo: 1000 receipt ids accepted" "200 {}" "$CODE $(jv "$B" j.data)"
cfg '{"expo":{"receiptDelayMs":300}}'
expo "$SEND" "[{\"to\":\"ExponentPushToken[delayed]\"}]"; ID4=$(jv "$B" 'j.data[0].id')
expo "$RCPT" "{\"ids\":[\"$ID4\"]}"; early=$(jv "$B" 'Object.keys(j.data).length')
sleep 0.35
expo "$RCPT" "{\"ids\":[\"$ID4\"]}"
eq "expo: receipts appear after receiptDelayMs" "0 ok" "$early $(jv "$B" "j.data['$ID4'].status")"
cfg '{"clockOffset":86401}'
expo "$RCPT" "{\"ids\":[\"$ID4\"]}"
eq "expo: receipts expire after 24 h" "{}" "$(jv "$B" j.data)"
cfg '{"clockOffset":0}'
cfg '{"expo":{"accessToken":"expo-secret"}}'
expo "$SEND" "[{\"to\":\"$E1\"}]"
status_body "expo: bearer required" 401 '{"errors":[{"code":"UNAUTHORIZED","message":"The bearer token is invalid."}]}'
expo "$SEND" "[{\"to\":\"$E1\"}]" -H 'authorization: Bearer wrong'
eq "expo: wrong bearer -> 401" 401 "$CODE"
expo "$SEND" "[{\"to\":\"$E1\"}]" -H 'authorization: Bearer expo-secret'
eq "expo: right bearer -> 200" 200 "$CODE"
cfg '{"expo":{"accessToken":null,"html200Next":1}}'
expo "$SEND" "[{\"to\":\"$E1\"}]"
eq "expo: html200Next -> 200 text/html" "200 text/html;" "$CODE $(grep -i '^content-type' "$H" | tr -d '\r' | awk '{print $2}')"
cfg '{"expo":{"proxy502Next":1}}'
expo "$SEND" "[{\"to\":\"$E1\"}]"
eq "expo: proxy502Next -> 502" 502 "$CODE"
cfg '{"expo":{"errors200Next":1}}'
expo "$SEND" "[{\"to\":\"$E1\"}]"
eq "expo: errors200Next -> 200 with errors" "200 INTERNAL_SERVER_ERROR" "$CODE $(jv "$B" 'j.errors[0].code')"
cfg '{"expo":{"dropTicketNext":1}}'
expo "$SEND" "[{\"to\":\"$E1\"},{\"to\":\"$E2\"}]"
eq "expo: dropTicketNext -> fewer tickets" 1 "$(jv "$B" j.data.length)"
tok expo "$E2" 'fail:429:3:1'
expo "$SEND" "[{\"to\":\"$E1\"},{\"to\":\"$E2\"}]"
eq "expo: fail:429 fails the whole request" "429 TOO_MANY_REQUESTS" "$CODE $(jv "$B" 'j.errors[0].code')"
hdr_has "expo: retry-after" "retry-after: 3"
expo "$SEND" "[{\"to\":\"$E1\"},{\"to\":\"$E2\"}]"
eq "expo: ... then ok" "200 ok,ok" "$CODE $(jv "$B" 'j.data.map(t=>t.status).join()')"
tok expo "$E2" 'fail:503::1'; expo "$SEND" "[{\"to\":\"$E2\"}]"
eq "expo: fail:503" "503 INTERNAL_SERVER_ERROR" "$CODE $(jv "$B" 'j.errors[0].code')"
tok expo "$E2" 'slow:300:1'; expo "$SEND" "[{\"to\":\"$E2\"}]"
ok "expo: slow:300 delays >= 0.3 s" node -e "process.exit($TIME>=0.3&&$CODE===200?0:1)"
tok expo "$E2" 'reset:1'; expo "$SEND" "[{\"to\":\"$E2\"}]"
eq "expo: reset -> RST_STREAM" 92 "$RC"
tok expo "$E2" 'project:@other/app'
expo "$SEND" "[{\"to\":\"$E1\"},{\"to\":\"$E2\"}]"
eq "expo: two projects -> PUSH_TOO_MANY_EXPERIENCE_IDS with details" "400 PUSH_TOO_MANY_EXPERIENCE_IDS [\"$E2\"]" \
   "$CODE $(jv "$B" 'j.errors[0].code') $(jv "$B" 'j.errors[0].details["@other/app"]')"
cfg '{"expo":{"rateLimit":3}}'
expo "$SEND" "[{\"to\":\"$E1\"},{\"to\":\"$E1\"},{\"to\":\"$E1\"}]"; c1=$CODE
expo "$SEND" "[{\"to\":\"$E1\"}]"
eq "expo: rate limit -> 429 TOO_MANY_REQUESTS" "200 429 TOO_MANY_REQUESTS" "$c1 $CODE $(jv "$B" 'j.errors[0].code')"

# =============================================================================================
# control API
# =============================================================================================
reset
fcm "$(msg ctl-1)"; fcm "$(msg ctl-1)"; fcm "$(msg ctl-2)"; tok fcm ctl-3 dead; fcm "$(msg ctl-3)"
ctl GET '/requests?provider=fcm' > "$T/log.json"
eq "control: /requests in order with seq" "4 true" "$(jv "$T/log.json" 'j.count+" "+j.requests.every((e,i,a)=>!i||e.seq>a[i-1].seq&&e.time>=a[i-1].time)')"
eq "control: entry fields" "true" "$(jv "$T/log.json" '["method","path","headers","rawHeaders","body","bodyText","httpVersion","alpn","tls","connId","streamId","time","response"].every(k=>k in j.requests[0])&&"status" in j.requests[0].response&&"body" in j.requests[0].response')"
eq "control: /requests?token=" 2 "$(ctl GET '/requests?provider=fcm&token=ctl-1' | node -pe 'JSON.parse(require("fs").readFileSync(0)).count')"
eq "control: /accepted counts exactly" '{"ctl-1":2,"ctl-2":1}' "$(ctl GET '/accepted?provider=fcm')"
eq "control: /stats by status" '{"200":3,"404":1}' "$(ctl GET /stats | node -pe 'JSON.stringify(JSON.parse(require("fs").readFileSync(0)).providers.fcm.byStatus)')"
eq "control: /tokens lists states" dead "$(ctl GET /tokens | node -pe 'JSON.parse(require("fs").readFileSync(0)).tokens[0].state')"
ctl POST /tokens -d '{"provider":"fcm","tokens":["m1","m2"],"state":"fail:503::2"}' > /dev/null
eq "control: batch token states" 3 "$(ctl GET /tokens | node -pe 'JSON.parse(require("fs").readFileSync(0)).tokens.length')"
tok fcm ctl-3 ok
eq "control: state ok removes the entry" 2 "$(ctl GET /tokens | node -pe 'JSON.parse(require("fs").readFileSync(0)).tokens.length')"
ctl DELETE /requests > /dev/null
eq "control: DELETE /requests" 0 "$(ctl GET /requests | node -pe 'JSON.parse(require("fs").readFileSync(0)).count')"
cfg '{"fcm":{"unauthNext":5}}'
reset
eq "control: /reset clears tokens, counters, config" "0 {} 0" "$(ctl GET /tokens | node -pe 'JSON.parse(require("fs").readFileSync(0)).tokens.length') $(ctl GET /accepted) $(ctl GET /config | node -pe 'JSON.parse(require("fs").readFileSync(0)).fcm.unauthNext')"
fcm "$(msg after-reset)"
eq "control: access tokens survive /reset" 200 "$CODE"
eq "control: /disconnect closes provider connections" true "$(ctl POST '/disconnect?provider=fcm' | node -pe 'JSON.parse(require("fs").readFileSync(0)).ok')"
ctl POST /oauth/revoke > /dev/null
fcm "$(msg revoked)"
eq "control: /oauth/revoke invalidates access tokens" 401 "$CODE"
tok apns "$DT" 'slow:1500:1'
( apns "$AP" "$DT" --data-binary "$AB"; echo "$RC $CODE" > "$T/abandon" ) &
sleep 0.4
eq "control: /disconnect?abandon=1" true "$(ctl POST '/disconnect?provider=apns&abandon=1' | node -pe 'JSON.parse(require("fs").readFileSync(0)).closed>0')"
wait $!
ok "control: abandoned in-flight APNs stream fails at the client" test "$(cut -d' ' -f1 "$T/abandon")" -ne 0
sleep 1.2
eq "control: ... is logged aborted and not counted as accepted" "aborted 0" "$(lastlog apns response.status) $(ctl GET '/accepted?provider=apns' | node -pe "JSON.parse(require('fs').readFileSync(0))['$DT']||0")"

# =============================================================================================
# per-token received counts and faults under load
# =============================================================================================
reset
cfg '{"logLimit":1}'
recv() { ctl GET "/received?provider=$1" | node -pe "JSON.parse(require('fs').readFileSync(0))['$2']||0"; }
tok apns "$DT" 'reset:1'
apns "$AP" "$DT" --data-binary "$AB"
tok apns "$DT" dead
apns "$AP" "$DT" --data-binary "$AB"
eq "received: counts a request whatever it answered (reset, 410)" "410 2" "$CODE $(recv apns "$DT")"
expo "$SEND" "[{\"to\":[\"$E1\",\"$E2\"],\"body\":\"b\"},{\"to\":\"$E1\",\"body\":\"c\"}]"
expo "$SEND" "{\"to\":\"$E1\",\"body\":\"b\"}"
eq "received: expo counts each token of each send, beyond logLimit" "3 1 1" \
   "$(recv expo "$E1") $(recv expo "$E2") $(ctl GET /requests | node -pe 'JSON.parse(require("fs").readFileSync(0)).count')"
eq "config: unknown fault kind -> 400" '"error"' "$(ctl POST /config -d '{"faults":{"kinds":["bogus"]}}' | grep -o '"error"')"
# burst: one request on a fresh connection, then 6 at once; the 4th request is faulted
burst() {
    reset
    cfg "{\"faults\":{\"every\":{\"apns\":4},\"kinds\":[\"$1\"],\"max\":1,\"slowMs\":300}}"
    R=$(node "$M/selftest-h2.js" burst "$AP" "$CERTS/ca.pem" "$AJWT" 6 100)
    FAULTS=$(ctl GET '/faults?provider=apns' | node -pe 'const j=JSON.parse(require("fs").readFileSync(0));j.injected+" "+JSON.stringify(j.byKind)+" "+j.refused')
    RECV=$(ctl GET '/received?provider=apns' | node -pe 'const j=JSON.parse(require("fs").readFileSync(0));Object.keys(j).length+" "+Object.values(j).join("")')
    LOG=$(ctl GET '/requests?provider=apns&events=1' | node -pe 'JSON.parse(require("fs").readFileSync(0)).requests.map(r=>r.event?"break:"+r.held:r.response.status).join()')
}
burst goaway
eq "faults goaway: GOAWAY below received streams, those refused (REFUSED_STREAM)" '200,200,rst:7,rst:7,rst:7,rst:7 5' \
   "$(js 'j.outcome.join()+" "+j.goaway.lastStreamID' "$R")"
eq "faults goaway: refused streams (unprocessed) do not count as received; logged refused" '1 {"goaway":1} 4 | 3 111 | 200,200,200,refused,refused,refused,refused,break:4' "$FAULTS | $RECV | $LOG"
burst reset
eq "faults reset: RST_STREAM(INTERNAL_ERROR) on one stream" '200,200,rst:2,200,200,200' "$(js 'j.outcome.join()' "$R")"
eq "faults reset: counted as received" '1 {"reset":1} 0 | 7 1111111' "$FAULTS | $RECV"
burst drop
eq "faults drop: the connection is destroyed, in-flight answers lost" '200,200 true' \
   "$(js 'j.outcome.slice(0,2).join()+" "+j.outcome.slice(2).every(o=>!/^2/.test(o))' "$R")"
eq "faults drop: every request counted as received; logged drop" '1 {"drop":1} 0 | 7 1111111 | 200,200,200,drop,drop,drop,drop,break:4' "$FAULTS | $RECV | $LOG"
burst error
eq "faults error: GOAWAY(INTERNAL_ERROR) covering every stream, then the connection is destroyed" '2 13 200,200 true' \
   "$(js 'j.goaway.code+" "+j.goaway.lastStreamID+" "+j.outcome.slice(0,2).join()+" "+j.outcome.slice(2).every(o=>!/^2/.test(o))' "$R")"
eq "faults error: every request counted as received; logged error" '1 {"error":1} 0 | 7 1111111 | 200,200,200,error,error,error,error,break:4' "$FAULTS | $RECV | $LOG"
burst slow
eq "faults slow: answered after slowMs" '200,200,200,200,200,200 | 1 {"slow":1} 0' "$(js 'j.outcome.join()' "$R") | $FAULTS"
reset

# =============================================================================================
# Web Push (PROTOCOLS 5, 6.6): a few curl checks here, the rest in selftest-webpush.js, which
# cross-checks the mock with the npm packages web-push and http_ece (test/mocks/.npm)
# =============================================================================================
reset
WPS=$(ctl POST /webpush/subscriptions -d '{"service":"mozilla","count":2}')
WP1=$(js 'j.subscriptions[0].endpoint' "$WPS")
eq "webpush: POST /webpush/subscriptions gives browser JSON" "87 22 true" \
   "$(js '[j.subscriptions[1].keys.p256dh.length,j.subscriptions[1].keys.auth.length,j.subscriptions[1].endpoint!==j.subscriptions[0].endpoint].join(" ")' "$WPS")"
call "$WP1" -H 'content-encoding: aes128gcm' --data-binary x
status_body "webpush: mozilla, no TTL" 400 '{"code":400,"errno":111,"error":"Bad Request","message":"Missing TTL Header: the TTL header is required (RFC 8030 5.2)","more_info":"http://autopush.readthedocs.io/en/latest/http.html#error-codes"}'
eq "webpush: served over h2" 2 "$HVER"
WPH=$(ctl POST /webpush/subscriptions -d '{"service":"apple","http1":true}')
call "$(js 'j.subscriptions[0].endpoint' "$WPH")" --http2 -H 'ttl: 60' -H 'content-encoding: aes128gcm' --data-binary x
eq "webpushH1: curl offering h2 gets http/1.1; no Authorization -> Apple 403 BadJwtToken" '1.1 403 {"reason":"BadJwtToken"}' "$HVER $CODE $(cat "$B")"
tok webpush "$WP1" gone
eq "webpush: POST /tokens takes the endpoint as token" gone "$(ctl GET /tokens | node -pe 'JSON.parse(require("fs").readFileSync(0)).tokens[0].state')"
eq "webpush: received counts per endpoint" 1 "$(ctl GET '/received?provider=webpush' | node -pe "JSON.parse(require('fs').readFileSync(0))['$WP1']")"
if [ ! -d "$M/.npm/node_modules/web-push" ] && command -v npm >/dev/null 2>&1; then
    npm ci --prefix "$M/.npm" --no-audit --no-fund --loglevel=error >/dev/null 2>&1
fi
node "$M/selftest-webpush.js" --ready "$T/ready" --ca "$CERTS/ca.pem" > "$T/webpush.out" 2>&1
grep -v '^[0-9]* passed, [0-9]* failed$' "$T/webpush.out"
read -r wp_pass wp_fail <<< "$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$T/webpush.out" | tail -1)"
if [ -n "${wp_pass:-}" ]; then
    PASS=$((PASS + wp_pass)) FAILN=$((FAILN + wp_fail))
else
    fail "selftest-webpush.js" "no summary line"
fi
reset

# =============================================================================================
# shutdown
# =============================================================================================
t0=$(date +%s%N)
kill -TERM "$SERVER_PID"; wait "$SERVER_PID"; rc=$?
t1=$(date +%s%N)
SERVER_PID=
eq "server exits 0 on SIGTERM" 0 "$rc"
ok "server exits promptly (< 2 s)" test $(((t1 - t0) / 1000000)) -lt 2000
eq "nothing on stdout after the ready line" 1 "$(wc -l < "$T/ready")"
eq "no internal errors on stderr" "" "$(grep -i 'internal error' "$T/server.err")"

echo "elapsed $(($(date +%s) - START)) s"
echo "$PASS passed, $FAILN failed"
[ "$FAILN" -eq 0 ]
