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
rcv() { ctl GET "/received?provider=apns" | node -pe "JSON.parse(require('fs').readFileSync(0))['$DT']||0"; }
n0=$(rcv); tok apns "$DT" 'refuse:1'; apns "$AP" "$DT" --data-binary "$AB"
eq "apns: refuse -> RST_STREAM(REFUSED_STREAM); curl sends it again, answered 200" 200 "$CODE"
eq "apns: ... logged refused then 200, received once" "refused,200 $((n0 + 1))" \
   "$(ctl GET "/requests?provider=apns&token=$DT&limit=2" | node -pe 'JSON.parse(require("fs").readFileSync(0)).requests.map((e) => e.response.status).join(",")') $(rcv)"
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
cfg '{"expo":{"receiptDelayMs":1500}}'
expo "$SEND" "[{\"to\":\"ExponentPushToken[delayed]\"}]"; ID4=$(jv "$B" 'j.data[0].id')
expo "$RCPT" "{\"ids\":[\"$ID4\"]}"; early=$(jv "$B" 'Object.keys(j.data).length')
sleep 1.55
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
# OneSignal
# =============================================================================================
reset
OSP=https://localhost:$(P onesignal)
OS_APP=0b5e1a2c-3d4f-4a6b-8c7d-9e0f1a2b3c4d
OS_KEY=os_v2_app_novutestrestapikey0000000000000000000000
S1=11111111-1111-4111-8111-111111111111 S2=22222222-2222-4222-8222-222222222222 S3=33333333-3333-4333-8333-333333333333
IK1=aaaaaaaa-0000-4000-8000-000000000001
# onesig BODY [curl args]: current API with the test key; osl: legacy API
onesig() { call "$OSP/notifications" -H "authorization: Key $OS_KEY" -H 'content-type: application/json; charset=utf-8' --data-binary "$1" "${@:2}"; }
osl() { call "$OSP/api/v1/notifications" -H "authorization: Basic $OS_KEY" -H 'content-type: application/json' --data-binary "$1" "${@:2}"; }
# osb [IDS-JSON] [EXTRA-FIELDS]: a valid body
osb() { echo "{\"app_id\":\"$OS_APP\",\"include_subscription_ids\":${1:-[\"$S1\"]},\"contents\":{\"en\":\"hello\"},\"headings\":{\"en\":\"t\"}${2:+,$2}}"; }
os_err() { eq "$1" "$2 $3" "$CODE $(jv "$B" 'JSON.stringify(j.errors)')"; }
INVALID_KEY='["Access denied.  Please include an '"'"'Authorization: ...'"'"' header with a valid API key (https://documentation.onesignal.com/docs/en/keys-and-ids#api-keys)."]'
onesig "$(osb '' '"data":{"k":{"n":1}},"url":"https://x.test/a","ttl":60,"priority":10')"
eq "onesignal: valid send -> 200 over h2" "200 2" "$CODE $HVER"
eq "onesignal: answer {id: uuid, external_id: null}" 'true null id,external_id' "$(jv "$B" '/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(j.id)+" "+j.external_id+" "+Object.keys(j)')"
eq "onesignal: log has provider/api/app/parsed body/headers" "current $OS_APP $S1 Key" \
   "$(lastlog onesignal api) $(lastlog onesignal appId) $(lastlog onesignal 'body.include_subscription_ids[0]') $(lastlog onesignal 'headers.authorization.split(" ")[0]')"
onesig "$(osb)" --http1.1
eq "onesignal: http/1.1 works too" "200 1.1" "$CODE $HVER"
osl "$(osb)"
eq "onesignal: legacy /api/v1/notifications with Basic <key> -> 200" "200 legacy" "$CODE $(lastlog onesignal api)"
call "$OSP/notifications" -H "authorization: Basic $OS_KEY" -H 'content-type: application/json' --data-binary "$(osb)"
os_err "onesignal: Basic on the current API -> 401" 401 "$INVALID_KEY"
eq "onesignal: ... authError names the scheme" 'scheme "Basic" on /notifications, expected "Key" (case-sensitive)' "$(lastlog onesignal authError)"
call "$OSP/api/v1/notifications" -H "authorization: Key $OS_KEY" -H 'content-type: application/json' --data-binary "$(osb)"
os_err "onesignal: Key on the legacy API -> 401" 401 "$INVALID_KEY"
call "$OSP/notifications" -H 'content-type: application/json' --data-binary "$(osb)"
os_err "onesignal: no Authorization -> 401" 401 "$INVALID_KEY"
call "$OSP/notifications" -H 'authorization: Key wrong-key' -H 'content-type: application/json' --data-binary "$(osb)"
os_err "onesignal: wrong key -> 403" 403 "$INVALID_KEY"
call "$OSP/api/v1/notifications" -H "authorization: Basic $(printf '%s:' "$OS_KEY" | base64 -w0)" -H 'content-type: application/json' --data-binary "$(osb)"
eq "onesignal: legacy key base64-encoded (user:pass style) -> 403, explained" "403 the key was base64-encoded: send the REST API key itself after \"Basic\"" "$CODE $(lastlog onesignal authError)"
onesig "$(osb | sed "s/$OS_APP/44444444-4444-4444-8444-444444444444/")"
eq "onesignal: unknown app_id -> 403" "403 unknown app_id 44444444-4444-4444-8444-444444444444" "$CODE $(lastlog onesignal authError)"
cfg '{"onesignal":{"apps":{"44444444-4444-4444-8444-444444444444":"second-app-key"}}}'
call "$OSP/notifications" -H 'authorization: Key second-app-key' -H 'content-type: application/json' --data-binary "$(osb | sed "s/$OS_APP/44444444-4444-4444-8444-444444444444/")"
eq "onesignal: app added with POST /config -> 200" 200 "$CODE"
call "$OSP/notifications" -H 'authorization: Key second-app-key' -H 'content-type: application/json' --data-binary "$(osb)"
eq "onesignal: a key of another app -> 403" 403 "$CODE"
cfg '{"onesignal":{"apps":{"44444444-4444-4444-8444-444444444444":null}}}'
call "$OSP/notifications" -H 'authorization: Key second-app-key' -H 'content-type: application/json' --data-binary "$(osb | sed "s/$OS_APP/44444444-4444-4444-8444-444444444444/")"
eq "onesignal: app removed with null -> 403" 403 "$CODE"
eq "onesignal: apps values must be strings" 400 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$CTL/config" -d '{"onesignal":{"apps":{"x":1}}}')"
onesig "$(osb)" -X GET
eq "onesignal: GET -> 405" 405 "$CODE"
call "$OSP/api/v1/players" -H "authorization: Key $OS_KEY" -H 'content-type: application/json' --data-binary "$(osb)"
eq "onesignal: unknown path -> 404" 404 "$CODE"
call "$OSP/notifications" -H "authorization: Key $OS_KEY" --data-binary "$(osb)"
os_err "onesignal: form content-type -> 400 app_id not found" 400 '["app_id not found. You may be missing a Content-Type: application/json header."]'
eq "onesignal: payloadError logged" "app_id not found. You may be missing a Content-Type: application/json header." "$(lastlog onesignal payloadError)"
onesig '{"app_id":'
eq "onesignal: invalid JSON -> 400" 400 "$CODE"
onesig '[1]'
eq "onesignal: non-object body -> 400" 400 "$CODE"
onesig "{\"include_subscription_ids\":[\"$S1\"],\"contents\":{\"en\":\"x\"}}"
os_err "onesignal: no app_id -> 400" 400 '["app_id not found. You may be missing a Content-Type: application/json header."]'
onesig "$(osb | sed "s/$OS_APP/not-a-uuid/")"
os_err "onesignal: app_id not a UUID -> 400" 400 '["app_id \"not-a-uuid\" is not a valid UUID"]'
onesig "{\"app_id\":\"$OS_APP\",\"contents\":{\"en\":\"x\"}}"
os_err "onesignal: no targeting -> 400" 400 '["You must include which players, segments, or tags you wish to send this notification to."]'
onesig "$(osb '' '"included_segments":["Active Users"]')"
os_err "onesignal: two targeting styles -> 400" 400 '["Only one targeting style may be used per request; got include_subscription_ids, included_segments"]'
onesig "{\"app_id\":\"$OS_APP\",\"include_player_ids\":[\"$S1\"],\"contents\":{\"en\":\"x\"}}"
eq "onesignal: another targeting style -> 400" "400 include_player_ids is not implemented by the mock: target subscriptions with include_subscription_ids" "$CODE $(jv "$B" 'j.errors[0]')"
onesig "$(osb "\"$S1\"")"
eq "onesignal: include_subscription_ids not an array -> 400" 400 "$CODE"
onesig "$(osb '[]')"
os_err "onesignal: empty include_subscription_ids -> 400" 400 '["You must include which players, segments, or tags you wish to send this notification to."]'
IDS2001=$(node -e 'console.log(JSON.stringify(Array.from({length:2001},(_,i)=>`00000000-0000-4000-8000-${String(i).padStart(12,"0")}`)))')
onesig "$(osb "$IDS2001")"
os_err "onesignal: 2001 subscription ids -> 400" 400 '["include_subscription_ids must have at most 2000 entries, got 2001"]'
onesig "$(osb "$(js 'JSON.stringify(j.slice(1))' "$IDS2001")")"
eq "onesignal: 2000 subscription ids -> 200; every id of both requests counted" "200 2001 1 2 2" "$CODE $(ctl GET '/received?provider=onesignal' | node -pe 'const j=JSON.parse(require("fs").readFileSync(0)),k=Object.keys(j).filter(k=>k.startsWith("00000000-"));[k.length,j[k[0]],j[k[1]],j[k[2000]]].join(" ")')"
onesig "$(osb '["not-a-uuid"]')"
os_err "onesignal: subscription id not a UUID -> 400" 400 '["Incorrect subscription id format in include_subscription_ids (not a valid UUID): \"not-a-uuid\""]'
onesig "{\"app_id\":\"$OS_APP\",\"include_subscription_ids\":[\"$S1\"]}"
eq "onesignal: no contents -> 400" "400 contents is required unless content_available is true or template_id is set" "$CODE $(jv "$B" 'j.errors[0]')"
onesig "{\"app_id\":\"$OS_APP\",\"include_subscription_ids\":[\"$S1\"],\"content_available\":true,\"data\":{\"a\":1}}"
eq "onesignal: content_available without contents -> 200" 200 "$CODE"
onesig "{\"app_id\":\"$OS_APP\",\"include_subscription_ids\":[\"$S1\"],\"template_id\":\"$S2\"}"
eq "onesignal: template_id without contents -> 200" 200 "$CODE"
onesig "{\"app_id\":\"$OS_APP\",\"include_subscription_ids\":[\"$S1\"],\"contents\":{\"de\":\"hallo\"}}"
os_err "onesignal: contents without en -> 400" 400 '["Message Notifications must have English language content"]'
onesig "{\"app_id\":\"$OS_APP\",\"include_subscription_ids\":[\"$S1\"],\"contents\":{\"en\":5}}"
eq "onesignal: contents value not a string -> 400" "400 contents.en must be a string" "$CODE $(jv "$B" 'j.errors[0]')"
onesig "{\"app_id\":\"$OS_APP\",\"include_subscription_ids\":[\"$S1\"],\"contents\":\"hello\"}"
eq "onesignal: contents a string -> 400" 400 "$CODE"
onesig "$(osb | sed 's/"headings":{"en":"t"}/"headings":"t"/')"
eq "onesignal: headings not a language map -> 400" 400 "$CODE"
onesig "$(osb '' '"data":[1]')"
eq "onesignal: data an array -> 400" "400 data must be a JSON object" "$CODE $(jv "$B" 'j.errors[0]')"
onesig "$(osb '' '"url":7')"
eq "onesignal: url not a string -> 400" 400 "$CODE"
for t in -1 2419201 1.5 '"60"'; do
    onesig "$(osb '' "\"ttl\":$t")"
    eq "onesignal: ttl $t -> 400" "400 ttl must be an integer between 0 and 2419200 seconds" "$CODE $(jv "$B" 'j.errors[0]')"
done
onesig "$(osb '' '"ttl":2419200')"
eq "onesignal: ttl 2419200 -> 200" 200 "$CODE"
onesig "$(osb '' '"priority":11')"
eq "onesignal: priority 11 -> 400" 400 "$CODE"
onesig "$(osb '' '"idempotency_key":"retry-1"')"
eq "onesignal: idempotency_key not a UUID -> 400" "400 idempotency_key must be a UUID" "$CODE $(jv "$B" 'j.errors[0]')"
onesig "$(osb '' '"target_channel":"pigeon"')"
eq "onesignal: bad target_channel -> 400" 400 "$CODE"
onesig "$(osb '' "\"app_id\":\"$OS_APP\"")"
eq "onesignal: duplicate key -> 400" "400 duplicate key \"app_id\" in the request body" "$CODE $(jv "$B" 'j.errors[0]')"
reset
tok onesignal "$S2" unsubscribed
onesig "$(osb "[\"$S1\",\"$S2\"]")"
eq "onesignal: one unsubscribed -> 200, id, invalid_player_ids lists it" "200 true [\"$S2\"]" "$CODE $(jv "$B" 'j.id.length===36') $(jv "$B" 'j.errors.invalid_player_ids')"
eq "onesignal: ... the others still get it (delivered counts)" "{\"$S1\":1}" "$(ctl GET '/received?provider=onesignal-delivered')"
eq "onesignal: ... accepted counts the delivered one only" "{\"$S1\":1}" "$(ctl GET '/accepted?provider=onesignal')"
onesig "$(osb "[\"$S2\"]")"
status_body "onesignal: nobody subscribed" 200 '{"id":"","errors":["All included players are not subscribed"]}'
tok onesignal "$S3" invalid
onesig "$(osb "[\"$S3\"]")"
status_body "onesignal: only unknown (invalid) ids" 200 "{\"id\":\"\",\"errors\":{\"invalid_player_ids\":[\"$S3\"]}}"
onesig "$(osb "[\"$S1\",\"$S3\"]")"
eq "onesignal: invalid + ok -> id and invalid_player_ids" "true [\"$S3\"]" "$(jv "$B" 'j.id.length===36') $(jv "$B" 'j.errors.invalid_player_ids')"
eq "onesignal: received counts every id of every request" "{\"$S1\":2,\"$S2\":2,\"$S3\":2}" "$(ctl GET '/received?provider=onesignal')"
reset
onesig "$(osb "[\"$S1\"]" "\"idempotency_key\":\"$IK1\"")"; FIRST=$(cat "$B")
onesig "$(osb "[\"$S1\"]" "\"idempotency_key\":\"$IK1\"")"
eq "onesignal: repeated idempotency_key -> the same answer" "200 $FIRST" "$CODE $(cat "$B")"
eq "onesignal: ... delivered once, replay counted apart, both received" "{\"$S1\":1} {\"$S1\":1} {\"$S1\":2}" \
   "$(ctl GET '/received?provider=onesignal-delivered') $(ctl GET '/received?provider=onesignal-replayed') $(ctl GET '/received?provider=onesignal')"
eq "onesignal: ... replay marked in the log" true "$(lastlog onesignal idempotentReplay)"
onesig "$(osb "[\"$S1\"]" "\"idempotency_key\":\"aaaaaaaa-0000-4000-8000-000000000002\"")"
ok "onesignal: another key -> a new notification id" test "$(jv "$B" j.id)" != "$(js j.id "$FIRST")"
tok onesignal "$S2" 'fail:503::1'
onesig "$(osb "[\"$S2\"]" '"idempotency_key":"aaaaaaaa-0000-4000-8000-000000000003"')"
os_err "onesignal: fail:503 -> 503" 503 '["Service temporarily unavailable"]'
onesig "$(osb "[\"$S2\"]" '"idempotency_key":"aaaaaaaa-0000-4000-8000-000000000003"')"
eq "onesignal: a failed request is not remembered: the retry delivers" "200 {\"$S2\":1}" "$CODE $(ctl GET '/received?provider=onesignal-delivered' | node -pe "JSON.stringify({'$S2':JSON.parse(require('fs').readFileSync(0))['$S2']})")"
tok onesignal "$S2" 'fail:429:7:1'
onesig "$(osb "[\"$S2\"]")"
eq "onesignal: fail:429:7 -> 429 {errors, limit}" '429 ["API rate limit exceeded"] true' "$CODE $(jv "$B" 'JSON.stringify(j.errors)') $(jv "$B" 'typeof j.limit==="string"')"
hdr_has "onesignal: 429 Retry-After" "retry-after: 7"
tok onesignal "$S2" 'fail:500::1'; onesig "$(osb "[\"$S2\"]")"
eq "onesignal: fail:500 -> 500 errors" "500 1" "$CODE $(jv "$B" j.errors.length)"
tok onesignal "$S2" 'slow:300:1'; onesig "$(osb "[\"$S2\"]")"
ok "onesignal: slow:300 delays >= 0.3 s" node -e "process.exit($TIME>=0.3&&$CODE===200?0:1)"
tok onesignal "$S2" 'reset:1'; onesig "$(osb "[\"$S2\"]")"
eq "onesignal: reset -> RST_STREAM (curl 92)" 92 "$RC"
cfg '{"onesignal":{"proxy502Next":1}}'
onesig "$(osb)"
eq "onesignal: proxy502Next -> HTML 502" "502 text/html" "$CODE $(grep -i '^content-type' "$H" | tr -d '\r' | awk '{print $2}')"
reset
cfg '{"faults":{"every":{"onesignal":1},"kinds":["drop"],"max":1}}'
onesig "$(osb "[\"$S1\"]" "\"idempotency_key\":\"$IK1\"")"
ok "onesignal: fault drop -> the answer is lost" test "$RC" -ne 0
onesig "$(osb "[\"$S1\"]" "\"idempotency_key\":\"$IK1\"")"
eq "onesignal: the retry with the same key -> 200, not delivered twice" "200 {\"$S1\":1} {\"$S1\":1} {\"$S1\":2}" \
   "$CODE $(ctl GET '/received?provider=onesignal-delivered') $(ctl GET '/received?provider=onesignal-replayed') $(ctl GET '/received?provider=onesignal')"
reset
onesig "$(osb "[\"$S1\"]" "\"idempotency_key\":\"$IK1\"")"
eq "onesignal: /reset forgets idempotency keys" "{\"$S1\":1}" "$(ctl GET '/received?provider=onesignal-delivered')"
reset

# =============================================================================================
# push webhook (Novu's push-webhook)
# =============================================================================================
WHP=https://localhost:$(P webhook)
WHS=novu-push-webhook-secret
hsig() { printf '%s' "$2" | openssl dgst -sha256 -hmac "$1" | awk '{print $NF}'; }
# whb TOKEN [STEP-JSON] [EXTRA]: a valid body;  wh PATH BODY [SECRET] [curl args]
whb() { local step=${2:-'{"digest":false,"events":[],"total_count":0}'}
        echo "{\"target\":[\"$1\"],\"title\":\"T\",\"content\":\"C é\",\"overrides\":{},\"payload\":{\"k\":1,\"subscriber\":{\"subscriberId\":\"u1\",\"email\":\"u1@x.test\"},\"step\":$step}${3:+,$3}}"; }
wh() { call "$WHP$1" -H 'content-type: application/json' -H "x-novu-signature: $(hsig "${3:-$WHS}" "$2")" --data-binary "$2" "${@:4}"; }
wh /push/novu "$(whb wtok1)"
eq "webhook: signed valid body -> 200 {id} over h2" "200 2 true" "$CODE $HVER $(jv "$B" '/^wh-\d+$/.test(j.id)&&Object.keys(j).length===1')"
eq "webhook: log has parsed body, signature header, token" "wtok1 u1 true wtok1" \
   "$(lastlog webhook 'body.target[0]') $(lastlog webhook 'body.payload.subscriber.subscriberId') $(lastlog webhook 'headers["x-novu-signature"].match(/^[0-9a-f]{64}$/)!==null') $(lastlog webhook token)"
wh /any/other/path "$(whb wtok1)" "$WHS" --http1.1
eq "webhook: any path, http/1.1" "200 1.1" "$CODE $HVER"
SP='{ "target" : ["wtok1"], "title":"T","content":"C","overrides":{},"payload":{"subscriber":{"subscriberId":"u1"},"step":{"digest":false}} }'
wh /p "$SP"
eq "webhook: signature over the exact bytes (spaces kept); non-digest step without events/total_count" 200 "$CODE"
call "$WHP/p" -H 'content-type: application/json' -H "x-novu-signature: $(hsig "$WHS" "$(js 'JSON.stringify(j)' "$SP")")" --data-binary "$SP"
eq "webhook: signature of a re-serialised body -> 401" "401 X-Novu-Signature does not match the HMAC-SHA256 of the body bytes" "$CODE $(jv "$B" j.error)"
call "$WHP/p" -H 'content-type: application/json' --data-binary "$(whb wtok1)"
status_body "webhook: no signature" 401 '{"error":"no X-Novu-Signature header"}'
call "$WHP/p" -H 'content-type: application/json' -H "x-novu-signature: $(hsig "$WHS" "$(whb wtok1)" | tr a-f A-F)" --data-binary "$(whb wtok1)"
eq "webhook: uppercase hex -> 401" "401 X-Novu-Signature is not lowercase hex" "$CODE $(lastlog webhook authError)"
call "$WHP/p" -H 'content-type: application/json' -H "x-novu-signature: sha256=$(hsig "$WHS" "$(whb wtok1)")" --data-binary "$(whb wtok1)"
eq "webhook: prefixed signature -> 401" 401 "$CODE"
wh /p "$(whb wtok1)" wrong-secret
eq "webhook: wrong secret -> 401" 401 "$CODE"
cfg '{"webhook":{"secrets":{"/p2":"path-secret"}}}'
wh /p2 "$(whb wtok1)"
eq "webhook: per-path secret: the default one -> 401" 401 "$CODE"
wh /p2 "$(whb wtok1)" path-secret
eq "webhook: per-path secret -> 200" 200 "$CODE"
call "$WHP/p" -H 'content-type: text/plain' -H "x-novu-signature: $(hsig "$WHS" "$(whb wtok1)")" --data-binary "$(whb wtok1)"
eq "webhook: text/plain -> 415" 415 "$CODE"
call "$WHP/p" -H "x-novu-signature: $(hsig "$WHS" "")"
eq "webhook: GET -> 405" 405 "$CODE"
wh /p '{"target":["wtok1"],'
eq "webhook: signed non-JSON -> 400 payloadError" "400 true" "$CODE $(lastlog webhook 'payloadError.startsWith("the body is not JSON")')"
wh_shape() { wh /p "$2"; eq "webhook: $1 -> 400" "400 $3" "$CODE $(lastlog webhook payloadError)"; }
wh_shape "two targets" "$(whb wtok1 | sed 's/\["wtok1"\]/["wtok1","wtok2"]/')" '"target" must be an array of exactly one non-empty token string'
wh_shape "target a string" "$(whb wtok1 | sed 's/\["wtok1"\]/"wtok1"/')" '"target" must be an array of exactly one non-empty token string'
wh_shape "no title" "$(whb wtok1 | sed 's/"title":"T",//')" '"title" must be a string'
wh_shape "content a number" "$(whb wtok1 | sed 's/"content":"C é"/"content":5/')" '"content" must be a string'
wh_shape "overrides an array" "$(whb wtok1 | sed 's/"overrides":{}/"overrides":[]/')" '"overrides" must be an object'
wh_shape "no payload.subscriber" "$(whb wtok1 | sed 's/"subscriber":{[^}]*},//')" '"payload.subscriber" must be an object'
wh_shape "subscriber without subscriberId" "$(whb wtok1 | sed 's/"subscriberId":"u1",//')" '"payload.subscriber.subscriberId" must be a non-empty string'
wh_shape "no payload.step" "$(whb wtok1 | sed 's/,"step":{[^}]*}//')" '"payload.step" must be an object'
wh_shape "step without digest" "$(whb wtok1 '{"events":[],"total_count":0}')" '"payload.step.digest" must be a boolean'
wh_shape "digest step without events" "$(whb wtok1 '{"digest":true,"total_count":2}')" '"payload.step.events" must be an array'
wh_shape "total_count -1" "$(whb wtok1 '{"digest":true,"events":[],"total_count":-1}')" '"payload.step.total_count" must be a non-negative integer'
wh_shape "unknown top-level key" "$(whb wtok1 '' '"extra":1')" 'unexpected top-level key "extra" (expected target, title, content, overrides, payload)'
wh /p "$(whb wtok1 '{"digest":true,"events":[{"a":1},{"a":2}],"total_count":2}')"
eq "webhook: digest step with events + total_count -> 200" 200 "$CODE"
tok webhook wdead dead; wh /p "$(whb wdead)"
status_body "webhook: dead target" 410 '{"error":"gone","target":"wdead"}'
tok webhook wnf not-found; wh /p "$(whb wnf)"
status_body "webhook: not-found target" 404 '{"error":"not found","target":"wnf"}'
tok webhook wfail 'fail:429:3:1'; wh /p "$(whb wfail)"
eq "webhook: fail:429:3 -> 429" 429 "$CODE"
hdr_has "webhook: 429 Retry-After" "retry-after: 3"
wh /p "$(whb wfail)"
eq "webhook: ... then 200" 200 "$CODE"
tok webhook wfail 'fail:503::1'; wh /p "$(whb wfail)"
eq "webhook: fail:503 -> 503" 503 "$CODE"
tok webhook wfail 'slow:300:1'; wh /p "$(whb wfail)"
ok "webhook: slow:300 delays >= 0.3 s" node -e "process.exit($TIME>=0.3&&$CODE===200?0:1)"
tok webhook wfail 'reset:1'; wh /p "$(whb wfail)"
eq "webhook: reset -> RST_STREAM (curl 92)" 92 "$RC"
tok webhook wfail 'redirect:307:1'; wh /p "$(whb wfail)"
eq "webhook: redirect:307 -> Location the same URL" "307 $WHP/p" "$CODE $(grep -i '^location' "$H" | tr -d '\r' | awk '{print $2}')"
cfg '{"faults":{"every":{"webhook":1},"kinds":["reset"],"max":1}}'
wh /p "$(whb wfault)"; rc1=$RC; wh /p "$(whb wfault)"
eq "webhook: faults under load (reset), then 200" "92 200 reset" "$rc1 $CODE $(ctl GET '/faults?provider=webhook' | node -pe 'Object.keys(JSON.parse(require("fs").readFileSync(0)).byKind).join()')"
eq "webhook: received per target token, whatever answered" '{"wdead":1,"wnf":1,"wfail":6,"wfault":2}' \
   "$(ctl GET '/received?provider=webhook' | node -pe 'const j=JSON.parse(require("fs").readFileSync(0));JSON.stringify({wdead:j.wdead,wnf:j.wnf,wfail:j.wfail,wfault:j.wfault})')"
reset

# =============================================================================================
# chat webhooks: Discord, Slack, MS Teams, Mattermost, generic chat-webhook
# =============================================================================================
CHP=https://localhost:$(P chat)
chat() { call "$CHP$1" -H 'content-type: application/json' --data-binary "$2" "${@:3}"; }
DW=/api/webhooks/123456789012345678/tok-en_1
chat "$DW?wait=true" '{"content":"hello","username":"Novu","avatar_url":"https://x.test/a.png"}'
eq "discord: ?wait=true -> 200 message over h2" "200 2 hello 123456789012345678 Novu" "$CODE $HVER $(jv "$B" j.content) $(jv "$B" j.webhook_id) $(jv "$B" j.author.username)"
eq "discord: snowflake id, ISO timestamp" "true true" "$(jv "$B" '/^\d{17,20}$/.test(j.id)') $(jv "$B" '/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/.test(j.timestamp)')"
eq "chat: log has kind, token = path, parsed body" "discord $DW hello" "$(lastlog chat kind) $(lastlog chat token) $(lastlog chat body.content)"
chat "/api/v10/webhooks/1/x?wait=true" '{"content":"v10"}' --http1.1
eq "discord: versioned path, http/1.1" "200 1.1" "$CODE $HVER"
chat "$DW" '{"content":"hello"}'
eq "discord: no ?wait=true -> 400 (the mock needs the message id)" "400 50035 MOCK_WAIT_REQUIRED" "$CODE $(jv "$B" j.code) $(jv "$B" 'j.errors.wait._errors[0].code')"
chat "$DW?wait=maybe" '{"content":"hello"}'
eq "discord: ?wait=maybe -> 400" 400 "$CODE"
cfg '{"chat":{"discordRequireWait":false}}'
chat "$DW" '{"content":"hello"}'
eq "discord: discordRequireWait=false -> 204 without a body" "204 " "$CODE $(cat "$B")"
cfg '{"chat":{"discordRequireWait":true}}'
chat "/api/webhooks/abc/tok?wait=true" '{"content":"x"}'
status_body "discord: id not a snowflake" 400 '{"webhook_id":["Value \"abc\" is not snowflake."]}'
chat "$DW?wait=true" '{"content":"x"}' -X PUT
status_body "discord: PUT" 405 '{"message":"405: Method Not Allowed","code":0}'
call "$CHP$DW?wait=true" --data-binary 'content=x'
status_body "discord: form body" 400 '{"message":"Cannot send an empty message","code":50006}'
chat "$DW?wait=true" '{"content":'
status_body "discord: invalid JSON" 400 '{"message":"The request body contains invalid JSON.","code":50109}'
LONG=$(head -c 2001 /dev/zero | tr '\0' a)
chat "$DW?wait=true" "{\"content\":\"$LONG\"}"
status_body "discord: content of 2001 characters" 400 '{"message":"Invalid Form Body","code":50035,"errors":{"content":{"_errors":[{"code":"BASE_TYPE_MAX_LENGTH","message":"Must be 2000 or fewer in length."}]}}}'
chat "$DW?wait=true" "{\"content\":\"${LONG:1}\"}"
eq "discord: content of 2000 characters -> 200" 200 "$CODE"
chat "$DW?wait=true" "{\"content\":\"$(head -c 2000 /dev/zero | sed 's/\x0/é/g')\"}"
eq "discord: 2000 characters counted as characters, not bytes" 200 "$CODE"
chat "$DW?wait=true" '{"content":""}'
status_body "discord: empty content" 400 '{"message":"Cannot send an empty message","code":50006}'
chat "$DW?wait=true" '{"text":"slack style"}'
eq "discord: {text} -> empty message, unknown field logged" '400 50006 ["text"]' "$CODE $(jv "$B" j.code) $(lastlog chat unknownFields)"
chat "$DW?wait=true" '{"embeds":[{"title":"t","description":"d"}]}'
eq "discord: embeds only -> 200" 200 "$CODE"
chat "$DW?wait=true" "{\"content\":\"x\",\"embeds\":$(node -e 'console.log(JSON.stringify(Array(11).fill({title:"t"})))')}"
eq "discord: 11 embeds -> 400" "400 BASE_TYPE_MAX_LENGTH" "$CODE $(jv "$B" 'j.errors.embeds._errors[0].code')"
chat "$DW?wait=true" '{"content":"x","username":"my Discord bot"}'
eq "discord: username containing discord -> 400" "400 USERNAME_INVALID_CONTAINS" "$CODE $(jv "$B" 'j.errors.username._errors[0].code')"
chat "$DW?wait=true" "{\"content\":\"x\",\"username\":\"$(head -c 81 /dev/zero | tr '\0' u)\"}"
eq "discord: username of 81 characters -> 400" 400 "$CODE"
chat "$DW?wait=true" '{"content":"x","avatar_url":"not a url"}'
eq "discord: bad avatar_url -> 400" "400 URL_TYPE_INVALID_URL" "$CODE $(jv "$B" 'j.errors.avatar_url._errors[0].code')"
tok chat "$DW" deleted
chat "$DW?wait=true" '{"content":"x"}'
status_body "discord: deleted webhook" 404 '{"message":"Unknown Webhook","code":10015}'
tok chat "$DW" invalid-token
chat "$DW?wait=true" '{"content":"x"}'
status_body "discord: invalid token" 401 '{"message":"Invalid Webhook Token","code":50027}'
tok chat "$DW" 'fail:429::1'
chat "$DW?wait=true" '{"content":"x"}'
status_body "discord: rate limited" 429 '{"message":"You are being rate limited.","retry_after":0.5,"global":false}'
hdr_has "discord: 429 Retry-After" "retry-after: 1"
tok chat "$DW" 'fail:429:2:1'
chat "$DW?wait=true" '{"content":"x"}'
eq "discord: fail:429:2 -> retry_after 2" "429 2" "$CODE $(jv "$B" j.retry_after)"
tok chat "$DW" 'fail:500::1'
chat "$DW?wait=true" '{"content":"x"}'
status_body "discord: fail:500" 500 '{"message":"500: Internal Server Error","code":0}'
cfg '{"chat":{"rateLimit":2,"rateWindowMs":800}}'
chat "$DW?wait=true" '{"content":"1"}'; c1=$CODE; chat "$DW?wait=true" '{"content":"2"}'; c2=$CODE; chat "$DW?wait=true" '{"content":"3"}'
eq "chat: rateLimit 2 per window -> the 3rd gets Discord's 429 with retry_after <= the window" "200 200 429 true" "$c1 $c2 $CODE $(jv "$B" 'j.retry_after>0&&j.retry_after<=0.8')"
cfg '{"chat":{"rateLimit":0}}'

SW=/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx
chat "$SW" '{"text":"hello"}'
eq "slack: {text} -> 200 ok text/plain + x-slack-req-id" "200 ok text/plain;" "$CODE $(cat "$B") $(grep -i '^content-type' "$H" | tr -d '\r' | awk '{print $2}')"
hdr_has "slack: x-slack-req-id" "x-slack-req-id:"
chat "$SW" '{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"hi"}}]}' --http1.1
eq "slack: blocks only, http/1.1" "200 1.1 ok" "$CODE $HVER $(cat "$B")"
chat /services/T0123ABCD/B0456EFGH '{"text":"x"}'
status_body "slack: incomplete path" 404 no_service
call "$CHP$SW" --data-urlencode 'payload={"text":"x"}'
status_body "slack: form body" 400 invalid_payload
chat "$SW" '{"text":'
status_body "slack: invalid JSON" 400 invalid_payload
chat "$SW" '{}'
status_body "slack: neither text nor blocks" 400 no_text
chat "$SW" '{"text":5}'
status_body "slack: text not a string" 400 invalid_payload
chat "$SW" '{"blocks":[{"text":"no type"}]}'
status_body "slack: block without type" 400 invalid_blocks
chat "$SW" '{"text":"x"}' -X GET
eq "slack: GET -> 405" 405 "$CODE"
for s in deleted:404:no_service no-team:404:no_team channel-not-found:404:channel_not_found invalid-token:403:invalid_token archived:410:channel_is_archived; do
    IFS=: read -r st code word <<< "$s"
    tok chat "$SW" "$st"; chat "$SW" '{"text":"x"}'
    status_body "slack: state $st" "$code" "$word"
done
tok chat "$SW" 'fail:429:5:1'; chat "$SW" '{"text":"x"}'
status_body "slack: fail:429:5" 429 rate_limited
hdr_has "slack: 429 Retry-After" "retry-after: 5"
tok chat "$SW" 'fail:500::1'; chat "$SW" '{"text":"x"}'
status_body "slack: fail:500" 500 rollup_error
tok chat "$SW" ok

TW=/webhookb2/11111111-2222-4333-8444-555555555555@66666666-7777-4888-9999-000000000000/IncomingWebhook/0123456789abcdef0123456789abcdef/aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee
TF='/workflows/0123456789abcdef0123456789abcdef/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=mocksig'
CARD='{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{"type":"AdaptiveCard","version":"1.4","body":[{"type":"TextBlock","text":"hi"}]}}]}'
chat "$TW" '{"text":"hello"}'
eq "msteams connector: {text} -> 200 \"1\"" "200 1 connector" "$CODE $(cat "$B") $(lastlog chat flavor)"
chat "$TW" '{"@type":"MessageCard","@context":"http://schema.org/extensions","summary":"s","text":"t"}'
eq "msteams connector: MessageCard -> 200" 200 "$CODE"
chat "$TW" "$CARD" --http1.1
eq "msteams connector: adaptive card message, http/1.1" "200 1.1" "$CODE $HVER"
chat /webhookb2/not-a-webhook '{"text":"x"}'
eq "msteams connector: bad path -> 404" 404 "$CODE"
chat "$TW" '{}'
status_body "msteams connector: no text" 400 'Summary or Text is required.'
eq "msteams connector: payloadError logged" '"text" must be a non-empty string' "$(lastlog chat payloadError)"
call "$CHP$TW" --data-binary 'text=x'
eq "msteams connector: form body -> 400" 400 "$CODE"
chat "$TF" "$CARD"
eq "msteams workflow: adaptive card -> 202, empty, run id" "202  workflow" "$CODE $(cat "$B") $(lastlog chat flavor)"
hdr_has "msteams workflow: x-ms-workflow-run-id" "x-ms-workflow-run-id:"
chat "/powerautomate/automations/direct$TF" '{"text":"hello"}'
eq "msteams workflow: power platform path, {text} -> 202" 202 "$CODE"
chat "${TF%&sig=*}" "$CARD"
eq "msteams workflow: no sig -> 401" "401 DirectApiAuthorizationRequired" "$CODE $(jv "$B" j.error.code)"
chat "${TF%%\?*}?sig=x" "$CARD"
eq "msteams workflow: no api-version -> 400" "400 MissingApiVersionParameter" "$CODE $(jv "$B" j.error.code)"
chat "$TF" '{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{"type":"Card"}}]}'
eq "msteams workflow: not an AdaptiveCard -> 400" "400 InvalidTemplate" "$CODE $(jv "$B" j.error.code)"
chat "$TF" '{"type":"message","attachments":[]}'
eq "msteams workflow: no attachments -> 400" 400 "$CODE"
call "$CHP$TF" -H 'content-type: text/plain' --data-binary "$CARD"
eq "msteams workflow: text/plain -> 415" 415 "$CODE"
tok chat "$TW" deleted; chat "$TW" '{"text":"x"}'
eq "msteams connector: deleted -> 404" 404 "$CODE"
tok chat "${TF%%\?*}" archived; chat "$TF" "$CARD"
eq "msteams workflow: archived (disabled) -> 410" "410 WorkflowDisabled" "$CODE $(jv "$B" j.error.code)"
tok chat "$TW" 'fail:429:4:1'; chat "$TW" '{"text":"x"}'
eq "msteams connector: fail:429:4 -> 429" 429 "$CODE"
hdr_has "msteams: 429 Retry-After" "retry-after: 4"

MW=/hooks/abcdefghijklmnopqrstuvwxyz
chat "$MW" '{"text":"hello","channel":"town-square"}'
eq "mattermost: {text, channel} -> 200 ok" "200 ok town-square" "$CODE $(cat "$B") $(lastlog chat body.channel)"
ok "mattermost: x-request-id of 26 characters" grep -qiE '^x-request-id: [a-z0-9]{26}' "$H"
chat "$MW" '{"text":"hello"}' --http1.1
eq "mattermost: without channel, http/1.1" "200 1.1" "$CODE $HVER"
chat /hooks/short '{"text":"x"}'
eq "mattermost: hook id not 26 characters -> 400 invalid webhook" "400 web.incoming_webhook.invalid.app_error" "$CODE $(jv "$B" j.id)"
chat "$MW" '{"channel":"town-square"}'
eq "mattermost: no text -> 400" "400 web.incoming_webhook.text.app_error No text specified. 400" "$CODE $(jv "$B" j.id) $(jv "$B" j.message) $(jv "$B" j.status_code)"
chat "$MW" '{"text":"x","channel":""}'
eq "mattermost: empty channel -> 400" 400 "$CODE"
call "$CHP$MW" --data-urlencode 'payload={"text":"x"}'
eq "mattermost: form body -> 400 parse error" "400 web.incoming_webhook.parse.app_error" "$CODE $(jv "$B" j.id)"
tok chat "$MW" deleted; chat "$MW" '{"text":"x"}'
eq "mattermost: deleted -> 400 invalid webhook" "400 Invalid webhook." "$CODE $(jv "$B" j.message)"
tok chat "$MW" channel-not-found; chat "$MW" '{"text":"x"}'
eq "mattermost: channel-not-found -> 400" "400 web.incoming_webhook.channel.app_error" "$CODE $(jv "$B" j.id)"
tok chat "$MW" 'fail:429:2:1'; chat "$MW" '{"text":"x"}'
status_body "mattermost: fail:429:2" 429 'limit exceeded'
hdr_has "mattermost: 429 Retry-After" "retry-after: 2"

GW=/chat/room-1
gbody() { echo "{\"content\":\"hello\",\"webhookUrl\":\"$CHP${1:-$GW}\",\"channel\":\"general\"}"; }
chat "$GW" "$(gbody)"
eq "chat-webhook: no secret configured -> 200 {id}, unsigned" "200 true none" "$CODE $(jv "$B" '/^chat-\d+$/.test(j.id)') $(lastlog chat signature)"
chat "$GW" "{\"content\":\"hello\",\"webhookUrl\":\"$CHP$GW\"}" --http1.1
eq "chat-webhook: without channel, http/1.1" "200 1.1" "$CODE $HVER"
chat "$GW" "$(gbody /chat/other)"
eq "chat-webhook: webhookUrl of another webhook -> 400" 400 "$CODE"
chat "$GW" "$(gbody | sed 's/"hello"/""/')"
eq "chat-webhook: empty content -> 400" "400 \"content\" must be a non-empty string" "$CODE $(jv "$B" j.error)"
chat "$GW" "$(gbody | sed 's/"channel"/"chan"/')"
eq "chat-webhook: unknown key -> 400" 400 "$CODE"
call "$CHP$GW" -H 'content-type: text/plain' --data-binary "$(gbody)"
eq "chat-webhook: text/plain -> 415" 415 "$CODE"
cfg "{\"chat\":{\"secrets\":{\"$GW\":\"chat-secret\"}}}"
chat "$GW" "$(gbody)"
status_body "chat-webhook: secret configured, no signature" 401 '{"error":"no X-Novu-Signature header"}'
chat "$GW" "$(gbody)" -H "x-novu-signature: $(hsig wrong "$(gbody)")"
eq "chat-webhook: wrong signature -> 401" 401 "$CODE"
chat "$GW" "$(gbody)" -H "x-novu-signature: $(hsig chat-secret "$(gbody)")"
eq "chat-webhook: right signature -> 200" "200 ok" "$CODE $(lastlog chat signature)"
tok chat "$GW" deleted; chat "$GW" "$(gbody)" -H "x-novu-signature: $(hsig chat-secret "$(gbody)")"
status_body "chat-webhook: deleted" 404 '{"error":"not found"}'
tok chat "$GW" archived; chat "$GW" "$(gbody)" -H "x-novu-signature: $(hsig chat-secret "$(gbody)")"
status_body "chat-webhook: archived" 410 '{"error":"gone"}'
chat /elsewhere '{"text":"x"}'
eq "chat: unknown path -> 404" "404 null" "$CODE $(lastlog chat kind)"
cfg '{"chat":{"proxy502Next":1}}'
chat "$SW" '{"text":"x"}'
eq "chat: proxy502Next -> 502" 502 "$CODE"
eq "chat: received per webhook path, whatever answered" "{\"$DW\":25,\"$SW\":16,\"$MW\":8,\"$GW\":11}" \
   "$(ctl GET '/received?provider=chat' | node -pe "const j=JSON.parse(require('fs').readFileSync(0));JSON.stringify({'$DW':j['$DW'],'$SW':j['$SW'],'$MW':j['$MW'],'$GW':j['$GW']})")"
eq "chat: /requests?token=<path>" 11 "$(ctl GET "/requests?provider=chat&token=$GW" | node -pe 'JSON.parse(require("fs").readFileSync(0)).count')"
eq "chat: accepted counts successes only" 3 "$(ctl GET '/accepted?provider=chat' | node -pe "JSON.parse(require('fs').readFileSync(0))['$GW']")"
eq "control: chat states listed with their path" "$GW archived" "$(ctl GET /tokens | node -pe "const t=JSON.parse(require('fs').readFileSync(0)).tokens.find(t=>t.token==='$GW');t.token+' '+t.state")"
reset

# each remaining strict check rejecting one bad request: NAME URL BODY STATUS [curl args]
rej() {
    local n=$1 u=$2 b=$3 st=$4 p; shift 4
    case $u in "$OSP"*) p=onesignal ;; "$WHP"*) p=webhook ;; *) p=chat ;; esac
    call "$u" -H 'content-type: application/json' --data-binary "$b" "$@"
    ctl GET "/requests?provider=$p&limit=1" > "$T/log.json"
    eq "$n -> $st, reason logged" "$st true" "$CODE $(jv "$T/log.json" '!!(j.requests[0].payloadError||j.requests[0].authError)')"
}
OSA=(-H "authorization: Key $OS_KEY")
rej "onesignal: content_available not a boolean" "$OSP/notifications" "$(osb '' '"content_available":"yes"')" 400 "${OSA[@]}"
rej "onesignal: mutable_content not a boolean" "$OSP/notifications" "$(osb '' '"mutable_content":1')" 400 "${OSA[@]}"
rej "onesignal: template_id not a UUID" "$OSP/notifications" "$(osb '' '"template_id":"welcome"')" 400 "${OSA[@]}"
rej "onesignal: external_id not a UUID" "$OSP/notifications" "$(osb '' '"external_id":"x"')" 400 "${OSA[@]}"
rej "onesignal: subtitle not a language map" "$OSP/notifications" "$(osb '' '"subtitle":{"en":1}')" 400 "${OSA[@]}"
rej "onesignal: name not a string" "$OSP/notifications" "$(osb '' '"name":5')" 400 "${OSA[@]}"
node -e 'console.log(JSON.stringify({pad:"x".repeat(5<<20)}))' > "$T/big.json"
rej "onesignal: body over 4 MiB" "$OSP/notifications" "@$T/big.json" 413 "${OSA[@]}"
rej "webhook: payload an array" "$WHP/p" '{"target":["w"],"title":"T","content":"C","overrides":{},"payload":[]}' 400 \
    -H "x-novu-signature: $(hsig "$WHS" '{"target":["w"],"title":"T","content":"C","overrides":{},"payload":[]}')"
rej "webhook: body an array" "$WHP/p" '[1]' 400 -H "x-novu-signature: $(hsig "$WHS" '[1]')"
rej "discord: body an array" "$CHP$DW?wait=true" '[1]' 400
rej "discord: content not a string" "$CHP$DW?wait=true" '{"content":5}' 400
rej "discord: embeds not an array" "$CHP$DW?wait=true" '{"content":"x","embeds":{}}' 400
rej "discord: an embed not an object" "$CHP$DW?wait=true" '{"content":"x","embeds":["e"]}' 400
rej "discord: not a webhook path" "$CHP/api/webhooks/1" '{"content":"x"}' 404
rej "slack: 51 blocks" "$CHP$SW" "{\"blocks\":$(node -e 'console.log(JSON.stringify(Array(51).fill({type:"divider"})))')}" 400
rej "slack: body an array" "$CHP$SW" '[{"text":"x"}]' 400
rej "msteams: MessageCard without text or summary" "$CHP$TW" '{"@type":"MessageCard","title":"t"}' 400
rej "msteams: @type other than MessageCard" "$CHP$TW" '{"@type":"Card","text":"t"}' 400
rej "msteams: attachments without type message" "$CHP$TW" "$(js '({attachments:j.attachments})' "$CARD")" 400
rej "msteams: attachment without contentType" "$CHP$TF" '{"type":"message","attachments":[{"content":{}}]}' 400
rej "msteams: adaptive body not an array" "$CHP$TF" '{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{"type":"AdaptiveCard","body":{}}}]}' 400
rej "msteams: adaptive version not a string" "$CHP$TF" '{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{"type":"AdaptiveCard","version":1.4}}]}' 400
rej "msteams: text empty" "$CHP$TW" '{"text":""}' 400
rej "msteams: not a workflow trigger path" "$CHP/workflows/abc/run?api-version=1&sig=x" '{"text":"x"}' 404
rej "msteams: bad JSON" "$CHP$TF" '{"text":' 400
rej "mattermost: text not a string" "$CHP$MW" '{"text":5}' 400
rej "mattermost: props not an object" "$CHP$MW" '{"text":"x","props":[]}' 400
rej "mattermost: username empty" "$CHP$MW" '{"text":"x","username":""}' 400
rej "mattermost: body an array" "$CHP$MW" '[{"text":"x"}]' 400
rej "mattermost: bad JSON" "$CHP$MW" '{"text"' 400
rej "mattermost: not a hook path" "$CHP/hooks/abcdefghijklmnopqrstuvwxyz/x" '{"text":"x"}' 404
rej "chat-webhook: webhookUrl not a URL" "$CHP$GW" '{"content":"x","webhookUrl":"room-1"}' 400
rej "chat-webhook: webhookUrl not http(s)" "$CHP$GW" '{"content":"x","webhookUrl":"ftp://localhost/chat/room-1"}' 400
rej "chat-webhook: channel not a string" "$CHP$GW" "{\"content\":\"x\",\"webhookUrl\":\"$CHP$GW\",\"channel\":5}" 400
rej "chat-webhook: phoneNumber not a string" "$CHP$GW" "{\"content\":\"x\",\"webhookUrl\":\"$CHP$GW\",\"phoneNumber\":5}" 400
rej "chat-webhook: body an array" "$CHP$GW" '[]' 400
rej "chat-webhook: bad JSON" "$CHP$GW" '{' 400
rej "chat-webhook: not a chat path" "$CHP/chat/a/b" '{"content":"x"}' 404
for u in "$CHP$SW" "$CHP$TW" "$CHP$TF" "$CHP$MW" "$CHP$GW"; do
    call "$u" -X GET
    eq "chat: GET on $(lastlog chat kind) -> 405" 405 "$CODE"
done
reset


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
eq "control: /window needs a size" 400 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$CTL/window?provider=apns&size=x")"
ok "control: /window sets the send window of open connections" test "$(ctl POST '/window?provider=apns&size=65535' | node -pe 'JSON.parse(require("fs").readFileSync(0)).connections')" -ge 0
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
