#!/usr/bin/env python3
"""The send queue of an nng connection is bounded in bytes, and a peer that
does not read cannot keep its connection for ever (nng_conn.c, "Overflow
policy" and "Write deadlines").

1. A client pipelines getThing requests for a big TD (about 800 KB each)
   and never reads. Regression: the queue was bounded in messages only
   (16384), so twind held every encoded answer (200 calls: +150 MB RSS, the
   bound allowed some 12 GB). Now, with nng.send_queue_bytes at 8 MiB,
   twind closes the connection as a slow consumer, its peak RSS grows by
   far less than the 160 MB of answers asked for, and it goes on serving
   another connection.
2. A client makes twind's write to it block (the same requests, read by
   nobody), then sends a line longer than max_body: twind answers 413 and
   waits to close until the answer is written, which never happens.
   Regression: the connection kept its slot for ever (a blocked direct
   write has no timeout). Now it is closed nng.write_timeout_ms (here
   500 ms) later: with max_conns taken up, a new connection is accepted
   again. The same without the 413: a write that makes no progress for
   write_timeout_ms is dropped.

No assertion depends on speed: every wait is for an event, with a generous
deadline. Usage: test_nng_sendq.py TWIND [direct|stream]
(stream: tcp:// on nng streams, "direct": false)"""
import json, os, socket, subprocess, sys, tempfile, time

from twind_proc import TwindProc, read_answer, wire, wait_for

TWIND = sys.argv[1]
MODE = sys.argv[2] if len(sys.argv) > 2 else "direct"
assert MODE in ("direct", "stream"), MODE
TD_BYTES = 800_000
MiB = 1024 * 1024


class Twind(TwindProc):
    def __init__(self, name, nng_cfg):
        if os.environ.get("TW_TEST_TMP"):  # run alone, nothing made it yet
            os.makedirs(os.environ["TW_TEST_TMP"], exist_ok=True)
        self.d = tempfile.mkdtemp(prefix="sendq-%s-%s-" % (name, MODE),
                                  dir=os.environ.get("TW_TEST_TMP") or None)
        cfg = os.path.join(self.d, "twind.json")
        nng_cfg = dict(nng_cfg, login_timeout_ms=3600000, direct=(MODE == "direct"))
        json.dump({"nng": nng_cfg}, open(cfg, "w"))
        self.logpath = os.path.join(self.d, "twind.log")
        self.log = open(self.logpath, "w")
        data = os.path.join(self.d, "data")
        self.p = subprocess.Popen([TWIND, "--data", data, "--https", "off", "--http",
                                   "127.0.0.1:0", "--nng", "tcp://127.0.0.1:0", "--config", cfg,
                                   "--log-level", "info"], stdout=self.log, stderr=self.log)
        url = None
        for _ in range(300):
            try:
                url = open(os.path.join(data, "nng.url")).read().split()[0]
                self.pw = open(os.path.join(data, "admin.password")).read().strip()
                break
            except (OSError, IndexError):
                url = None
                time.sleep(0.1)
        assert url, "twind did not start"
        host, port = url[len("tcp://"):].rsplit(":", 1)
        self.addr = (host, int(port))


    def status(self, key):
        for line in open("/proc/%d/status" % self.p.pid):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)




class Client:
    def __init__(self, tw, login=None, password=None, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # before connect: the window is small from the start
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(30)
        self.s.connect(tw.addr)
        self.f = self.s.makefile("rb")
        if login:
            r = self.call({"type": "request", "operation": "login", "correlationID": "l",
                           "input": {"login": login, "password": password}})
            assert "error" not in r, r

    def call(self, o):
        self.s.sendall(wire(o))
        return read_answer(self.f, o)

    def close(self):
        self.f.close()
        self.s.close()


def setup(tw):
    """An admin connection, an agent connection, and the id of a twin whose
    TD is about TD_BYTES long."""
    a = Client(tw, "admin", tw.pw)
    r = a.call({"type": "request", "operation": "invokeaction", "thingID": "dtw:twind:authn",
                "name": "addClient", "correlationID": "ac",
                "input": {"clientID": "ag1", "kind": "agent", "role": "agent",
                          "password": "pw-of-a-test-client"}})
    assert r.get("status") == "completed", r
    g = Client(tw, "ag1", "pw-of-a-test-client")
    td = {"@context": "https://www.w3.org/2022/wot/td/v1.1", "id": "t1", "title": "big",
          "description": "x" * TD_BYTES}
    r = g.call({"type": "request", "operation": "updatething", "thingID": "t1",
                "correlationID": "u", "input": td})
    assert "error" not in r, r
    return a, g, r["output"]["thingID"]


def get_things(twin, n, tag):
    return b"".join(wire({"type": "request", "operation": "invokeaction",
                          "thingID": "dtw:twind:directory", "name": "getThing",
                          "correlationID": "%s%d" % (tag, i), "input": {"id": twin}})
                    for i in range(n))



def closed_by_twind(c):
    """Reads (the connection is gone anyway) until end of stream."""
    c.s.settimeout(30)
    try:
        while c.s.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    return True


def test_bytes_bound():
    tw = Twind("bytes", {"send_queue_bytes": 8 * MiB})
    ok = False
    try:
        a, g, twin = setup(tw)
        h = Client(tw, "admin", tw.pw, rcvbuf=4096)
        n = 200  # 160 MB of answers asked for
        rss0 = tw.status("VmRSS")
        peak_from_now = True
        try:  # reset the peak (VmHWM) to the current RSS
            with open("/proc/%d/clear_refs" % tw.p.pid, "w") as f:
                f.write("5")
        except OSError:
            peak_from_now = False
        h.s.sendall(get_things(twin, n, "g"))
        wait_for(lambda: "slow consumer" in tw.logtext(), "the slow consumer to be closed")
        assert closed_by_twind(h)
        # still serving the others
        r = a.call({"type": "request", "operation": "invokeaction",
                    "thingID": "dtw:twind:directory", "name": "getThing",
                    "correlationID": "after", "input": {"id": twin}})
        assert r.get("status") == "completed" and "output" in r, str(r)[:300]
        peak = tw.status("VmHWM") if peak_from_now else tw.status("VmRSS")
        growth = peak - rss0
        print("[%s] %d pipelined getThing of %d KB, not read: RSS %d MB, peak growth %d MB"
              % (MODE, n, TD_BYTES // 1000, rss0 // MiB, growth // MiB))
        # 8 MiB queued, a batch being written, the answers being made: far
        # below the 160 MB held without the bound
        assert growth < 64 * MiB, "twind grew by %d MB" % (growth // MiB)
        for c in (a, g, h):
            c.close()
        ok = True
    finally:
        ok = tw.stop(ok)
    return ok


def accepted(tw):
    """Whether a new connection is accepted and answered (a refused one is
    closed at once, unanswered)."""
    try:
        s = socket.create_connection(tw.addr, timeout=10)
    except OSError:
        return False
    try:
        s.sendall(b"x\n")  # malformed: answered with a problem
        return len(s.recv(4096)) > 0
    except OSError:
        return False
    finally:
        s.close()


def test_never_read():
    # three slots: the admin, the agent and the client that never reads
    tw = Twind("413", {"max_conns": 3, "write_timeout_ms": 500})
    ok = False
    try:
        a, g, twin = setup(tw)
        h = Client(tw, "admin", tw.pw, rcvbuf=4096)
        # answers that block twind's write to h (8 MB against socket
        # buffers of a few), well below the bytes bound (64 MiB)
        h.s.sendall(get_things(twin, 10, "g"))
        # then a line longer than max_body (1 MiB): a 413 problem queued
        # behind them, and the connection is to close once it is written
        h.s.settimeout(10)
        try:
            h.s.sendall(b"y" * (MiB + 256 * 1024))
        except socket.timeout:
            pass  # twind stopped reading: it has seen enough
        # its slot is free again: a new connection is accepted
        wait_for(lambda: accepted(tw), "a free slot (the client that never reads dropped)",
                 timeout=30)
        log = tw.logtext()
        assert "closing, but the peer does not read" in log and "slow consumer" not in log, \
            "not closed as expected"
        # the same without the 413: a write that makes no progress
        # (the last probe's slot may not be free yet: a refused connection
        # is closed before its login is answered)
        h2 = None
        deadline = time.time() + 30
        while h2 is None:
            try:
                h2 = Client(tw, "admin", tw.pw, rcvbuf=4096)
            except (AssertionError, OSError):
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        h2.s.sendall(get_things(twin, 10, "k"))
        wait_for(lambda: "made no progress" in tw.logtext(), "the stuck write to be dropped",
                 timeout=30)
        wait_for(lambda: accepted(tw), "a free slot (the stuck writer dropped)", timeout=30)
        for c in (a, g, h, h2):
            c.close()
        ok = True
    finally:
        ok = tw.stop(ok)
    return ok


ok = test_bytes_bound()
ok = test_never_read() and ok
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
