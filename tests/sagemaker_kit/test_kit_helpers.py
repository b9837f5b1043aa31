"""The kit's shared helpers (kit.py), and the tests' own network guard."""

import argparse
import subprocess
import sys
import unittest

import support
from support import kit


class HyperparameterValues(unittest.TestCase):
    def test_json_values_keep_their_type_and_the_rest_are_strings(self):
        cases = {"epochs=300": ("epochs", 300), "learning_rate=1e-4": ("learning_rate", 1e-4),
                 "resume=false": ("resume", False), "roi_size=[128,128,64]": ("roi_size", [128, 128, 64]),
                 "amp=bf16": ("amp", "bf16"), 'amp="bf16"': ("amp", "bf16"),
                 "pixdim=1.5,1.5,2.0": ("pixdim", "1.5,1.5,2.0"), "note=a=b": ("note", "a=b"),
                 "empty=": ("empty", "")}
        for text, expected in cases.items():
            self.assertEqual(kit.parse_hyperparameter(text), expected, text)

    def test_a_value_needs_a_key(self):
        for text in ("epochs", "=3"):
            with self.assertRaises(argparse.ArgumentTypeError):
                kit.parse_hyperparameter(text)

    def test_command_becomes_a_hyperparameter(self):
        args = argparse.Namespace(hyperparameter=[("epochs", 3)], command="infer")
        self.assertEqual(kit.hyperparameters_from_args(args), {"epochs": 3, "command": "infer"})


class SdkChoice(unittest.TestCase):
    def test_the_installed_major_version_is_the_default(self):
        args = argparse.Namespace(sdk=None)
        self.assertEqual(kit.resolve_sdk(args), support.SDK)
        self.assertEqual(args.sdk, support.SDK)


class NetworkGuard(unittest.TestCase):
    """The dry-run tests rely on this guard: a connection attempt must end the process."""

    def run_python(self, code):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=support.offline_env(), timeout=60)

    def test_a_connection_ends_the_process(self):
        result = self.run_python("import socket; socket.create_connection(('127.0.0.1', 9), 1)\n"
                                 "print('connected')")
        self.assertEqual(result.returncode, support.NETWORK_EXIT_CODE, result.stderr)

    def test_a_name_lookup_ends_the_process(self):
        result = self.run_python("import socket\ntry:\n socket.getaddrinfo('example.com', 443)\n"
                                 "except Exception:\n pass")
        self.assertEqual(result.returncode, support.NETWORK_EXIT_CODE, result.stderr)

    def test_a_local_socket_is_allowed(self):
        result = self.run_python("import socket; a, b = socket.socketpair(); a.send(b'x')")
        self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
