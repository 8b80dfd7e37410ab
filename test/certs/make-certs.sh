#!/bin/sh
# test/certs/make-certs.sh DIR [TOKEN_URI | OAUTH_PORT]
#
# Creates throwaway test credentials for the local mock providers (test/mocks/):
#
#   ca.pem ca.key                 test CA the client trusts (novu.ca_file / curl --cacert)
#   server.pem server.key         TLS server cert for localhost + 127.0.0.1, signed by ca
#   fcm-service-account.json      Google service account (RSA-2048 PKCS#8), project "novu-test";
#   fcm-key.pem                   ... the same private key as a PEM file
#   apns-key.p8                   APNs auth key (EC P-256 PKCS#8), key id ABC123DEFG, team TEAM123456
#   apns.json                     {"keyId","teamId","bundleId"} of the above
#   apns-ca.pem apns-ca.key       the mock "Apple" CA that issues APNs client certificates
#   apns-cert.pem apns-cert.key   APNs client certificate (production + sandbox, topic com.novu.test)
#   apns-cert-sandbox.pem/.key    sandbox-only client certificate (for BadCertificateEnvironment)
#
# token_uri of the service account = $FCM_TOKEN_URI if set, else the 2nd argument (a full URL,
# or a port giving https://127.0.0.1:PORT/token), else https://127.0.0.1:8001/token.
#
# Idempotent: keys and certificates are created only when missing (a broken CA pair makes the
# whole group be recreated); the service-account JSON is rewritten every time (token_uri may
# change). Files are mode 644 on purpose (throwaway test keys; the PostgreSQL server user must be
# able to read them). Prints nothing on success.
set -eu

DIR=${1:?usage: make-certs.sh DIR [TOKEN_URI|OAUTH_PORT]}
ARG2=${2:-}
if [ -n "${FCM_TOKEN_URI:-}" ]; then
    TOKEN_URI=$FCM_TOKEN_URI
elif [ -n "$ARG2" ]; then
    case $ARG2 in
        *[!0-9]*) TOKEN_URI=$ARG2 ;;
        *) TOKEN_URI="https://127.0.0.1:$ARG2/token" ;;
    esac
else
    TOKEN_URI="https://127.0.0.1:8001/token"
fi

umask 022
mkdir -p "$DIR"
cd "$DIR"
OSSL=openssl
DAYS=3650
ERR=$(mktemp)
trap 'rm -f "$ERR" ext.cnf.tmp' EXIT
run() { "$@" 2>>"$ERR" >/dev/null || { cat "$ERR" >&2; echo "make-certs: failed: $*" >&2; exit 1; }; }

eckey() { run $OSSL genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
rsakey() { run $OSSL genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; }

# One extension config file for all certificates (sections chosen with -extensions).
cat > ext.cnf.tmp <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# APNs client certificate like Apple's "Apple Push Services" cert: 6.3.1 = development,
# 6.3.2 = production, 6.3.6 = topics (SEQUENCE of UTF8String topic, SEQUENCE{UTF8String kind}).
[apns_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
1.2.840.113635.100.6.3.1 = DER:0500
1.2.840.113635.100.6.3.2 = DER:0500
1.2.840.113635.100.6.3.6 = ASN1:SEQUENCE:apns_topics
[apns_sandbox_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
1.2.840.113635.100.6.3.1 = DER:0500
1.2.840.113635.100.6.3.6 = ASN1:SEQUENCE:apns_topics
[apns_topics]
t1 = UTF8:com.novu.test
k1 = SEQUENCE:kind_app
t2 = UTF8:com.novu.test.voip
k2 = SEQUENCE:kind_voip
t3 = UTF8:com.novu.test.complication
k3 = SEQUENCE:kind_complication
[kind_app]
k = UTF8:app
[kind_voip]
k = UTF8:voip
[kind_complication]
k = UTF8:complication
EOF

# sign KEY CSR_SUBJ OUT CA_PEM CA_KEY EXT_SECTION
sign() {
    run $OSSL req -new -key "$1" -subj "$2" -out "$3.csr" -config ext.cnf.tmp
    run $OSSL x509 -req -in "$3.csr" -CA "$4" -CAkey "$5" -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
        -days $DAYS -sha256 -extfile ext.cnf.tmp -extensions "$6" -out "$3"
    rm -f "$3.csr"
}

have() { for f in "$@"; do [ -s "$f" ] || return 1; done; }

# --- test CA + localhost server certificate -------------------------------------------------
if ! have ca.pem ca.key server.pem server.key; then
    eckey ca.key
    run $OSSL req -x509 -new -key ca.key -subj "/O=novu test/CN=novu test CA" -days $DAYS -sha256 \
        -config ext.cnf.tmp -extensions ca_ext -out ca.pem
    eckey server.key
    sign server.key "/O=novu test/CN=localhost" server.pem ca.pem ca.key server_ext
fi

# --- mock "Apple" CA + APNs client certificates ---------------------------------------------
if ! have apns-ca.pem apns-ca.key apns-cert.pem apns-cert.key apns-cert-sandbox.pem apns-cert-sandbox.key; then
    eckey apns-ca.key
    run $OSSL req -x509 -new -key apns-ca.key -subj "/O=Apple Inc. (mock)/CN=Apple WWDR CA (mock)" \
        -days $DAYS -sha256 -config ext.cnf.tmp -extensions ca_ext -out apns-ca.pem
    rsakey apns-cert.key
    sign apns-cert.key "/UID=com.novu.test/CN=Apple Push Services: com.novu.test/OU=TEAM123456/O=novu test/C=US" \
        apns-cert.pem apns-ca.pem apns-ca.key apns_ext
    rsakey apns-cert-sandbox.key
    sign apns-cert-sandbox.key "/UID=com.novu.test/CN=Apple Development IOS Push Services: com.novu.test/OU=TEAM123456/O=novu test/C=US" \
        apns-cert-sandbox.pem apns-ca.pem apns-ca.key apns_sandbox_ext
fi

# --- APNs token-auth key (.p8) ---------------------------------------------------------------
have apns-key.p8 || eckey apns-key.p8
printf '{"keyId":"ABC123DEFG","teamId":"TEAM123456","bundleId":"com.novu.test"}\n' > apns.json

# --- FCM service account -----------------------------------------------------------------------
have fcm-key.pem || rsakey fcm-key.pem
# private_key_id: 40 hex chars derived from the public key, so it is stable across runs.
KID=$($OSSL pkey -in fcm-key.pem -pubout -outform DER 2>>"$ERR" | $OSSL dgst -sha1 -r | cut -c1-40)
PEMJSON=$(awk 'BEGIN{ORS=""} {print $0 "\\n"}' fcm-key.pem)
cat > fcm-service-account.json <<EOF
{
  "type": "service_account",
  "project_id": "novu-test",
  "private_key_id": "$KID",
  "private_key": "$PEMJSON",
  "client_email": "sender@novu-test.iam.gserviceaccount.com",
  "client_id": "104242424242424242424",
  "auth_uri": "https://accounts.google.com/o/oauth2/auth",
  "token_uri": "$TOKEN_URI",
  "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
  "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/sender%40novu-test.iam.gserviceaccount.com",
  "universe_domain": "googleapis.com"
}
EOF

chmod 644 ./*.pem ./*.key ./*.p8 ./*.json 2>/dev/null || true
