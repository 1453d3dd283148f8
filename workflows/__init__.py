"""Lapse's workflows: deterministic state machines; all I/O happens in ``activities``."""
