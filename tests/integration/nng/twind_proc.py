"""twind_proc.py - what the nng binding's Python integration tests share:
stopping the twind they started (and keeping its log when a test failed),
the wire form of an envelope, reading the answer to a request, and waiting
for a condition. Each test starts
twind its own way (its own config and listeners)."""
import json, shutil, subprocess, sys, time


class TwindProc:
    """A started twind: set self.p (the Popen), self.d (its directory, removed
    after a clean stop), self.log (the open log file) and self.logpath."""

    def logtext(self):
        return open(self.logpath).read()

    def stop(self, ok):
        """Stops twind; True when ok and it exited cleanly. On failure the
        end of its log goes to stderr and its directory is kept."""
        if self.p.poll() is None:
            self.p.terminate()
            try:
                rc = self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                rc = -9
            ok = ok and rc == 0
        self.log.close()
        if ok:
            shutil.rmtree(self.d, ignore_errors=True)
        else:
            print(self.logtext()[-4000:], file=sys.stderr)
        return ok


def wire(o):
    """An envelope as one line on the wire."""
    return (json.dumps(o, separators=(",", ":")) + "\n").encode()


def read_answer(f, o):
    """Reads lines from f (a socket's binary file) up to the response to
    request o: the line with its correlationID and a final status (or none)."""
    while True:
        line = f.readline()
        assert line, "connection closed while waiting for %s" % o["correlationID"]
        r = json.loads(line)
        if r.get("correlationID") == o["correlationID"] and \
                r.get("status") in ("completed", "failed", None):
            return r


def wait_for(pred, what, timeout=60):
    """Waits until pred() is true; every wait is for an event, the timeout
    only bounds a wait that must not hang."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)
