"""Checkpoints for going back: forked copies of the replay process.

Placeholder policy (see docs/DEBUGGING.md, "What going back costs"): no
checkpoint is kept; every trip back re-executes the replay from its start.
"""
from __future__ import annotations


class Checkpoints:
    def __init__(self, engine):
        self.engine = engine

    @classmethod
    def resume(cls, engine):
        return cls(engine)

    def maybe_take(self, st):
        pass

    def resume_from(self, state) -> bool:
        return False

    def discard_all(self):
        pass
