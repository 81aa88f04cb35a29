"""Takes what is published on the topics it subscribes to and publishes
each message again, marked with its own name, on the topic named by its
first argument: a pub/sub relay between a Rust publisher and Rust
subscribers (tests/suite/process_agents.rs runs it)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node, topic_of  # noqa: E402

node = Node()
onward = sys.argv[1]


def relay(message):
    if topic_of(message) is None:
        return
    body = {key: value for key, value in message["body"].items() if key != "agentmesh_topic"}
    body["relayed_by"] = node.node_id
    node.publish(onward, body)


for kind in ("story",):
    node.handler(kind)(relay)

node.run()
