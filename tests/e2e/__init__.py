"""End to end: the HTTP API, a real worker, the real Temporal dev server and real targets, in real time."""
