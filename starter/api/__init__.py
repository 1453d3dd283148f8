"""Lapse's HTTP API: thin routes over the app DB and the request workflows."""
