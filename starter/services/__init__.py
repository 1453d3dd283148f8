"""The service layer: one module per resource, shared by the API, the CLI's server side and the web UI.

Services decide and act (start a workflow, send it an update, read and write the app DB) and raise
``access.errors.Refusal`` when they will not; they know nothing of HTTP.
"""
