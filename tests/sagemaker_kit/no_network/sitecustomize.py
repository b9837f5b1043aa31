"""Put on PYTHONPATH by the launch-kit tests: a process that tries to use the network (a DNS
lookup or an IP connection) is ended at once with exit code 86, so a dry run that would reach AWS
fails its test whatever the code around the attempt does with errors."""

import os
import socket
import sys

NETWORK_EXIT_CODE = 86
_LOOKUPS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
            "socket.gethostbyaddr"}
_IP_FAMILIES = {socket.AF_INET, socket.AF_INET6}


def _refuse_network(event, args):
    if event in _LOOKUPS or (event in ("socket.connect", "socket.sendto")
                             and getattr(args[0], "family", None) in _IP_FAMILIES):
        sys.stderr.write(f"network use in a test that forbids it: {event} {args[1:]!r}\n")
        sys.stderr.flush()
        os._exit(NETWORK_EXIT_CODE)


sys.addaudithook(_refuse_network)
