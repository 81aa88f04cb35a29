"""A flooding agent, for tests: once initialised it writes requests to an
agent that does not exist as fast as it can, and never reads again. The
node answers each with an error it must write back; once the process's
input is full the node cuts it off. The flood is bounded: it ends after
FLOOD_LINES_MAX lines."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node  # noqa: E402

FLOOD_LINES_MAX = 1_000_000

node = Node()
original_handle = node.handle


def handle(message):
    original_handle(message)
    if message["body"].get("type") == "init":
        for msg_id in range(1, FLOOD_LINES_MAX + 1):
            node.send("nobody", {"type": "spam", "msg_id": msg_id, "pad": "x" * 100})


node.handle = handle
node.run()
