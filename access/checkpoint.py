"""The audit chain's head as kept outside the app DB: in the head file and in Temporal (a checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Head:
    """The newest event a process saw committed: its sequence number, MAC and key id."""

    seq: int
    mac: str
    key_id: str
    at: str = ""


class AuditCheckpoint(BaseModel):
    """The audit log's head as the scheduled ``audit-checkpoint`` workflow recorded it (its result).

    Temporal keeps it out of reach of whoever can write the app DB; it never moves back: a run that
    finds the log no longer reaching the previous checkpoint keeps that one and says why in ``kept``.
    """

    chain: str
    """The app DB, by its URL without the password."""
    seq: int = 0
    mac: str = ""
    key_id: str = ""
    at: str = ""
    kept: str = ""

    def head(self) -> Head | None:
        return Head(seq=self.seq, mac=self.mac, key_id=self.key_id, at=self.at) if self.seq else None
