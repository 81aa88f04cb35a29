"""A hung agent, for tests: it answers init, then its first message stops
it for good while its input is still read (pings go unanswered)."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node  # noqa: E402

node = Node()
stuck = threading.Event()


def drain():
    for _ in sys.stdin:
        pass


original_handle = node.handle


def handle(message):
    if stuck.is_set():
        return
    original_handle(message)
    if message["body"].get("type") == "init":
        stuck.set()
        threading.Thread(target=drain, daemon=True).start()
        time.sleep(3600)


node.handle = handle
node.run()
