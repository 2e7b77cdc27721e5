#!/usr/bin/env python3
"""test_nng_http.py - nng and HTTP clients of one twind see the same Things.

  agent over nng, consumer over HTTP: twin-demo-agent (libtwin) publishes;
      a consumer reads its properties, invokes `echo` and receives `tick`
      events over SSE with plain HTTP.
  agent over HTTP, consumer over nng: a Python agent lives on GET /sse +
      POST /messages and serves echo/countdown/tick; twin-example-consumer
      (libtwin) runs its whole scenario against it and must exit 0.

usage: test_nng_http.py TWIND DEMO_AGENT EXAMPLE_CONSUMER
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

TWIND, DEMO_AGENT, CONSUMER = sys.argv[1:4]


def die_with_parent():
    """Children get SIGKILL when this script dies (e.g. a ctest timeout)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError:
        pass


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def wait_file(path, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            with open(path) as f:
                s = f.read().strip()
            if s:
                return s.splitlines()[0]
        time.sleep(0.1)
    fail("no " + path)


class Http:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port
        self.token = None

    def call(self, method, path, body=None, timeout=15):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw

    def login(self, login, password):
        st, body = self.call("POST", "/authn/login", {"login": login, "password": password})
        if st != 200:
            fail("login %s: %s %s" % (login, st, body))
        self.token = body["token"]

    def sse(self, path):
        """Opens an SSE stream; yields (event, data) pairs."""
        req = urllib.request.Request(self.base + path)
        req.add_header("Accept", "text/event-stream")
        req.add_header("Authorization", "Bearer " + self.token)
        resp = urllib.request.urlopen(req, timeout=30)
        event, data = None, []
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if data:
                    yield event, "\n".join(data)
                event, data = None, []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())


def add_client(admin, cid, kind, role, password):
    st, body = admin.call("POST", "/things/dtw:twind:authn/actions/addClient",
                          {"clientID": cid, "kind": kind, "role": role, "password": password})
    if st not in (200, 201):
        fail("addClient %s: %s %s" % (cid, st, body))


def wait_thing(http, twin_id, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        st, _ = http.call("GET", "/things/" + twin_id)
        if st == 200:
            return
        time.sleep(0.2)
    fail("thing %s never appeared" % twin_id)


def agent_nng_consumer_http(data, http_port):
    agent = subprocess.Popen([DEMO_AGENT, "--data", data, "--interval", "200", "--run-ms", "60000"],
                             preexec_fn=die_with_parent)
    try:
        admin = Http(http_port)
        admin.login("admin", open(os.path.join(data, "admin.password")).read().strip())
        add_client(admin, "hc", "consumer", "operator", "pw-of-hc-client")
        hc = Http(http_port)
        hc.login("hc", "pw-of-hc-client")
        wait_thing(hc, "dtw:demo-agent:demo")
        # a value the agent published over nng, read over HTTP
        end = time.time() + 10
        while True:
            st, v = hc.call("GET", "/things/dtw:demo-agent:demo/properties/counter")
            if st == 200 and isinstance(v, int) and v >= 1:
                break
            if time.time() > end:
                fail("counter over HTTP: %s %s" % (st, v))
            time.sleep(0.1)
        # an action over HTTP answered by the nng agent
        st, out = hc.call("POST", "/things/dtw:demo-agent:demo/actions/echo", {"via": "http"})
        if st != 200 or out != {"via": "http"}:
            fail("echo over HTTP: %s %s" % (st, out))
        # events over SSE
        got = []
        for ev, d in hc.sse("/things/dtw:demo-agent:demo/events/tick"):
            try:
                payload = json.loads(d)
            except ValueError:
                continue
            got.append(payload)
            if len(got) >= 2:
                break
        print("agent over nng -> consumer over HTTP: ok (%d ticks)" % len(got))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)
        if agent.returncode != 0:
            fail("demo agent exited with %s" % agent.returncode)


class PyAgent:
    """An agent on HTTP only: GET /sse for requests, POST /messages to send."""

    def __init__(self, http_port, cid, password):
        self.http = Http(http_port)
        self.http.login(cid, password)
        self.stop = False
        self.counter = 0
        self.ready = threading.Event()

    def send(self, env):
        st, body = self.http.call("POST", "/messages", env)
        if st not in (200, 202):
            print("POST /messages:", st, body)
        return st, body

    def answer(self, req, status, output=None):
        env = {"type": "response", "operation": req["operation"], "thingID": req["thingID"],
               "name": req["name"], "correlationID": req["correlationID"], "status": status}
        if output is not None:
            env["output"] = output
        if status == "running":
            env["type"] = "notification"
        self.send(env)

    def countdown(self, req):
        n = req.get("input", 1)
        for i in range(n, 0, -1):
            self.answer(req, "running", {"remaining": i})
            time.sleep(0.1)
        self.answer(req, "completed", {"counted": n})

    def serve(self):
        for ev, d in self.http.sse("/sse"):
            if self.stop:
                return
            self.ready.set()
            try:
                env = json.loads(d)
            except ValueError:
                continue
            if env.get("type") != "request":
                continue
            if env.get("operation") == "invokeaction" and env.get("name") == "echo":
                self.answer(env, "completed", env.get("input"))
            elif env.get("operation") == "invokeaction" and env.get("name") == "countdown":
                threading.Thread(target=self.countdown, args=(env,), daemon=True).start()

    def tick(self):
        while not self.stop:
            self.counter += 1
            for op, name, value in (("observeproperty", "counter", self.counter),
                                    ("subscribeevent", "tick", {"counter": self.counter})):
                self.send({"type": "notification", "operation": op, "thingID": "demo",
                           "name": name, "value": value})
            time.sleep(0.2)


def agent_http_consumer_nng(data, http_port):
    admin = Http(http_port)
    admin.login("admin", open(os.path.join(data, "admin.password")).read().strip())
    add_client(admin, "pyagent", "agent", "agent", "pw-of-pyagent")
    a = PyAgent(http_port, "pyagent", "pw-of-pyagent")
    threading.Thread(target=a.serve, daemon=True).start()
    td = {"@context": "https://www.w3.org/2022/wot/td/v1.1", "id": "demo", "title": "py agent",
          "properties": {"counter": {"type": "integer", "readOnly": True}},
          "events": {"tick": {}}, "actions": {"echo": {}, "countdown": {}}}
    time.sleep(0.5)  # the /sse stream is open before the first request can come
    st, body = a.send({"type": "request", "operation": "updatething", "thingID": "demo",
                       "correlationID": "td1", "input": td})
    if st not in (200, 202):
        fail("updatething over HTTP: %s %s" % (st, body))
    wait_thing(admin, "dtw:pyagent:demo")
    threading.Thread(target=a.tick, daemon=True).start()
    r = subprocess.run([CONSUMER, "--data", data, "--thing", "dtw:pyagent:demo", "--events", "2"],
                       timeout=60, preexec_fn=die_with_parent)
    a.stop = True
    if r.returncode != 0:
        fail("example consumer over nng against the HTTP agent exited %d" % r.returncode)
    print("agent over HTTP -> consumer over nng: ok")


def main():
    base = os.environ.get("TW_TEST_TMP") or "/tmp"
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="nng-http-", dir=base)
    data = os.path.join(d, "data")
    log = open(os.path.join(d, "twind.log"), "w")
    tw = subprocess.Popen([TWIND, "--data", data, "--https", "off", "--http", "127.0.0.1:0",
                           "--nng", "tls+tcp://127.0.0.1:0", "--log-level", "warn"],
                          stdout=log, stderr=log, preexec_fn=die_with_parent)
    try:
        wait_file(os.path.join(data, "nng.url"))
        http_port = int(wait_file(os.path.join(data, "http.port")))
        agent_nng_consumer_http(data, http_port)
        agent_http_consumer_nng(data, http_port)
    finally:
        tw.send_signal(signal.SIGTERM)
        try:
            tw.wait(timeout=20)
        except subprocess.TimeoutExpired:
            tw.kill()
    print("ok")


if __name__ == "__main__":
    main()
