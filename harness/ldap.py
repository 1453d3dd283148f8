"""A real OpenLDAP server: Debian's slapd, in a temp dir, seeded with a base."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import ldap3  # type: ignore[import-untyped]
from ldap3.core.exceptions import LDAPException  # type: ignore[import-untyped]

from harness.ports import free_port

SLAPD = Path("/usr/sbin/slapd")
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")


class LdapServer:
    """A throwaway slapd on 127.0.0.1 with ``dc=example,dc=com``, ``ou=people`` and ``ou=groups``."""

    base = "dc=example,dc=com"
    people = f"ou=people,{base}"
    groups = f"ou=groups,{base}"
    admin_dn = f"cn=admin,{base}"
    admin_password = "admin-secret"
    reader_dn = f"cn=reader,{base}"
    """A read-only identity whose searches stop at 2 entries unless they page (like AD's limit of 1,000)."""
    reader_password = "reader-secret"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lapse-ldap-"))
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> LdapServer:
        if not SLAPD.exists():
            raise RuntimeError("slapd is not installed: install Debian's slapd and ldap-utils")
        (self.dir / "data").mkdir()
        config = self.dir / "slapd.conf"
        config.write_text(self._config())
        # -d keeps slapd in the foreground, so the process we hold is the server and stop() can end it.
        with (self.dir / "slapd.log").open("wb") as log:
            self._process = subprocess.Popen(
                [str(SLAPD), "-h", f"{self.url}/", "-f", str(config), "-d", "stats"], stdout=log, stderr=log
            )
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise
        with self.admin() as connection:
            connection.add(self.base, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
            connection.add(self.people, ["organizationalUnit"], {"ou": "people"})
            connection.add(self.groups, ["organizationalUnit"], {"ou": "groups"})
            connection.add(
                self.reader_dn,
                ["organizationalRole", "simpleSecurityObject"],
                {"cn": "reader", "userPassword": self.reader_password},
            )
        return self

    def _config(self) -> str:
        includes = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
        return (
            f"{includes}"
            f"pidfile {self.dir}/slapd.pid\n"
            f"argsfile {self.dir}/slapd.args\n"
            "modulepath /usr/lib/ldap\n"
            "moduleload back_mdb\n"
            "sizelimit unlimited\n"
            "database mdb\n"
            "maxsize 104857600\n"
            f'suffix "{self.base}"\n'
            f'rootdn "{self.admin_dn}"\n'
            f"rootpw {self.admin_password}\n"
            f"directory {self.dir}/data\n"
            f'limits dn.exact="{self.reader_dn}" size.soft=2 size.hard=2 size.prtotal=unlimited\n'
            # Users may read everything and bind with their own password, but only the admin writes.
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by * read\n"
        )

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + 15
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.dir / 'slapd.log').read_text()[-2000:]}")
            try:
                with self.admin():
                    return
            except LDAPException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def admin(self) -> ldap3.Connection:
        """A connection bound as the admin; use it as a context manager."""
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=2)
        return ldap3.Connection(
            server, self.admin_dn, self.admin_password, auto_bind=ldap3.AUTO_BIND_NO_TLS, raise_exceptions=True
        )

    def add_ou(self, ou: str) -> str:
        """Add an organizationalUnit under the base, so a test can have users or groups of its own."""
        dn = f"ou={ou},{self.base}"
        with self.admin() as connection:
            connection.add(dn, ["organizationalUnit"], {"ou": ou})
        return dn

    def add_user(
        self,
        uid: str,
        *,
        base: str | None = None,
        email: str | None = None,
        name: str | None = None,
        manager: str | None = None,
        disabled: bool = False,
        password: str | None = None,
    ) -> str:
        """Add an inetOrgPerson (under ou=people by default); ``disabled`` sets ``employeeType: disabled``."""
        dn = f"uid={uid},{base or self.people}"
        attributes: dict[str, str] = {"uid": uid, "cn": name or uid, "sn": uid}
        for key, value in (
            ("mail", email),
            ("displayName", name),
            ("manager", manager),
            ("userPassword", password),
            ("employeeType", "disabled" if disabled else None),
        ):
            if value is not None:
                attributes[key] = value
        with self.admin() as connection:
            connection.add(dn, ["inetOrgPerson"], attributes)
        return dn

    def add_group(self, cn: str, members: list[str], *, base: str | None = None, description: str | None = None) -> str:
        """Add a groupOfNames (under ou=groups by default; it needs at least one member). Returns its DN."""
        dn = f"cn={cn},{base or self.groups}"
        attributes: dict[str, object] = {"cn": cn, "member": members}
        if description is not None:
            attributes["description"] = description
        with self.admin() as connection:
            connection.add(dn, ["groupOfNames"], attributes)
        return dn

    def members(self, group_dn: str) -> set[str]:
        """The group's ``member`` values, lowercased, read afresh."""
        with self.admin() as connection:
            connection.search(group_dn, "(objectClass=*)", ldap3.BASE, attributes=["member"])
            return {value.decode().lower() for value in connection.response[0]["raw_attributes"].get("member", [])}

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
