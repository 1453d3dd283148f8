"""Lapse's persistence: the app DB (tables, sessions, ledger, catalog, groups, migrations), the audit
chain's keys and head file, the organisation file, settings, key files and the Temporal connection.

Activities and the starter use it; workflow code never does (the sandbox does not pass it through).
"""
