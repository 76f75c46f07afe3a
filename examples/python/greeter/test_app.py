"""The greeter's unit tests, run natively: `sdk-python/picloud-py test
examples/python/greeter`."""

import unittest

import picloud_testing as testing  # before picloud and the app

import picloud
from app import hello


class GreeterTest(unittest.TestCase):
    def test_a_kv_write_is_greeted_under_greeted(self):
        host = testing.TestHost()
        self.assertIsNone(host.run(hello, testing.kv_set("greetings", "ada", {"name": "Ada"})))
        self.assertEqual(host.kv("greeted", "ada"), {"message": "hello, Ada"})
        self.assertEqual(host.logs, ["info: greeted Ada under greeted/ada"])

    def test_a_value_without_a_name_greets_a_stranger(self):
        host = testing.TestHost()
        host.run(hello, testing.kv_set("greetings", "x", "not an object"))
        self.assertEqual(host.kv("greeted", "x"), {"message": "hello, stranger"})

    def test_an_invocation_is_answered_with_json(self):
        host = testing.TestHost()
        reply = host.run(hello, testing.invoke({"name": "Bo"}))
        self.assertEqual(reply, {"message": "hello, Bo"})
        self.assertEqual(host.writes, [])

    def test_storage_down_fails_the_attempt_and_writes_nothing(self):
        host = testing.TestHost()
        host.fail_next("kv.set", picloud.Unavailable("down"))
        with self.assertRaises(picloud.Unavailable) as raised:
            host.run(hello, testing.kv_set("greetings", "ada", {"name": "Ada"}))
        self.assertEqual(str(raised.exception), "unavailable: down")
        self.assertIsNone(host.kv("greeted", "ada"))


if __name__ == "__main__":
    unittest.main()
