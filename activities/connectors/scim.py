"""The SCIM 2.0 connector: roles are an app's SCIM Groups; a grant makes the user a member.

Users are found by ``userName`` (or ``externalId`` with ``match: externalId``), which the
account rule makes from the Lapse user's email; never by an email attribute, which users may
edit in the app. Every call is a fresh HTTP session, so a worker holds no connection and the
constructor does no I/O (it also validates configuration).
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

import httpx
from pydantic import Field, field_validator, model_validator
from scim2_client import (
    BaseSyncSCIMClient,
    RequestNetworkException,
    SCIMClientException,
    UnexpectedStatusCodeException,
)
from scim2_models import (
    Group,
    GroupMember,
    ListResponse,
    NoTargetException,
    PatchOp,
    PatchOperation,
    Resource,
    SCIMException,
    ScimProvider,
    SearchRequest,
    User,
)

from access.connectors import (
    AccountRule,
    ConnectorConfig,
    Credentials,
    DiscoveredRole,
    Discovery,
    HeldRole,
    PermanentError,
    RetryableError,
    Target,
)
from activities.connectors.base import ConnectorBase
from activities.connectors.secrets import EnvName, SecretFile, allowed_host, check_host, secret, secret_file

ResourceT = TypeVar("ResourceT", bound=Resource[Any])


class ScimConfig(ConnectorConfig):
    """An integration's settings. The bearer token is a reference (an env var or a file), never the secret."""

    account: AccountRule = Field(default_factory=lambda: AccountRule(template="{email}"))
    """SCIM apps usually key users by email, so the whole email is the default account."""
    base_url: str
    """The SCIM service root, e.g. ``https://app.example.com/scim/v2``."""
    token_env: EnvName | None = None
    """Name of the environment variable holding the bearer token."""
    token_file: SecretFile | None = None
    """A file holding the bearer token (e.g. a mounted secret), inside the secrets directory."""
    ca_file: SecretFile | None = None
    """The CA certificate (PEM) the server's certificate must chain to, inside the secrets directory;
    default: the system's trusted roots."""
    match: Literal["userName", "externalId"] = "userName"
    """The attribute the account rule's result is looked up by: ``userName``, or ``externalId`` (set by the
    provisioning client). Never an email, which the app may let its users change."""
    resource: str = "app"
    """The resource the groups are catalogued under."""
    page_size: int = Field(default=200, ge=1, le=10_000)
    """How many users or groups to ask for per page when listing."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for the server on each request."""
    verify_tls: bool = True
    """Check the server's certificate and name; turning it off needs ``insecure: true``."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_source(self) -> ScimConfig:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("set exactly one of token_env or token_file")
        if not self.insecure and self.base_url.startswith("http://"):
            raise ValueError("http:// sends the bearer token in clear: use https://, or set insecure: true")
        if not self.insecure and not self.verify_tls:
            raise ValueError("verify_tls: false accepts any certificate: it needs insecure: true")
        allowed_host(self.host)
        return self

    @property
    def host(self) -> str:
        return httpx.URL(self.base_url).host

    def token(self) -> str:
        return secret(env=self.token_env, file=self.token_file, what="the SCIM bearer token", field="token")

    def verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify``: the system's roots, the ``ca_file``'s, or (``verify_tls: false``) none."""
        if not self.verify_tls:
            return False
        if self.ca_file is None:
            return _tls_context()
        ca = secret_file(self.ca_file, what="the SCIM server's CA certificate", field="ca_file")
        return ssl.create_default_context(cadata=ca.decode())

    @property
    def transport(self) -> str:
        if self.base_url.startswith("http://"):
            return "plaintext"
        return "TLS, certificate " + ("verified" if self.verify_tls else "NOT verified")


class _HttpxScimClient(BaseSyncSCIMClient):
    """scim2-client's sync engine over ``httpx`` (its own engine needs ``httpx2``, which Lapse does not use)."""

    def __init__(self, http: httpx.Client, *, provider: ScimProvider) -> None:
        super().__init__(provider=provider)
        self.http = http

    def _parse_json(self, response: Any) -> Any:
        return cast(httpx.Response, response).json()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **kwargs)
        except httpx.RequestError as error:
            raise RequestNetworkException(message=f"{type(error).__name__}: {error}") from error


_PROVIDER = ScimProvider(models=[User, Group])
"""The core User and Group resources under their standard endpoints; extensions are not needed."""


def _status_of(error: SCIMClientException | SCIMException) -> int | None:
    if isinstance(error, SCIMException):
        return int(error.status)
    response = getattr(error, "source", None)
    return getattr(response, "status_code", None) if isinstance(error, UnexpectedStatusCodeException) else None


def _quoted(value: str) -> str:
    """A SCIM filter string literal: its grammar is JSON's, so JSON escaping is exact."""
    return json.dumps(value)


class ScimConnector(ConnectorBase):
    discovers = True
    accounts_by_rule = True
    """Accounts link to users by the account rule only: the email an app reports may be the user's own edit."""
    per_grant_accounts = False

    def __init__(self, config: Mapping[str, Any], *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = ScimConfig.model_validate(dict(config))
        self._transport = transport  # tests fake an unwell server with httpx.MockTransport; None is the network

    def account_for(self, email: str) -> str:
        """The account rule's result: the user's ``userName`` in the app (the whole email by default)."""
        return self.config.account.apply(email)

    @contextmanager
    def _classified(self, doing: str) -> Iterator[None]:
        """Turn client errors into retryable (network, 429, 5xx) or permanent (auth, bad request) ones."""
        where = f"SCIM server {self.config.base_url}"
        try:
            yield
        except RequestNetworkException as error:
            if isinstance(error.__cause__, httpx.TimeoutException):
                timeout = self.config.timeout
                raise RetryableError(f"the {where} did not answer within {timeout} s while {doing}") from error
            if "certificate" in str(error).lower():  # the TLS handshake refused it: configuration, not the network
                raise PermanentError(f"the TLS certificate of the {where} is not valid: {error}") from error
            raise RetryableError(f"cannot reach the {where} while {doing}: {error}") from error
        except (SCIMException, SCIMClientException) as error:
            status = _status_of(error)
            detail = str(error)
            if status in (401, 403):
                source = f"${self.config.token_env}" if self.config.token_env else str(self.config.token_file)
                raise PermanentError(
                    f"the {where} refused the bearer token from {source} ({status}: {detail}) while {doing}; "
                    "check the token and its rights"
                ) from error
            if status is not None and (status == 429 or status >= 500):
                raise RetryableError(f"the {where} failed ({status}: {detail}) while {doing}") from error
            if status == 404:
                raise PermanentError(
                    f"the {where} found nothing at that address ({detail}) while {doing}; check base_url"
                ) from error
            if status is not None:
                raise PermanentError(f"the {where} rejected the request ({status}: {detail}) while {doing}") from error
            raise PermanentError(
                f"the {where} answered something that is not SCIM ({detail}) while {doing}; check base_url"
            ) from error

    @contextmanager
    def _session(self) -> Iterator[_HttpxScimClient]:
        check_host(self.config.host, field="base_url")  # before the token is read, let alone sent
        token = self.config.token()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(
            base_url=self.config.base_url,
            headers=headers,
            timeout=self.config.timeout,
            verify=self.config.verify(),
            transport=self._transport,
        ) as http:
            yield _HttpxScimClient(http, provider=_PROVIDER)

    def _pages(
        self, scim: _HttpxScimClient, model: type[ResourceT], attributes: list[str], filter: str | None = None
    ) -> Iterator[ResourceT]:
        """Every resource of ``model`` (matching ``filter``), one page (startIndex/count) at a time."""
        start, seen = 1, 0
        while True:
            with self._classified(f"listing {model.__name__}s"):
                page = scim.query(
                    model,
                    query_parameters=SearchRequest(
                        filter=filter, attributes=attributes, start_index=start, count=self.config.page_size
                    ),
                )
            resources = cast(ListResponse[ResourceT], page).resources or []
            yield from resources
            seen += len(resources)
            total = cast(ListResponse[ResourceT], page).total_results or 0
            # A server that ignores paging returns everything at once; an empty page ends it too.
            if not resources or seen >= total:
                return
            start += len(resources)

    def test_connection(self) -> str:
        """How many users and groups the app has, read with the token (so a bad token fails here)."""
        with self._session() as scim, self._classified("counting users and groups"):
            users = cast(ListResponse[User[Any]], scim.query(User, query_parameters=SearchRequest(count=0)))
            groups = cast(ListResponse[Group], scim.query(Group, query_parameters=SearchRequest(count=0)))
        config = self.config
        return (
            f"SCIM 2.0 at {config.base_url} ({config.transport}): {users.total_results} users, "
            f"{groups.total_results} groups{config.insecure_note()}"
        )

    def discover(self) -> Discovery:
        """One resource holding a role per group (by displayName); members are not read here."""
        with self._session() as scim:
            names = {group.display_name for group in self._pages(scim, Group, ["displayName"]) if group.display_name}
        resource = self.config.resource
        return Discovery(
            resources={resource: f"SCIM groups at {self.config.base_url}"},
            roles=[DiscoveredRole(resource=resource, name=name, description="SCIM group") for name in sorted(names)],
        )

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        """Users are read once (paged) to name members; then each role's group is read for its members.

        Each member is reported by the matching attribute (``userName`` or ``externalId``), with no email:
        discovery links accounts to users by the account rule, never by an email the user may have edited."""
        wanted = {role.name: role for role in roles}
        if not wanted:
            return []
        key = self.config.match
        with self._session() as scim:
            people: dict[str, tuple[str, str | None]] = {}
            for user in self._pages(scim, User, [key]):
                account = user.user_name if key == "userName" else user.external_id
                if user.id:
                    people[user.id] = (account or f"id:{user.id}", None)
            held = []
            for name, role in sorted(wanted.items()):
                for group in self._pages(scim, Group, ["displayName", "members"], f"displayName eq {_quoted(name)}"):
                    for member in group.members or []:
                        # Nested groups and users created since the user listing are not accounts we can name.
                        if member.value in people and (member.type or "User") == "User":
                            account, email = people[member.value]
                            held.append(HeldRole(account=account, resource=role.resource, role=name, email=email))
        return held

    def _group_id(self, scim: _HttpxScimClient, target: Target) -> str:
        found = [g.id for g in self._pages(scim, Group, ["displayName"], f"displayName eq {_quoted(target.role)}")]
        if not found or found[0] is None:
            raise PermanentError(f"group {target.role!r} does not exist in the SCIM app ({target.path})")
        if len(found) > 1:
            raise PermanentError(f"{len(found)} SCIM groups are named {target.role!r}; rename all but one")
        return found[0]

    def _user_id(self, scim: _HttpxScimClient, account: str) -> str:
        user_id = self._find_user_id(scim, account)
        if user_id is None:
            raise PermanentError(
                f"user {account!r} does not exist in the SCIM app (no user has that {self.config.match})"
            )
        return user_id

    def _find_user_id(self, scim: _HttpxScimClient, account: str) -> str | None:
        """The one user whose ``userName`` (or ``externalId``) is ``account``: never found by email."""
        key = self.config.match
        found = self._pages(scim, User, [key], f"{key} eq {_quoted(account)}")
        # Checked again here, so a server whose filter is loose never hands us someone else.
        # userName compares case-insensitively (RFC 7643 §4.1.1); externalId exactly.
        if key == "userName":
            users = [u for u in found if u.id and (u.user_name or "").lower() == account.lower()]
        else:
            users = [u for u in found if u.id and u.external_id == account]
        if not users:
            return None
        if len(users) > 1:
            raise PermanentError(f"{len(users)} SCIM users match {account!r}; the account rule must name one")
        return users[0].id

    def _patch(self, scim: _HttpxScimClient, group_id: str, operation: PatchOperation[Group], doing: str) -> None:
        with self._classified(doing):
            scim.modify(Group, group_id, PatchOp[Group](operations=[operation]))

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        """Add the user to the group; SCIM adds a member only once, so granting twice changes nothing."""
        with self._session() as scim:
            group_id, user_id = self._group_id(scim, target), self._user_id(scim, account)
            add = PatchOperation[Group](op=PatchOperation.Op.add, path="members", value=[GroupMember(value=user_id)])
            self._patch(scim, group_id, add, f"adding {account} to group {target.role}")
        return None

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        """Membership has no end date of its own here: the revoke at expiry ends it."""
        return None

    def revoke(self, account: str, target: Target) -> None:
        """Remove the user from the group; a user the app no longer has holds nothing, so that is success too.

        An unknown group still fails: it more likely means a wrong ``base_url`` than access already gone.
        """
        with self._session() as scim:
            group_id, user_id = self._group_id(scim, target), self._find_user_id(scim, account)
            if user_id is None:
                return
            remove = PatchOperation[Group](op=PatchOperation.Op.remove, path=f"members[value eq {_quoted(user_id)}]")
            try:
                self._patch(scim, group_id, remove, f"removing {account} from group {target.role}")
            except PermanentError as error:
                if not isinstance(error.__cause__, NoTargetException):
                    raise


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Loading the CA bundle takes ~20 ms: once per process, not per call."""
    return ssl.create_default_context()
