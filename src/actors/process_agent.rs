//! An agent that is a separate process (`behaviour = "process"`), in any
//! language, speaking Maelstrom's JSON-lines protocol
//! ([`crate::agent_api::maelstrom`]).
//!
//! ```text
//! router ─Deliver─▶ ProcessAgent ─{"src","dest","body"} line─▶ stdin  (awaited: a process that
//!                                                               stops reading is cut off)
//! stdout ─lines (bounded, LINE_BYTES_MAX)─▶ reader task ─ProcessOutput (a permit each)─▶ ProcessAgent
//!        ─Tell / Response frame─▶ router::send ─▶ the destination agent
//! stderr ─lines─▶ the node's log
//! ```
//!
//! The node never trusts what the process writes: a line that is not a
//! message, names another source, or is too long is counted, logged and
//! skipped; a send the node refuses is answered with a Maelstrom error.
//! The process gets `init` first and the agent is published to the router
//! only once it answers `init_ok`. It ends (and its supervisor restarts
//! it, with backoff, under the restart budget) when the process exits,
//! does not answer `init` in time, or stops reading its input.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::agent_api::frame::Frame;
use crate::agent_api::maelstrom::{self, KvReplyTo, Line, ProcessParams, INIT_SOURCE};
use crate::agent_api::{AgentSpec, ControlOutcome, ControlTicket};
use crate::config::AgentConfig;
use crate::metrics::NodeMetrics;
use crate::protocols::mesh::SendError;
use crate::protocols::wire::{Envelope, EnvelopeKind};

use super::agent::AgentParts;
use super::control_ask::ControlAsks;
use super::data_path::AgentStats;
use super::messages::{AgentMsg, OutboundMessage};
use super::router;
use super::shared::Ticker;

/// Longest line either way, in bytes: a payload at its largest, as JSON.
pub const LINE_BYTES_MAX: usize = 1024 * 1024;
/// Lines read from the process and not yet handled; the reader waits
/// (and the process's stdout pipe fills) beyond this.
pub const OUTPUT_QUEUE_MAX: usize = 1_024;
/// How long the process has to answer `init`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a line may wait to be written to the process's stdin before
/// the process counts as hung.
pub const INPUT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests from Rust agents awaiting the process's answer, at most; the
/// oldest are forgotten beyond (their senders time out).
const ANSWERS_KEPT_MAX: usize = 65_536;

pub struct ProcessAgent;

pub struct ProcessAgentState {
    parts: AgentParts,
    config: AgentConfig,
    stats: Arc<AgentStats>,
    myself: ActorRef<AgentMsg>,
    /// Killed when the state goes, however the actor ends.
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    /// The stdout and stderr readers, ended with the state.
    _readers: Vec<Ticker>,
    initialized: bool,
    /// Requests from Rust agents written to the process: (sender, the
    /// body's msg_id) → the sender's request id.
    answers: HashMap<(String, u64), u64>,
    /// Liveness pings, when the params ask for them.
    pings: Option<Pings>,
    /// The process's requests to the key-value services, as asks of the
    /// control plane; and whom each ask's answer goes to.
    asks: ControlAsks,
    kv_waiting: HashMap<u64, KvReplyTo>,
}

/// A process agent's liveness pings.
struct Pings {
    timeout: Duration,
    _ticker: Ticker,
    sent: u64,
    /// When the ping not yet answered went, if one is out.
    unanswered_since: Option<std::time::Instant>,
}

/// Starts the process of `params`, its three pipes taken.
fn spawn_process(
    params: &ProcessParams,
) -> std::io::Result<(
    tokio::process::Child,
    tokio::process::ChildStdin,
    tokio::process::ChildStdout,
    tokio::process::ChildStderr,
)> {
    let mut command = tokio::process::Command::new(&params.command[0]);
    command
        .args(&params.command[1..])
        .envs(&params.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &params.dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn()?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    Ok((child, stdin, stdout, stderr))
}

/// Hands the process's stdout to the actor a line at a time, each holding
/// a permit; tells it when the process closed it.
async fn read_output(stdout: tokio::process::ChildStdout, actor: ActorRef<AgentMsg>) {
    let queue = Arc::new(Semaphore::new(OUTPUT_QUEUE_MAX));
    let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(LINE_BYTES_MAX));
    while let Some(item) = lines.next().await {
        let line = match item {
            Ok(line) => Ok(line),
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                Err(format!("a line longer than {LINE_BYTES_MAX} bytes"))
            }
            Err(LinesCodecError::Io(error)) => {
                let _ = actor.cast(AgentMsg::ProcessExited(format!(
                    "its stdout failed: {error}"
                )));
                return;
            }
        };
        let Ok(permit) = queue.clone().acquire_owned().await else {
            return;
        };
        if actor
            .cast(AgentMsg::ProcessOutput { line, permit })
            .is_err()
        {
            return;
        }
    }
    let _ = actor.cast(AgentMsg::ProcessExited("it closed its stdout".into()));
}

/// Passes the process's stderr on to the node's log.
async fn read_log(stderr: tokio::process::ChildStderr, agent: String) {
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(LINE_BYTES_MAX));
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => tracing::info!(%agent, "{line}"),
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!(%agent, "a log line longer than {LINE_BYTES_MAX} bytes, skipped")
            }
            Err(LinesCodecError::Io(_)) => return,
        }
    }
}

impl ProcessAgentState {
    fn counters(&self) -> &crate::metrics::Counters {
        &self.parts.shared.metrics.counters
    }

    /// Writes one line to the process; `Err` when it does not take it in
    /// time (it is then cut off).
    async fn write(&mut self, line: &Line) -> Result<(), ActorProcessingErr> {
        let mut text = line.encode();
        text.push('\n');
        let written = tokio::time::timeout(INPUT_WRITE_TIMEOUT, async {
            self.stdin.write_all(text.as_bytes()).await?;
            self.stdin.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!(
                "agent {}: cannot write to the process: {error}",
                self.config.name
            )
            .into()),
            Err(_) => Err(format!(
                "agent {}: the process took no input for {} s; it is cut off",
                self.config.name,
                INPUT_WRITE_TIMEOUT.as_secs()
            )
            .into()),
        }
    }

    /// Publishes the agent to the router, now that the process answered
    /// `init`.
    fn publish(&mut self) {
        let inbox_max = self.parts.shared.config.limits.agent_inbox_max;
        let data_path = &self.parts.data_path;
        data_path.publish_agent(&self.config.name, self.myself.clone(), inbox_max);
        self.initialized = true;
        tracing::info!(agent = %self.config.name, "process agent ready");
    }

    /// Writes a delivery to the process as a line, then reports it
    /// consumed (a body that is not a JSON object is counted instead).
    async fn deliver(&mut self, envelope: Envelope) -> Result<(), ActorProcessingErr> {
        let signed = envelope.signed;
        if !self
            .stats
            .count_delivery(&signed, crate::clock::unix_micros())
        {
            return Ok(());
        }
        let (origin, sequence) = (signed.origin_node.clone(), signed.sequence);
        let from = signed.source_agent.clone();
        let body = match Frame::decode(&signed.payload) {
            Ok(Frame::ControlAnswer {
                client,
                sequence: ask,
                outcome,
            }) => {
                // An answer for the node, not a message for the process.
                let data_path = &self.parts.data_path;
                data_path.consumed(&self.config.name, origin, sequence);
                return self.kv_answered(client, ask, outcome).await;
            }
            Ok(frame) => self.body_for_process(&from, frame),
            Err(reason) => Err(reason),
        };
        match body {
            Ok(body) => {
                let dest = self.config.name.clone();
                self.write(&Line {
                    src: from,
                    dest,
                    body,
                })
                .await?;
            }
            Err(reason) => {
                NodeMetrics::count(&self.counters().agent_frames_malformed);
                tracing::debug!(agent = %self.config.name, %from, %reason, "delivery not written to the process");
            }
        }
        self.parts
            .data_path
            .consumed(&self.config.name, origin, sequence);
        Ok(())
    }

    /// The JSON body a frame carries; a request's id becomes its msg_id
    /// (when it has none), remembered to answer it as a response.
    fn body_for_process(
        &mut self,
        from: &str,
        frame: Frame,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let (request, topic, bytes) = match frame {
            Frame::Tell(body) | Frame::Response { body, .. } => (None, None, body),
            Frame::Request { id, body } => (Some(id), None, body),
            Frame::Publish { topic, body } => (None, Some(topic), body),
            // A process is no desk; its asks' answers are taken above.
            Frame::Control { .. } | Frame::ControlAnswer { .. } => {
                return Err("a control-plane frame for an agent that did not ask".into())
            }
        };
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err("the body is not a JSON object".into());
        };
        if let Some(topic) = topic {
            body.insert(maelstrom::TOPIC_FIELD.into(), topic.into());
        }
        if let Some(id) = request {
            let msg_id = body.get("msg_id").and_then(Value::as_u64).unwrap_or(id);
            body.insert("msg_id".into(), msg_id.into());
            if self.answers.len() >= ANSWERS_KEPT_MAX {
                self.answers.clear();
            }
            self.answers.insert((from.to_string(), msg_id), id);
        }
        Ok(body)
    }

    /// Handles one line the process wrote.
    async fn output(&mut self, line: Result<String, String>) -> Result<(), ActorProcessingErr> {
        let line = line.and_then(|text| Line::parse(&text)).and_then(|line| {
            match line.src == self.config.name {
                true => Ok(line),
                false => Err(format!("it wrote as {:?}", line.src)),
            }
        });
        let line = match line {
            Ok(line) => line,
            Err(reason) => {
                NodeMetrics::count(&self.counters().process_lines_malformed);
                tracing::warn!(agent = %self.config.name, %reason, "a line from the process skipped");
                return Ok(());
            }
        };
        if line.dest == INIT_SOURCE {
            match line.kind() {
                "init_ok" if !self.initialized => self.publish(),
                maelstrom::PONG => {
                    if let Some(pings) = &mut self.pings {
                        pings.unanswered_since = None;
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        if !self.initialized {
            return Ok(());
        }
        self.send(line).await
    }

    /// Sends what the process wrote to its destination agent (or, for a
    /// `topic:` destination, to the topic's subscribers); a refusal is
    /// answered to the process as a Maelstrom error.
    async fn send(&mut self, line: Line) -> Result<(), ActorProcessingErr> {
        if let Some(request) = maelstrom::kv_request(&line) {
            return self.ask_kv(&line, request).await;
        }
        let answer = line.in_reply_to();
        let body = serde_json::to_vec(&Value::Object(line.body.clone())).expect("JSON encodes");
        if let Some(topic) = line.dest.strip_prefix(maelstrom::TOPIC_DEST_PREFIX) {
            let roster = &self.parts.shared.directory.roster;
            let frame = Frame::Publish {
                topic: topic.to_string(),
                body,
            };
            let mut first_error = None;
            for subscriber in roster.subscribers(topic).to_vec() {
                let result = self.send_frame(&subscriber, &frame, false);
                first_error = first_error.or(result.err());
            }
            return self.answer_refusal(&line, first_error).await;
        }
        let frame = match answer.and_then(|id| self.answers.remove(&(line.dest.clone(), id))) {
            Some(request) => Frame::Response { id: request, body },
            None => Frame::Tell(body),
        };
        let result = self.send_frame(&line.dest, &frame, answer.is_some());
        self.answer_refusal(&line, result.err()).await
    }

    /// Asks the control plane what the process asked a key-value service
    /// in `line` (read as `request`); a request refused at once is
    /// answered at once.
    async fn ask_kv(
        &mut self,
        line: &Line,
        request: maelstrom::KvRequest,
    ) -> Result<(), ActorProcessingErr> {
        let error_body = match request {
            Ok((ask, reply_to)) => {
                let node = self.parts.node();
                match self.asks.ask(node, &self.config.name, &self.myself, ask) {
                    Ok(sequence) => {
                        self.kv_waiting.insert(sequence, reply_to);
                        return Ok(());
                    }
                    Err(error) => maelstrom::kv_reply(&reply_to, &Err(error)),
                }
            }
            Err(Some(error_body)) => error_body,
            Err(None) => {
                NodeMetrics::count(&self.counters().process_lines_malformed);
                let service = &line.dest;
                tracing::warn!(agent = %self.config.name, %service, "a request without msg_id skipped");
                return Ok(());
            }
        };
        let answer = Line {
            src: line.dest.clone(),
            dest: self.config.name.clone(),
            body: error_body,
        };
        self.write(&answer).await
    }

    /// Writes the answer to one of the process's key-value requests, if it
    /// still waits.
    async fn kv_answered(
        &mut self,
        client: u64,
        sequence: u64,
        outcome: ControlOutcome,
    ) -> Result<(), ActorProcessingErr> {
        match self.asks.answered(client, sequence, outcome) {
            Some(answered) => self.write_kv_answer(answered).await,
            None => {
                NodeMetrics::count(&self.counters().agent_responses_unmatched);
                Ok(())
            }
        }
    }

    async fn write_kv_answer(
        &mut self,
        (ticket, outcome): (ControlTicket, ControlOutcome),
    ) -> Result<(), ActorProcessingErr> {
        let reply_to = (self.kv_waiting.remove(&ticket.0))
            .expect("every ask of a process agent is a key-value request");
        let answer = Line {
            src: reply_to.service.clone(),
            dest: self.config.name.clone(),
            body: maelstrom::kv_reply(&reply_to, &outcome),
        };
        self.write(&answer).await
    }

    /// Sends `frame` to `to` through the router, counting the outcome.
    fn send_frame(&self, to: &str, frame: &Frame, answer: bool) -> Result<(), SendError> {
        let message = OutboundMessage {
            source_agent: self.config.name.clone(),
            destination_agent: to.to_string(),
            kind: if answer {
                EnvelopeKind::Reply
            } else {
                EnvelopeKind::Data
            },
            payload: frame.encode(),
            receipt: None,
        };
        let parts = &self.parts;
        let result = router::send(&parts.shared, &parts.data_path, message);
        let counter = match &result {
            Ok(()) => &self.stats.sent,
            Err(_) => &self.stats.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Tells the process its message `line` was refused, when it was and
    /// the message has a msg_id to answer.
    async fn answer_refusal(
        &mut self,
        line: &Line,
        error: Option<SendError>,
    ) -> Result<(), ActorProcessingErr> {
        let (Some(error), Some(msg_id)) = (error, line.msg_id()) else {
            return Ok(());
        };
        let body = maelstrom::error_body(msg_id, maelstrom::code_of(&error), &error.to_string());
        let refusal = Line {
            src: line.dest.clone(),
            dest: self.config.name.clone(),
            body,
        };
        self.write(&refusal).await
    }
}

impl ProcessAgentState {
    /// Judges the last ping and sends the next; `Err` when the process
    /// left one unanswered too long (it is then restarted).
    async fn ping(&mut self) -> Result<(), ActorProcessingErr> {
        let Some(pings) = &mut self.pings else {
            return Ok(());
        };
        if let Some(since) = pings.unanswered_since {
            if since.elapsed() > pings.timeout {
                let (name, ms) = (&self.config.name, pings.timeout.as_millis());
                return Err(format!(
                    "agent {name}: the process answered no ping in {ms} ms; it counts as hung"
                )
                .into());
            }
            return Ok(());
        }
        pings.sent += 1;
        pings.unanswered_since = Some(std::time::Instant::now());
        let body = serde_json::json!({"type": maelstrom::PING, "msg_id": pings.sent});
        let ping = Line {
            src: INIT_SOURCE.into(),
            dest: self.config.name.clone(),
            body: body.as_object().expect("an object literal").clone(),
        };
        self.write(&ping).await
    }
}

impl Actor for ProcessAgent {
    type Msg = AgentMsg;
    type State = ProcessAgentState;
    type Arguments = (AgentParts, AgentConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        (parts, config): (AgentParts, AgentConfig),
    ) -> Result<ProcessAgentState, ActorProcessingErr> {
        let shared_config = &parts.shared.config;
        let spec = AgentSpec {
            name: &config.name,
            node: &config.node,
            params: &config.params,
            config: shared_config,
        };
        let fail = |reason: String| format!("agent {}: {reason}", config.name);
        let params = ProcessParams::from_spec(&spec).map_err(|error| fail(error.to_string()))?;
        let (child, stdin, stdout, stderr) = spawn_process(&params)
            .map_err(|error| fail(format!("cannot start {:?}: {error}", params.command[0])))?;
        let readers = vec![
            Ticker::new(tokio::spawn(read_output(stdout, myself.clone()))),
            Ticker::new(tokio::spawn(read_log(stderr, config.name.clone()))),
        ];
        myself.send_after(INIT_TIMEOUT, || AgentMsg::ProcessInitTimedOut);
        let group = params.group_of(&config.name, config.entry, &shared_config.agents);
        let stats = parts.data_path.stats_of(&config.name);
        let pings = params.ping_every_ms.map(|every| Pings {
            timeout: Duration::from_millis(params.ping_timeout_ms),
            _ticker: Ticker::new(
                myself.send_interval(Duration::from_millis(every), || AgentMsg::ProcessPing),
            ),
            sent: 0,
            unanswered_since: None,
        });
        let name = config.name.clone();
        let mut state = ProcessAgentState {
            parts,
            config,
            stats,
            myself,
            _child: child,
            stdin,
            _readers: readers,
            initialized: false,
            answers: HashMap::new(),
            pings,
            asks: ControlAsks::new(&name),
            kv_waiting: HashMap::new(),
        };
        let init = Line {
            src: INIT_SOURCE.into(),
            dest: state.config.name.clone(),
            body: maelstrom::init_body(&state.config.name, &group),
        };
        state.write(&init).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut ProcessAgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Deliver { envelope, permit } => {
                let delivered = state.deliver(envelope).await;
                drop(permit);
                delivered?;
            }
            AgentMsg::ProcessOutput { line, permit } => {
                let handled = state.output(line).await;
                drop(permit);
                handled?;
            }
            AgentMsg::ProcessExited(reason) => {
                return Err(
                    format!("agent {}: the process ended: {reason}", state.config.name).into(),
                );
            }
            AgentMsg::ProcessInitTimedOut if !state.initialized => {
                let name = &state.config.name;
                let seconds = INIT_TIMEOUT.as_secs();
                return Err(format!(
                    "agent {name}: the process did not answer init in {seconds} s"
                )
                .into());
            }
            AgentMsg::ProcessPing if state.initialized => state.ping().await?,
            AgentMsg::SendFailed { destination, error } => {
                tracing::debug!(agent = %state.config.name, %destination, %error, "a message of the process failed");
            }
            AgentMsg::ControlAnswered {
                client,
                sequence,
                outcome,
            } => state.kv_answered(client, sequence, outcome).await?,
            AgentMsg::ControlTimedOut(sequence) => {
                let timeout_ms = state.parts.shared.config.control.request_timeout_ms;
                if let Some(answered) = state.asks.timed_out(sequence, timeout_ms) {
                    state.write_kv_answer(answered).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
