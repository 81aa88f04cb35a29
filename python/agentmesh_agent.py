"""An agentmesh agent in Python: Maelstrom's protocol, standard library only.

A process agent (``behaviour = "process"`` in the cluster's TOML) reads one
JSON message a line on stdin and writes its own on stdout, as Maelstrom
nodes do (``{"src", "dest", "body": {"type", "msg_id", "in_reply_to"}}``).
The node sends ``init`` first; this helper answers it, then calls the
handler registered for each body type::

    from agentmesh_agent import Node

    node = Node()

    @node.handler("echo")
    def echo(message):
        node.reply(message, {"type": "echo_ok", "echo": message["body"]["echo"]})

    node.run()

Messages published on a topic the agent subscribes to arrive like any
other, with ``topic_of(message)`` naming the topic; ``node.publish(topic,
body)`` publishes.

Logs go to stderr (``node.log``), which the node passes to its own log.
"""

import json
import sys
import threading


# A message to ``topic:<name>`` is published on topic ``<name>``.
TOPIC_DEST_PREFIX = "topic:"
# The body field naming the topic a delivered message came through.
TOPIC_FIELD = "agentmesh_topic"


def topic_of(message):
    """The topic ``message`` was published on, or None."""
    return message["body"].get(TOPIC_FIELD)


class Node:
    """One agent: its id, its group, and handlers by body type."""

    def __init__(self, output=None):
        self.node_id = None
        self.node_ids = []
        self._output = output or sys.stdout
        self._handlers = {}
        self._callbacks = {}
        self._next_msg_id = 0
        self._lock = threading.Lock()

    def handler(self, kind):
        """Registers the decorated function for bodies of type ``kind``."""

        def register(function):
            self._handlers[kind] = function
            return function

        return register

    def log(self, *parts):
        """Writes a line to stderr."""
        print(*parts, file=sys.stderr, flush=True)

    def send(self, dest, body):
        """Sends ``body`` to agent ``dest``."""
        line = json.dumps({"src": self.node_id, "dest": dest, "body": body})
        with self._lock:
            self._output.write(line + "\n")
            self._output.flush()

    def publish(self, topic, body):
        """Publishes ``body`` on ``topic``: each of the topic's subscribers
        (``subscribe = [...]`` in the config) gets it once."""
        self.send(TOPIC_DEST_PREFIX + topic, body)

    def reply(self, request, body):
        """Answers ``request`` (a received message) with ``body``."""
        body = dict(body)
        if "msg_id" in request["body"]:
            body["in_reply_to"] = request["body"]["msg_id"]
        self.send(request["src"], body)

    def rpc(self, dest, body, callback):
        """Sends ``body`` with a fresh msg_id; ``callback(message)`` gets
        the answer (a body of type ``error`` if the node refused it)."""
        with self._lock:
            self._next_msg_id += 1
            msg_id = self._next_msg_id
            self._callbacks[msg_id] = callback
        self.send(dest, dict(body, msg_id=msg_id))

    def handle(self, message):
        """Handles one message: init, an answer to an rpc, or a handler's."""
        body = message["body"]
        kind = body.get("type")
        if kind == "init":
            self.node_id = body["node_id"]
            self.node_ids = list(body["node_ids"])
            self.reply(message, {"type": "init_ok"})
            return
        if kind == "agentmesh_ping":
            self.reply(message, {"type": "agentmesh_pong"})
            return
        callback = self._callbacks.pop(body.get("in_reply_to"), None)
        if callback is not None:
            callback(message)
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(message)
        elif "msg_id" in body:
            text = "no handler for %r" % kind
            self.reply(message, {"type": "error", "code": 10, "text": text})

    def run(self, lines=None):
        """Handles every line of ``lines`` (default: stdin) until it ends."""
        for line in lines if lines is not None else sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError as error:
                self.log("not JSON, skipped:", error)
                continue
            self.handle(message)
