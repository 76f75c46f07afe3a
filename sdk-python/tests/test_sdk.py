"""The Python SDK's own unit tests, run natively against picloud_testing:
`sdk-python/picloud-py test sdk-python/tests` (also run by `cargo test
--test python`)."""

import sys
import types
import unittest

import picloud_testing as testing  # before picloud

import picloud
from picloud import Conflict, Fail, Permanent, Resolution, RetryAfter, config, dead_letters, kv, log, pubsub, queue


def run(host, body, event=None):
    """Run `body()` as a handler would, inside `host`."""
    return host.run(lambda _event: body(), event or testing.invoke({}))


class KvTest(unittest.TestCase):
    def test_writes_versions_and_reads(self):
        host = testing.TestHost().seed_kv("c", "a", {"n": 1})
        self.assertEqual(run(host, lambda: kv.get("c", "a")), kv.Entry("a", {"n": 1}, 1))
        self.assertEqual(run(host, lambda: kv.set("c", "a", {"n": 2})), 2)
        self.assertEqual(run(host, lambda: kv.increment("c", "hits", 5)), 5)
        self.assertEqual(run(host, lambda: kv.update("c", "hits", lambda n: n * 2)), 2)
        self.assertEqual(host.kv("c", "hits"), 10)
        self.assertEqual(run(host, lambda: kv.list_keys("c")), ["a", "hits"])
        self.assertEqual(run(host, lambda: kv.list_keys("c", after="a")), ["hits"])
        self.assertTrue(run(host, lambda: kv.delete("c", "a")))
        self.assertEqual([(w.op, w.key) for w in host.writes], [("set", "a"), ("set", "hits"), ("set", "hits"), ("delete", "a")])

    def test_a_stale_version_is_a_conflict_and_writes_nothing(self):
        host = testing.TestHost().seed_kv("c", "a", 1)
        with self.assertRaises(Conflict) as raised:
            run(host, lambda: kv.set_if_version("c", "a", 2, expected=0))
        self.assertEqual(
            str(raised.exception),
            "conflict: c/a is at version 1, not absent: read it again and retry, or fail the attempt",
        )
        self.assertEqual(host.writes, [])

    def test_bad_arguments_are_the_hosts_refusals(self):
        host = testing.TestHost()
        with self.assertRaises(picloud.InvalidArgument) as raised:
            run(host, lambda: kv.set("", "k", 1))
        self.assertEqual(str(raised.exception), "invalid argument: empty collection: give a non-empty name")
        host.seed_kv("c", "text", "x")
        with self.assertRaises(picloud.InvalidArgument):
            run(host, lambda: kv.increment("c", "text"))


class MessagesTest(unittest.TestCase):
    def test_sends_publishes_and_retries_are_recorded(self):
        host = testing.TestHost()

        def handler(event):
            for m in event.queue_batch().messages:
                if m.body.get("ok"):
                    pubsub.publish("orders.paid", {"order": m.id})
                    queue.send("mail", {"to": m.id}, delay=1.5)
                else:
                    queue.retry(m.id, delay=30)

        event = testing.queue_batch(
            "payments",
            [testing.batch_message("m-1", {"ok": True}), testing.batch_message("m-2", {}, attempt=3)],
        )
        host.run(handler, event)
        self.assertEqual(host.published, [testing.Published("orders.paid", {"order": "m-1"})])
        self.assertEqual(host.sent, [testing.Sent("mail", {"to": "m-1"}, 1.5)])
        self.assertEqual(host.retried, [testing.Retried("m-2", 30.0)])

    def test_a_negative_delay_is_refused_before_the_host(self):
        with self.assertRaises(ValueError):
            run(testing.TestHost(), lambda: queue.send("mail", {}, delay=-1))


class DeadLettersAndConfigTest(unittest.TestCase):
    def test_resolve_once_then_conflict(self):
        host = testing.TestHost()
        dl = host.seed_dead_letter("kv", "set", {"collection": "c", "key": "k"}, "boom")
        listed = run(host, lambda: dead_letters.list_unresolved())
        self.assertEqual([d.id for d in listed], [dl])
        self.assertEqual(listed[0].payload, {"collection": "c", "key": "k"})
        run(host, lambda: dead_letters.resolve(dl, Resolution.IGNORED))
        self.assertEqual(host.resolution(dl), Resolution.IGNORED)
        self.assertEqual(run(host, lambda: dead_letters.get(dl)).resolution, Resolution.IGNORED)
        with self.assertRaises(Conflict):
            run(host, lambda: dead_letters.resolve(dl, Resolution.IGNORED))
        with self.assertRaises(picloud.NotFound):
            run(host, lambda: dead_letters.resolve("dl-9", Resolution.IGNORED))

    def test_config_reads_seeded_variables_and_names_the_fix(self):
        host = testing.TestHost().seed_var("URL", "https://example.com")
        self.assertEqual(run(host, lambda: config.require("URL")), "https://example.com")
        with self.assertRaises(Fail) as raised:
            run(host, lambda: config.require("TOKEN"))
        self.assertIn("picloud-host app var set APP TOKEN VALUE", str(raised.exception))


class EventViewsTest(unittest.TestCase):
    def test_each_view_answers_for_its_own_source_only(self):
        tick = testing.cron_tick("0 3 * * *", "2026-01-01T03:00:00Z", missed=2)
        self.assertEqual(tick.cron(), picloud.CronTick("0 3 * * *", "UTC", "2026-01-01T03:00:00Z", 2))
        self.assertIsNone(tick.kv() or tick.queue_message() or tick.pubsub() or tick.dead_letter())
        message = testing.queue_message("mail", {"to": "ada"})
        self.assertEqual(message.queue_message(), picloud.QueueMessage("mail", {"to": "ada"}))
        self.assertIsNone(message.queue_batch())
        published = testing.pubsub_publish("orders.eu", 7)
        self.assertEqual(published.pubsub(), picloud.PubsubMessage("orders.eu", 7))
        deleted = testing.kv_delete("c", "k")
        self.assertEqual((deleted.kv().op, deleted.kv().value), ("delete", None))
        self.assertEqual(testing.at_attempt(deleted, 3).attempt, 3)

    def test_a_dead_letter_has_the_view_of_its_original_event(self):
        for source, op, payload, view in [
            ("cron", "tick", {"schedule": "* * * * *", "scheduled_at": "t"}, "cron"),
            ("queue", "message", {"queue": "mail", "body": 1}, "queue_message"),
            ("pubsub", "publish", {"topic": "t", "body": 2}, "pubsub"),
            ("kv", "set", {"collection": "c", "key": "k", "value": 3}, "kv"),
        ]:
            dead = testing.dead_letter("dl-1", source, op, payload, "boom").dead_letter()
            for other in ("cron", "queue_message", "pubsub", "kv"):
                found = getattr(dead, other)()
                self.assertEqual(found is not None, other == view, f"{source}: {other}")


class BridgeTest(unittest.TestCase):
    """What the host receives: the generated `handle` export's answers."""

    def world(self, function):
        module = types.ModuleType("script_under_test")
        function.__module__ = module.__name__
        sys.modules[module.__name__] = module
        try:
            picloud.handler(function)
            return module.WitWorld()
        finally:
            del sys.modules[module.__name__]

    def failure(self, function):
        host = testing.TestHost()
        with self.assertRaises(testing.Err) as raised:
            host.run(lambda event: self.world(function).handle(event._raw), testing.invoke({}))
        return raised.exception.value, host

    def test_replies(self):
        host = testing.TestHost()
        for value, reply in [(None, None), ("hi", b"hi"), (b"\x00", b"\x00"), ({"a": 1}, b'{"a": 1}')]:
            world = self.world(lambda event, value=value: value)
            self.assertEqual(host.run(lambda event: world.handle(event._raw), testing.invoke({})), reply)

    def test_failures_carry_permanent_and_retry_after(self):
        def permanent(event):
            raise Permanent("order o-1 has no items")

        def later(event):
            raise RetryAfter("rate limited", 0.0015)

        def crash(event):
            return 1 / 0

        error, _ = self.failure(permanent)
        self.assertEqual(error, testing.HandlerError("order o-1 has no items", True, None))
        error, _ = self.failure(later)
        self.assertEqual(error, testing.HandlerError("rate limited", False, 2))
        error, host = self.failure(crash)
        self.assertEqual(error, testing.HandlerError("ZeroDivisionError: division by zero", False, None))
        self.assertIn("ZeroDivisionError", host.logs[0])


class HarnessTest(unittest.TestCase):
    def test_misuse_is_named(self):
        host = testing.TestHost()
        with self.assertRaises(ValueError) as raised:
            host.fail_next("kv.put", picloud.Unavailable("x"))
        self.assertIn("no host call 'kv.put'", str(raised.exception))
        with self.assertRaises(TypeError):
            host.fail_next("kv.set", RuntimeError("x"))
        with self.assertRaises(RuntimeError) as raised:
            kv.get("c", "k")
        self.assertIn("outside TestHost.run", str(raised.exception))

    def test_an_injected_failure_is_used_once(self):
        host = testing.TestHost().fail_next("kv.get", picloud.PermissionDenied())
        with self.assertRaises(picloud.PermissionDenied):
            run(host, lambda: kv.get("c", "k"))
        self.assertIsNone(run(host, lambda: kv.get("c", "k")))

    def test_log_lines_have_their_level(self):
        host = testing.TestHost()
        run(host, lambda: (log.debug("d"), log.warn("w")))
        self.assertEqual(host.logs, ["debug: d", "warn: w"])


if __name__ == "__main__":
    unittest.main()
