"""The triage script's unit tests, run natively: `sdk-python/picloud-py test
examples/python/dead-letter-triage`."""

import unittest

import picloud_testing as testing  # before picloud and the app

from app import triage
from picloud import Fail, Resolution


def dead_kv(host, value, error):
    """A seeded dead letter of a kv write of `value`, and its event."""
    payload = {"collection": "payments", "key": "p-1", "value": value, "version": 1}
    dl = host.seed_dead_letter("kv", "set", payload, error)
    return dl, testing.dead_letter(dl, "kv", "set", payload, error)


class TriageTest(unittest.TestCase):
    def test_a_declined_payment_goes_to_manual_review(self):
        host = testing.TestHost()
        dl, event = dead_kv(host, {"amount": 5}, "payment declined: card 7")
        host.run(triage, event)
        self.assertEqual(host.resolution(dl), Resolution.HANDLED_BY_SCRIPT)
        self.assertEqual(host.kv("manual_review", dl)["error"], "payment declined: card 7")

    def test_an_invalid_payment_is_ignored(self):
        host = testing.TestHost()
        dl, event = dead_kv(host, {"amount": -1}, "invalid amount")
        host.run(triage, event)
        self.assertEqual(host.resolution(dl), Resolution.IGNORED)
        self.assertEqual(host.writes, [])

    def test_a_poison_event_is_given_up_on_at_once(self):
        host = testing.TestHost()
        dl, event = dead_kv(host, {"poison": True}, "boom")
        with self.assertRaises(Fail):
            host.run(triage, event)
        self.assertEqual(host.resolution(dl), Resolution.HANDLER_FAILED)

    def test_an_already_settled_dead_letter_is_left_alone(self):
        host = testing.TestHost()
        dl, event = dead_kv(host, {"poison": True}, "boom")
        with self.assertRaises(Fail):
            host.run(triage, event)
        # The redelivery finds it resolved: nothing more to do, no failure.
        self.assertIsNone(host.run(triage, testing.at_attempt(event, 2)))
        self.assertIn("already settled", host.logs[-1])

    def test_an_unknown_error_fails_so_the_host_retries(self):
        host = testing.TestHost()
        dl, event = dead_kv(host, {"amount": 5}, "timeout after 5000 ms")
        with self.assertRaises(Fail) as raised:
            host.run(triage, event)
        self.assertIn("no rule for dead letter", str(raised.exception))
        self.assertIsNone(host.resolution(dl))


if __name__ == "__main__":
    unittest.main()
