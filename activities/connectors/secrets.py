"""Secrets in connector configurations: references resolved on use, allowed hosts, errors scrubbed.

A reference is an allow-listed environment variable or a file in the secrets directory; target hosts
must be allowed ones; every secret a connector resolved is scrubbed out of its errors.

Secrets are never in the app DB, workflow history or search attributes.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from pydantic import AfterValidator, Field

if TYPE_CHECKING:
    from store.settings import Settings
from access.connectors import ConnectorError, PermanentError, RetryableError

# --- Secret references: only an allow-listed env prefix and a secrets directory ---------------------------

RESERVED_ENV = frozenset(
    {"LAPSE_SECRET_KEY", "LAPSE_DATABASE_URL", "LAPSE_TEMPORAL_API_KEY", "LAPSE_CODEC_KEY", "LAPSE_AUDIT_KEY"}
)
"""Lapse's own secrets, reserved even before (or without) a setting of that name; so is every name the
settings read (``LAPSE_<field>``, case-insensitively), and every name starting with one of these."""


@dataclass(frozen=True)
class SecretPolicy:
    """Where integration secrets may come from: env variables with ``env_prefix`` that are not Lapse's own
    settings, and files inside ``secrets_dir`` (resolved) that are not Lapse's own key files."""

    env_prefix: str
    reserved_env: frozenset[str]
    """Upper-cased; a name equal to one, or starting with one and ``_``, is refused."""
    secrets_dir: Path
    reserved_files: frozenset[Path] = frozenset()
    hosts: tuple[str, ...] = ()
    """Host patterns targets may have (``fnmatch``, case-insensitive); empty: any host."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretPolicy:
        prefix = str(settings.model_config.get("env_prefix") or "")
        reserved = set(RESERVED_ENV)
        files: set[Path] = set()
        for name, info in type(settings).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            value = getattr(settings, name, None)
            if name.endswith("_env") and isinstance(value, str):
                reserved.add(value.upper())  # a setting that itself names a variable: that variable is Lapse's
            if isinstance(value, Path) and name not in ("data_dir", "secrets_dir"):
                files.add(value.expanduser().resolve())
            if extra.get("integration_secret"):
                continue
            reserved.add(f"{prefix}{name}".upper())
            for alias in (info.alias, info.validation_alias):
                if isinstance(alias, str):
                    reserved.add(alias.upper())
        data_dir = settings.data_dir.expanduser().resolve()
        secrets_dir = (settings.secrets_dir or settings.data_dir / "secrets").expanduser().resolve()
        if data_dir == secrets_dir or data_dir.is_relative_to(secrets_dir):
            raise ValueError(f"secrets_dir {secrets_dir} must not be (or contain) the data directory {data_dir}")
        files |= {data_dir / name for name in ("secret.key", "audit.key", "codec.key", "lapse.db")}
        hosts = tuple(getattr(settings, "integration_hosts", ()))
        return cls(settings.secret_env_prefix, frozenset(reserved), secrets_dir, frozenset(files), hosts)

    def host_problem(self, host: str) -> str | None:
        """Why an integration may not connect to ``host``, or None."""
        name = host.strip("[]").lower()
        if not self.hosts or any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.hosts):
            return None
        return f"{host} is not one of the hosts integrations may reach (integration_hosts: {', '.join(self.hosts)})"

    def env_problem(self, name: str) -> str | None:
        """Why ``name`` may not be read as an integration secret, or None."""
        if not _ENV_NAME.match(name):
            return "that is not an environment variable name (give a reference, not a value)"  # nor quote it
        upper = name.upper()
        if not upper.startswith(self.env_prefix.upper()):
            return f"{name} does not start with {self.env_prefix} (the allowed prefix for integration secrets)"
        if any(upper == reserved or upper.startswith(reserved + "_") for reserved in self.reserved_env):
            return f"{name} is one of Lapse's own settings, never an integration's secret"
        return None

    def file_problem(self, path: Path) -> tuple[Path, str | None]:
        """The file ``path`` names (relative paths are inside the secrets dir), resolved, and why it may not be
        read, or None."""
        resolved = (self.secrets_dir / path.expanduser()).resolve()
        if not resolved.is_relative_to(self.secrets_dir):
            return resolved, f"{path} is not inside the secrets directory {self.secrets_dir}"
        if resolved in self.reserved_files:
            return resolved, f"{path} is one of Lapse's own key files, never an integration's secret"
        return resolved, None


_policy_override: SecretPolicy | None = None
_policies: dict[int, tuple[Settings, SecretPolicy]] = {}


def secret_policy() -> SecretPolicy:
    """The policy from Lapse's settings (tests may set another with ``use_secret_policy``)."""
    if _policy_override is not None:
        return _policy_override
    from store.settings import get_settings

    settings = get_settings()
    cached = _policies.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = _policies[id(settings)] = (settings, SecretPolicy.from_settings(settings))
    return cached[1]


def use_secret_policy(policy: SecretPolicy | None) -> None:
    """Use ``policy`` in this process (tests); ``None`` goes back to the settings' policy."""
    global _policy_override
    _policy_override = policy


def _allowed_env(name: str) -> str:
    problem = secret_policy().env_problem(name)
    if problem:
        raise ValueError(problem)
    return name


def _allowed_file(path: Path) -> Path:
    _, problem = secret_policy().file_problem(path)
    if problem:
        raise ValueError(problem)
    return path


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

EnvName = Annotated[
    str,
    Field(
        pattern=_ENV_NAME.pattern,
        description="The name of an environment variable holding the secret (a reference, never the value); "
        "it must start with the allowed prefix (``LAPSE_``) and not be one of Lapse's own settings.",
    ),
    AfterValidator(_allowed_env),
]

SecretFile = Annotated[
    Path,
    Field(description="A file inside the secrets directory (``<data_dir>/secrets``) holding the secret."),
    AfterValidator(_allowed_file),
]


def secret(*, env: str | None, file: Path | None, what: str, field: str) -> str:
    """Resolve a secret reference (``<field>_env`` or ``<field>_file``) allowed by the policy; the value is
    remembered by the connector whose call resolved it, which scrubs it from every error it lets out."""
    policy = secret_policy()
    if env is not None:
        problem = policy.env_problem(env)
        if problem:
            raise PermanentError(f"{field}_env refused: {problem}")
        value = os.environ.get(env)
        if not value:
            raise PermanentError(f"environment variable {env} ({what}, {field}_env) is not set on the worker")
    elif file is not None:
        resolved, problem = policy.file_problem(file)
        if problem:
            raise PermanentError(f"{field}_file refused: {problem}")
        try:
            value = resolved.read_text().strip()
        except OSError as error:
            raise PermanentError(f"cannot read {what} ({field}_file) from {file}: {error.strerror}") from None
    else:
        raise PermanentError(f"no {what} configured ({field}_env or {field}_file)")
    remember_secret(value)
    return value


def check_host(host: str, *, field: str) -> None:
    """A PermanentError when the policy does not let integrations reach ``host``."""
    problem = secret_policy().host_problem(host)
    if problem:
        raise PermanentError(f"{field} refused: {problem}")


def allowed_host(host: str) -> str:
    """For validators: a ValueError when the policy does not let integrations reach ``host``."""
    problem = secret_policy().host_problem(host)
    if problem:
        raise ValueError(problem)
    return host


def secret_file(path: Path, *, what: str, field: str) -> bytes:
    """A non-secret file by reference under the same policy (a CA certificate): its bytes."""
    resolved, problem = secret_policy().file_problem(path)
    if problem:
        raise PermanentError(f"{field} refused: {problem}")
    try:
        return resolved.read_bytes()
    except OSError as error:
        raise PermanentError(f"cannot read {what} ({field}) from {path}: {error.strerror}") from None


# --- Scrubbing: no secret a connector resolved leaves it in an error ----------------------------------------

_resolved_secrets: ContextVar[set[str] | None] = ContextVar("lapse_connector_secrets", default=None)

SCRUBBED = "[secret]"


def remember_secret(value: str) -> None:
    """Scrub ``value`` (in all its spellings) from every error of the connector call under way."""
    found = _resolved_secrets.get()
    if found is not None:
        found.update(secret_forms(value))


def secret_forms(value: str) -> set[str]:
    """The ways a secret can appear in a message: as is, URL-encoded or -decoded, quoted, and (for a
    connection string) its password part in each of those forms."""
    parts = {value}
    parts.update(_dsn_passwords(value))
    forms: set[str] = set()
    for part in parts:
        for form in (part, quote(part, safe=""), quote(part), quote_plus(part), unquote(part), unquote_plus(part)):
            forms.update({form, repr(form)[1:-1], json.dumps(form)[1:-1]})
    return {form for form in forms if form}


_CONNINFO_PASSWORD = re.compile(r"""(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)""", re.IGNORECASE)


def _dsn_passwords(value: str) -> set[str]:
    """The password parts of a URL (``scheme://user:password@host``) or a ``key=value`` connection string."""
    found: set[str] = set()
    for match in re.finditer(r"[a-z][a-z0-9+.-]*://[^\s]*", value, re.IGNORECASE):
        try:
            password = urlsplit(match.group(0)).password
        except ValueError:
            password = None
        if password:
            found.add(password)
        query = urlsplit(match.group(0)).query if "?" in match.group(0) else ""
        for item in query.split("&"):
            key, _, given = item.partition("=")
            if key.lower() == "password" and given:
                found.add(given)
    for match in _CONNINFO_PASSWORD.finditer(value):
        given = match.group(1)
        found.add(given)
        if given.startswith("'") and given.endswith("'") and len(given) >= 2:
            found.add(re.sub(r"\\(.)", r"\1", given[1:-1]))
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    for form in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(form, SCRUBBED)
    return text


class ConnectorCause(Exception):
    """What a connector error was caused by, as text already scrubbed of secrets (the original is dropped:
    its message, or its arguments, may quote a secret, and Temporal records the whole cause chain)."""


def _scrubbed(error: BaseException, secrets: set[str]) -> ConnectorError:
    """``error`` as a ConnectorError of the same kind whose message and causes hold none of ``secrets``."""
    message = scrub(str(error), secrets)
    if isinstance(error, ConnectorError):
        try:
            clean: ConnectorError = type(error)(message)
        except Exception:  # a subclass with another constructor: keep the kind
            clean = (RetryableError if error.retryable else PermanentError)(message)
        if clean.retryable != error.retryable:
            clean.retryable = error.retryable
    else:  # a driver error no classifier caught: worth retrying, and still scrubbed
        clean = ConnectorError(f"{type(error).__name__}: {message}")
    chain: list[BaseException] = []
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    while cause is not None and len(chain) < 5:
        chain.append(cause)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    tail: BaseException = clean
    for cause in chain:
        link = ConnectorCause(f"{type(cause).__name__}: {scrub(str(cause), secrets)}")
        tail.__cause__ = link
        tail = link
    return clean


MethodT = TypeVar("MethodT", bound=Callable[..., Any])


def _scrubbing(method: MethodT) -> MethodT:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        secrets: set[str] = self.__dict__.setdefault("_resolved_secrets", set())
        outer = _resolved_secrets.get()
        token = _resolved_secrets.set(secrets)
        failure: ConnectorError | None = None
        try:
            result = method(self, *args, **kwargs)
        except Exception as error:
            failure = _scrubbed(error, secrets)
            failure.__traceback__ = error.__traceback__
        finally:
            _resolved_secrets.reset(token)
            if outer is not None and outer is not secrets:
                outer.update(secrets)
        if failure is not None:
            raise failure  # raised outside the handler: the original (and its secrets) is no __context__
        if isinstance(result, Iterator):
            return _scrubbing_iterator(self, result)
        return result

    return call  # type: ignore[return-value]


_END = object()


def _scrubbing_iterator(owner: Any, items: Iterator[Any]) -> Iterator[Any]:
    def following(_owner: Any) -> Any:
        return next(items, _END)

    step = _scrubbing(following)
    while True:
        item = step(owner)
        if item is _END:
            return
        yield item
