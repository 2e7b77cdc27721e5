#!/bin/sh
# run_twind_test.sh TWIND WORKDIR - the real daemon over HTTPS with the chain
# it generated on first start:
#   - first start: admin password printed once and saved owner-only; every
#     secret in the data directory owner-only;
#   - curl trusts twind only with ca.pem; login returns a PASETO token;
#   - the admin adds a viewer through the dtw:twind:authn service; the viewer
#     is refused that service (403);
#   - the 11th bad password within a minute gets 429 with Retry-After;
#   - logout kills the token at once;
#   - a restart reuses the certificates and keys: tokens stay valid, no new
#     admin password is printed.
set -eu
TWIND=$1
WORK=$2
rm -rf "$WORK"
mkdir -p "$WORK"
DATA=$WORK/data
fail() {
    echo "FAIL: $*" >&2
    [ -f "$WORK/err.log" ] && tail -20 "$WORK/err.log" >&2
    exit 1
}
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT

start() {
    rm -f "$DATA/https.port"
    "$TWIND" --data "$DATA" --https 127.0.0.1:0 --nng off >"$WORK/out$1.log" 2>"$WORK/err.log" &
    PID=$!
    i=0
    while [ ! -s "$DATA/https.port" ]; do
        i=$((i + 1))
        [ $i -lt 200 ] || fail "twind did not start"
        kill -0 "$PID" 2>/dev/null || fail "twind exited"
        sleep 0.1
    done
    PORT=$(cat "$DATA/https.port")
    URL=https://localhost:$PORT
}
stop() {
    kill "$PID"
    wait "$PID" || true
    PID=
}
json() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }
CURL="curl -sS --max-time 20 --cacert $DATA/tls/ca.pem"
JSON="Content-Type: application/json"

start 1
for f in "" keys tls; do
    [ "$(stat -c %a "$DATA/$f")" = 700 ] || fail "$DATA/$f is not 0700"
done
for f in admin.password keys/token.key tls/ca.key tls/server.key twind.db; do
    [ "$(stat -c %a "$DATA/$f")" = 600 ] || fail "$f is not 0600"
done
PW=$(cat "$DATA/admin.password")
grep -qF -- "$PW" "$WORK/out1.log" || fail "the admin password was not printed on first start"

rc=0
curl -sS --max-time 20 "$URL/things" >/dev/null 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "curl trusted twind without ca.pem"

TOK=$($CURL -X POST -H "$JSON" -d "{\"login\":\"admin\",\"password\":\"$PW\"}" "$URL/authn/login" | json '["token"]') ||
    fail "admin login"
case "$TOK" in v4.public.*) ;; *) fail "not a PASETO v4.public token: $TOK" ;; esac
AUTH="Authorization: Bearer $TOK"

code=$($CURL -o "$WORK/add.json" -w '%{http_code}' -X POST -H "$AUTH" -H "$JSON" \
    -d '{"clientID":"bob","role":"viewer","password":"bob-secret-1"}' \
    "$URL/things/dtw:twind:authn/actions/addClient")
[ "$code" = 200 ] || fail "addClient answered $code: $(cat "$WORK/add.json")"
BOB=$($CURL -X POST -H "$JSON" -d '{"login":"bob","password":"bob-secret-1"}' "$URL/authn/login" | json '["token"]') ||
    fail "bob login"
code=$($CURL -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $BOB" -H "$JSON" \
    "$URL/things/dtw:twind:authn/actions/listClients")
[ "$code" = 403 ] || fail "a viewer reached the admin service ($code)"
code=$($CURL -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BOB" "$URL/things")
[ "$code" = 200 ] || fail "a viewer cannot list things ($code)"

i=0
while [ $i -lt 10 ]; do
    code=$($CURL -o /dev/null -w '%{http_code}' -X POST -H "$JSON" -d '{"login":"bob","password":"guess"}' "$URL/authn/login")
    [ "$code" = 401 ] || fail "bad password $((i + 1)) answered $code"
    i=$((i + 1))
done
$CURL -D "$WORK/h429" -o /dev/null -X POST -H "$JSON" -d '{"login":"bob","password":"guess"}' "$URL/authn/login"
head -1 "$WORK/h429" | grep -q " 429" || fail "the 11th bad password was not answered 429: $(head -1 "$WORK/h429")"
grep -qi "^retry-after: [0-9]" "$WORK/h429" || fail "429 without Retry-After"

code=$($CURL -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $BOB" "$URL/authn/logout")
[ "$code" = 204 ] || [ "$code" = 200 ] || fail "logout answered $code"
code=$($CURL -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BOB" "$URL/things")
[ "$code" = 401 ] || fail "a logged-out token still works ($code)"

cp "$DATA/tls/server.pem" "$WORK/server.pem.1"
cp "$DATA/keys/token.key" "$WORK/token.key.1"
stop
start 2
cmp -s "$DATA/tls/server.pem" "$WORK/server.pem.1" || fail "the server certificate changed on restart"
cmp -s "$DATA/keys/token.key" "$WORK/token.key.1" || fail "the signing key changed on restart"
grep -qF -- "$PW" "$WORK/out2.log" && fail "the admin password was printed again"
code=$($CURL -o /dev/null -w '%{http_code}' -H "$AUTH" "$URL/things")
[ "$code" = 200 ] || fail "the admin token did not survive the restart ($code)"
code=$($CURL -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BOB" "$URL/things")
[ "$code" = 401 ] || fail "the logged-out token came back after the restart ($code)"
stop
echo "twind over TLS: ok"
