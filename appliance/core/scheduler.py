"""A fair queue in front of the one llama.cpp context that every user shares.

Requests wait instead of failing or interleaving. Users are served round-robin (each
user's own requests in order), so one user with many questions cannot starve the others.
Per-user limits bound what one person can queue.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from appliance.core.errors import QueueFull


@dataclass(eq=False)
class Ticket:
    """One request's place in the queue."""

    user_id: str
    number: int
    done: bool = field(default=False)


class FairScheduler:
    """One generation slot, handed out round-robin across users."""

    def __init__(self, *, max_queued_per_user: int = 3) -> None:
        self.max_queued_per_user = max_queued_per_user
        self._cond = threading.Condition()
        self._waiting: OrderedDict[str, deque[Ticket]] = OrderedDict()
        self._running: Ticket | None = None
        self._numbers = itertools.count(1)

    def _check(self, user_id: str) -> None:
        queued = len(self._waiting.get(user_id, ()))
        running = 1 if self._running is not None and self._running.user_id == user_id else 0
        if queued + running >= self.max_queued_per_user:
            raise QueueFull(
                f"You already have {queued + running} questions in progress. "
                "Wait for an answer, then ask again."
            )

    def check_capacity(self, user_id: str) -> None:
        """Raise QueueFull now if this user could not join (before any work is done)."""
        with self._cond:
            self._check(user_id)

    def enter(self, user_id: str) -> Ticket:
        """Join the queue, or QueueFull when this user has too many requests already."""
        with self._cond:
            self._check(user_id)
            ticket = Ticket(user_id, next(self._numbers))
            self._waiting.setdefault(user_id, deque()).append(ticket)
            self._promote()
            return ticket

    def _order(self) -> list[Ticket]:
        """The waiting tickets in the order they will be served."""
        queues = [list(q) for q in self._waiting.values()]
        out: list[Ticket] = []
        for rank in range(max((len(q) for q in queues), default=0)):
            out.extend(q[rank] for q in queues if rank < len(q))
        return out

    def _promote(self) -> None:
        if self._running is not None or not self._waiting:
            return
        user_id, queue = next(iter(self._waiting.items()))
        self._running = queue.popleft()
        del self._waiting[user_id]
        if queue:  # this user goes to the back of the rotation
            self._waiting[user_id] = queue
        self._cond.notify_all()

    def position(self, ticket: Ticket) -> int:
        """0 when running, else 1 for next in line, 2 after that, ..."""
        with self._cond:
            if self._running is ticket:
                return 0
            try:
                return self._order().index(ticket) + 1
            except ValueError:
                return 0

    def wait(self, ticket: Ticket, timeout: float) -> int:
        """Wait up to `timeout` seconds for this ticket's turn; return its position then."""
        with self._cond:
            if self._running is not ticket:
                self._cond.wait(timeout)
            return 0 if self._running is ticket else self._order().index(ticket) + 1

    def leave(self, ticket: Ticket) -> None:
        """Give up the slot or the place in line (idempotent)."""
        with self._cond:
            if ticket.done:
                return
            ticket.done = True
            if self._running is ticket:
                self._running = None
            else:
                queue = self._waiting.get(ticket.user_id)
                if queue is not None and ticket in queue:
                    queue.remove(ticket)
                    if not queue:
                        del self._waiting[ticket.user_id]
            self._promote()
            self._cond.notify_all()

    def snapshot(self) -> dict[str, int]:
        """Queue length and whether the slot is busy (for status pages)."""
        with self._cond:
            return {
                "running": 0 if self._running is None else 1,
                "waiting": sum(len(q) for q in self._waiting.values()),
            }
