#!/usr/bin/env python3
"""The twind daemon as a user meets it: --help and --version, configuration
errors that name FILE:LINE:COLUMN, first start (owner-only data directory,
admin password printed once), a second instance on the same data directory
refused, SIGTERM stops gracefully with exit 0 and what was acknowledged is
still there after a restart."""
import http.client
import json
import os
import ssl
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

TWIND = sys.argv.pop(1)


def wait_for_file(path, proc, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return open(path).read().strip()
        if proc.poll() is not None:
            raise AssertionError("twind exited early: %s" % proc.stderr.read())
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + path)


class Daemon:
    def __init__(self, data, *extra, https=False):
        self.data = data
        for name in ("http.port", "https.port"):  # left by the previous run
            if os.path.exists(os.path.join(data, name)):
                os.unlink(os.path.join(data, name))
        args = [TWIND, "--data", data, "--https", "127.0.0.1:0" if https else "off",
                "--http", "127.0.0.1:0", "--nng", "off", "--log-level", "warn", *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        port = wait_for_file(os.path.join(data, "http.port"), self.proc)
        self.base = "http://127.0.0.1:%s" % port
        if https:
            self.https_port = int(wait_for_file(os.path.join(data, "https.port"), self.proc))

    def call(self, method, path, body=None, token=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


class DaemonTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="twind-daemon-")
        self.data = os.path.join(self.tmp.name, "data")

    def tearDown(self):
        self.tmp.cleanup()

    def test_help_and_version(self):
        r = subprocess.run([TWIND, "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--data DIR", r.stdout)
        r = subprocess.run([TWIND, "--version"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^twind \d+\.\d+\.\d+")
        r = subprocess.run([TWIND, "--bogus"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)

    def test_bad_config_names_file_line_column(self):
        cfg = os.path.join(self.tmp.name, "twind.json")
        with open(cfg, "w") as f:
            f.write('{\n  "log_level": "info",\n  "rate": "fast"\n}\n')
        r = subprocess.run([TWIND, "--config", cfg, "--data", self.data], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(cfg + ":3:3: 'rate' must be a number", r.stderr)
        with open(cfg, "w") as f:
            f.write('{\n  "rate": 5,,\n}\n')
        r = subprocess.run([TWIND, "--config", cfg, "--data", self.data], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(cfg + ":2:", r.stderr)
        self.assertFalse(os.path.exists(self.data), "a bad config must not create the data dir")

    def test_first_start_second_instance_and_sigterm(self):
        d = Daemon(self.data)
        try:
            mode = stat.S_IMODE(os.stat(self.data).st_mode)
            self.assertEqual(mode & 0o077, 0, "data directory must be owner-only")
            pw_file = os.path.join(self.data, "admin.password")
            self.assertEqual(stat.S_IMODE(os.stat(pw_file).st_mode) & 0o077, 0)
            password = open(pw_file).read().strip()
            # a second instance on the same data directory refuses clearly
            r = subprocess.run([TWIND, "--data", self.data, "--https", "off", "--http",
                                "127.0.0.1:0", "--nng", "off"], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 3)
            self.assertIn("in use by another twind", r.stderr)
            # the first one still serves
            status, body = d.call("POST", "/authn/login", {"login": "admin", "password": password})
            self.assertEqual(status, 200, body)
            self.assertIn("token", body)
        finally:
            code, out, err = d.stop()
        self.assertEqual(code, 0, err)
        self.assertIn("admin / " + password, out)  # printed once, on the first start
        # the restart keeps the admin and does not print the password again
        d = Daemon(self.data)
        try:
            status, body = d.call("POST", "/authn/login", {"login": "admin", "password": password})
            self.assertEqual(status, 200, body)
        finally:
            code, out, err = d.stop()
        self.assertEqual(code, 0, err)
        self.assertNotIn(password, out)

    def test_mutual_tls_client_certificate(self):
        d = Daemon(self.data, https=True)
        try:
            password = open(os.path.join(self.data, "admin.password")).read().strip()
            status, body = d.call("POST", "/authn/login", {"login": "admin", "password": password})
            self.assertEqual(status, 200, body)
            admin = body["token"]
            status, body = d.call("POST", "/things/dtw:twind:authn/actions/addClient",
                                  {"clientID": "op1", "role": "viewer"}, token=admin)
            self.assertIn(status, (200, 201), body)
            for cid in ("op1", "ghost"):  # ghost has a certificate but is no client
                r = subprocess.run([TWIND, "--data", self.data, "--issue-cert", cid],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
            ca = os.path.join(self.data, "tls", "ca.pem")

            def get(cert):
                ctx = ssl.create_default_context(cafile=ca)
                if cert:
                    base = os.path.join(self.data, "clients", cert)
                    ctx.load_cert_chain(base + ".pem", base + ".key")
                c = http.client.HTTPSConnection("localhost", d.https_port, context=ctx, timeout=10)
                c.request("GET", "/things")
                r = c.getresponse()
                data = r.read()
                c.close()
                return r.status, data

            status, data = get("op1")
            self.assertEqual(status, 200, data)  # authenticated by its certificate alone
            self.assertIn(b"dtw:twind:authn", data)
            self.assertEqual(get(None)[0], 401)  # neither token nor certificate
            self.assertEqual(get("ghost")[0], 401)  # a valid certificate of an unknown client
        finally:
            code, out, err = d.stop()
        self.assertEqual(code, 0, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
