//! Agents as processes in any language, speaking Maelstrom's protocol
//! (jepsen-io/maelstrom, `doc/protocol.md`): one JSON message a line,
//! `{"src", "dest", "body": {"type", "msg_id", "in_reply_to", ...}}`, on the
//! process's stdin and stdout; logs on stderr. The node writes an `init`
//! first (`node_id` the agent's name, `node_ids` its group) and waits for
//! `init_ok`. This module is the protocol's pure half: reading and writing
//! lines, and the parameters of `behaviour = "process"`; the actor that
//! runs the process is `actors::process_agent`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{target_matches, ParamError};
use crate::protocols::mesh::SendError;

use super::control::{ControlAnswer, ControlAsk, ControlError, ControlOutcome};
use super::registry::AgentSpec;

/// Maelstrom's error codes (`doc/protocol.md`, "Errors").
pub mod codes {
    /// The request timed out.
    pub const TIMEOUT: u64 = 0;
    /// The destination does not exist.
    pub const NODE_NOT_FOUND: u64 = 1;
    /// The request is not supported.
    pub const NOT_SUPPORTED: u64 = 10;
    /// Not now; try again.
    pub const TEMPORARILY_UNAVAILABLE: u64 = 11;
    /// The request was malformed.
    pub const MALFORMED_REQUEST: u64 = 12;
    /// The operation failed, and may or may not have taken effect.
    pub const CRASH: u64 = 13;
    /// A key-value service's key is not there.
    pub const KEY_DOES_NOT_EXIST: u64 = 20;
    /// A compare-and-set found its key holding something else.
    pub const PRECONDITION_FAILED: u64 = 22;
}

/// Where a process agent's init and pings come from.
pub const INIT_SOURCE: &str = "agentmesh";
/// The body type of a liveness ping, answered with [`PONG`].
pub const PING: &str = "agentmesh_ping";
/// The body type of the answer to a [`PING`].
pub const PONG: &str = "agentmesh_pong";

/// The body field naming the topic a delivered message was published on.
pub const TOPIC_FIELD: &str = "agentmesh_topic";
/// A line whose `dest` is `topic:<name>` publishes its body on topic
/// `<name>` (agents' names cannot hold `:`).
pub const TOPIC_DEST_PREFIX: &str = "topic:";

/// One message as a line carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The sending agent.
    pub src: String,
    /// The agent it is for.
    pub dest: String,
    /// The body: an object with a string `type`.
    pub body: Map<String, Value>,
}

impl Line {
    /// Reads one line a process wrote; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<Line, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        let Value::Object(mut object) = value else {
            return Err("not a JSON object".into());
        };
        let mut field = |name: &str| match object.remove(name) {
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(format!("\"{name}\" is not a string")),
            None => Err(format!("no \"{name}\"")),
        };
        let (src, dest) = (field("src")?, field("dest")?);
        let body = match object.remove("body") {
            Some(Value::Object(body)) => body,
            Some(_) => return Err("\"body\" is not an object".into()),
            None => return Err("no \"body\"".into()),
        };
        if !matches!(body.get("type"), Some(Value::String(_))) {
            return Err("the body has no string \"type\"".into());
        }
        Ok(Line { src, dest, body })
    }

    /// The line, without its newline.
    pub fn encode(&self) -> String {
        let line = serde_json::json!({"src": self.src, "dest": self.dest, "body": self.body});
        line.to_string()
    }

    /// The body's type.
    pub fn kind(&self) -> &str {
        self.body.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The body's `msg_id`, if it has a whole number one.
    pub fn msg_id(&self) -> Option<u64> {
        self.body.get("msg_id").and_then(Value::as_u64)
    }

    /// The body's `in_reply_to`, if it has a whole number one.
    pub fn in_reply_to(&self) -> Option<u64> {
        self.body.get("in_reply_to").and_then(Value::as_u64)
    }
}

/// The body of the `init` a process agent is sent first.
pub fn init_body(node_id: &str, node_ids: &[String]) -> Map<String, Value> {
    let body = serde_json::json!({
        "type": "init", "msg_id": 1, "node_id": node_id, "node_ids": node_ids,
    });
    body.as_object().expect("an object literal").clone()
}

/// An error body answering `in_reply_to`.
pub fn error_body(in_reply_to: u64, code: u64, text: &str) -> Map<String, Value> {
    let body = serde_json::json!({
        "type": "error", "in_reply_to": in_reply_to, "code": code, "text": text,
    });
    body.as_object().expect("an object literal").clone()
}

/// The Maelstrom code for a send the node refused.
pub fn code_of(error: &SendError) -> u64 {
    match error {
        SendError::NoRoute(_) | SendError::PeerDown(_) => codes::NODE_NOT_FOUND,
        SendError::PayloadTooLarge { .. } => codes::MALFORMED_REQUEST,
        _ => codes::TEMPORARILY_UNAVAILABLE,
    }
}

/// The key-value services a process may write to by name, as Maelstrom's
/// workloads use them. All three are served by the control plane's
/// linearizable key-value space, each in keys of its own
/// (`maelstrom/<service>/<the key as JSON>`): `seq-kv` and `lww-kv` get
/// more than they promise.
pub const KV_SERVICES: [&str; 3] = ["lin-kv", "seq-kv", "lww-kv"];

/// The kinds of a key-value service's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvKind {
    /// `read` → `read_ok {value}`.
    Read,
    /// `write` → `write_ok`.
    Write,
    /// `cas` → `cas_ok`.
    Cas,
}

/// Whom a key-value request's answer goes to, and as what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvReplyTo {
    /// The service asked (the answer's `src`).
    pub service: String,
    /// The request's `msg_id` (the answer's `in_reply_to`).
    pub msg_id: u64,
    /// What was asked.
    pub kind: KvKind,
}

/// A line to a key-value service, read: the ask and whom to answer, or
/// the error body to answer at once (None when the line has no `msg_id`
/// to answer).
pub type KvRequest = Result<(ControlAsk, KvReplyTo), Option<Map<String, Value>>>;

/// Reads a line written to a key-value service (None when its `dest` is
/// not one).
pub fn kv_request(line: &Line) -> Option<KvRequest> {
    let service = KV_SERVICES.iter().find(|service| **service == line.dest)?;
    let Some(msg_id) = line.msg_id() else {
        return Some(Err(None));
    };
    let malformed = |text: String| Some(error_body(msg_id, codes::MALFORMED_REQUEST, &text));
    let field = |name: &str| {
        line.body
            .get(name)
            .ok_or_else(|| malformed(format!("a {} without \"{name}\"", line.kind())))
    };
    let json = |value: &Value| serde_json::to_vec(value).expect("JSON encodes");
    let parsed = (|| {
        let key = format!("maelstrom/{service}/{}", field("key")?);
        let (kind, ask) = match line.kind() {
            "read" => (KvKind::Read, ControlAsk::Read { key }),
            "write" => {
                let value = json(field("value")?);
                (KvKind::Write, ControlAsk::Write { key, value })
            }
            "cas" => {
                let (from, to) = (json(field("from")?), json(field("to")?));
                let create_if_missing = (line.body.get("create_if_not_exists"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let ask = ControlAsk::CompareAndSet {
                    key,
                    from,
                    to,
                    create_if_missing,
                };
                (KvKind::Cas, ask)
            }
            other => {
                let text = format!("{service} serves read, write and cas, not {other:?}");
                return Err(Some(error_body(msg_id, codes::NOT_SUPPORTED, &text)));
            }
        };
        let service = service.to_string();
        let reply_to = KvReplyTo {
            service,
            msg_id,
            kind,
        };
        Ok((ask, reply_to))
    })();
    Some(parsed)
}

/// The body answering a key-value request with its outcome.
pub fn kv_reply(reply_to: &KvReplyTo, outcome: &ControlOutcome) -> Map<String, Value> {
    let msg_id = reply_to.msg_id;
    let ok = |kind: &str, value: Option<Value>| {
        let mut body = serde_json::json!({"type": kind, "in_reply_to": msg_id});
        if let Some(value) = value {
            body["value"] = value;
        }
        body.as_object().expect("an object literal").clone()
    };
    match (reply_to.kind, outcome) {
        (KvKind::Read, Ok(ControlAnswer::Value(bytes))) => match serde_json::from_slice(bytes) {
            Ok(value) => ok("read_ok", Some(value)),
            Err(_) => error_body(msg_id, codes::CRASH, "the value stored is not JSON"),
        },
        (KvKind::Write, Ok(ControlAnswer::Written)) => ok("write_ok", None),
        (KvKind::Cas, Ok(ControlAnswer::Written)) => ok("cas_ok", None),
        (_, Ok(ControlAnswer::NotFound)) => {
            error_body(msg_id, codes::KEY_DOES_NOT_EXIST, "key does not exist")
        }
        (_, Ok(ControlAnswer::Mismatch)) => error_body(
            msg_id,
            codes::PRECONDITION_FAILED,
            "the key holds another value",
        ),
        (_, Ok(answer)) => error_body(msg_id, codes::CRASH, &format!("unexpected {answer:?}")),
        (_, Err(error)) => {
            let code = match error {
                ControlError::Unavailable(_) => codes::TEMPORARILY_UNAVAILABLE,
                ControlError::Indeterminate(_) => codes::TIMEOUT,
                ControlError::Invalid(_) => codes::MALFORMED_REQUEST,
            };
            error_body(msg_id, code, &error.to_string())
        }
    }
}

/// The parameters of `behaviour = "process"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessParams {
    /// The program and its arguments, e.g. `["python3", "agents/echo.py"]`.
    pub command: Vec<String>,
    /// Variables added to the process's environment.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The working directory (default: the node's).
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// The agents the process is told of in `init`'s `node_ids` (names, or
    /// prefixes ending in `*`). Default: the agents of its own
    /// `[[agents]]` entry.
    #[serde(default)]
    pub group: Vec<String>,
    /// Send the process an `agentmesh_ping` this often (None: never); a
    /// process that leaves one unanswered for `ping_timeout_ms` counts as
    /// hung and is restarted. The Python helper answers pings itself.
    #[serde(default)]
    pub ping_every_ms: Option<u64>,
    /// How long a ping may go unanswered.
    #[serde(default = "ProcessParams::default_ping_timeout_ms")]
    pub ping_timeout_ms: u64,
}

impl ProcessParams {
    fn default_ping_timeout_ms() -> u64 {
        5_000
    }

    /// The parameters of `spec`, checked.
    pub fn from_spec(spec: &AgentSpec<'_>) -> Result<ProcessParams, ParamError> {
        let params: ProcessParams = spec.params.parse()?;
        match params.command.first() {
            None => return Err(ParamError::new("command", "give the program to run")),
            Some(program) if program.is_empty() => {
                return Err(ParamError::new("command[0]", "the program is empty"))
            }
            Some(_) => {}
        }
        if params
            .ping_every_ms
            .is_some_and(|every| !(10..=3_600_000).contains(&every))
        {
            return Err(ParamError::new("ping_every_ms", "give 10 to 3600000 ms"));
        }
        if !(10..=3_600_000).contains(&params.ping_timeout_ms) {
            return Err(ParamError::new("ping_timeout_ms", "give 10 to 3600000 ms"));
        }
        for (position, pattern) in params.group.iter().enumerate() {
            if !spec
                .config
                .agents
                .iter()
                .any(|agent| target_matches(pattern, &agent.name))
            {
                return Err(ParamError::new(
                    format!("group[{position}]"),
                    format!("{pattern:?} names no agent (use a name, or a prefix ending in '*')"),
                ));
            }
        }
        Ok(params)
    }

    /// The names `init` gives as `node_ids` for agent `name` of entry
    /// `entry`.
    pub fn group_of(
        &self,
        name: &str,
        entry: usize,
        agents: &[crate::config::AgentConfig],
    ) -> Vec<String> {
        let member = |agent: &&crate::config::AgentConfig| match self.group.is_empty() {
            true => agent.entry == entry,
            false => self
                .group
                .iter()
                .any(|pattern| target_matches(pattern, &agent.name)),
        };
        let mut names: Vec<String> = agents
            .iter()
            .filter(member)
            .map(|agent| agent.name.clone())
            .collect();
        if !names.iter().any(|member| member == name) {
            names.push(name.to_string());
        }
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written() {
        let text = r#"{"src":"a","dest":"b","body":{"type":"echo","msg_id":3,"echo":"hi"}}"#;
        let line = Line::parse(text).unwrap();
        assert_eq!(
            (line.src.as_str(), line.dest.as_str(), line.kind()),
            ("a", "b", "echo")
        );
        assert_eq!((line.msg_id(), line.in_reply_to()), (Some(3), None));
        assert_eq!(Line::parse(&line.encode()).unwrap(), line);
    }

    #[test]
    fn lines_that_are_not_messages_say_why() {
        for (text, reason) in [
            ("garbage", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"dest":"b","body":{"type":"x"}}"#, "no \"src\""),
            (
                r#"{"src":1,"dest":"b","body":{"type":"x"}}"#,
                "\"src\" is not a string",
            ),
            (
                r#"{"src":"a","dest":"b","body":[]}"#,
                "\"body\" is not an object",
            ),
            (
                r#"{"src":"a","dest":"b","body":{"msg_id":1}}"#,
                "no string \"type\"",
            ),
        ] {
            let error = Line::parse(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    fn kv_line(body: Value) -> Line {
        let body = body.as_object().unwrap().clone();
        Line {
            src: "n1".into(),
            dest: "lin-kv".into(),
            body,
        }
    }

    #[test]
    fn kv_requests_become_asks_of_the_service_own_keys() {
        let cas = kv_line(serde_json::json!({
            "type": "cas", "msg_id": 4, "key": 0, "from": 1, "to": {"b": 2, "a": [3]},
            "create_if_not_exists": true,
        }));
        let (ask, reply_to) = kv_request(&cas).unwrap().unwrap();
        assert_eq!(
            ask,
            ControlAsk::CompareAndSet {
                key: "maelstrom/lin-kv/0".into(),
                from: b"1".to_vec(),
                to: br#"{"a":[3],"b":2}"#.to_vec(),
                create_if_missing: true,
            }
        );
        assert_eq!((reply_to.msg_id, reply_to.kind), (4, KvKind::Cas));
        let mut read = kv_line(serde_json::json!({"type": "read", "msg_id": 5, "key": "x"}));
        read.dest = "seq-kv".into();
        let (ask, _) = kv_request(&read).unwrap().unwrap();
        assert_eq!(ask.key(), "maelstrom/seq-kv/\"x\"");
        let mut elsewhere = read.clone();
        elsewhere.dest = "n2".into();
        assert!(kv_request(&elsewhere).is_none(), "not a service");
    }

    #[test]
    fn malformed_kv_requests_are_answered_with_the_code_that_fits() {
        let code = |body: Value| match kv_request(&kv_line(body)) {
            Some(Err(Some(error))) => error["code"].as_u64(),
            other => panic!("{other:?}"),
        };
        let no_value = serde_json::json!({"type": "write", "msg_id": 1, "key": 1});
        assert_eq!(code(no_value), Some(codes::MALFORMED_REQUEST));
        let unknown = serde_json::json!({"type": "delete", "msg_id": 1, "key": 1});
        assert_eq!(code(unknown), Some(codes::NOT_SUPPORTED));
        let no_msg_id = kv_line(serde_json::json!({"type": "read", "key": 1}));
        assert_eq!(kv_request(&no_msg_id), Some(Err(None)));
    }

    #[test]
    fn kv_outcomes_are_answered_as_maelstrom_expects() {
        let reply_to = |kind| KvReplyTo {
            service: "lin-kv".into(),
            msg_id: 9,
            kind,
        };
        let read = kv_reply(
            &reply_to(KvKind::Read),
            &Ok(ControlAnswer::Value(b"[1]".to_vec())),
        );
        assert_eq!(read["type"], "read_ok");
        assert_eq!(read["value"], serde_json::json!([1]));
        assert_eq!(read["in_reply_to"], 9);
        let cas = kv_reply(&reply_to(KvKind::Cas), &Ok(ControlAnswer::Written));
        assert_eq!(cas["type"], "cas_ok");
        for (outcome, code) in [
            (Ok(ControlAnswer::NotFound), codes::KEY_DOES_NOT_EXIST),
            (Ok(ControlAnswer::Mismatch), codes::PRECONDITION_FAILED),
            (
                Err(ControlError::Unavailable("x".into())),
                codes::TEMPORARILY_UNAVAILABLE,
            ),
            (Err(ControlError::Indeterminate("x".into())), codes::TIMEOUT),
        ] {
            let body = kv_reply(&reply_to(KvKind::Cas), &outcome);
            assert_eq!(
                (body["type"].as_str(), body["code"].as_u64()),
                (Some("error"), Some(code))
            );
        }
    }

    #[test]
    fn init_and_error_bodies_are_maelstroms() {
        let init = init_body("a", &["a".into(), "b".into()]);
        assert_eq!(init["type"], "init");
        assert_eq!(init["node_ids"], serde_json::json!(["a", "b"]));
        let error = error_body(7, codes::NODE_NOT_FOUND, "no agent x");
        assert_eq!(
            (error["in_reply_to"].as_u64(), error["code"].as_u64()),
            (Some(7), Some(1))
        );
    }
}
