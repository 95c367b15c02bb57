"""The refetch plan: one appointment asked for by id (a webhook's hint); 404 means deleted."""

from __future__ import annotations

from pqsync.services.sync.strategies.base import Parts, Step


class Refetch:
    plan = "refetch"

    def __init__(self, parts: Parts, appointment_id: str) -> None:
        self.parts = parts
        self.appointment_id = appointment_id

    def execute(self, step: Step) -> None:
        step.all_states("running")
        self.parts.deletions.recheck(
            step.session, step.ctx, [self.appointment_id], "404 on re-fetch"
        )
        step.all_states("done")
