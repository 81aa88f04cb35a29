"""Maelstrom's echo workload: answers every echo with echo_ok."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node  # noqa: E402

node = Node()


@node.handler("echo")
def echo(message):
    node.reply(message, {"type": "echo_ok", "echo": message["body"]["echo"]})


node.run()
