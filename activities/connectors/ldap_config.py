"""An LDAP directory's settings, shared by the LDAP connector and the LDAP identity source.

Where it is, how Lapse binds (a password reference, TLS), where users and groups live, and how to
read them.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import ldap3  # type: ignore[import-untyped]
from pydantic import Field, field_validator, model_validator

from access.connectors import ConnectorConfig
from activities.connectors.secrets import EnvName, SecretFile, allowed_host, secret, secret_file


class LdapConfig(ConnectorConfig):
    """An LDAP directory's settings, for the connector and the identity source alike.

    The bind password is a reference (an env var or a file), never the secret itself.
    """

    url: str
    """``ldaps://host:port`` (or ``ldap://host:port`` with ``start_tls``; plain ``ldap://`` only with ``insecure``)."""
    bind_dn: str
    password_env: EnvName | None = None
    password_file: SecretFile | None = None
    start_tls: bool = False
    """Upgrade an ``ldap://`` connection with StartTLS (certificate verified) before binding."""
    ca_file: SecretFile | None = None
    """The CA certificate (PEM) the server's certificate must chain to, inside the secrets directory;
    default: the system's trusted roots."""
    verify_tls: bool = True
    """Check the server's certificate and name; turning it off needs ``insecure: true``."""
    allow_privileged: list[str] = []
    """Directory admin groups (AD's protected groups: ``adminCount``, critical system objects, Domain
    Admins and the like; any group the bind DN itself is in) that may still be discovered and granted,
    by ``cn``; each is catalogued with a warning. Any other admin group is never requestable."""
    users_base: str
    groups_base: str
    user_filter: str = "(objectClass=inetOrgPerson)"
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    mail_attribute: str = "mail"
    """The attribute holding a user's email (AD directories without ``mail`` can use ``userPrincipalName``)."""
    resource: str = "groups"
    """The resource the groups are catalogued under."""
    placeholder_member: str = ""
    """Written into a ``groupOfNames`` when its last member is revoked (the class requires one); never a grant."""
    page_size: int = Field(default=500, ge=1, le=100_000)
    connect_timeout: float = Field(default=10, gt=0)
    receive_timeout: float = Field(default=30, gt=0)
    name_attribute: str = "displayName"
    """Identity source: a user's display name (``cn`` when absent)."""
    manager_attribute: str = "manager"
    """Identity source: the DN of a user's manager."""
    department_attribute: str | None = "department"
    """Identity source: a user's department, shown to reviewers (AD's ``department``; an OpenLDAP
    ``inetOrgPerson`` has ``departmentNumber`` or ``ou``); None reads none."""
    disabled_attribute: str | None = None
    """Identity source: marks disabled users. ``userAccountControl`` tests AD's ACCOUNTDISABLE bit;
    any other attribute marks a user disabled when present (e.g. ``pwdAccountLockedTime``) or,
    with ``disabled_value``, when it holds that value (e.g. ``employeeType`` = ``disabled``)."""
    disabled_value: str | None = None

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, url: str) -> str:
        if not re.match(r"^ldaps?://[^/\s]+/?$", url):
            raise ValueError("url must look like ldap://host:port or ldaps://host:port")
        return url

    @field_validator("user_filter", "group_filter")
    @classmethod
    def _parenthesized(cls, search_filter: str) -> str:
        if not (search_filter.startswith("(") and search_filter.endswith(")")):
            raise ValueError("an LDAP filter is written in parentheses, e.g. (objectClass=person)")
        return search_filter

    @model_validator(mode="after")
    def _one_password_source(self) -> LdapConfig:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("set exactly one of password_env or password_file")
        if self.url.startswith("ldaps://") and self.start_tls:
            raise ValueError("start_tls is for ldap:// URLs: ldaps:// is TLS from the start")
        if not self.insecure and not (self.url.startswith("ldaps://") or self.start_tls):
            raise ValueError(
                "ldap:// sends the bind password in clear: use ldaps://, or start_tls: true, "
                "or set insecure: true to allow plaintext"
            )
        if not self.insecure and not self.verify_tls:
            raise ValueError("verify_tls: false accepts any certificate: it needs insecure: true")
        allowed_host(self.host)
        if self.disabled_value is not None and (self.disabled_attribute or "").lower() == "useraccountcontrol":
            raise ValueError("disabled_value does not apply to userAccountControl (its disabled bit is tested)")
        return self

    def password(self) -> str:
        return secret(
            env=self.password_env,
            file=self.password_file,
            what=f"the LDAP password for {self.bind_dn}",
            field="password",
        )

    def tls(self) -> Any:
        """ldap3's TLS settings for ldaps:// or StartTLS (None for plaintext): verified unless ``verify_tls`` is off."""
        if not (self.url.startswith("ldaps://") or self.start_tls):
            return None
        ca = None
        if self.ca_file is not None:
            ca = secret_file(self.ca_file, what="the LDAP server's CA certificate", field="ca_file").decode()
        host = self.host
        return ldap3.Tls(validate=ssl.CERT_REQUIRED if self.verify_tls else ssl.CERT_NONE, ca_certs_data=ca, sni=host)

    @property
    def host(self) -> str:
        address = self.url.split("://", 1)[1].rstrip("/")
        host = address.rsplit("]", 1)[0] + "]" if address.startswith("[") else address.rsplit(":", 1)[0]
        return host.strip("[]")

    @property
    def transport(self) -> str:
        if self.url.startswith("ldaps://"):
            kind = "ldaps"
        elif self.start_tls:
            kind = "StartTLS"
        else:
            return "plaintext"
        return kind + (", certificate verified" if self.verify_tls else ", certificate NOT verified")
