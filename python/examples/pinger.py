"""Every half second, asks each agent of its group (but itself) to echo a
number, and logs the answers on stderr: a Python agent talking to Python
and Rust agents alike."""

import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node  # noqa: E402

node = Node()
count = [0]


def answered(message):
    body = message["body"]
    node.log("%s answered %s: %s" % (message["src"], body.get("type"), body.get("echo", body.get("text"))))


def ping():
    count[0] += 1
    for other in node.node_ids:
        if other != node.node_id:
            node.rpc(other, {"type": "echo", "echo": count[0]}, answered)
    timer = threading.Timer(0.5, ping)
    timer.daemon = True
    timer.start()


@node.handler("echo")
def echo(message):
    node.reply(message, {"type": "echo_ok", "echo": message["body"]["echo"]})


original_handle = node.handle


def handle(message):
    original_handle(message)
    if message["body"].get("type") == "init":
        ping()


node.handle = handle
node.run()
