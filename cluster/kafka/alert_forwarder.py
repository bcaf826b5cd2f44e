"""The alerts topic to a SOAR's webhook: `AlertForwarder` reads every alert the correlators write
and POSTs it, signed, through `cluster.sinks.webhook.WebhookSink` (whose docstring describes the
request: headers, signature, `Idempotency-Key`, retries).

    config = load_config("cluster.yaml")
    forwarder = AlertForwarder(config, webhook_secret(config))  # the secret from correlator.webhook.secret_env
    forwarder.run(stop)                     # until stop.set(); stats() from any thread

It consumes `correlator.alerts_topic` in its own consumer group, `<kafka.group_id>.webhook`
(starting from the earliest alert the first time, so nothing written before it started is
missed), so its position is independent of every other reader of the topic.

Delivery semantics (at least once, per alert state):

- A record is finished when its alert was delivered (a 2xx answer), skipped (its priority number
  is above `correlator.webhook.min_priority`), or written to `correlator.alerts_dead_letter_topic`
  and acknowledged by the broker. A partition's offset is committed only up to its first
  unfinished record: an alert waiting for the endpoint holds back the commit of every later one,
  so nothing is lost while the endpoint is down, nor across a restart or a rebalance.
- A crash, a stop or a rebalance re-reads what was not committed, so an alert may be POSTed
  again: the receiver deduplicates by `Idempotency-Key` (`<alert id>:<activity>:<count>`, the same
  on every retry and every replay). When stopping, the sink gets `drain_s` to deliver its queue;
  what it has not delivered by then stays uncommitted (it is not dead-lettered: it is not lost,
  only late).
- Order: one sender delivers alerts one at a time in the order they were read, so within a
  partition (the correlators key alerts by alert id, so one alert's records share a partition) a
  Create reaches the endpoint before its Updates and its Close.
- The endpoint failing (connection errors, timeouts, 408, 429, 5xx) is retried with backoff by
  the sink, up to `max_attempts`; then, or at once on any other 4xx, the alert is dead-lettered
  with headers `reason`, `alert.id`, `activity`, `priority`, `idempotency.key`, `stage: webhook`,
  and its exact body as the value, for a re-drive. While the sink retries the head alert, later
  ones wait in its queue; when the queue is full (`max_queue`) the forwarder pauses fetching, so
  memory stays bounded however long the endpoint is down. An outage longer than the head alert's
  attempts (with the defaults, 8 attempts over roughly 30 to 60 s) dead-letters that one alert and
  the next takes its place: one alert per such period goes to the dead letters, the rest wait.
- A record that is not an alert (not JSON, not an object, no `finding_info.uid`, no activity,
  priority or count; a tombstone) is dead-lettered as it was read (key and value) with headers
  `error`, `stage: decode`, `source.topic`, `source.partition`, `source.offset`, and counted:
  never a crash, never a stalled partition.
- A dead letter the broker does not acknowledge is retried (with backoff) until it is, or until
  the forwarder stops; the record then stays uncommitted. With the dead-letter topic missing the
  forwarder therefore stalls instead of losing alerts: `stats()["last_error"]` says why.

The WebhookSink reports deliveries only as counts (`stats()["sent"]`); the forwarder matches them
to records through the sink's documented order (one sender, first in first out, each alert
finished before the next): the first `sent + dead-lettered` queued records are finished.

Clients come from `cluster.kafka.client`; they are created in `run`, in the thread that uses them
(the sender thread has its own dead-letter producer). The secret is never logged nor shown.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from cluster.config import ClusterConfig
from cluster.kafka import client as kafka
from cluster.sinks.webhook import ACTIVITY_HEADER, ALERT_ID_HEADER, IDEMPOTENCY_HEADER, PRIORITY_HEADER, WebhookSink
from correlator.summary import AlertRecord, decode_alert
from detectors.errors import ConfigError

log = logging.getLogger("sigmaray.kafka.alert_forwarder")

Partition = tuple[str, int]
HeaderValue = str | bytes | None
DeadHeaders = list[tuple[str, HeaderValue]]


# -- alert records --------------------------------------------------------------------------------

def webhook_secret(config: ClusterConfig, environ: Mapping[str, str] | None = None) -> str:
    """The HMAC secret, from the environment variable `correlator.webhook.secret_env` names;
    ConfigError naming the variable (never a value) when it is unset or empty."""
    name = config.correlator.webhook.secret_env
    value = (os.environ if environ is None else environ).get(name, "")
    if not value:
        raise ConfigError(f"the webhook secret is missing: set the environment variable {name} "
                          "(correlator.webhook.secret_env names it)")
    return value


def _reporter(outcome: list[KafkaError | None]) -> Any:
    """A delivery callback that records the broker's answer (None: acknowledged)."""
    return lambda error, _message: outcome.append(error)


# -- offsets --------------------------------------------------------------------------------------

@dataclass(slots=True)
class PartitionOffsets:
    """One partition's records read since its last commit, and which of them are finished.
    Records finish out of order (a skipped alert at once, a queued one when the endpoint answers),
    so the committable offset is the one after the longest finished run from the oldest record."""

    pending: deque[int] = field(default_factory=deque)  # read, in offset order, not yet committable
    finished: set[int] = field(default_factory=set)  # finished offsets still behind an unfinished one
    next_offset: int = -1  # the offset to commit (the record after the finished run); -1 = none yet
    committed: int = -1  # the last offset committed by this forwarder

    def read(self, offset: int) -> None:
        self.pending.append(offset)

    def finish(self, offset: int) -> None:
        self.finished.add(offset)
        while self.pending and self.pending[0] in self.finished:
            head = self.pending.popleft()
            self.finished.discard(head)
            self.next_offset = head + 1

    @property
    def uncommitted(self) -> bool:
        return self.next_offset > self.committed


@dataclass(slots=True)
class _Read:
    """A decoded alert waiting for room in the sink's queue."""

    offsets: PartitionOffsets
    offset: int
    alert: AlertRecord


# -- the forwarder ----------------------------------------------------------------------------------

class AlertForwarder:
    """Consumes the alerts topic and delivers each alert to the webhook; see the module docstring."""

    def __init__(self, config: ClusterConfig, secret: str, *, drain_s: float = 5.0, commit_interval_s: float = 1.0,
                 batch_size: int = 500, poll_s: float = 0.2) -> None:
        """`drain_s`: how long a stop waits for the sink to deliver its queue; `commit_interval_s`:
        how often finished offsets are committed (also on every rebalance and at the stop)."""
        if not config.correlator.webhook.url:
            raise ConfigError("correlator.webhook.url is not set: there is no endpoint to forward alerts to")
        if not secret:
            raise ConfigError("the webhook secret is empty")
        self.config = config
        self.group = f"{config.kafka.group_id}.webhook"
        self.topic = config.correlator.alerts_topic
        self.dead_letter_topic = config.correlator.alerts_dead_letter_topic
        self.drain_s = drain_s
        self.commit_interval_s = commit_interval_s
        self.batch_size = batch_size
        self.poll_s = poll_s
        self._secret = secret
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._dead_reasons: Counter[str] = Counter()
        self._last_error = ""
        # The runner's state for stats(), replaced whole under the lock.
        self._view: dict[str, Any] = {"partitions": {}, "uncommitted": 0, "backlog": 0, "in_webhook": 0, "paused": False}
        self._sink: WebhookSink | None = None
        self._stop = threading.Event()
        self._runner = 0  # thread id of run()
        self._offsets: dict[Partition, PartitionOffsets] = {}
        self._backlog: deque[_Read] = deque()
        self._in_sink: deque[tuple[PartitionOffsets, int]] = deque()  # queued to the sink, in its order
        self._settled = 0  # how many of the sink's alerts were matched to their records
        self._sink_calls = 0  # on_undeliverable calls from the sender thread (one per queued alert)
        self._sink_dead = 0  # of those, dead-lettered and acknowledged
        self._sink_stuck_at: int | None = None  # index of the first queued alert neither delivered nor dead-lettered
        self._rejected: str | None = None  # why submit() just refused (queue full, closed)
        self._paused = False
        self._generation = 0
        self._dead_producer: Producer | None = None  # the sender thread's
        self._producer: Producer | None = None  # the runner's (records that are not alerts)

    def __repr__(self) -> str:
        return f"AlertForwarder(topic={self.topic!r}, group={self.group!r})"

    def __reduce__(self) -> Any:  # never pickled into a Ray object with the secret inside
        raise TypeError("an AlertForwarder holds the webhook secret: build it in the process that runs it")

    # -- running ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> dict[str, Any]:
        """Forwards until `stop` is set, then drains the sink for `drain_s`, commits what is
        finished and returns `stats()`. Raises only on a fatal Kafka error."""
        self._stop = stop
        self._runner = threading.get_ident()
        self._reset()
        generation = self._generation
        webhook = self.config.correlator.webhook
        # The sink first: it validates the endpoint settings before any Kafka client exists.
        sink = self._sink = WebhookSink(
            webhook.url, self._secret, min_priority=webhook.min_priority, timeout_s=webhook.timeout_s,
            max_queue=webhook.max_queue, max_attempts=webhook.max_attempts, backoff_initial_s=webhook.backoff_initial_s,
            backoff_max_s=webhook.backoff_max_s, enqueue_timeout_s=1.0,
            on_undeliverable=lambda body, headers, reason: self._undeliverable(body, headers, reason, generation))
        client_id = f"sigmaray-alert-forwarder-{os.getpid()}"
        consumer: Consumer | None = None
        try:
            self._producer = kafka.producer(self.config.kafka, **{"client.id": client_id, "linger.ms": 0})
            self._dead_producer = kafka.producer(self.config.kafka, **{"client.id": f"{client_id}-sender", "linger.ms": 0})
            consumer = kafka.consumer(self.config.kafka, self.group, **{
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",  # a new group starts from the oldest alert: nothing missed
                "isolation.level": "read_committed",  # correlators may write alerts in transactions
                "queued.max.messages.kbytes": 16384,  # librdkafka's prefetch, the other bound on memory
                "client.id": client_id,
            })
            missing = kafka.missing_topics(self.config.kafka, [self.topic, self.dead_letter_topic])
            if missing:
                self._note_error(f"topics missing: {', '.join(missing)} (alerts are read once they exist; "
                                 "nothing is committed past an alert that cannot be dead-lettered)")
            consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
            next_commit = time.monotonic() + self.commit_interval_s
            while not stop.is_set():
                self._step(consumer)
                if time.monotonic() >= next_commit:
                    self._commit(consumer)
                    next_commit = time.monotonic() + self.commit_interval_s
                self._publish()
        finally:
            try:
                # What the sink cannot deliver within drain_s comes back as "shutdown": uncommitted.
                sink.close(self.drain_s)
                self._settle()
                if consumer is not None:
                    self._commit(consumer)
                self._publish()
            finally:
                if consumer is not None:
                    consumer.close()  # a clean leave: the group rebalances at once
                if self._producer is not None:
                    self._producer.flush(5)
                # Dropped so that no client outlives the run (a sender still in a request finds
                # no producer: its alert stays uncommitted).
                self._producer = self._dead_producer = None
        return self.stats()

    def _reset(self) -> None:
        """A run starts from the committed offsets with a new sink: nothing of a previous run's
        bookkeeping applies to it (the counts go on)."""
        self._offsets = {}
        self._backlog = deque()
        self._in_sink = deque()
        self._generation += 1  # a sender of an earlier run still finishing a request is ignored
        self._settled = self._sink_calls = self._sink_dead = 0
        self._sink_stuck_at = None
        self._paused = False

    def stats(self) -> dict[str, Any]:
        """Counts: `consumed` records, `forwarded` to the sink, `skipped` below min_priority,
        `bad_records` (not alerts), `dead_letters` (by reason in `dead_letter_reasons`), `commits`,
        `pauses`, `commit_errors`; now: `partitions` with their committed offsets, `uncommitted`
        records, `backlog` (read, waiting for room in the sink), `paused`, `last_error`; the
        sink's own counts under `webhook` (`sent` is alerts delivered)."""
        with self._lock:
            out: dict[str, Any] = {name: self._counts.get(name, 0) for name in
                                   ("consumed", "forwarded", "skipped", "bad_records", "dead_letters", "commits",
                                    "pauses", "commit_errors", "dead_letter_errors")}
            out["dead_letter_reasons"] = dict(self._dead_reasons)
            out.update(self._view)
            out["last_error"] = self._last_error
        out["webhook"] = self._sink.stats() if self._sink is not None else {}
        return out

    # -- one step of the loop -----------------------------------------------------------------------

    def _step(self, consumer: Consumer) -> None:
        self._settle()
        self._submit_backlog()
        self._flow(consumer)
        # Called even while paused: it serves rebalances and keeps the group membership alive.
        # Alerts waiting for room in the sink are offered again soon, not after a whole poll.
        timeout = min(self.poll_s, 0.02) if self._backlog else self.poll_s
        for message in consumer.consume(num_messages=self.batch_size, timeout=timeout):
            self._read(message)
        self._submit_backlog()
        self._flow(consumer)

    def _read(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise KafkaException(error)
            self._note_error(f"consumer: {error.str()}")  # e.g. the alerts topic does not exist yet
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        offsets = self._offsets.get((topic, partition))
        if offsets is None:
            return  # fetched before its partition was revoked: the new owner reads it
        offsets.read(offset)
        self._count("consumed")
        try:
            alert = decode_alert(message.value(), message.headers())
        except ValueError as error:
            headers: DeadHeaders = [("error", str(error).encode()), ("stage", b"decode"), ("source.topic", topic.encode()),
                       ("source.partition", str(partition).encode()), ("source.offset", str(offset).encode())]
            self._count("bad_records")
            if self._dead_letter(self._producer, message.key(), message.value(), headers, "not an alert"):
                offsets.finish(offset)
            return
        self._backlog.append(_Read(offsets, offset, alert))

    def _submit_backlog(self) -> None:
        sink = self._sink
        assert sink is not None
        room = sink.stats()["queued"] < self.config.correlator.webhook.max_queue
        while self._backlog and room:
            item = self._backlog[0]
            self._rejected = None
            if sink.submit(item.alert):
                self._in_sink.append((item.offsets, item.offset))
                self._count("forwarded")
            elif self._rejected is None:  # its priority is below the webhook's: finished
                item.offsets.finish(item.offset)
                self._count("skipped")
            else:  # refused (queue full): stays first in line for the next step
                return
            self._backlog.popleft()
            room = sink.stats()["queued"] < self.config.correlator.webhook.max_queue

    def _flow(self, consumer: Consumer) -> None:
        """Pause fetching while alerts wait for room in the sink; resume when they all fit."""
        if self._backlog and not self._paused:
            consumer.pause(consumer.assignment())
            self._paused = True
            self._count("pauses")
        elif not self._backlog and self._paused:
            consumer.resume(consumer.assignment())
            self._paused = False

    def _settle(self) -> None:
        """Marks finished the records of the alerts the sink has finished since the last call: the
        first `sent + dead-lettered` it was given, by its first-in-first-out order. Read in this
        order (the sink's count, then ours) each count is at most what was finished when it was
        read, so a record is never marked finished early."""
        sink = self._sink
        if sink is None:
            return
        sent = int(sink.stats()["sent"])
        with self._lock:
            finished = sent + self._sink_dead
            if self._sink_stuck_at is not None:  # alerts after it are not matched in this run
                finished = min(finished, self._sink_stuck_at)
        while self._settled < finished and self._in_sink:
            offsets, offset = self._in_sink.popleft()
            offsets.finish(offset)
            self._settled += 1

    def _commit(self, consumer: Consumer, only: Sequence[Partition] | None = None) -> None:
        chosen = self._offsets if only is None else {key: self._offsets[key] for key in only if key in self._offsets}
        offsets = [TopicPartition(topic, partition, state.next_offset)
                   for (topic, partition), state in chosen.items() if state.uncommitted]
        if not offsets:
            return
        try:
            done = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:  # a coordinator moving, a rebalance: committed next time
            self._count("commit_errors")
            self._note_error(f"commit: {error}")
            return
        for tp in done or ():
            state = chosen.get((tp.topic, tp.partition))
            if tp.error is None and state is not None:
                state.committed = max(state.committed, tp.offset)
        self._count("commits")

    # -- rebalances ----------------------------------------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._offsets.setdefault((tp.topic, tp.partition), PartitionOffsets())
        self._paused = False  # a new assignment starts fetching; the next step pauses it if need be

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commits what is finished, then forgets the partitions. Their alerts already in the sink
        are still delivered (the new owner may deliver them again: Idempotency-Key)."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._settle()
        self._commit(consumer, keys)
        self._forget(keys)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([(tp.topic, tp.partition) for tp in partitions])  # another member owns them: no commit

    def _forget(self, keys: Sequence[Partition]) -> None:
        for key in keys:
            self._offsets.pop(key, None)
        kept = set(map(id, self._offsets.values()))
        self._backlog = deque(item for item in self._backlog if id(item.offsets) in kept)
        self._paused = False

    # -- dead letters -----------------------------------------------------------------------------------

    def _undeliverable(self, body: bytes, headers: dict[str, str], reason: str, generation: int) -> None:
        """The sink's on_undeliverable. From the runner's own thread it means submit() refused the
        alert (queue full, closed) or close() handed back its queue: the record is simply left
        unfinished (read again later), not dead-lettered. From the sender thread it is the alert
        the sender just finished with: dead-lettered, unless the sender stopped because we stop."""
        if threading.get_ident() == self._runner:
            self._rejected = reason
            return
        if generation != self._generation:
            return  # an earlier run's sender: that run is over, its alert is read again
        with self._lock:
            index = self._sink_calls
            self._sink_calls += 1
        written = False
        try:
            if reason != "shutdown":
                dead_headers: DeadHeaders = [
                    ("reason", reason.encode()), ("stage", b"webhook"),
                    ("alert.id", headers.get(ALERT_ID_HEADER, "").encode()),
                    ("activity", headers.get(ACTIVITY_HEADER, "").encode()),
                    ("priority", headers.get(PRIORITY_HEADER, "").encode()),
                    ("idempotency.key", headers.get(IDEMPOTENCY_HEADER, "").encode())]
                key = headers.get(ALERT_ID_HEADER, "").encode() or None
                written = self._dead_letter(self._dead_producer, key, body, dead_headers,
                                            reason.split(" after ", 1)[0])
        finally:  # even on an unexpected error: the count must stay matched to the sink's order
            # `index` is this alert's place in the sink's order only because the sender waits
            # for this call before taking its next alert (its `sent` count cannot move meanwhile).
            with self._lock:
                if written:
                    self._sink_dead += 1
                elif self._sink_stuck_at is None:
                    sent = int(self._sink.stats()["sent"]) if self._sink is not None else 0
                    self._sink_stuck_at = sent + index

    def _dead_letter(self, producer: Producer | None, key: bytes | None, value: bytes | None,
                     headers: DeadHeaders, reason: str) -> bool:
        """Writes one dead letter and waits for the broker's acknowledgement, retrying with backoff
        until it is acknowledged or the forwarder stops (False: the record stays unfinished)."""
        if producer is None:
            return False
        delay = 0.2
        while True:
            outcome: list[KafkaError | None] = []
            try:
                producer.produce(self.dead_letter_topic, value, key=key, headers=headers, on_delivery=_reporter(outcome))
                producer.flush(10)
            except (BufferError, KafkaException) as error:
                outcome.append(KafkaError(KafkaError._FAIL, str(error)))
            if outcome and outcome[0] is None:
                with self._lock:
                    self._counts["dead_letters"] += 1
                    self._dead_reasons[reason] += 1
                return True
            problem = outcome[0].str() if outcome and outcome[0] is not None else "not acknowledged in time"
            self._count("dead_letter_errors")
            self._note_error(f"dead letter to {self.dead_letter_topic}: {problem}")
            if self._stop.is_set():
                return False
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _note_error(self, text: str) -> None:
        with self._lock:
            repeated, self._last_error = text == self._last_error, text
        if not repeated:  # a missing topic is reported on every metadata refresh: log it once
            log.warning("alert forwarder: %s", text)

    def _publish(self) -> None:
        view = {
            "partitions": {f"{topic}[{partition}]": state.committed for (topic, partition), state in self._offsets.items()},
            "uncommitted": sum(len(state.pending) for state in self._offsets.values()),
            "backlog": len(self._backlog),
            "in_webhook": len(self._in_sink),
            "paused": self._paused,
        }
        with self._lock:
            self._view = view
