#!/bin/sh
# run_tls_test.sh PROBE WORKDIR - real TLS handshakes against the CA and
# server certificate that tw_tls_ensure() generates (see tls_probe.c):
#   - curl trusting only ca.pem reaches https://localhost, 127.0.0.1 and
#     [::1] (the SANs), and fails without it (the chain is what makes it work);
#   - openssl s_client verifies the chain and the host name (if installed);
#   - a client certificate issued by the CA is seen as its CN, one from
#     another CA is refused;
#   - mbedTLS (nng tls+tcp) accepts the same files and checks the chain;
#   - a restart keeps the certificates and they still verify;
#   - every key is owner-only.
set -eu
PROBE=$1
WORK=$2
rm -rf "$WORK"
mkdir -p "$WORK"
DATA=$WORK/data
OTHER=$WORK/other
fail() { echo "FAIL: $*" >&2; exit 1; }

mode() { stat -c %a "$1"; }

[ "$("$PROBE" init "$DATA")" = "new-ca new-server" ] || fail "first start did not create the CA and server certificate"
[ "$(mode "$DATA/tls")" = 700 ] || fail "tls directory is not 0700"
for k in ca.key server.key; do
    [ "$(mode "$DATA/tls/$k")" = 600 ] || fail "$k is not 0600"
done
"$PROBE" client "$DATA" alice "$WORK/alice.pem" "$WORK/alice.key" || fail "issuing a client certificate"
[ "$(mode "$WORK/alice.key")" = 600 ] || fail "client key is not 0600"
"$PROBE" init "$OTHER" >/dev/null
"$PROBE" client "$OTHER" mallory "$WORK/mallory.pem" "$WORK/mallory.key"

PROBE_PID=
start() {
    rm -f "$WORK/port"
    "$PROBE" serve "$DATA" "$WORK/port" 2>"$WORK/probe.log" &
    PROBE_PID=$!
    i=0
    while [ ! -s "$WORK/port" ]; do
        i=$((i + 1))
        [ $i -lt 100 ] || fail "tls_probe did not start: $(cat "$WORK/probe.log")"
        sleep 0.1
    done
    PORT=$(cut -d' ' -f1 "$WORK/port")
    HAVE_V6=$(cut -d' ' -f2 "$WORK/port")
}
stop() {
    curl -s --cacert "$DATA/tls/ca.pem" "https://localhost:$PORT/quit" >/dev/null || true
    wait "$PROBE_PID" || true
    PROBE_PID=
}
trap '[ -n "$PROBE_PID" ] && kill "$PROBE_PID" 2>/dev/null; true' EXIT

CA=$DATA/tls/ca.pem
start

# the chain and every SAN
out=$(curl -sS --max-time 10 --cacert "$CA" "https://localhost:$PORT/") || fail "curl https://localhost with ca.pem"
[ "$out" = "client=-" ] || fail "unexpected answer '$out'"
out=$(curl -sS --max-time 10 --cacert "$CA" "https://127.0.0.1:$PORT/") || fail "curl https://127.0.0.1 with ca.pem"
[ "$out" = "client=-" ] || fail "unexpected answer '$out'"
if [ "$HAVE_V6" = 1 ]; then
    out=$(curl -sS --max-time 10 --cacert "$CA" "https://[::1]:$PORT/") || fail "curl https://[::1] with ca.pem"
    [ "$out" = "client=-" ] || fail "unexpected answer '$out'"
else
    echo "note: no IPv6 loopback, [::1] not checked"
fi

# without the CA the same server is not trusted (exit 60: peer certificate not verified)
rc=0
curl -sS --max-time 10 "https://localhost:$PORT/" >/dev/null 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "curl trusted the server without ca.pem"
# trusting another runtime's CA does not work either
rc=0
curl -sS --max-time 10 --cacert "$OTHER/tls/ca.pem" "https://localhost:$PORT/" >/dev/null 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "curl trusted the server with a foreign CA"

if command -v openssl >/dev/null 2>&1; then
    out=$(openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$CA" \
        -verify_return_error -verify_hostname localhost </dev/null 2>&1) || fail "openssl s_client: $out"
    echo "$out" | grep -q "Verify return code: 0 (ok)" || fail "openssl did not verify the chain: $out"
fi

# mutual TLS: our client certificate is recognised, a foreign one is not
out=$(curl -sS --max-time 10 --cacert "$CA" --cert "$WORK/alice.pem" --key "$WORK/alice.key" \
    "https://localhost:$PORT/") || fail "curl with a client certificate"
[ "$out" = "client=alice" ] || fail "client certificate not recognised: '$out'"
out=$(curl -sS --max-time 10 --cacert "$CA" --cert "$WORK/mallory.pem" --key "$WORK/mallory.key" \
    "https://localhost:$PORT/" 2>&1) || true
[ "$out" = "client=invalid" ] || fail "a foreign client certificate was not refused: '$out'"
stop

# nng's mbedTLS engine (libtwin's side of the nng binding) loads the same PEM
# files and verifies the chain
"$PROBE" nng "$DATA" "$CA" || fail "nng tls+tcp round trip with ca.pem"
rc=0
"$PROBE" nng "$DATA" "$OTHER/tls/ca.pem" 2>/dev/null || rc=$?
[ $rc -eq 3 ] || fail "nng dialer trusting a foreign CA did not fail the handshake (rc $rc)"

# restart: nothing is regenerated, and the chain still verifies
cp "$DATA/tls/server.pem" "$WORK/server.before"
[ "$("$PROBE" init "$DATA")" = "kept" ] || fail "a restart re-issued the certificates"
cmp -s "$DATA/tls/server.pem" "$WORK/server.before" || fail "server.pem changed on restart"
start
out=$(curl -sS --max-time 10 --cacert "$CA" "https://localhost:$PORT/") || fail "curl after restart"
[ "$out" = "client=-" ] || fail "unexpected answer after restart '$out'"
stop
echo "tls integration: ok"
