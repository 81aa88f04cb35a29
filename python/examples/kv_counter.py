"""A counter shared by every agent of the group, kept in the cluster's
linearizable key-value store (``lin-kv``, Maelstrom's service, served by
the control plane's Raft group).

add {delta} reads the counter and compare-and-sets it to the sum, again
and again until no other agent got in between; it answers add_ok, or an
error when the store could not say whether the add happened (code 0: the
answer was lost; the add may have happened). read answers read_ok {value}.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node  # noqa: E402

KEY = "counter"
# Maelstrom's error codes that say nothing happened: try again.
KEY_DOES_NOT_EXIST = 20
PRECONDITION_FAILED = 22
TEMPORARILY_UNAVAILABLE = 11

node = Node()


def fail(request, answer):
    body = answer["body"]
    node.reply(request, {"type": "error", "code": body.get("code", 13), "text": body.get("text", "")})


@node.handler("add")
def add(request):
    delta = request["body"]["delta"]

    def read():
        node.rpc("lin-kv", {"type": "read", "key": KEY}, read_answered)

    def read_answered(answer):
        body = answer["body"]
        if body["type"] == "read_ok":
            compare_and_set(body["value"], False)
        elif body.get("code") == KEY_DOES_NOT_EXIST:
            compare_and_set(0, True)
        elif body.get("code") == TEMPORARILY_UNAVAILABLE:
            time.sleep(0.02)
            read()
        else:
            fail(request, answer)

    def compare_and_set(current, create):
        body = {
            "type": "cas",
            "key": KEY,
            "from": current,
            "to": current + delta,
            "create_if_not_exists": create,
        }
        node.rpc("lin-kv", body, cas_answered)

    def cas_answered(answer):
        body = answer["body"]
        if body["type"] == "cas_ok":
            node.reply(request, {"type": "add_ok"})
        elif body.get("code") in (KEY_DOES_NOT_EXIST, PRECONDITION_FAILED, TEMPORARILY_UNAVAILABLE):
            read()
        else:
            fail(request, answer)

    read()


@node.handler("read")
def read(request):
    def answered(answer):
        body = answer["body"]
        if body["type"] == "read_ok":
            node.reply(request, {"type": "read_ok", "value": body["value"]})
        elif body.get("code") == KEY_DOES_NOT_EXIST:
            node.reply(request, {"type": "read_ok", "value": 0})
        else:
            fail(request, answer)

    node.rpc("lin-kv", {"type": "read", "key": KEY}, answered)


if __name__ == "__main__":
    node.run()
