#!/usr/bin/env python3
"""An agent whose TLS connection ends without a close_notify goes offline
(nng_conn.c, "A dead TLS stream").

An agent logs in over tls+tcp:// and closes its socket at once, without
reading the answer and without a TLS close_notify (a killed client; and
libtwin's close lost its close_notify to a race, see transport_nng.c). The
end of the connection reaches twind while it checks the password (some 80
ms on the receive callback), when none of its receives is outstanding.
nng 1.5.2's TLS layer reads the socket on its own meanwhile, meets the end,
closes the socket and tells nobody; twind's next receive never completed.
Regression: the connection stayed open for ever and the agent online, so
an RPC to it (a safe action) timed out instead of failing at once with 503
"not connected" (test_nng_e2e's offline_queue failed so on a loaded
machine). Now the housekeeping thread finds the socket without a peer and
closes the connection: the RPC fails with 503 within seconds.

The admin, the first agent session (it publishes the TD) and the consumer
use the plain tcp:// listener. The write deadline is an hour, so it is not
what ends the connection. No assertion depends on speed: every wait is for
an event, with a generous deadline; on a machine so loaded that the client
closes only after twind's login is done, the connection ends the ordinary
way and the test passes without showing anything (it cannot fail falsely).
Usage: test_nng_peer_gone.py TWIND"""
import json, os, socket, ssl, subprocess, sys, tempfile, time

from twind_proc import TwindProc, read_answer, wire, wait_for

TWIND = sys.argv[1]
PW = "pw-of-a-test-client"
ROUNDS = 3


class Twind(TwindProc):
    def __init__(self):
        base = os.environ.get("TW_TEST_TMP") or None
        if base:
            os.makedirs(base, exist_ok=True)
        self.d = tempfile.mkdtemp(prefix="peer-gone-", dir=base)
        cfg = os.path.join(self.d, "twind.json")
        json.dump({"nng": {"write_timeout_ms": 3600000}}, open(cfg, "w"))
        self.logpath = os.path.join(self.d, "twind.log")
        self.log = open(self.logpath, "w")
        self.data = os.path.join(self.d, "data")
        self.p = subprocess.Popen([TWIND, "--data", self.data, "--https", "off", "--http",
                                   "127.0.0.1:0", "--nng", "tls+tcp://127.0.0.1:0", "--nng",
                                   "tcp://127.0.0.1:0", "--config", cfg, "--log-level", "debug"],
                                  stdout=self.log, stderr=self.log)
        urls = []
        for _ in range(300):
            try:
                urls = open(os.path.join(self.data, "nng.url")).read().split()
                self.pw = open(os.path.join(self.data, "admin.password")).read().strip()
                if len(urls) >= 2:
                    break
            except OSError:
                pass
            urls = []
            time.sleep(0.1)
        assert len(urls) >= 2, "twind did not start"

        def addr(url):
            host, port = url.split("://", 1)[1].rsplit(":", 1)
            return (host, int(port))
        self.tls_addr, self.tcp_addr = addr(urls[0]), addr(urls[1])
        assert urls[0].startswith("tls+tcp://"), urls





def login_msg(login, password):
    return {"type": "request", "operation": "login", "correlationID": "l",
            "input": {"login": login, "password": password}}


class Client:
    """A plain tcp:// connection. call() returns the final answer, or None
    when none came within `timeout` seconds (the connection is then made
    again: a late answer must not be taken for the next one)."""

    def __init__(self, tw, login, password):
        self.tw, self.login, self.password = tw, login, password
        self.connect()

    def connect(self):
        self.s = socket.create_connection(self.tw.tcp_addr)
        self.f = self.s.makefile("rb")
        r = self.call(login_msg(self.login, self.password), 30)
        assert r and "error" not in r, r

    def call(self, o, timeout=30):
        self.s.settimeout(timeout)
        self.s.sendall(wire(o))
        try:
            return read_answer(self.f, o)
        except (socket.timeout, TimeoutError):
            self.close()
            self.connect()
            return None

    def close(self):
        self.f.close()
        self.s.close()



def test_agent_gone_without_close_notify():
    tw = Twind()
    ok = False
    try:
        admin = Client(tw, "admin", tw.pw)
        for cid, kind, role in (("ag1", "agent", "agent"), ("co1", "consumer", "operator")):
            r = admin.call({"type": "request", "operation": "invokeaction",
                            "thingID": "dtw:twind:authn", "name": "addClient",
                            "correlationID": "add-" + cid,
                            "input": {"clientID": cid, "kind": kind, "role": role,
                                      "password": PW}})
            assert r.get("status") == "completed", r
        agent = Client(tw, "ag1", PW)
        td = {"@context": "https://www.w3.org/2022/wot/td/v1.1", "id": "t1", "title": "t",
              "actions": {"probe": {"safe": True}}}
        r = agent.call({"type": "request", "operation": "updatething", "thingID": "t1",
                        "correlationID": "u", "input": td})
        assert r and "error" not in r, r
        agent.close()

        cons = Client(tw, "co1", PW)
        n = [0]

        def offline():
            """An RPC to the agent fails at once as not connected (503)."""
            n[0] += 1
            r = cons.call({"type": "request", "operation": "invokeaction",
                           "thingID": "dtw:ag1:t1", "name": "probe",
                           "correlationID": "p%d" % n[0]}, timeout=1)
            return r is not None and r.get("status") == "failed" and \
                (r.get("error") or {}).get("status") == 503

        wait_for(offline, "the agent offline after its plain close")

        ctx = ssl.create_default_context(cafile=os.path.join(tw.data, "tls", "ca.pem"))
        ctx.check_hostname = False  # twind's certificate names localhost and 127.0.0.1
        for i in range(ROUNDS):
            logins = tw.logtext().count("login of 'ag1'")
            raw = socket.create_connection(tw.tls_addr)
            s = ctx.wrap_socket(raw)
            s.sendall(wire(login_msg("ag1", PW)))
            s.close()  # the socket goes: a FIN, no close_notify
            wait_for(lambda: tw.logtext().count("login of 'ag1'") > logins,
                     "twind to log the agent in (round %d)" % i)
            wait_for(offline, "the agent offline after its TLS connection ended (round %d)" % i)
        cons.close()
        admin.close()
        ok = True
    finally:
        ok = tw.stop(ok)
    assert ok, "twind did not stop cleanly"


if __name__ == "__main__":
    test_agent_gone_without_close_notify()
    print("ok")
