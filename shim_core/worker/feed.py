"""TaskFeed: a worker's one conversation with the queue for claiming and completing tasks.

Executor threads take claims from a local inbox and hand back what they finished. The feed turns
that into as few round trips as the load allows (group commit): an idle worker records a
completion alone and at once, a busy one records everything that finished during its previous
call in one script that also claims the next tasks. The executor threads make the calls
themselves, with no hand-off between threads on a task's way: a thread that takes a claim
*writes* the next call (completions, and claims to keep the inbox full) before it runs the task,
and the next thread to come back reads the reply once it is there, so Redis works while the
tasks run. While tasks are short a few are claimed ahead (prefetch), so a thread never waits for
a round trip; while they are long nothing is held back from the other workers. A *link* thread
steps in for what has waited ``LINK_PATIENCE`` while every executor thread is busy (a reply
unread, completions unrecorded). When the queue runs dry one idle thread sleeps in Redis
(BZPOPMIN on the wake markers) until work arrives: no polling.

Delivery is at least once, as everywhere in SHIM: a result still waiting in the feed when the
process dies is lost with it, and the task runs again once its lease is reaped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import attrs

from shim_core.errors import ShimError
from shim_core.models import Claim, TaskResult
from shim_core.outage import OutageLog
from shim_core.queue import EncodedResult, PendingSettle, Settled, TaskQueue

log = logging.getLogger(__name__)

#: Completions recorded per call at most (one script stays short).
MAX_BATCH = 256
#: Work claimed ahead is bounded by time: about this many seconds of tasks, judged by the
#: average duration of the latest ones (long tasks are never held back from other workers).
PREFETCH_WINDOW = 0.02
#: Claimed-ahead tasks waiting this long with no thread coming for one (the running tasks turned
#: out long) are handed back to the queue for other workers, and claiming ahead stops.
HOLD_LIMIT = 0.05
#: Exchanges in flight at most. With one, Redis idles while the worker reads a reply and the
#: worker waits when a large exchange takes Redis longer than the inbox lasts (the script of a
#: task costs Redis about as much as the task costs a worker); a second, sent once the first
#: is half through, keeps both busy (+15 % on a one-worker drain).
DEPTH = 2
#: A second exchange goes out while one is in flight only with at least this many completions
#: (and half as many as the one in flight): a small one would take the slot from a full one.
_SECOND_MIN = 8
#: A reply left unread, or a completion unrecorded, while no executor thread has come for a
#: claim for this long (they all run tasks) is taken care of by the link thread (seconds).
LINK_PATIENCE = 0.005
#: A closing feed that cannot reach Redis gives up once its retry backoff exceeds this (seconds).
_CLOSING_PATIENCE = 2.0
#: Weight of the newest task in the moving average of durations.
_SMOOTHING = 0.2


@attrs.frozen
class Completion:
    """A successful execution to record; ``done`` is called (by the thread that reads the
    reply) with the number of dependents it released, or the error that refused it."""

    claim: Claim
    result: TaskResult | EncodedResult
    done: Callable[[int | ShimError], None]


@attrs.frozen
class _Pending:
    """An exchange written, its reply not read yet."""

    settle: PendingSettle
    batch: list[Completion]
    want: int
    since: float  # when it was written (monotonic)


@attrs.frozen
class Finished:
    """What an executor thread hands back before taking the next claim."""

    seconds: float
    completion: Completion | None = None


class TaskFeed:
    """Claims for ``concurrency`` executor threads and records their completions in batches."""

    def __init__(
        self,
        queue: TaskQueue,
        worker_id: str,
        types: Sequence[str],
        *,
        concurrency: int = 1,
        prefetch: int = 256,
        lease_ms: int | None = None,
        claim_block: float = 1.0,
        on_claimed: Callable[[list[Claim]], None] = lambda claims: None,
        on_unwanted: Callable[[Claim], None] = lambda claim: None,
        outage: OutageLog | None = None,
    ) -> None:
        self.queue = queue
        #: Redis outages: one line when calls start failing, one when they go through again.
        self.outage = outage or OutageLog(log)
        self.worker_id = worker_id
        self.types = tuple(types)
        self.concurrency = concurrency
        self.max_prefetch = prefetch
        self.lease_ms = lease_ms
        self.claim_block = claim_block
        self._on_claimed = on_claimed
        self._on_unwanted = on_unwanted
        self._late: list[Claim] = []  # claims that arrived after shut(): to be handed back
        self._inbox_since = 0.0  # when claims came to an empty inbox (monotonic)
        self._lock = threading.Lock()
        # One lock, two kinds of sleepers, each woken only by the changes it waits for.
        self._work_cv = threading.Condition(self._lock)  # executor threads: a claim in hand
        self._link_cv = threading.Condition(self._lock)  # link thread: something to send
        self._inbox: deque[Claim] = deque()
        self._outbox: list[Completion] = []
        self._running = 0  # claims taken by executor threads, not yet handed back
        self._idle = 0  # executor threads waiting for a claim
        self._claiming = False  # a thread sleeps in Redis for work (a blocking claim)
        self._stop_waiting = threading.Event()  # set once claiming ends: a blocking claim returns
        self._pending: deque[_Pending] = deque()  # exchanges written, oldest first
        self._asked = 0  # claims asked for by the pending exchanges
        self._on_line = False  # a thread writes an exchange, or reads a reply
        self._outbox_since = 0.0  # when the oldest completion in the outbox came (monotonic)
        self._link_wakes_at: float | None = None  # the link thread's deadline while it waits
        self._last_take = 0.0  # when an executor thread last came for a claim (monotonic)
        self._starving = False  # the queue came up short: one thread sleeps in Redis for more
        self._retry_at = 0.0  # after a failed exchange, none before this (monotonic)
        self._backoff = 0.1
        self._failures = 0
        self._active = False  # claiming; False from stop_claiming() on
        self._closing = False  # the link thread ends once every completion is recorded
        self._open = False  # claims are handed out (False once the grace period is over)
        self._avg: float | None = None  # moving average of task durations, seconds
        self._threads: list[threading.Thread] = []
        self._line = queue.settle_line()
        #: Round trips made by the feed (settle calls and claim calls), and tasks claimed.
        self.calls = 0
        self.claimed = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with self._lock:
            self._active = self._open = True
            self._closing = False
        thread = threading.Thread(target=self._link, name=f"shim-link-{self.worker_id}")
        thread.daemon = True
        thread.start()
        self._threads.append(thread)

    def stop_claiming(self) -> None:
        """Claim nothing more; tasks already in hand are still handed out. A thread that sleeps
        in Redis for work is woken at once (instead of at the end of its claim block)."""
        with self._lock:
            self._active = False
            self._wake_all()
        self._end_blocking_claim()

    def _end_blocking_claim(self) -> None:
        """Make a blocking claim in progress return now (on its next wake-up). While Redis is
        known to be away nothing is sent: the claim fails on its own, and a stop does not wait
        for the client's retries."""
        if self._stop_waiting.is_set():
            return
        self._stop_waiting.set()
        with self._lock:
            claiming = self._claiming
        if claiming and self.worker_id and not self.outage.down:
            try:
                self.queue.wake_worker(self.worker_id)
            except ShimError as exc:  # Redis away: the claim block ends the wait instead
                log.debug("could not wake the blocking claim: %s", exc)

    def is_active(self) -> bool:
        return self._active

    def shut(self) -> list[Claim]:
        """Hand out nothing more: the claims no thread took go to ``on_unwanted`` (as do any
        that arrive later); returns them."""
        with self._lock:
            self._open = False
            left = list(self._inbox)
            self._late.extend(left)
            self._inbox.clear()
            self._wake_all()
        self._hand_back_late()
        return left

    def close(self, timeout: float = 10.0) -> None:
        """Record every completion handed back, then end the feed's threads."""
        with self._lock:
            self._active = False
            self._closing = True
            self._wake_all()
        self._end_blocking_claim()
        for thread in self._threads:
            thread.join(timeout)
        alive = any(thread.is_alive() for thread in self._threads)
        self._threads.clear()
        self._hand_back_late()
        with self._lock:
            in_use = alive or self._on_line
        if self._line is not None and not in_use:  # else it goes back when the feed is dropped
            self._line.close()

    def discard(self, task_ids: Iterable[str]) -> list[str]:
        """Drop claims whose lease is gone from the inbox; returns the ids dropped."""
        lost = set(task_ids)
        with self._lock:
            gone = [c.task.id for c in self._inbox if c.task.id in lost]
            if gone:
                self._inbox = deque(c for c in self._inbox if c.task.id not in lost)
                self._work_cv.notify_all()
        return gone

    def in_hand(self) -> int:
        """Claims waiting in the inbox."""
        with self._lock:
            return len(self._inbox)

    # --------------------------------------------------------- executor threads
    def take(self, finished: Finished | None = None) -> Claim | None:
        """Hand back what this thread finished (if anything) and return its next claim; None
        once the worker stops and nothing claimed is left.

        The thread does the feed's work itself rather than wait for another thread to do it
        (no hand-off between threads on the way): before it runs its next claim it reads the
        reply of the exchange in flight if it has come, and writes the next exchange (what
        finished, and claims to keep the inbox full), which Redis runs meanwhile. With nothing
        in hand it waits for that reply, or sleeps in Redis until work arrives."""
        try:
            with self._lock:
                self._last_take = time.monotonic()
                if finished is not None:
                    self._hand_back(finished)
                self._idle += 1
                try:
                    while self._open:
                        if self._pending and not self._on_line and self._pending[0].settle.ready():
                            self._collect()
                            continue
                        if self._inbox:
                            self._running += 1
                            claim = self._inbox.popleft()
                            if self._may_send():
                                if self._line is not None and not self._failures:
                                    self._send()  # Redis runs it while this thread runs its task
                                else:  # a call made at once, or Redis away: the link makes
                                    self._link_cv.notify()  # it (and retries) meanwhile
                            return claim
                        if self._pending and not self._on_line:
                            self._collect()  # nothing else to do: wait for the reply
                        elif self._may_send():
                            self._send()
                        elif self._may_block():
                            self._block_for_work()
                        elif self._active or self._claiming or self._pending or self._on_line:
                            self._work_cv.wait()
                        else:
                            return None
                    return None
                finally:
                    self._idle -= 1
        finally:
            self._hand_back_late()

    def hand_back(self, finished: Finished) -> None:
        """Hand back what a thread finished without taking another claim (a thread that
        ends); :meth:`take` does this itself."""
        with self._lock:
            self._hand_back(finished)
            self._link_cv.notify()  # no executor thread may come to record it

    def _held_since(self) -> float:
        """Since when claims have waited in the inbox with no thread coming for one
        (monotonic; now when there is none)."""
        if not self._inbox:
            return time.monotonic()
        return max(self._inbox_since, self._last_take)

    def _held_too_long(self) -> bool:
        return not self._idle and time.monotonic() - self._held_since() >= HOLD_LIMIT

    def _give_back_held(self) -> None:
        """The running tasks turned out long: hand the claimed-ahead ones back to the queue for
        other workers, and count the running tasks as at least that long (no more claiming
        ahead until short tasks come again). Called with the lock held."""
        self._late.extend(self._inbox)
        self._inbox.clear()
        self._avg = max(self._avg or 0.0, HOLD_LIMIT)
        self._hand_back_late_unlocked()

    def _hand_back_late_unlocked(self) -> None:
        """:meth:`_hand_back_late` from a caller holding the lock (released meanwhile)."""
        if self._late:
            self._lock.release()
            try:
                self._hand_back_late()
            finally:
                self._lock.acquire()

    def _hand_back_late(self) -> None:
        """Hand back (outside the lock: a round trip each) claims that arrived after shut()."""
        if not self._late:
            return
        with self._lock:
            late, self._late = self._late, []
        for claim in late:
            try:
                self._on_unwanted(claim)
            except Exception:
                log.exception("could not hand back task %s", claim.task.id)

    def _hand_back(self, finished: Finished) -> None:
        self._running -= 1
        seconds = max(finished.seconds, 0.0)
        avg = self._avg
        self._avg = seconds if avg is None else avg + _SMOOTHING * (seconds - avg)
        if finished.completion is not None:
            if not self._outbox:
                self._outbox_since = time.monotonic()
                self._poke_link()
            self._outbox.append(finished.completion)

    # ----------------------------------------------------------- the exchanges
    # Called with the lock held; each releases it for the round trip.
    def _wake_all(self) -> None:
        self._work_cv.notify_all()
        self._link_cv.notify_all()

    def _poke_link(self) -> None:
        """Something the link thread may have to step in for came (an exchange written, a
        completion in the outbox): wake it if it sleeps past when it would have to."""
        wakes_at = self._link_wakes_at
        if wakes_at is not None and wakes_at > time.monotonic() + LINK_PATIENCE:
            self._link_wakes_at = None
            self._link_cv.notify()

    def _prefetch(self) -> int:
        if self.max_prefetch <= 0 or self._avg is None:
            return 0
        return min(self.max_prefetch, int(PREFETCH_WINDOW / max(self._avg, 1e-6)))

    def _free(self) -> int:
        """Claims the worker can take now (held by no thread and not in the inbox)."""
        target = self.concurrency + self._prefetch()
        return target - len(self._inbox) - self._running - self._asked

    def _want(self) -> int:
        """Tasks the next exchange claims along with its completions."""
        if not self._active or self._claiming or self._starving:
            return 0
        free = self._free()
        if free <= 0:
            return 0
        if self._idle and not self._inbox and not self._asked:
            return free  # a thread waits: claim now
        if len(self._inbox) + self._asked < self._prefetch():
            return free  # keep the claimed-ahead tasks topped up
        return 0

    def _may_send(self) -> bool:
        if len(self._pending) >= DEPTH or self._on_line or time.monotonic() < self._retry_at:
            return False
        if self._pending:  # one in flight: a second once it carries as much as half of it
            return len(self._outbox) >= max(_SECOND_MIN, len(self._pending[0].batch) // 2)
        return bool(self._outbox or self._want())

    def _may_block(self) -> bool:
        """The queue ran dry and nobody waits in Redis for more yet."""
        return self._active and self._starving and not self._claiming and self._free() > 0

    def _exchange(self) -> None:
        """One call, made and answered: record the completions handed back, claim what the
        worker wants."""
        self._send()
        while self._pending and not self._on_line:
            self._collect()

    def _send(self) -> None:
        """Write the next exchange: the completions handed back, and a claim of what the worker
        wants. Its reply is read by :meth:`_collect`."""
        batch = self._outbox[:MAX_BATCH]
        del self._outbox[:MAX_BATCH]
        if self._outbox:
            self._outbox_since = time.monotonic()
        want = self._want()
        self._on_line = True
        self._asked += want
        settle = None
        self._lock.release()
        try:
            settle = self.queue.send_settle(
                self._line,
                [(c.claim.task.id, c.claim.token, c.result) for c in batch],
                self.types,
                worker_id=self.worker_id,
                count=want,
                lease_ms=self.lease_ms,
            )
        except Exception as exc:  # Redis away (a call made at once): try again after a pause
            self.outage.failed("recording completions", exc)
        finally:
            self._lock.acquire()
            self._on_line = False
        if settle is None:
            self._answered(batch, want, None)
            return
        self._pending.append(_Pending(settle, batch, want, time.monotonic()))
        self._work_cv.notify()  # a thread with nothing in hand reads the reply
        self._poke_link()

    def _collect(self) -> None:
        """Read the reply of the oldest exchange in flight (waiting for it if need be) and hand
        out what it brought."""
        pending = self._pending[0]
        self._on_line = True
        settled = None
        self._lock.release()
        try:
            settled = pending.settle.result()
            self.outage.succeeded()
            self._settled(pending.batch, settled.outcomes, settled.claims)
        except Exception as exc:  # Redis away: keep the batch, try again after a pause
            self.outage.failed("recording completions", exc)
        finally:
            self._lock.acquire()
            self._on_line = False
            self._pending.popleft()
        self._answered(pending.batch, pending.want, settled)

    def _answered(self, batch: list[Completion], want: int, settled: Settled | None) -> None:
        """After an exchange: hand out its claims, or keep its batch for the next try."""
        self._asked -= want
        if settled is None:
            if batch:
                self._outbox[:0] = batch
                self._outbox_since = time.monotonic()
            self._retry_at = time.monotonic() + self._backoff
            self._failures += 1
            self._backoff = min(self._backoff * 2, 5.0)
            self._wake_all()
            return
        self._failures = 0
        self._backoff = 0.1
        self._deliver(settled.claims, want)

    def _settled(
        self, batch: list[Completion], outcomes: list[int | ShimError], claims: list[Claim]
    ) -> None:
        """Report a call's answers (without the lock: the callbacks may take their own). The
        outcomes first: a refused completion of a task this same call claimed again must not
        drop the new claim's lease."""
        for completion, outcome in zip(batch, outcomes, strict=True):
            try:
                completion.done(outcome)
            except Exception:
                log.exception("handling the outcome of %s failed", completion.claim.task.id)
        if claims:
            self._on_claimed(claims)

    def _block_for_work(self) -> None:
        """Sleep in Redis (BZPOPMIN on the wake markers) until work arrives, then claim it."""
        count = self._free()
        self._claiming = True
        claims = None
        self._lock.release()
        try:
            claims = self.queue.claim(
                self.types,
                worker_id=self.worker_id,
                count=count,
                lease_ms=self.lease_ms,
                block=self.claim_block,
                interrupt=self._stop_waiting,
            )
            self.outage.succeeded()
            self._settled([], [], claims)
        except Exception as exc:  # Redis away, or a corrupt task: pause, never end the thread
            self.outage.failed("claiming", exc)
            self._stop_waiting.wait(self._backoff)  # a stop ends the pause
        finally:
            self._lock.acquire()
        if claims is None:
            self._claiming = False
            self._backoff = min(self._backoff * 2, 5.0)
            self._wake_all()
            return
        self._backoff = 0.1
        self._claiming = False
        self._deliver(claims, count)

    def _deliver(self, claims: list[Claim], asked: int) -> None:
        self.calls += 1
        if asked:
            self.claimed += len(claims)
            if self._open:
                if not self._inbox:
                    self._inbox_since = time.monotonic()
                self._inbox.extend(claims)
            else:  # the grace period is over: nobody will run them
                self._late.extend(claims)
            # Short of what was asked: the queue is dry, a thread sleeps in Redis for more. A
            # full batch hands claiming back to the exchanges, chained to completions.
            self._starving = len(claims) < asked
        self._work_cv.notify_all()
        if self._closing:
            self._link_cv.notify()
        elif self._outbox:
            self._poke_link()

    # --------------------------------------------------------------- the link
    def _link(self) -> None:
        """Steps in while every executor thread runs a task: reads a reply that waited
        ``LINK_PATIENCE``, records completions that waited as long, retries a failed exchange
        after its pause; at the end, records everything handed back."""
        with self._lock:
            while True:
                now = time.monotonic()
                # An executor thread that comes for a claim reads the reply and sends what
                # finished: the link waits until none has come for LINK_PATIENCE.
                quiet = self._last_take + LINK_PATIENCE
                waits = []
                if self._pending and not self._on_line:
                    due = max(self._pending[0].since + LINK_PATIENCE, quiet)
                    if self._closing or now >= due:
                        self._collect()
                        self._hand_back_late_unlocked()
                        continue
                    waits.append(due)
                elif self._may_send():
                    due = max(self._outbox_since + LINK_PATIENCE, quiet) if self._outbox else now
                    if self._closing or self._failures or self._line is None or now >= due:
                        self._exchange()
                        self._hand_back_late_unlocked()
                        continue
                    waits.append(due)
                if self._closing and not (self._outbox or self._pending or self._on_line):
                    return
                if self._closing and self._failures and self._backoff > _CLOSING_PATIENCE:
                    log.error(
                        "worker stops with %d completion(s) unrecorded: their tasks run "
                        "again once their leases expire",
                        len(self._outbox),
                    )
                    return
                if self._held_too_long():
                    self._give_back_held()
                    continue
                # After a failed exchange, look again once the pause is over (nobody else
                # retries a claim that failed with nothing to record); while claims wait in the
                # inbox with every thread busy, look again when they have waited too long.
                if self._retry_at > now:
                    waits.append(self._retry_at)
                if self._inbox and not self._idle:
                    waits.append(self._held_since() + HOLD_LIMIT)
                self._link_wakes_at = min(waits) if waits else math.inf
                self._link_cv.wait(max(self._link_wakes_at - now, 0.0) if waits else None)
                self._link_wakes_at = None
