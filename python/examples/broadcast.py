"""Maelstrom's broadcast workload (as in the Gossip Glomers exercises):
every message broadcast to any node reaches every node of the group.

broadcast {message} is stored and passed on to every other node of the
group once (the mesh delivers each exactly once, so one pass suffices);
read answers with every message seen; topology is acknowledged (the
group is the topology here)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node  # noqa: E402

node = Node()
seen = set()


@node.handler("broadcast")
def broadcast(message):
    value = message["body"]["message"]
    if value not in seen:
        seen.add(value)
        for other in node.node_ids:
            if other != node.node_id and other != message["src"]:
                node.send(other, {"type": "broadcast", "message": value})
    if "msg_id" in message["body"]:
        node.reply(message, {"type": "broadcast_ok"})


@node.handler("read")
def read(message):
    node.reply(message, {"type": "read_ok", "messages": sorted(seen)})


@node.handler("topology")
def topology(message):
    node.reply(message, {"type": "topology_ok"})


node.run()
