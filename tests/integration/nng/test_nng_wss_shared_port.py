#!/usr/bin/env python3
"""A wss:// connection must never be given the client certificate of another
TCP connection from the same peer ip:port (regression: the GnuTLS engine
found a websocket's TLS stream by the peer address only, so a connection
without a certificate, sharing the source port of a tls+tcp connection that
presented one, was logged in as that client).

Usage: test_nng_wss_shared_port.py TWIND"""
import base64, json, os, shutil, socket, ssl, subprocess, sys, tempfile, time
import urllib.error
import urllib.request

ok = False
TWIND = sys.argv[1]
if os.environ.get("TW_TEST_TMP"):  # run alone, nothing made it yet
    os.makedirs(os.environ["TW_TEST_TMP"], exist_ok=True)
d = tempfile.mkdtemp(prefix="wss-port-", dir=os.environ.get("TW_TEST_TMP") or None)
data = os.path.join(d, "data")
cfg = os.path.join(d, "twind.json")
json.dump({"nng": {"listen": ["tls+tcp://127.0.0.1:0", "wss://127.0.0.1:0/twind"]}}, open(cfg, "w"))
log = open(os.path.join(d, "twind.log"), "wb")
tw = subprocess.Popen([TWIND, "--config", cfg, "--data", data, "--http", "127.0.0.1:0",
                       "--https", "off"], stdout=log, stderr=log)


def wait_file(p):
    for _ in range(300):
        if os.path.exists(p) and open(p).read().strip():
            return open(p).read()
        time.sleep(0.1)
    raise SystemExit("no " + p)


try:
    urls = wait_file(os.path.join(data, "nng.url")).split()
    wait_file(os.path.join(data, "admin.password"))
    tls_url = [u for u in urls if u.startswith("tls+tcp://")][0]
    wss_url = [u for u in urls if u.startswith("wss://")][0]
    tport = int(tls_url.rsplit(":", 1)[1])
    wport = int(wss_url.split("//")[1].split("/")[0].rsplit(":", 1)[1])
    ca = os.path.join(data, "tls", "ca.pem")
    # alice: a client with a certificate
    pw = open(os.path.join(data, "admin.password")).read().strip()
    subprocess.run([TWIND, "--data", data, "--issue-cert", "alice"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # make 'alice' a known client through HTTP as admin
    import urllib.request
    hport = int(wait_file(os.path.join(data, "http.port")))

    def http(method, path, body=None, tok=None):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (hport, path), method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        if tok:
            req.add_header("Authorization", "Bearer " + tok)
        try:
            with urllib.request.urlopen(req) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    st, b = http("POST", "/authn/login", {"login": "admin", "password": pw})
    tok = b["token"]
    st, things = http("GET", "/things", tok=tok)
    tid = [t["id"] for t in things if "authn" in t["id"]][0]
    st, b = http("POST", "/things/%s/actions/addClient" % urllib.request.quote(tid, safe=""),
                 {"clientID": "alice", "role": "admin", "kind": "consumer",
                  "password": "pw-xxxxxxxxxxxx"}, tok=tok)
    assert st == 200, (st, b)

    cert = os.path.join(data, "clients", "alice.pem")
    key = os.path.join(data, "clients", "alice.key")
    if not os.path.exists(key):
        key = cert

    def bound_sock(sport):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", sport))
        return s

    # attacker: TCP + TLS to wss, no certificate, from a fixed port
    a = bound_sock(0)
    sport = a.getsockname()[1]
    a.connect(("127.0.0.1", wport))
    actx = ssl.create_default_context(cafile=ca)
    actx.check_hostname = False
    a = actx.wrap_socket(a, server_hostname="127.0.0.1")
    time.sleep(0.3)
    # victim: tls+tcp with alice's certificate, same source port
    v = bound_sock(sport)
    v.connect(("127.0.0.1", tport))
    vctx = ssl.create_default_context(cafile=ca)
    vctx.check_hostname = False
    vctx.load_cert_chain(cert, key)
    v = vctx.wrap_socket(v, server_hostname="127.0.0.1")
    v.sendall(b'{"type":"request","operation":"ping","correlationID":"v1"}\n')
    vr = v.recv(4096)
    assert b'"pong"' in vr, vr  # the victim is authenticated by its certificate
    # attacker: websocket upgrade now, then login without credentials
    k = base64.b64encode(os.urandom(16)).decode()
    a.sendall(("GET /twind HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "\r\n" % (wport, k)).encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += a.recv(4096)
    assert b" 101 " in resp.split(b"\r\n")[0], resp
    payload = b'{"type":"request","operation":"login","correlationID":"a1","input":{}}\n'
    mask = os.urandom(4)
    hdr = bytes([0x82, 0x80 | len(payload)]) + mask
    a.sendall(hdr + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    a.settimeout(5)
    got = resp.split(b"\r\n\r\n", 1)[1]
    try:
        while b"a1" not in got:
            got += a.recv(4096)
    except socket.timeout:
        pass
    # the attacker shares the victim's source ip:port but not its TCP
    # connection: it must not be taken for alice
    assert b"a1" in got, got
    assert b'"alice"' not in got and b'"failed"' in got, got
    ok = True
finally:
    tw.terminate()
    tw.wait()
    if not ok:
        print("twind log:", open(os.path.join(d, "twind.log")).read()[-1500:])
    else:
        shutil.rmtree(d, ignore_errors=True)
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
