"""
Load management: one turn at a time per session, bounded waiting, and global / per-agent caps on Letta turns.

A Letta conversation handles one turn at a time; two concurrent requests on one session would interleave.
Requests for the same session queue (bounded depth and wait) and get a 429 with `Retry-After` beyond that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from letta_hayhooks.errors import rate_limited


@dataclass
class _SessionGate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class LoadController:
    """Serialises turns per session and caps in-flight turns globally and per agent."""

    def __init__(self, *, max_inflight: int, max_inflight_per_agent: int, queue_depth: int, queue_wait: float) -> None:
        self.max_inflight = max_inflight
        self.max_inflight_per_agent = max_inflight_per_agent
        self.queue_depth = queue_depth
        self.queue_wait = queue_wait
        self._global = asyncio.Semaphore(max_inflight)
        self._agents: dict[str, asyncio.Semaphore] = {}
        self._sessions: dict[str, _SessionGate] = {}
        self.inflight = 0
        self.rejected = 0
        self.waiting: dict[str, int] = {}  # per agent: requests waiting for their slots
        self.inflight_by_agent: dict[str, int] = {}  # per agent: turns holding their slots
        self.on_load: Callable[[str, int, int], None] | None = None  # (agent, waiting, in flight), for metrics

    async def acquire(self, agent_id: str, session: str) -> Ticket:
        """
        Take the session's turn slot, an agent slot and a global slot; release them with `Ticket.release()`.

        :raises OpenAIError: 429 when the session queue is full or a slot does not free up in time.
        """
        gate = self._sessions.setdefault(session, _SessionGate())
        if gate.lock.locked() and gate.waiting >= self.queue_depth:
            self.rejected += 1
            msg = "Another request for this session is in progress; retry when it finishes."
            raise rate_limited(msg, self.queue_wait or 1)
        deadline = time.monotonic() + self.queue_wait
        gate.waiting += 1
        self._count(agent_id, waiting=1)
        try:
            # free when unlocked and nobody else waits (a waiter just woken still counts in `waiting`)
            await self._acquire(gate.lock, deadline, "Another request for this session is still in progress.",
                                free=not gate.lock.locked() and gate.waiting == 1)
            ticket = Ticket(self, session, gate, agent_id)
            try:
                agent_slots = self._agents.setdefault(agent_id, asyncio.Semaphore(self.max_inflight_per_agent))
                await self._acquire(agent_slots, deadline, "Too many turns in progress for this agent.",
                                    free=not agent_slots.locked())
                ticket.agent_slots = agent_slots
                await self._acquire(self._global, deadline, "Too many turns in progress.",
                                    free=not self._global.locked())
                ticket.global_slot = True
            except BaseException:
                ticket.release()
                raise
        finally:
            gate.waiting -= 1
            self._count(agent_id, waiting=-1)
        self.inflight += 1
        self._count(agent_id, inflight=1)
        return ticket

    def _count(self, agent_id: str, *, waiting: int = 0, inflight: int = 0) -> None:
        self.waiting[agent_id] = self.waiting.get(agent_id, 0) + waiting
        self.inflight_by_agent[agent_id] = self.inflight_by_agent.get(agent_id, 0) + inflight
        if self.on_load is not None:
            self.on_load(agent_id, self.waiting[agent_id], self.inflight_by_agent[agent_id])

    @asynccontextmanager
    async def turn(self, agent_id: str, session: str) -> AsyncIterator[None]:
        """Hold the slots of `acquire` for the duration of a block."""
        ticket = await self.acquire(agent_id, session)
        try:
            yield
        finally:
            ticket.release()

    def _release_session(self, session: str, gate: _SessionGate) -> None:
        gate.lock.release()
        if not gate.lock.locked() and gate.waiting == 0 and self._sessions.get(session) is gate:
            self._sessions.pop(session, None)

    async def _acquire(self, primitive: asyncio.Lock | asyncio.Semaphore, deadline: float, message: str, *,
                       free: bool) -> None:
        if free:
            # taken at once, without the task `wait_for` would start for it (three a turn otherwise)
            await primitive.acquire()
            return
        remaining = deadline - time.monotonic()
        try:
            await asyncio.wait_for(primitive.acquire(), timeout=max(remaining, 0.001))
        except TimeoutError:
            self.rejected += 1
            raise rate_limited(message + " Retry later.", max(self.queue_wait / 4, 1)) from None


class Ticket:
    """The slots one turn holds; `release()` is idempotent and synchronous (safe from finalizers)."""

    def __init__(self, controller: LoadController, session: str, gate: _SessionGate, agent_id: str = "") -> None:
        self._controller = controller
        self._session = session
        self._gate = gate
        self._agent_id = agent_id
        self.agent_slots: asyncio.Semaphore | None = None
        self.global_slot = False
        self._released = False

    def release(self) -> None:
        """Give every slot back (once)."""
        if self._released:
            return
        self._released = True
        controller = self._controller
        if self.global_slot:
            controller.inflight -= 1
            controller._count(self._agent_id, inflight=-1)
            controller._global.release()
        if self.agent_slots is not None:
            self.agent_slots.release()
        controller._release_session(self._session, self._gate)
