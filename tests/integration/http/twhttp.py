"""Helpers for the HTTP binding's integration tests: start a real twind on
loopback with a fresh data directory, HTTP(S) clients with bearer tokens, a
raw-socket SSE client (chunked decoding, Last-Event-ID) and an agent that
lives entirely on /sse + /messages.

Python 3 standard library only.
"""
import http.client
import json
import os
import resource
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

TWIND = os.environ.get("TWIND", "twind")


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Twind:
    """One twind process on loopback (HTTP and HTTPS on free ports)."""

    def __init__(self, http_cfg=None, extra_args=(), https=True, top_cfg=None):
        _raise_nofile()
        base = os.environ.get("TW_TEST_TMP") or tempfile.gettempdir()
        os.makedirs(base, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="twhttp-", dir=base)
        self.data = os.path.join(self.dir, "data")
        cfg = dict(top_cfg or {})
        cfg["http"] = dict(http_cfg or {})
        cfg["http"]["http"] = "127.0.0.1:0"
        cfg["http"]["https"] = "127.0.0.1:0" if https else None
        self.cfg_path = os.path.join(self.dir, "twind.json")
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        self.log_path = os.path.join(self.dir, "twind.log")
        self.log = open(self.log_path, "wb")
        args = [TWIND, "--config", self.cfg_path, "--data", self.data, "--nng", "off",
                "--http", "127.0.0.1:0"]
        args += ["--https", "127.0.0.1:0" if https else "off"]
        args += list(extra_args)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = self._wait_port("http.port")
        self.tls_port = self._wait_port("https.port") if https else None
        with open(os.path.join(self.data, "admin.password")) as f:
            self.admin_password = f.read().strip()

    def _wait_port(self, name):
        path = os.path.join(self.data, name)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("twind exited (%d): %s" % (self.proc.returncode, self.logtext()))
            try:
                with open(path) as f:
                    txt = f.read().strip()
                if txt:
                    return int(txt)
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise RuntimeError("twind did not write %s: %s" % (name, self.logtext()))

    def logtext(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        """Stops twind; raises if it did not exit cleanly (a crash, a hang on
        shutdown, or a sanitizer report in its log)."""
        hung = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        text = self.logtext()
        bad = hung or self.proc.returncode != 0 or any(
            m in text for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"))
        if os.environ.get("TW_KEEP") is None and not bad:
            shutil.rmtree(self.dir, ignore_errors=True)
        if bad:
            raise RuntimeError("twind did not stop cleanly (exit %s%s); log in %s:\n%s" %
                               (self.proc.returncode, ", hung" if hung else "", self.log_path,
                                text[-3000:]))

    # -- clients --
    def client(self, token=None, tls=False):
        return Client(self, token, tls)

    def login(self, login, password, tls=False):
        c = self.client(tls=tls)
        st, h, body = c.request("POST", "/authn/login", {"login": login, "password": password})
        if st != 200:
            raise RuntimeError("login %s: %d %r" % (login, st, body))
        c.token = body["token"]
        return c

    def admin(self):
        return self.login("admin", self.admin_password)

    def authn_thing(self, admin):
        st, _, things = admin.request("GET", "/things")
        assert st == 200, (st, things)
        for td in things:
            if "addClient" in (td.get("actions") or {}):
                return td["id"]
        raise RuntimeError("no authn service Thing in the directory")

    def add_client(self, admin, client_id, role, kind="consumer", password="pw-" + "x" * 12):
        tid = self.authn_thing(admin)
        st, _, body = admin.request(
            "POST", "/things/%s/actions/addClient" % q(tid),
            {"clientID": client_id, "role": role, "kind": kind, "password": password})
        if st not in (200, 204):
            raise RuntimeError("addClient %s: %d %r" % (client_id, st, body))
        return password


def q(s):
    return urllib.parse.quote(s, safe=":@")


class Client:
    def __init__(self, tw, token=None, tls=False):
        self.tw = tw
        self.token = token
        self.tls = tls
        self.conn = None
        self.lock = threading.Lock()

    def _connect(self):
        if self.tls:
            ctx = ssl.create_default_context(cafile=os.path.join(self.tw.data, "tls", "ca.pem"))
            c = http.client.HTTPSConnection("localhost", self.tw.tls_port, context=ctx,
                                            timeout=30)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.tw.port, timeout=30)
        return c

    def raw(self, method, path, body=None, headers=None):
        """Returns (status, headers dict (lower-case names; repeated joined by ', '), bytes)."""
        with self.lock:
            return self._raw(method, path, body, headers)

    def _raw(self, method, path, body=None, headers=None):
        hdrs = dict(headers or {})
        if self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = "Bearer " + self.token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        h = {}
        for k, v in r.getheaders():
            k = k.lower()
            h[k] = h[k] + ", " + v if k in h else v
        h["_link_list"] = r.headers.get_all("Link") or []
        if r.will_close:
            self.conn.close()
            self.conn = None
        return r.status, h, data

    def request(self, method, path, body=None, headers=None):
        st, h, data = self.raw(method, path, body, headers)
        ct = h.get("content-type", "")
        parsed = None
        if data and ("json" in ct):
            parsed = json.loads(data)
        elif data:
            parsed = data
        return st, h, parsed

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


class SSE:
    """A raw-socket SSE client: HTTP/1.1, chunked decoding, event parsing."""

    def __init__(self, tw, path, token, last_event_id=None, rcvbuf=None, connect=True, tls=False):
        self.tw = tw
        self.path = path
        self.token = token
        self.buf = b""
        self.body = b""
        self.events = []
        self.closed = False
        self.status = None
        self.headers = {}
        self.chunk_left = 0
        self.sock = None
        self.rcvbuf = rcvbuf
        self.last_event_id = last_event_id
        self.comments = 0
        self.tls = tls
        if connect:
            self.connect()

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.settimeout(30)
        if self.tls:
            s.connect(("127.0.0.1", self.tw.tls_port))
            ctx = ssl.create_default_context(cafile=os.path.join(self.tw.data, "tls", "ca.pem"))
            s = ctx.wrap_socket(s, server_hostname="localhost")
        else:
            s.connect(("127.0.0.1", self.tw.port))
        req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n" % self.path
        if self.token:
            req += "Authorization: Bearer %s\r\n" % self.token
        if self.last_event_id is not None:
            req += "Last-Event-ID: %s\r\n" % self.last_event_id
        s.sendall((req + "\r\n").encode())
        s.setblocking(False)
        self.sock = s

    def fileno(self):
        return self.sock.fileno()

    def feed(self, data):
        if not data:
            self.closed = True
            return
        self.buf += data
        if self.status is None:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = self.buf[:i].decode("latin-1").split("\r\n")
            self.status = int(head[0].split()[1])
            for line in head[1:]:
                k, _, v = line.partition(":")
                self.headers[k.strip().lower()] = v.strip()
            self.buf = self.buf[i + 4:]
            if self.headers.get("transfer-encoding") != "chunked":
                self.chunk_left = -1  # identity body (error responses, HTTP/1.0)
        self._dechunk()
        self._parse()

    def _dechunk(self):
        while self.buf:
            if self.chunk_left == -1 or self.headers.get("transfer-encoding") != "chunked":
                self.body += self.buf
                self.buf = b""
                return
            if self.chunk_left > 0:
                n = min(self.chunk_left, len(self.buf))
                self.body += self.buf[:n]
                self.buf = self.buf[n:]
                self.chunk_left -= n
                if self.chunk_left == 0:
                    self.chunk_left = -2  # expect CRLF
                continue
            if self.chunk_left == -2:
                if len(self.buf) < 2:
                    return
                self.buf = self.buf[2:]
                self.chunk_left = 0
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                return
            size = int(self.buf[:i].split(b";")[0], 16)
            self.buf = self.buf[i + 2:]
            if size == 0:
                self.closed = True
                return
            self.chunk_left = size

    def _parse(self):
        if self.status != 200:
            return
        while True:
            i = self.body.find(b"\n\n")
            if i < 0:
                return
            block = self.body[:i].decode("utf-8")
            self.body = self.body[i + 2:]
            ev = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                k, _, v = line.partition(":")
                if v.startswith(" "):
                    v = v[1:]
                if k == "data":
                    ev["data"] = ev["data"] + "\n" + v if "data" in ev else v
                elif k in ("id", "event", "retry"):
                    ev[k] = v
            if "data" in ev:
                ev["json"] = json.loads(ev["data"])
                self.events.append(ev)
                if "id" in ev:
                    self.last_event_id = ev["id"]

    def pump(self, timeout=0.05):
        """Reads what is available within timeout."""
        if self.closed:
            return
        pending = self.tls and self.sock.pending()
        r, _, _ = select.select([self.sock], [], [], 0 if pending else timeout)
        if r or pending:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except (ConnectionResetError, OSError):
                data = b""
            self.feed(data)

    def wait(self, pred, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred(self):
                return True
            if self.closed:
                return pred(self)
            self.pump(0.05)
        return pred(self)

    def wait_status(self, timeout=10.0):
        return self.wait(lambda s: s.status is not None, timeout)

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
        self.closed = True


def pump_all(streams, timeout=0.05):
    """Reads from many SSE clients at once."""
    live = [s for s in streams if not s.closed]
    if not live:
        return
    r, _, _ = select.select(live, [], [], timeout) if len(live) < 1000 else _poll(live, timeout)
    for s in r:
        try:
            data = s.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        s.feed(data)


def _poll(streams, timeout):
    p = select.poll()
    by_fd = {}
    for s in streams:
        p.register(s.sock.fileno(), select.POLLIN)
        by_fd[s.sock.fileno()] = s
    ready = [by_fd[fd] for fd, _ in p.poll(timeout * 1000)]
    return ready, [], []


class Agent:
    """An agent on /sse + /messages: answers requests with a handler."""

    def __init__(self, tw, client_id, password):
        self.tw = tw
        self.client_id = client_id
        self.http = tw.login(client_id, password)
        self.sse = SSE(tw, "/sse", self.http.token)
        assert self.sse.wait_status(), "agent stream did not open"
        assert self.sse.status == 200, self.sse.status
        self.handled = 0

    def send(self, env):
        st, _, body = self.http.request("POST", "/messages", env)
        assert st == 202, (st, body)
        return body

    def publish_td(self, td):
        env = {"type": "request", "operation": "updatething", "thingID": td["id"], "input": td,
               "correlationID": "pub-" + td["id"]}
        self.send(env)
        ok = self.sse.wait(lambda s: any(e["json"].get("correlationID") == env["correlationID"]
                                         for e in s.events))
        assert ok, "no answer to updatething"
        ans = [e["json"] for e in self.sse.events
               if e["json"].get("correlationID") == env["correlationID"]][-1]
        assert "error" not in ans, ans
        return ans["output"]["thingID"]

    def event(self, thing, name, value):
        self.send({"type": "notification", "operation": "subscribeevent", "thingID": thing,
                   "name": name, "value": value})

    def property(self, thing, name, value):
        self.send({"type": "notification", "operation": "observeproperty", "thingID": thing,
                   "name": name, "value": value})

    def requests(self):
        """Pending requests received on the stream (consumed)."""
        self.sse.pump(0.01)
        out = []
        keep = []
        for e in self.sse.events:
            if e.get("event") == "request":
                out.append(e["json"])
            else:
                keep.append(e)
        self.sse.events = keep
        return out

    def answer(self, req, output=None, status="completed"):
        env = {"type": "response", "operation": req["operation"], "thingID": req.get("thingID"),
               "name": req.get("name"), "correlationID": req.get("correlationID"),
               "status": status}
        if output is not None:
            env["output"] = output
        self.send(env)

    def close(self):
        self.sse.close()
        self.http.close()
