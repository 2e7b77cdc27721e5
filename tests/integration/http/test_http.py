#!/usr/bin/env python3
"""Integration tests of the HTTP binding against a real twind on loopback.

Usage: test_http.py --twind PATH [unittest args]

Covers every endpoint and status code of issue 5: authentication, the WoT
HTTP Basic and SSE profiles per Thing, the W3C WoT Discovery directory API
(one test per assertion it covers, named after it), the single-connection
mode, SSE replay after a dropped connection, a slow consumer beside a fast
one, 1,000 concurrent SSE clients, HTTPS with the generated CA, /metrics
and the limits.
"""
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twhttp  # noqa: E402
from twhttp import SSE, Agent, q, pump_all  # noqa: E402

TW = None
ADMIN = None
AGENT = None
TWIN = None  # twin id of the lamp
CFG = {"max_body": 65536, "stream_queue": 65536, "replay_window": 30000, "heartbeat_s": 1,
       "action_wait_ms": 500}

LAMP = {
    "@context": "https://www.w3.org/2022/wot/td/v1.1",
    "id": "urn:dev:lamp",
    "title": "Lamp",
    "securityDefinitions": {"nosec": {"scheme": "nosec"}},
    "security": "nosec",
    "properties": {"on": {"type": "boolean"},
                   "model": {"type": "string", "readOnly": True}},
    "actions": {"toggle": {}, "slow": {}},
    "events": {"alarm": {"type": "string"}, "tick": {"type": "integer"}},
}


class AgentLoop:
    """Answers the agent's requests in a thread: toggle at once, slow never."""

    def __init__(self, agent):
        self.agent = agent
        self.stop = False
        self.seen = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            for r in self.agent.requests():
                self.seen.append(r)
                if r.get("name") == "toggle":
                    self.agent.answer(r, output={"toggled": True, "input": r.get("input")})
                elif r.get("operation") == "writeproperty":
                    self.agent.answer(r)
            time.sleep(0.01)


LOOP = None


def setUpModule():
    try:
        start_module()
    except BaseException:
        tearDownModule()  # unittest skips it when setUpModule fails: no orphan twind
        raise


def start_module():
    global TW, ADMIN, AGENT, TWIN, LOOP
    TW = twhttp.Twind(CFG, top_cfg={"rate": 1e6, "burst": 1e6})
    ADMIN = TW.admin()
    pw = TW.add_client(ADMIN, "lampagent", "agent", kind="agent")
    TW.add_client(ADMIN, "viewer1", "viewer", password="viewer-password-1")
    TW.add_client(ADMIN, "op1", "operator", password="operator-password-1")
    AGENT = Agent(TW, "lampagent", pw)
    TWIN = AGENT.publish_td(LAMP)
    LOOP = AgentLoop(AGENT)


def tearDownModule():
    if LOOP:
        LOOP.stop = True
        LOOP.t.join()
    if AGENT:
        AGENT.close()
    if TW:
        TW.stop()


def problem(test, st, h, body, status):
    test.assertEqual(st, status, body)
    test.assertTrue(h.get("content-type", "").startswith("application/problem+json"), h)
    test.assertEqual(body["status"], status)
    test.assertIn("title", body)
    test.assertIn("type", body)


def streams():
    st, h, body = ADMIN.raw("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("twind_http_streams "):
            return int(line.split()[1])
    return -1


def wait_streams(n, timeout=10):
    """Waits until twind has at most n open streams (a closed client's
    stream is noticed by the hang-up watcher, not at once)."""
    deadline = time.time() + timeout
    while time.time() < deadline and streams() > n:
        time.sleep(0.02)
    return streams() <= n


def tpath(*parts):
    return "/things/" + q(TWIN) + "".join("/" + q(p) for p in parts)


class PublicAndErrors(unittest.TestCase):
    def test_dashboard_page(self):
        c = TW.client()
        st, h, body = c.raw("GET", "/")
        self.assertEqual(st, 200)
        self.assertIn("text/html", h["content-type"])
        self.assertIn(b"twind", body)

    def test_wellknown_directory_td(self):
        c = TW.client()
        st, h, td = c.request("GET", "/.well-known/wot")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/td+json")
        self.assertEqual(td["@type"], "ThingDirectory")
        self.assertTrue(td["base"].startswith("http"), td["base"])
        self.assertIn("things", td["properties"])
        for a in ("createThing", "createAnonymousThing", "retrieveThing", "updateThing",
                  "partiallyUpdateThing", "deleteThing", "searchJSONPath"):
            self.assertIn(a, td["actions"])
        st, h, body = c.raw("HEAD", "/.well-known/wot")
        self.assertEqual(st, 200)
        self.assertEqual(body, b"")

    def test_401_needs_bearer(self):
        c = TW.client()
        st, h, body = c.request("GET", "/things")
        problem(self, st, h, body, 401)
        self.assertTrue(h["www-authenticate"].startswith("Bearer"))
        c.token = "v4.public.garbage"
        st, h, body = c.request("GET", "/things")
        problem(self, st, h, body, 401)
        self.assertIn("Bearer", h["www-authenticate"])

    def test_login_errors(self):
        c = TW.client()
        st, h, body = c.request("POST", "/authn/login", {"login": "admin", "password": "wrong"})
        problem(self, st, h, body, 401)
        st, h, body = c.request("POST", "/authn/login", {"login": "admin"})
        problem(self, st, h, body, 400)
        st, h, body = c.request("POST", "/authn/login", b"{not json",
                                {"Content-Type": "application/json"})
        problem(self, st, h, body, 400)
        st, h, body = c.request("GET", "/authn/login")
        problem(self, st, h, body, 405)
        self.assertEqual(h["allow"], "POST")

    def test_404_405_415_413_400(self):
        st, h, body = ADMIN.request("GET", "/no/such/thing")
        problem(self, st, h, body, 404)
        st, h, body = ADMIN.request("DELETE", "/things")
        problem(self, st, h, body, 405)
        self.assertIn("GET", h["allow"])
        self.assertIn("POST", h["allow"])
        st, h, body = ADMIN.request("PUT", "/things/urn:x:415", b"<td/>",
                                    {"Content-Type": "application/xml"})
        problem(self, st, h, body, 415)
        big = json.dumps({"title": "x" * 70000})
        st, h, body = ADMIN.request("PUT", "/things/urn:x:413", big,
                                    {"Content-Type": "application/td+json"})
        problem(self, st, h, body, 413)
        st, h, body = ADMIN.request("PUT", "/things/urn:x:400", b"{\"title\": ",
                                    {"Content-Type": "application/td+json"})
        problem(self, st, h, body, 400)
        deep = "[" * 100 + "]" * 100
        st, h, body = ADMIN.request("PUT", tpath("properties", "on"), deep)
        problem(self, st, h, body, 400)
        st, h, body = ADMIN.request("GET", "/things/%zz")
        problem(self, st, h, body, 400)

    def test_431_header_limit(self):
        # max_header is 8192 by default: over it, up to twice it (the
        # connection's memory pool), the answer is twind's own problem
        for size in (9000, 16000):
            c = TW.client(ADMIN.token)
            st, h, body = c.request("GET", tpath("properties", "on"),
                                    headers={"X-Big": "a" * size})
            problem(self, st, h, body, 431)
            self.assertIn("header", body["detail"])
            c.close()
        # a header just under the limit passes
        st, h, body = ADMIN.request("GET", "/things", headers={"X-Fits": "a" * 7000})
        self.assertEqual(st, 200, body)
        # and the daemon keeps serving, on new and old connections
        c = TW.client(ADMIN.token)
        st, h, body = c.request("GET", "/things")
        c.close()
        self.assertEqual(st, 200, body)
        st, h, body = ADMIN.request("GET", "/things")
        self.assertEqual(st, 200, body)
        st, h, body = ADMIN.raw("GET", "/metrics")
        self.assertRegex(body.decode(), r'reason="http_header_too_big"\} [1-9]')

    def test_409_cancel_finished_action(self):
        st, h, body = ADMIN.request("POST", tpath("actions", "toggle"), {"n": 9})
        self.assertEqual(st, 200, body)
        st, h, acts = ADMIN.request("GET", tpath("actions"))
        aid = [a for a in acts if a["name"] == "toggle"][0]["id"]
        st, h, body = ADMIN.request("DELETE", tpath("actions", "toggle", aid))
        problem(self, st, h, body, 409)

    def test_metrics(self):
        st, h, body = ADMIN.raw("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        text = body.decode()
        for name in ('twind_connections{binding="http"}', "twind_messages_total{type=",
                     "twind_queue_depth", "twind_rejected_total{reason=",
                     "twind_route_latency_seconds_bucket", "twind_http_streams"):
            self.assertIn(name, text)
        n = [l for l in text.splitlines() if l.startswith('twind_connections{binding="http"}')]
        self.assertGreaterEqual(int(n[0].split()[-1]), 1)  # the agent's stream


class Authn(unittest.TestCase):
    def test_refresh_and_logout(self):
        c = TW.admin()
        st, h, body = c.request("POST", "/authn/refresh")
        self.assertEqual(st, 200, body)
        self.assertIn("expires", body)
        old = c.token
        c.token = body["token"]
        self.assertNotEqual(old, c.token)
        st, _, _ = c.request("GET", "/things")
        self.assertEqual(st, 200)
        s = SSE(TW, "/sse", c.token)
        self.assertTrue(s.wait_status())
        self.assertEqual(s.status, 200)
        st, _, _ = c.request("POST", "/authn/logout")
        self.assertEqual(st, 204)
        self.assertTrue(s.wait(lambda x: x.closed, 10), "the session's stream must end")
        st, h, body = c.request("GET", "/things")
        problem(self, st, h, body, 401)
        s.close()
        # a new login on the same keep-alive connection works at once
        st, h, body = c.request("POST", "/authn/login",
                                {"login": "admin", "password": TW.admin_password})
        self.assertEqual(st, 200)
        c.token = body["token"]
        st, h, body = c.request("GET", tpath("properties"))
        self.assertEqual(st, 200, body)

    def test_access_token_query_for_eventsource(self):
        s = SSE(TW, "/sse?access_token=" + q(ADMIN.token), None)
        self.assertTrue(s.wait_status())
        self.assertEqual(s.status, 200)
        s.close()


class Affordances(unittest.TestCase):
    def test_forms_per_profile(self):
        st, h, td = ADMIN.request("GET", "/things/" + q(TWIN))
        self.assertEqual(st, 200)

        def ops(aff):
            return {(f["op"], f.get("subprotocol")) for f in aff["forms"]}
        self.assertEqual(ops(td["properties"]["on"]),
                         {("readproperty", None), ("writeproperty", None),
                          ("observeproperty", "sse")})
        self.assertNotIn(("writeproperty", None), ops(td["properties"]["model"]))
        self.assertIn(("invokeaction", None), ops(td["actions"]["toggle"]))
        self.assertIn(("queryaction", None), ops(td["actions"]["toggle"]))
        self.assertIn(("cancelaction", None), ops(td["actions"]["toggle"]))
        self.assertEqual(ops(td["events"]["alarm"]), {("subscribeevent", "sse")})
        top = {(f["op"], f.get("subprotocol")) for f in td["forms"]}
        for op in (("readallproperties", None), ("observeallproperties", "sse"),
                   ("subscribeallevents", "sse"), ("queryallactions", None)):
            self.assertIn(op, top)
        href = td["properties"]["on"]["forms"][0]["href"]
        self.assertTrue(href.endswith("/things/%s/properties/on" % q(TWIN)), href)
        for f in td["properties"]["on"]["forms"]:
            self.assertEqual(f["htv:methodName"],
                             {"readproperty": "GET", "writeproperty": "PUT",
                              "observeproperty": "GET"}[f["op"]])

    def test_read_properties(self):
        AGENT.property(LAMP["id"], "on", True)
        AGENT.property(LAMP["id"], "model", "L-1")
        deadline = time.time() + 5
        while time.time() < deadline:
            st, h, v = ADMIN.request("GET", tpath("properties", "model"))
            if st == 200 and v == "L-1":
                break
            time.sleep(0.05)
        self.assertEqual((st, v), (200, "L-1"))
        st, h, allp = ADMIN.request("GET", tpath("properties"))
        self.assertEqual(st, 200)
        self.assertIn("model", json.dumps(allp))
        st, h, body = ADMIN.request("GET", tpath("properties", "nope"))
        problem(self, st, h, body, 404)
        st, h, body = ADMIN.request("GET", "/things/dtw:nobody:nothing/properties/x")
        problem(self, st, h, body, 404)
        st, h, body = ADMIN.request("POST", tpath("properties", "on"), True)
        problem(self, st, h, body, 405)
        self.assertIn("PUT", h["allow"])

    def test_write_property(self):
        st, h, body = ADMIN.request("PUT", tpath("properties", "on"), False)
        self.assertIn(st, (204, 202), body)
        self.assertTrue(any(r.get("operation") == "writeproperty" for r in LOOP.seen))

    def test_viewer_cannot_invoke_403(self):
        v = TW.login("viewer1", "viewer-password-1")
        st, h, body = v.request("GET", tpath("properties", "on"))
        self.assertEqual(st, 200, body)
        st, h, body = v.request("POST", tpath("actions", "toggle"), {})
        problem(self, st, h, body, 403)
        st, h, body = v.request("PUT", "/things/urn:x:viewer", {"title": "x"},
                                {"Content-Type": "application/td+json"})
        problem(self, st, h, body, 403)

    def test_invoke_completes_200(self):
        st, h, body = ADMIN.request("POST", tpath("actions", "toggle"), {"n": 1})
        self.assertEqual(st, 200, body)
        self.assertEqual(body, {"toggled": True, "input": {"n": 1}})

    def test_invoke_slow_201_then_query_and_cancel(self):
        op = TW.login("op1", "operator-password-1")
        st, h, body = op.request("POST", tpath("actions", "slow"), {"n": 2})
        self.assertEqual(st, 201, body)
        loc = h["location"]
        self.assertTrue(loc.startswith("/things/%s/actions/slow/" % q(TWIN)), loc)
        self.assertIn(body["status"], ("pending", "running"))
        st, h, status = op.request("GET", loc)
        self.assertEqual(st, 200, status)
        self.assertIn(status["status"], ("pending", "running"))
        st, h, lst = op.request("GET", tpath("actions"))
        self.assertEqual(st, 200)
        self.assertTrue(any(a["id"] == loc.rsplit("/", 1)[1] for a in lst))
        st, h, body = op.request("DELETE", loc)
        self.assertEqual(st, 204, body)
        st, h, status = op.request("GET", loc)
        self.assertEqual(status["status"], "failed")
        # another client does not see it
        v = TW.login("viewer1", "viewer-password-1")
        st, h, body = v.request("GET", loc)
        self.assertIn(st, (403, 404))

    def test_invoke_offline_agent_queued_201(self):
        pw = TW.add_client(ADMIN, "sleepy", "agent", kind="agent")
        a = Agent(TW, "sleepy", pw)
        td = dict(LAMP, id="urn:dev:sleepy", title="Sleepy")
        td["actions"] = dict(LAMP["actions"], ping={"safe": True, "idempotent": True})
        before = streams()
        twin = a.publish_td(td)
        a.close()
        self.assertTrue(wait_streams(before - 1))
        # a safe action (RPC) is never queued: 503 while the agent is away
        st, h, body = ADMIN.request("POST", "/things/%s/actions/ping" % q(twin), {})
        problem(self, st, h, body, 503)
        st, h, body = ADMIN.request("POST", "/things/%s/actions/toggle" % q(twin), {"q": 1})
        self.assertEqual(st, 201, body)
        self.assertIn("location", h)
        st, h, status = ADMIN.request("GET", h["location"])
        self.assertEqual(st, 200)
        self.assertEqual(status["status"], "pending")
        self.assertEqual(status["twindStatus"], "queued")
        # the agent comes back and gets it
        a = Agent(TW, "sleepy", pw)
        self.assertTrue(a.sse.wait(lambda s: any(e.get("event") == "request" for e in s.events)))
        a.close()
        self.assertTrue(wait_streams(before - 1))
        # an admin deletes the twin through the directory API: its queued
        # action fails, the Thing is gone
        st, h, body = ADMIN.request("POST", "/things/%s/actions/toggle" % q(twin), {"q": 2})
        self.assertEqual(st, 201, body)
        loc = h["location"]
        st, h, body = ADMIN.request("DELETE", "/things/" + q(twin))
        self.assertEqual(st, 204, body)
        st, h, body = ADMIN.request("GET", "/things/" + q(twin))
        problem(self, st, h, body, 404)
        st, h, status = ADMIN.request("GET", loc)
        self.assertEqual(status["status"], "failed", status)

    def test_observe_property_and_event_streams(self):
        p = SSE(TW, tpath("properties", "on"), ADMIN.token)
        e = SSE(TW, tpath("events", "alarm"), ADMIN.token)
        allev = SSE(TW, tpath("events"), ADMIN.token)
        allp = SSE(TW, tpath("properties"), ADMIN.token)
        for s in (p, e, allev, allp):
            self.assertTrue(s.wait_status())
            self.assertEqual(s.status, 200)
            self.assertEqual(s.headers["content-type"], "text/event-stream")
        AGENT.property(LAMP["id"], "on", False)
        AGENT.event(LAMP["id"], "alarm", "fire")
        AGENT.event(LAMP["id"], "tick", 7)
        self.assertTrue(p.wait(lambda s: len(s.events) >= 1))
        self.assertTrue(e.wait(lambda s: len(s.events) >= 1))
        self.assertTrue(allev.wait(lambda s: len(s.events) >= 2))
        AGENT.property(LAMP["id"], "model", "L-2")
        self.assertTrue(allp.wait(lambda s: len(s.events) >= 2))
        self.assertEqual([(x["event"], x["json"]) for x in allp.events[:2]],
                         [("on", False), ("model", "L-2")])
        self.assertEqual((p.events[0]["event"], p.events[0]["json"]), ("on", False))
        self.assertEqual((e.events[0]["event"], e.events[0]["json"]), ("alarm", "fire"))
        self.assertEqual([x["event"] for x in allev.events[:2]], ["alarm", "tick"])
        self.assertTrue(int(allev.events[1]["id"]) > int(allev.events[0]["id"]))
        time.sleep(0.2)
        e.pump()
        self.assertEqual(len(e.events), 1, "tick must not reach the alarm stream")
        # last event value
        st, h, v = ADMIN.request("GET", tpath("events", "alarm"))
        self.assertEqual(st, 200)
        self.assertIn("fire", json.dumps(v))
        for s in (p, e, allev, allp):
            s.close()

    def test_subscribe_unknown_event_404(self):
        s = SSE(TW, tpath("events", "nope"), ADMIN.token)
        self.assertTrue(s.wait(lambda x: x.closed or (x.status and x.status != 200)))
        self.assertEqual(s.status, 404)
        s.close()

    def test_heartbeat(self):
        s = SSE(TW, tpath("events", "alarm"), ADMIN.token)
        self.assertTrue(s.wait(lambda x: x.comments >= 2, 6), "no heartbeat comment")
        s.close()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no metric " + name)


class DirectRead(unittest.TestCase):
    """GET .../properties[/{name}] is answered by the binding without
    routing messages: the chain's stages must still apply and be counted."""

    @classmethod
    def setUpClass(cls):
        AGENT.property(LAMP["id"], "on", True)
        deadline = time.time() + 5
        while ADMIN.request("GET", tpath("properties", "on"))[0] != 200:
            if time.time() > deadline:
                raise AssertionError("the lamp's 'on' value never arrived")
            time.sleep(0.02)

    def read_until(self, c, path, want, timeout=5):
        deadline = time.time() + timeout
        while True:
            st, h, v = c.request("GET", path)
            if (st == 200 and v == want) or time.time() > deadline:
                return st, h, v
            time.sleep(0.02)

    def test_every_new_value_on_one_connection(self):
        c = TW.admin()
        self.addCleanup(c.close)
        for i in range(5):
            AGENT.property(LAMP["id"], "model", "M-%d" % i)
            st, h, v = self.read_until(c, tpath("properties", "model"), "M-%d" % i)
            self.assertEqual((st, v), (200, "M-%d" % i))
            self.assertEqual(h["content-type"], "application/json")
            st, h, allp = c.request("GET", tpath("properties"))
            self.assertEqual(st, 200, allp)
            self.assertEqual(allp["model"], "M-%d" % i)
        st, h, body = c.raw("HEAD", tpath("properties", "model"))
        self.assertEqual((st, body), (200, b""))

    def test_thing_acl_denies_read_403(self):
        v = TW.login("viewer1", "viewer-password-1")
        self.addCleanup(v.close)
        st, h, body = v.request("GET", tpath("properties", "on"))
        self.assertEqual(st, 200, body)
        acl = "/things/%s/actions/setThingACL" % q(TW.authn_thing(ADMIN))
        st, h, body = ADMIN.request("POST", acl, {"thingID": TWIN, "deny": ["viewer"]})
        self.assertEqual(st, 200, body)
        try:
            # the same keep-alive connection: nothing of the last read is reused
            for path in (tpath("properties", "on"), tpath("properties")):
                st, h, body = v.request("GET", path)
                problem(self, st, h, body, 403)
            st, h, body = ADMIN.request("GET", tpath("properties", "on"))
            self.assertEqual(st, 200, body)
        finally:
            st, h, body = ADMIN.request("POST", acl, {"thingID": TWIN, "deny": None})
            self.assertEqual(st, 200, body)
        st, h, body = v.request("GET", tpath("properties", "on"))
        self.assertEqual(st, 200, body)

    def test_counted_like_routed_requests(self):
        def snap():
            st, h, body = ADMIN.raw("GET", "/metrics")
            t = body.decode()
            return (metric(t, 'twind_messages_total{type="request"}'),
                    metric(t, "twind_route_latency_seconds_count"),
                    metric(t, 'twind_rejected_total{reason="router_404"}'),
                    metric(t, "twind_delivered_total"))
        before = snap()
        c = TW.admin()
        self.addCleanup(c.close)
        for _ in range(10):
            st, h, body = c.request("GET", tpath("properties", "on"))
            self.assertEqual(st, 200, body)
        st, h, body = c.request("GET", tpath("properties", "nope"))
        problem(self, st, h, body, 404)
        st, h, body = c.request("GET", "/things/dtw:nobody:nothing/properties")
        problem(self, st, h, body, 404)
        after = snap()
        self.assertGreaterEqual(after[0] - before[0], 12)
        self.assertGreaterEqual(after[1] - before[1], 12)
        self.assertGreaterEqual(after[2] - before[2], 2)
        self.assertGreaterEqual(after[3] - before[3], 12)

    def test_logout_ends_reads_on_the_same_connection(self):
        c = TW.admin()
        self.addCleanup(c.close)
        st, h, body = c.request("GET", tpath("properties", "on"))
        self.assertEqual(st, 200, body)
        st, h, body = c.request("POST", "/authn/logout")
        self.assertEqual(st, 204, body)
        st, h, body = c.request("GET", tpath("properties", "on"))
        problem(self, st, h, body, 401)
        c.token = "v4.public.not-a-token"
        st, h, body = c.request("GET", tpath("properties", "on"))
        problem(self, st, h, body, 401)

    def test_bad_thing_id_400(self):
        st, h, body = ADMIN.request("GET", "/things/%s/properties/on" % q("x" * 300))
        self.assertIn(st, (400, 404), body)
        problem(self, st, h, body, st)


class SingleConnection(unittest.TestCase):
    def test_sse_messages_roundtrip(self):
        c = TW.admin()
        s = SSE(TW, "/sse", c.token)
        self.assertTrue(s.wait_status())
        st, h, body = c.request("POST", "/messages",
                                {"type": "request", "operation": "subscribeevent",
                                 "thingID": TWIN, "name": "alarm", "correlationID": "sub1"})
        self.assertEqual(st, 202, body)
        self.assertTrue(s.wait(lambda x: any(e["json"].get("correlationID") == "sub1"
                                             for e in x.events)))
        st, h, body = c.request("POST", "/messages",
                                {"type": "request", "operation": "invokeaction",
                                 "thingID": TWIN, "name": "toggle", "input": 5,
                                 "correlationID": "inv1"})
        self.assertEqual(st, 202)
        AGENT.event(LAMP["id"], "alarm", "smoke")
        self.assertTrue(s.wait(lambda x: any(e["json"].get("correlationID") == "inv1" and
                                             e["json"].get("status") == "completed"
                                             for e in x.events)))
        self.assertTrue(s.wait(lambda x: any(e["event"] == "notification" and
                                             e["json"].get("value") == "smoke"
                                             for e in x.events)))
        s.close()

    def test_sse_resume_restores_subscriptions(self):
        c = TW.admin()
        before = streams()
        s = SSE(TW, "/sse", c.token)
        self.assertTrue(s.wait_status())
        st, h, body = c.request("POST", "/messages",
                                {"type": "request", "operation": "subscribeevent",
                                 "thingID": TWIN, "name": "alarm", "correlationID": "subR"})
        self.assertEqual(st, 202)
        self.assertTrue(s.wait(lambda x: any(e["json"].get("correlationID") == "subR"
                                             for e in x.events)))
        AGENT.event(LAMP["id"], "alarm", "r0")

        def alarms(x):
            return [e["json"]["value"] for e in x.events
                    if e["event"] == "notification" and e["json"].get("name") == "alarm"]
        self.assertTrue(s.wait(lambda x: alarms(x) == ["r0"]))
        last = s.last_event_id
        s.close()
        self.assertTrue(wait_streams(before))  # the hang-up is noticed
        for v in ("r1", "r2", "r3"):
            AGENT.event(LAMP["id"], "alarm", v)
        time.sleep(0.2)
        r = SSE(TW, "/sse", c.token, last_event_id=last)
        self.assertTrue(r.wait(lambda x: alarms(x) == ["r1", "r2", "r3"]), alarms(r))
        AGENT.event(LAMP["id"], "alarm", "r4")
        self.assertTrue(r.wait(lambda x: alarms(x) == ["r1", "r2", "r3", "r4"]), alarms(r))
        r.close()

    def test_messages_without_stream_waits(self):
        st, h, body = ADMIN.request("POST", "/messages",
                                    {"type": "request", "operation": "readproperty",
                                     "thingID": TWIN, "name": "on"})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["type"], "response")

    def test_messages_bad_envelope_400(self):
        st, h, body = ADMIN.request("POST", "/messages", {"type": "bogus"})
        problem(self, st, h, body, 400)
        st, h, body = ADMIN.request("POST", "/messages", [])
        problem(self, st, h, body, 400)


class Streams(unittest.TestCase):
    def test_replay_after_dropped_connection(self):
        s = SSE(TW, tpath("events", "tick"), ADMIN.token)
        self.assertTrue(s.wait_status())
        for i in range(5):
            AGENT.event(LAMP["id"], "tick", i)
        self.assertTrue(s.wait(lambda x: len(x.events) >= 5))
        last = s.last_event_id
        s.close()
        for i in range(5, 12):
            AGENT.event(LAMP["id"], "tick", i)
        time.sleep(0.3)
        r = SSE(TW, tpath("events", "tick"), ADMIN.token, last_event_id=last)
        self.assertTrue(r.wait(lambda x: len(x.events) >= 7))
        self.assertEqual([e["json"] for e in r.events[:7]], list(range(5, 12)))
        AGENT.event(LAMP["id"], "tick", 12)
        self.assertTrue(r.wait(lambda x: len(x.events) >= 8))
        self.assertEqual(r.events[7]["json"], 12)
        ids = [int(e["id"]) for e in r.events]
        self.assertEqual(ids, sorted(ids))
        self.assertGreater(ids[0], int(last))
        r.close()

    def test_event_name_with_newline_stays_one_field(self):
        # a TD may name an event anything; a CR/LF in it must not start SSE
        # fields of its own in the frame
        td = {"@context": "https://www.w3.org/2022/wot/td/v1.1", "id": "odd-names",
              "title": "Odd", "events": {"a\nid: 999\nb": {"data": {"type": "integer"}}}}
        twin = AGENT.publish_td(td)
        s = SSE(TW, "/things/%s/events" % q(twin), ADMIN.token)
        self.assertTrue(s.wait_status())
        AGENT.event("odd-names", "a\nid: 999\nb", 7)
        self.assertTrue(s.wait(lambda x: len(x.events) >= 1))
        ev = s.events[0]
        self.assertEqual(ev["event"], "a_id: 999_b")
        self.assertNotEqual(ev["id"], "999")
        self.assertEqual(ev["json"], 7)
        s.close()

    def test_slow_consumer_beside_fast(self):
        fast = SSE(TW, tpath("events", "tick"), ADMIN.token)
        slow = SSE(TW, tpath("events", "tick"), ADMIN.token, rcvbuf=4096)
        self.assertTrue(fast.wait_status())
        self.assertTrue(slow.wait_status())
        start_id = None
        n, batch = 6000, 10
        pad = "x" * 900
        total = 0
        for b in range(n // batch):
            envs = [{"type": "notification", "operation": "subscribeevent",
                     "thingID": LAMP["id"], "name": "tick", "value": {"i": b * batch + i, "p": pad}}
                    for i in range(batch)]
            st, h, body = AGENT.http.request("POST", "/messages", envs)
            self.assertEqual(st, 202, body)
            total += batch
            # the fast one keeps up: it has everything before the next batch
            self.assertTrue(fast.wait(lambda x: len(x.events) >= total, 20),
                            "fast consumer got %d of %d" % (len(fast.events), total))
        self.assertTrue(fast.wait(lambda x: len(x.events) >= n, 30),
                        "fast consumer got %d of %d" % (len(fast.events), n))
        got = [e["json"]["i"] for e in fast.events]
        self.assertEqual(got, list(range(n)), "the fast consumer must get everything in order")
        # the slow one was cut off: it reads what was buffered, then the end
        self.assertTrue(slow.wait(lambda x: x.closed, 30), "slow consumer was not closed")
        self.assertLess(len(slow.events), n)
        st, h, body = ADMIN.raw("GET", "/metrics")
        over = [l for l in body.decode().splitlines()
                if l.startswith("twind_http_stream_overflows_total")]
        self.assertGreaterEqual(int(over[0].split()[-1]), 1)
        # reconnecting with Last-Event-ID recovers the rest from the window
        last = slow.last_event_id
        got_slow = [e["json"]["i"] for e in slow.events]
        r = SSE(TW, tpath("events", "tick"), ADMIN.token, last_event_id=last)
        self.assertTrue(r.wait(lambda x: len(x.events) >= n - len(got_slow), 30))
        self.assertEqual(got_slow + [e["json"]["i"] for e in r.events], list(range(n)))
        for s in (fast, slow, r):
            s.close()

    def test_1000_concurrent_sse_clients(self):
        clients = []
        for i in range(1000):
            clients.append(SSE(TW, tpath("events", "alarm"), ADMIN.token))
        deadline = time.time() + 60
        while time.time() < deadline and any(c.status is None for c in clients):
            pump_all(clients, 0.05)
        self.assertTrue(all(c.status == 200 for c in clients))
        time.sleep(0.2)
        for i in range(20):
            AGENT.event(LAMP["id"], "alarm", "a%d" % i)
        deadline = time.time() + 60
        while time.time() < deadline and any(len(c.events) < 20 for c in clients):
            pump_all(clients, 0.05)
        counts = [len(c.events) for c in clients]
        self.assertEqual(min(counts), 20, "some subscribers missed events")
        for c in clients:
            self.assertEqual([e["json"] for e in c.events], ["a%d" % i for i in range(20)])
            c.close()


class Directory(unittest.TestCase):
    """W3C WoT Discovery TDD HTTP API; test names follow the assertion ids."""

    TD = {"@context": "https://www.w3.org/2022/wot/td/v1.1", "title": "Sensor",
          "securityDefinitions": {"nosec": {"scheme": "nosec"}}, "security": "nosec",
          "properties": {"t": {"type": "number", "forms": [{"href": "http://example.com/t"}]}}}

    def put(self, tid, td=None, ctype="application/td+json"):
        td = dict(td or self.TD, id=tid)
        return ADMIN.request("PUT", "/things/" + q(tid), json.dumps(td), {"Content-Type": ctype})

    def test_tdd_reg_create_known_vs_update(self):
        st, h, body = self.put("urn:test:create1")
        self.assertEqual(st, 201, body)
        st, h, body = self.put("urn:test:create1", dict(self.TD, title="Sensor 2"))
        self.assertEqual(st, 204, body)
        st, h, td = ADMIN.request("GET", "/things/urn:test:create1")
        self.assertEqual(td["title"], "Sensor 2")

    def test_tdd_reg_retrieve_content_type_and_registration(self):
        self.put("urn:test:get1")
        st, h, td = ADMIN.request("GET", "/things/urn:test:get1")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/td+json")
        self.assertEqual(td["id"], "urn:test:get1")
        self.assertIn("created", td["registration"])
        self.assertIn("modified", td["registration"])
        st, h, body = ADMIN.raw("HEAD", "/things/urn:test:get1")
        self.assertEqual((st, body), (200, b""))
        st, h, body = ADMIN.request("GET", "/things/urn:test:absent")
        problem(self, st, h, body, 404)

    def test_tdd_reg_create_anonymous_td(self):
        st, h, body = ADMIN.request("POST", "/things", json.dumps(self.TD),
                                    {"Content-Type": "application/td+json"})
        self.assertEqual(st, 201, body)
        loc = h["location"]
        self.assertTrue(loc.startswith("/things/urn:uuid:"), loc)
        st, h, td = ADMIN.request("GET", loc)
        self.assertEqual(st, 200)
        self.assertEqual("/things/" + q(td["id"]), loc)
        st, h, body = ADMIN.request("POST", "/things", json.dumps(dict(self.TD, id="urn:x:y")),
                                    {"Content-Type": "application/td+json"})
        problem(self, st, h, body, 400)

    def test_tdd_reg_update_partial_merge_patch(self):
        self.put("urn:test:patch1")
        st, h, body = ADMIN.request("PATCH", "/things/urn:test:patch1",
                                    json.dumps({"title": "Patched", "description": "d"}),
                                    {"Content-Type": "application/merge-patch+json"})
        self.assertEqual(st, 204, body)
        st, h, td = ADMIN.request("GET", "/things/urn:test:patch1")
        self.assertEqual((td["title"], td["description"]), ("Patched", "d"))
        st, h, body = ADMIN.request("PATCH", "/things/urn:test:patch1", json.dumps({"title": 1}),
                                    {"Content-Type": "application/json"})
        problem(self, st, h, body, 415)
        st, h, body = ADMIN.request("PATCH", "/things/urn:test:patch1", json.dumps({"title": 1}),
                                    {"Content-Type": "application/merge-patch+json"})
        problem(self, st, h, body, 400)
        self.assertIn("validationErrors", body)
        st, h, body = ADMIN.request("PATCH", "/things/urn:test:nopatch", json.dumps({"title": "x"}),
                                    {"Content-Type": "application/merge-patch+json"})
        problem(self, st, h, body, 404)

    def test_tdd_reg_delete(self):
        self.put("urn:test:del1")
        st, h, body = ADMIN.request("DELETE", "/things/urn:test:del1")
        self.assertEqual(st, 204)
        st, h, body = ADMIN.request("GET", "/things/urn:test:del1")
        problem(self, st, h, body, 404)
        st, h, body = ADMIN.request("DELETE", "/things/urn:test:del1")
        problem(self, st, h, body, 404)

    def test_tdd_validation_syntactic_and_result_response(self):
        st, h, body = self.put("urn:test:bad1", {"title": 5})
        problem(self, st, h, body, 400)
        self.assertIsInstance(body["validationErrors"], list)
        self.assertIn("field", body["validationErrors"][0])
        self.assertIn("description", body["validationErrors"][0])
        st, h, body = ADMIN.request("GET", "/things/urn:test:bad1")
        self.assertEqual(st, 404, "a rejected TD must not be stored")

    def test_tdd_things_list_sorted_array(self):
        for i in range(3):
            self.put("urn:test:list%d" % i)
        st, h, arr = ADMIN.request("GET", "/things")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/ld+json")
        ids = [td["id"] for td in arr]
        self.assertEqual(ids, sorted(ids))
        self.assertTrue(any('rel="canonical"' in l and "etag=" in l for l in h["_link_list"]))
        st, h, body = ADMIN.raw("HEAD", "/things")
        self.assertEqual((st, body), (200, b""))

    def test_tdd_things_list_pagination(self):
        for i in range(5):
            self.put("urn:test:page%d" % i)
        st, h, all_ = ADMIN.request("GET", "/things")
        total = len(all_)
        seen, path = [], "/things?limit=2"
        while path:
            st, h, page = ADMIN.request("GET", path)
            self.assertEqual(st, 200)
            self.assertLessEqual(len(page), 2)
            seen += [td["id"] for td in page]
            nxt = [l for l in h["_link_list"] if 'rel="next"' in l]
            path = nxt[0].split(">")[0].lstrip("<") if nxt else None
        self.assertEqual(len(seen), total)
        self.assertEqual(seen, [td["id"] for td in all_])
        st, h, body = ADMIN.request("GET", "/things?limit=-1")
        problem(self, st, h, body, 400)
        st, h, body = ADMIN.request("GET", "/things?offset=abc")
        problem(self, st, h, body, 400)
        st, h, page = ADMIN.request("GET", "/things?offset=100000")
        self.assertEqual((st, page), (200, []))

    def test_tdd_things_list_collection(self):
        st, h, col = ADMIN.request("GET", "/things?format=collection&limit=1")
        self.assertEqual(st, 200)
        self.assertEqual(col["@type"], "ThingCollection")
        self.assertGreaterEqual(col["total"], 2)
        self.assertEqual(len(col["members"]), 1)
        self.assertIn("next", col)
        self.assertIn("@id", col)
        st, h, body = ADMIN.request("GET", "/things?format=xml")
        problem(self, st, h, body, 400)

    def test_tdd_search_jsonpath(self):
        self.put("urn:test:search1", dict(self.TD, title="FindMe"))
        st, h, res = ADMIN.request("GET", "/search/jsonpath?query=" +
                                   q("$[?(@.title=='FindMe')].id"))
        self.assertEqual(st, 200, res)
        self.assertEqual(res, ["urn:test:search1"])
        st, h, body = ADMIN.request("GET", "/search/jsonpath?query=" + q("$[?(@.title=="))
        problem(self, st, h, body, 400)
        st, h, body = ADMIN.request("GET", "/search/jsonpath")
        problem(self, st, h, body, 400)
        st, h, body = ADMIN.request("GET", "/search/sparql?query=x")
        problem(self, st, h, body, 501)

    def test_tdd_notification_sse_types_diff_and_replay(self):
        allev = SSE(TW, "/events", ADMIN.token)
        created = SSE(TW, "/events/thing_created?diff=true", ADMIN.token)
        updated = SSE(TW, "/events/thing_updated?diff=true", ADMIN.token)
        for s in (allev, created, updated):
            self.assertTrue(s.wait_status())
            self.assertEqual(s.status, 200)
        self.put("urn:test:note1")
        ADMIN.request("PATCH", "/things/urn:test:note1", json.dumps({"title": "N2"}),
                      {"Content-Type": "application/merge-patch+json"})
        ADMIN.request("DELETE", "/things/urn:test:note1")
        self.assertTrue(allev.wait(lambda s: len(s.events) >= 3))
        self.assertEqual([e["event"] for e in allev.events[:3]],
                         ["thing_created", "thing_updated", "thing_deleted"])
        self.assertEqual(allev.events[0]["json"], {"id": "urn:test:note1"})
        self.assertTrue(created.wait(lambda s: len(s.events) >= 1))
        self.assertEqual(created.events[0]["json"]["title"], "Sensor")  # the full TD
        self.assertTrue(updated.wait(lambda s: len(s.events) >= 1))
        self.assertEqual(updated.events[0]["json"]["title"], "N2")
        self.assertEqual(updated.events[0]["json"]["id"], "urn:test:note1")
        ids = [int(e["id"]) for e in allev.events[:3]]
        self.assertEqual(ids, sorted(ids))
        # replay after Last-Event-ID
        r = SSE(TW, "/events", ADMIN.token, last_event_id=ids[0])
        self.assertTrue(r.wait(lambda s: len(s.events) >= 2))
        self.assertEqual([int(e["id"]) for e in r.events[:2]], ids[1:3])
        st = SSE(TW, "/events/thing_nothing", ADMIN.token)
        self.assertTrue(st.wait(lambda s: s.status is not None))
        self.assertEqual(st.status, 404)
        for s in (allev, created, updated, r, st):
            s.close()


class Https(unittest.TestCase):
    def test_https_with_generated_ca(self):
        c = TW.login("admin", TW.admin_password, tls=True)
        st, h, arr = c.request("GET", "/things")
        self.assertEqual(st, 200)
        self.assertTrue(any(td["id"] == TWIN for td in arr))
        st, h, td = c.request("GET", "/things/" + q(TWIN))
        href = td["properties"]["on"]["forms"][0]["href"]
        self.assertTrue(href.startswith("https://"), href)
        c.close()
        # a stream over TLS: suspended and resumed like any other
        sse = SSE(TW, tpath("events", "alarm"), c.token, tls=True)
        self.assertTrue(sse.wait_status())
        self.assertEqual(sse.status, 200)
        for i in range(3):
            AGENT.event(LAMP["id"], "alarm", "tls%d" % i)
            time.sleep(0.05)
        self.assertTrue(sse.wait(lambda x: len(x.events) >= 3))
        self.assertEqual([e["json"] for e in sse.events], ["tls0", "tls1", "tls2"])
        sse.close()
        # an untrusting client refuses the certificate
        ctx = ssl.create_default_context()
        with socket.create_connection(("127.0.0.1", TW.tls_port)) as raw:
            with self.assertRaises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(raw, server_hostname="localhost")


class Startup(unittest.TestCase):
    def test_replay_window_bounded_in_bytes(self):
        tw = twhttp.Twind({"replay_bytes": 65536, "replay_window": 100000},
                          top_cfg={"rate": 1e6, "burst": 1e6}, https=False)
        self.addCleanup(tw.stop)
        admin = tw.admin()
        pw = tw.add_client(admin, "bagent", "agent", kind="agent")
        ag = Agent(tw, "bagent", pw)
        self.addCleanup(ag.close)
        twin = ag.publish_td(LAMP)
        path = "/things/%s/events/tick" % q(twin)
        s = SSE(tw, path, admin.token)
        self.assertTrue(s.wait_status())
        ag.event(LAMP["id"], "tick", {"i": -1})
        self.assertTrue(s.wait(lambda x: len(x.events) == 1))
        first = s.last_event_id
        s.close()
        pad = "y" * 1000
        for i in range(200):
            ag.event(LAMP["id"], "tick", {"i": i, "p": pad})
        time.sleep(0.3)
        r = SSE(tw, path, admin.token, last_event_id=first)
        r.wait(lambda x: len(x.events) >= 200, 2)
        got = [e["json"]["i"] for e in r.events]
        # only the newest that fit in 64 KiB, contiguous, ending with the last
        self.assertTrue(0 < len(got) < 60, len(got))
        self.assertEqual(got, list(range(200 - len(got), 200)))
        r.close()

    def test_login_rate_limited_429(self):
        # its own twind: the limit also counts per address, and every test
        # connects from 127.0.0.1
        tw = twhttp.Twind({}, https=False)
        self.addCleanup(tw.stop)
        c = tw.client()
        st = None
        for i in range(40):
            st, h, body = c.request("POST", "/authn/login",
                                    {"login": "nobody-%d" % (i % 2), "password": "bad"})
            if st == 429:
                break
        self.assertEqual(st, 429)
        self.assertGreaterEqual(int(h["retry-after"]), 1)
        problem(self, st, h, body, 429)

    def test_router_rate_limit_429(self):
        tw = twhttp.Twind({}, top_cfg={"rate": 2, "burst": 3}, https=False)
        try:
            c = tw.admin()
            statuses = []
            for i in range(10):
                st, h, body = c.request("GET", "/things/dtw:nobody:x/properties/p")
                statuses.append(st)
                if st == 429:
                    problem(self, st, h, body, 429)
                    self.assertGreaterEqual(int(h["retry-after"]), 1)
                    break
            self.assertIn(429, statuses)
        finally:
            tw.stop()

    def test_plain_http_refused_off_loopback(self):
        d = twhttp.tempfile.mkdtemp(prefix="twhttp-refuse-",
                                    dir=os.environ.get("TW_TEST_TMP") or "/tmp")
        p = subprocess.run([twhttp.TWIND, "--data", os.path.join(d, "data"), "--nng", "off",
                            "--https", "off", "--http", "0.0.0.0:0"],
                           capture_output=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"loopback", p.stdout + p.stderr)
        twhttp.shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--twind" in args:
        i = args.index("--twind")
        twhttp.TWIND = args[i + 1]
        del args[i:i + 2]
    unittest.main(argv=[sys.argv[0]] + args, verbosity=2)
