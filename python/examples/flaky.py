"""A badly behaved agent, for tests: it writes garbage and a line in
another agent's name, answers one echo, then exits (the node restarts it)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node  # noqa: E402

node = Node()


@node.handler("echo")
def echo(message):
    print("this is not JSON", flush=True)
    print(json.dumps({"src": "someone-else", "dest": message["src"], "body": {"type": "x"}}), flush=True)
    node.reply(message, {"type": "echo_ok", "echo": message["body"]["echo"]})
    sys.exit(3)


node.run()
