"""Tests of the Python helper, standard library only:
python3 -m unittest discover -s python/tests"""

import io
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agentmesh_agent import Node, topic_of  # noqa: E402


def line(src, dest, body):
    return json.dumps({"src": src, "dest": dest, "body": body})


class NodeTest(unittest.TestCase):
    def run_node(self, node, lines):
        node.run(lines)
        return [json.loads(text) for text in node._output.getvalue().splitlines()]

    def test_init_is_answered_and_sets_the_ids(self):
        node = Node(output=io.StringIO())
        init = {"type": "init", "msg_id": 1, "node_id": "a", "node_ids": ["a", "b"]}
        written = self.run_node(node, [line("agentmesh", "a", init)])
        self.assertEqual((node.node_id, node.node_ids), ("a", ["a", "b"]))
        self.assertEqual(written, [{"src": "a", "dest": "agentmesh", "body": {"type": "init_ok", "in_reply_to": 1}}])

    def test_handlers_reply_and_unknown_requests_are_refused(self):
        node = Node(output=io.StringIO())

        @node.handler("echo")
        def echo(message):
            node.reply(message, {"type": "echo_ok", "echo": message["body"]["echo"]})

        init = {"type": "init", "msg_id": 1, "node_id": "a", "node_ids": ["a"]}
        lines = [
            line("agentmesh", "a", init),
            "",
            "garbage",
            line("c", "a", {"type": "echo", "msg_id": 5, "echo": "hi"}),
            line("c", "a", {"type": "dance", "msg_id": 6}),
        ]
        written = self.run_node(node, lines)
        self.assertEqual(written[1]["body"], {"type": "echo_ok", "echo": "hi", "in_reply_to": 5})
        self.assertEqual(written[2]["body"]["type"], "error")
        self.assertEqual(written[2]["body"]["code"], 10)
        self.assertEqual(written[2]["body"]["in_reply_to"], 6)

    def test_pings_are_answered_by_the_helper(self):
        node = Node(output=io.StringIO())
        node.node_id = "a"
        written = self.run_node(node, [line("agentmesh", "a", {"type": "agentmesh_ping", "msg_id": 4})])
        self.assertEqual(written, [{"src": "a", "dest": "agentmesh", "body": {"type": "agentmesh_pong", "in_reply_to": 4}}])

    def test_an_rpc_answer_goes_to_its_callback(self):
        node = Node(output=io.StringIO())
        node.node_id = "a"
        answers = []
        node.rpc("b", {"type": "read"}, answers.append)
        sent = json.loads(node._output.getvalue())
        self.assertEqual(sent["body"], {"type": "read", "msg_id": 1})
        node.handle({"src": "b", "dest": "a", "body": {"type": "read_ok", "in_reply_to": 1}})
        self.assertEqual(len(answers), 1)
        node.handle({"src": "b", "dest": "a", "body": {"type": "read_ok", "in_reply_to": 1}})
        self.assertEqual(len(answers), 1, "an answer is taken once")

    def test_publishing_writes_to_the_topic_and_deliveries_name_theirs(self):
        node = Node(output=io.StringIO())
        node.node_id = "a"
        node.publish("news", {"type": "story", "n": 1})
        sent = json.loads(node._output.getvalue())
        self.assertEqual(sent, {"src": "a", "dest": "topic:news", "body": {"type": "story", "n": 1}})
        published = {"src": "b", "dest": "a", "body": {"type": "story", "agentmesh_topic": "news"}}
        self.assertEqual(topic_of(published), "news")
        self.assertIsNone(topic_of({"src": "b", "dest": "a", "body": {"type": "story"}}))


if __name__ == "__main__":
    unittest.main()
