"""A real SCIM 2.0 server: scim2-server's own command, with its bearer-token check.

The server keeps users and groups in memory; helpers here create them over plain HTTP (not
through the connector's client) so tests and benchmarks see the app as an outside observer would.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from harness.ports import free_port

_SCIM = "application/scim+json"
_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


class ScimServer:
    """``scim2-server`` on 127.0.0.1 and a free port, accepting only ``token`` as a bearer token."""

    def __init__(self) -> None:
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.base_url = f"http://127.0.0.1:{self.port}/v2"
        self._log = Path(tempfile.mkstemp(prefix="lapse-scim-", suffix=".log")[1])
        self._process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": _SCIM, "Accept": _SCIM},
            timeout=30,
        )

    def start(self) -> ScimServer:
        command = [sys.executable, "-m", "scim2_server.testserver.cli", "--hostname", "127.0.0.1"]
        # One argument: a token starting with "-" would otherwise read as an option.
        command += ["--port", str(self.port), f"--bearer-token={self.token}"]
        with self._log.open("wb") as log:  # a file, not a pipe: the server logs every request
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"scim2-server exited at start:\n{self._log.read_text()}")
            try:
                if self.http.get("/ServiceProviderConfig").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"scim2-server did not answer on port {self.port} within 20 s")

    def stop(self) -> None:
        self.http.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.unlink(missing_ok=True)

    def _ok(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise AssertionError(f"SCIM {response.request.method} {response.request.url}: {response.text}")
        return response.json() if response.content else None

    def create_user(self, user_name: str, email: str | None = None) -> str:
        """A user with ``email`` (if given) as their primary email; returns the SCIM id."""
        body: dict[str, Any] = {"schemas": [_USER], "userName": user_name}
        if email is not None:
            body["emails"] = [{"value": email, "primary": True, "type": "work"}]
        return str(self._ok(self.http.post("/Users", json=body))["id"])

    def create_users(self, users: Iterable[tuple[str, str | None]], *, batch: int = 1000) -> None:
        """Many users by ``(userName, email)`` in Bulk requests (the server takes 1000 operations each)."""
        pending = list(users)
        for first in range(0, len(pending), batch):
            operations = [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": f"u{first + n}",
                    "data": {
                        "schemas": [_USER],
                        "userName": name,
                        **({"emails": [{"value": email, "primary": True}]} if email else {}),
                    },
                }
                for n, (name, email) in enumerate(pending[first : first + batch])
            ]
            body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": operations}
            result = self._ok(self.http.post("/Bulk", json=body))
            failed = [op for op in result["Operations"] if not str(op["status"]).startswith("2")]
            assert not failed, failed[:3]

    def create_group(self, display_name: str, member_ids: Iterable[str] = ()) -> str:
        """A group with these members; returns the SCIM id."""
        body: dict[str, Any] = {"schemas": [_GROUP], "displayName": display_name}
        members = [{"value": member} for member in member_ids]
        if members:
            body["members"] = members
        return str(self._ok(self.http.post("/Groups", json=body))["id"])

    def user_id(self, user_name: str) -> str:
        found = self._ok(self.http.get("/Users", params={"filter": f"userName eq {json.dumps(user_name)}"}))
        return str(found["Resources"][0]["id"])

    def members(self, group_id: str) -> set[str]:
        """The ids of the group's members, by a fresh GET of the group."""
        group = self._ok(self.http.get(f"/Groups/{group_id}"))
        return {member["value"] for member in group.get("members", [])}
