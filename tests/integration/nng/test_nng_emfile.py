#!/usr/bin/env python3
"""Out of file descriptors on a direct (tcp://) listener: twind pauses
accepting instead of spinning, and accepts again once descriptors are free,
even while poller 0 is never idle (regression: accepting resumed only when
poller 0's epoll_wait timed out, so one chatty connection on it kept the
listener paused for good).

Usage: test_nng_emfile.py TWIND"""
import json, os, resource, shutil, socket, subprocess, sys, tempfile, threading, time

TWIND = sys.argv[1]
if os.environ.get("TW_TEST_TMP"):  # run alone, nothing made it yet
    os.makedirs(os.environ["TW_TEST_TMP"], exist_ok=True)
d = tempfile.mkdtemp(prefix="emfile-", dir=os.environ.get("TW_TEST_TMP") or None)
cfg = os.path.join(d, "twind.json")
# one poller: the chatty connection is on poller 0, with the listener
json.dump({"nng": {"login_timeout_ms": 3600000, "io_threads": 1}}, open(cfg, "w"))
logpath = os.path.join(d, "twind.log")


def few_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


log = open(logpath, "w")
tw = subprocess.Popen([TWIND, "--data", d + "/data", "--https", "off", "--http", "127.0.0.1:0",
                       "--nng", "tcp://127.0.0.1:0", "--config", cfg, "--log-level", "info"],
                      stdout=log, stderr=log, preexec_fn=few_fds)
ok = False
stop = False
try:
    url = None
    for _ in range(300):
        try:
            url = open(d + "/data/nng.url").read().split()[0]
            break
        except (OSError, IndexError):
            time.sleep(0.1)
    assert url, "twind did not start"
    host, port = url[len("tcp://"):].rsplit(":", 1)
    port = int(port)

    def conn():
        s = socket.create_connection((host, port))
        s.settimeout(2.0)
        return s

    def answered(s):
        s.sendall(b"x\n")  # malformed: answered with a problem
        try:
            return len(s.recv(4096)) > 0
        except socket.timeout:
            return False

    a = conn()
    assert answered(a), "no answer on the first connection"
    extra = []
    for _ in range(200):
        extra.append(conn())
        if "Too many open files" in open(logpath).read():
            break
    assert "Too many open files" in open(logpath).read(), "EMFILE never reached"

    def chatter():
        while not stop:
            try:
                a.sendall(b"x\n")
                a.recv(4096)
            except OSError:
                pass
            time.sleep(0.01)

    th = threading.Thread(target=chatter)
    th.start()
    time.sleep(0.3)
    for s in extra:
        s.close()
    # a new connection is accepted and answered (within 10 s, however slow)
    deadline = time.time() + 10
    got = False
    while not got and time.time() < deadline:
        try:
            b = conn()
            got = answered(b)
            b.close()
        except OSError:
            time.sleep(0.2)
    stop = True
    th.join()
    assert got, "twind stopped accepting after EMFILE"
    tw.terminate()
    rc = tw.wait(timeout=30)
    assert rc == 0, "twind exited with %d" % rc
    ok = True
finally:
    stop = True
    if tw.poll() is None:
        tw.kill()
        tw.wait()
    log.close()
    if ok:
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(open(logpath).read()[-3000:], file=sys.stderr)
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
