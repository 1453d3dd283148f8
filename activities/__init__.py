"""Lapse's activities: all I/O — the app DB, connectors to target systems, notifications."""
