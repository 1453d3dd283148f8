"""OIDC sign-in: the authorization code flow with PKCE (S256), state and nonce, against the configured provider.

``begin_sign_in`` gives the provider's authorization URL and the pending sign-in (state, nonce, PKCE verifier,
where to go afterwards), which the browser keeps sealed in a short-lived cookie (``seal_pending``): any API
replica can finish it, and only the browser that started it can. ``finish_sign_in`` exchanges the code,
verifies the ID token (signature against the provider's JWKS, issuer, audience, nonce, expiry; ``auth_time``,
required, when a fresh sign-in was asked for) and matches the configured claim to an active Lapse user,
case-insensitively (an ``email`` only if the provider says it verified it); nobody else gets in and no account is
ever made. ``sign_out_url`` is the provider's RP-initiated logout.

authlib builds and parses the protocol's messages and checks the ID token's claims, joserfc verifies its
signature, httpx talks to the provider (authlib's own httpx client is not used: it warns on import, moving to
another HTTP library). No HTTP framework here: the routes (``starter/web/routes/auth.py``) set the cookies.

Over 400 lines on purpose: the whole relying-party side of sign-in (discovery, the sealed pending sign-in,
every check of the ID token, matching a user) is in one module, so a security review reads one file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, Field, ValidationError

from access.errors import Refusal, RefusalKind
from access.limits import MAX_EMAIL, control_characters
from starter.services.audit import refused
from store import catalog
from store.credentials import KEY_FILE
from store.db import session_scope
from store.keys import read_or_create_key_file
from store.settings import Settings
from store.tables import User

log = logging.getLogger(__name__)

CALLBACK_PATH = "/auth/callback"
SIGNED_OUT_PATH = "/auth/signed-out"
PENDING_SECONDS = 600
"""How long a started sign-in may take at the provider before its pending state is refused."""
MAX_PENDING = 3
"""Sign-ins one browser may have under way at once (a few tabs); the oldest is dropped beyond these."""
MAX_NEXT = 2048
HTTP_TIMEOUT = 10.0
DISCOVERY_SECONDS = 3600
"""How long a provider's discovery document and keys are used before they are fetched again."""
LEEWAY_SECONDS = 120
"""Clock skew allowed between Lapse and the provider on the ID token's times."""
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""The only ID token signatures accepted: public-key ones (never ``none``, nor a MAC keyed by the client secret)."""


class SignInFailed(Refusal):
    """A sign-in that cannot go on: shown as a page saying why, with a way to start again at ``next_path``."""

    def __init__(self, kind: RefusalKind, message: str, *, next_path: str = "/") -> None:
        super().__init__(kind, message)
        self.next_path = next_path


class NotALapseUser(SignInFailed):
    """The provider vouched for someone Lapse does not know, or no longer lets in."""

    def __init__(self, who: str, message: str) -> None:
        super().__init__(RefusalKind.FORBIDDEN, message)
        self.who = who


# --- configuration ------------------------------------------------------------------------------------------


def public_url(settings: Settings) -> str:
    """Where browsers reach Lapse (``public_url``, no trailing slash): the provider sends them back there."""
    return settings.external_url.rstrip("/")


def redirect_uri(settings: Settings) -> str:
    """The redirect URI to register at the provider: ``<public_url>/auth/callback``."""
    return public_url(settings) + CALLBACK_PATH


def secure_cookies(settings: Settings) -> bool:
    """Cookies are ``Secure`` whenever Lapse is reached over https."""
    return public_url(settings).startswith("https://")


def _client(settings: Settings) -> tuple[str, str]:
    """The issuer and client id; a refusal saying what to set when sign-in is not configured."""
    if settings.oidc_issuer is None or settings.oidc_client_id is None:
        raise SignInFailed(
            RefusalKind.UNAVAILABLE,
            "sign-in is not configured: set LAPSE_OIDC_ISSUER and LAPSE_OIDC_CLIENT_ID (`lapse run` starts a "
            "local demo provider when no issuer is set)",
        )
    return settings.oidc_issuer, settings.oidc_client_id


def client_secret(settings: Settings) -> str | None:
    """Lapse's client secret, resolved from its reference now (None: a public client). Never in a message."""
    if settings.oidc_client_secret_env is not None:
        value = os.environ.get(settings.oidc_client_secret_env, "").strip()
        if not value:
            raise SignInFailed(
                RefusalKind.UNAVAILABLE,
                f"sign-in is misconfigured: the environment variable {settings.oidc_client_secret_env} "
                "(oidc_client_secret_env) is not set",
            )
        return value
    if settings.oidc_client_secret_file is not None:
        try:
            value = settings.oidc_client_secret_file.read_text().strip()
        except OSError as error:
            raise SignInFailed(
                RefusalKind.UNAVAILABLE,
                f"sign-in is misconfigured: cannot read oidc_client_secret_file {settings.oidc_client_secret_file} "
                f"({error.strerror})",
            ) from None
        if not value:
            raise SignInFailed(RefusalKind.UNAVAILABLE, "sign-in is misconfigured: oidc_client_secret_file is empty")
        return value
    return None


# --- where to go afterwards ---------------------------------------------------------------------------------


def safe_next(value: str | None) -> str:
    """``value`` if it is one of Lapse's own paths, else ``/``: never another site (``//host``, ``/\\host``,
    a scheme), never the sign-in's own pages (a loop)."""
    if not value or len(value) > MAX_NEXT:
        return "/"
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(c.isspace() for c in value) or control_characters(value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path.startswith("/auth/"):
        return "/"
    return value


# --- the provider -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What Lapse uses of a provider's discovery document, and its signing keys."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    algorithms: tuple[str, ...]
    keys: dict[str, Any]
    fetched: float


_providers: dict[str, Provider] = {}
"""By issuer. Two requests that find it stale both fetch it: harmless, and no lock to share between loops."""


def _unavailable(issuer: str, what: str) -> SignInFailed:
    log.warning("sign-in: the identity provider at %s %s", issuer, what)
    return SignInFailed(RefusalKind.UNAVAILABLE, f"the identity provider at {issuer} {what}; try again shortly")


async def _get_json(http: httpx.AsyncClient, url: str, issuer: str, what: str) -> dict[str, Any]:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        raise _unavailable(issuer, f"did not answer for its {what} ({type(error).__name__})") from None
    if response.status_code != 200:
        raise _unavailable(issuer, f"answered {response.status_code} for its {what}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _unavailable(issuer, f"sent a {what} that is not a JSON object")
    return body


def _endpoint(meta: dict[str, Any], name: str) -> str | None:
    """A URL of the discovery document, if it is one the browser or Lapse may be sent to: https (http only on
    the loopback, like the issuer), nothing that could break out of a header or an attribute."""
    url = meta.get(name)
    if not isinstance(url, str) or len(url) > MAX_NEXT or any(c.isspace() for c in url) or control_characters(url):
        return None
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        return None
    return url


async def provider(settings: Settings, *, refresh: bool = False) -> Provider:
    """The configured provider, from its discovery document (cached for ``DISCOVERY_SECONDS``)."""
    issuer, _ = _client(settings)
    known = _providers.get(issuer)
    if known is not None and not refresh and time.monotonic() - known.fetched < DISCOVERY_SECONDS:
        return known
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        meta = await _get_json(
            http, issuer.rstrip("/") + "/.well-known/openid-configuration", issuer, "discovery document"
        )
        said = str(meta.get("issuer", ""))
        if said.rstrip("/") != issuer.rstrip("/"):
            raise _unavailable(issuer, f"names another issuer in its discovery document ({said[:200]!r})")
        needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [name for name in needed if _endpoint(meta, name) is None]
        if missing:
            raise _unavailable(issuer, f"has no usable {', '.join(missing)} in its discovery document")
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(a for a in offered if a in SIGNING_ALGORITHMS)
        if not algorithms:
            raise _unavailable(issuer, f"signs ID tokens with none of {', '.join(SIGNING_ALGORITHMS)}")
        keys = await _get_json(http, meta["jwks_uri"], issuer, "signing keys (JWKS)")
    found = Provider(
        issuer=said,
        authorization_endpoint=meta["authorization_endpoint"],
        token_endpoint=meta["token_endpoint"],
        jwks_uri=meta["jwks_uri"],
        end_session_endpoint=_endpoint(meta, "end_session_endpoint"),
        token_auth_methods=tuple(meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]),
        algorithms=algorithms,
        keys=keys,
        fetched=time.monotonic(),
    )
    _providers[issuer] = found
    return found


# --- the pending sign-in, sealed in the browser -------------------------------------------------------------


class PendingSignIn(BaseModel):
    """What the callback needs to finish one sign-in; only ever kept sealed (encrypted and MACed)."""

    state: str = Field(max_length=128)
    nonce: str = Field(max_length=128)
    verifier: str = Field(max_length=128)
    """The PKCE code verifier: whoever steals the code without it cannot use it."""
    next: str = Field(max_length=MAX_NEXT)
    max_age: int | None = None
    started: float = Field(default_factory=lambda: time.time())
    """When this sign-in began (Unix time): each one expires ``PENDING_SECONDS`` after its own start, however
    often the cookie holding it is sealed again for a later one."""


def derived_key(settings: Settings, purpose: bytes) -> bytes:
    """A 32-byte key of its own for ``purpose``, derived (HKDF-SHA256) from Lapse's secret key, which every API
    replica shares: ``LAPSE_SECRET_KEY``, else the ``secret.key`` file in the data directory."""
    if settings.secret_key is not None:
        material = settings.secret_key.get_secret_value()
    else:
        material = read_or_create_key_file(settings.data_dir / KEY_FILE, lambda: Fernet.generate_key().decode())
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=purpose).derive(material.strip().encode())


def _cipher(settings: Settings) -> Fernet:
    """The sign-in cookies' key (``derived_key``)."""
    return Fernet(base64.urlsafe_b64encode(derived_key(settings, b"lapse oidc sign-in cookies")))


def seal_pending(settings: Settings, pending: list[PendingSignIn]) -> str:
    """The cookie value holding the newest ``MAX_PENDING`` sign-ins under way."""
    body = json.dumps([p.model_dump() for p in pending[:MAX_PENDING]], separators=(",", ":"))
    return _cipher(settings).encrypt(body.encode()).decode()


def open_pending(settings: Settings, sealed: str | None) -> list[PendingSignIn]:
    """The sign-ins under way in this browser that began less than ``PENDING_SECONDS`` ago (each by its own
    start, not by when the cookie was last sealed); none if the cookie is missing or not one Lapse sealed."""
    if not sealed or len(sealed) > 8192:
        return []
    try:
        body = json.loads(_cipher(settings).decrypt(sealed.encode(), ttl=PENDING_SECONDS))
        pending = [PendingSignIn.model_validate(item) for item in body][:MAX_PENDING]
    except (InvalidToken, ValueError, TypeError, ValidationError):
        return []
    now = time.time()
    return [p for p in pending if now - PENDING_SECONDS <= p.started <= now + LEEWAY_SECONDS]


def take_pending(pending: list[PendingSignIn], state: str | None) -> tuple[PendingSignIn, list[PendingSignIn]]:
    """The sign-in ``state`` belongs to, and the others (a state is used once); a refusal if there is none."""
    found = next((p for p in pending if state and p.state == state), None)
    if found is None:
        raise SignInFailed(
            RefusalKind.UNAUTHENTICATED,
            "this sign-in cannot be finished: it did not start in this browser, took longer than "
            f"{PENDING_SECONDS // 60} minutes, or was already used. Start again.",
        )
    return found, [p for p in pending if p is not found]


def seal_id_token(settings: Settings, id_token: str) -> str:
    """The ID token, sealed for the sign-out cookie (the provider's logout wants it back as a hint)."""
    return _cipher(settings).encrypt(id_token.encode()).decode()


def open_id_token(settings: Settings, sealed: str | None) -> str | None:
    if not sealed or len(sealed) > 8192:
        return None
    try:
        return _cipher(settings).decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


# --- the flow -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInStart:
    url: str
    """The provider's authorization URL to send the browser to."""
    pending: PendingSignIn


@dataclass(frozen=True)
class SignedIn:
    user: User
    auth_time: datetime | None
    """When the person last authenticated at the provider (its ``auth_time``); None when it did not say."""
    id_token: str


async def begin_sign_in(settings: Settings, *, next_path: str | None, max_age: int | None = None) -> SignInStart:
    """Start a sign-in that comes back to ``next_path`` (if it is Lapse's own); ``max_age`` (seconds) asks the
    provider to have the person authenticate again if they last did longer ago than that."""
    _, client_id = _client(settings)
    found = await provider(settings)
    pending = PendingSignIn(
        state=generate_token(43),
        nonce=generate_token(43),
        verifier=generate_token(64),
        next=safe_next(next_path),
        max_age=max_age,
    )
    url = prepare_grant_uri(
        found.authorization_endpoint,
        client_id,
        "code",
        redirect_uri=redirect_uri(settings),
        scope=settings.oidc_scopes,
        state=pending.state,
        nonce=pending.nonce,
        code_challenge=create_s256_code_challenge(pending.verifier),
        code_challenge_method="S256",
        max_age=str(max_age) if max_age is not None else None,
    )
    return SignInStart(url=url, pending=pending)


def provider_error(pending: PendingSignIn | None, error: str, description: str | None) -> SignInFailed:
    """The provider sent the browser back with an error instead of a code. Its description is shown only for a
    sign-in this browser started (``pending``): anyone can make a link with text of their choosing in it."""
    code = re.sub(r"[^A-Za-z0-9_.-]", "", error)[:64] or "an error"
    said = code
    if pending is not None and description:
        said += ": " + "".join(c for c in description if c.isprintable())[:300]
    gave_up = code in ("access_denied", "login_required", "interaction_required", "consent_required")
    return SignInFailed(
        RefusalKind.UNAUTHENTICATED,
        f"the identity provider {'did not sign you in' if gave_up else 'refused the sign-in'} ({said})",
        next_path=pending.next if pending is not None else "/",
    )


async def _exchange(settings: Settings, found: Provider, pending: PendingSignIn, code: str) -> dict[str, Any]:
    _, client_id = _client(settings)
    secret = client_secret(settings)
    if secret is None:
        method = "none"
    elif "client_secret_basic" not in found.token_auth_methods and "client_secret_post" in found.token_auth_methods:
        method = "client_secret_post"
    else:
        method = "client_secret_basic"
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=redirect_uri(settings), code_verifier=pending.verifier
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    url, headers, body = ClientAuth(client_id, secret, method).prepare("POST", found.token_endpoint, headers, body)
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise _unavailable(found.issuer, f"did not answer the code exchange ({type(error).__name__})") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        said = answer.get("error") if isinstance(answer, dict) else None
        log.warning("sign-in: %s refused the code exchange: %s %s", found.issuer, response.status_code, str(said)[:100])
        raise SignInFailed(
            RefusalKind.UNAUTHENTICATED,
            f"the identity provider refused to exchange the sign-in code ({response.status_code}"
            f"{f', {str(said)[:100]}' if said else ''}); start again",
            next_path=pending.next,
        )
    if not isinstance(answer.get("id_token"), str):
        raise SignInFailed(
            RefusalKind.UNAUTHENTICATED,
            "the identity provider sent no ID token: is `openid` among LAPSE_OIDC_SCOPES?",
            next_path=pending.next,
        )
    return answer


async def _verified_claims(
    settings: Settings, found: Provider, pending: PendingSignIn, tokens: dict[str, Any]
) -> dict[str, Any]:
    """The ID token's claims, once its signature, issuer, audience, nonce and times check out."""
    _, client_id = _client(settings)
    id_token: str = tokens["id_token"]

    def decode(keys: dict[str, Any]) -> Any:
        usable = {"keys": [k for k in keys.get("keys", []) if isinstance(k, dict) and k.get("use", "sig") == "sig"]}
        return jwt.decode(id_token, KeySet.import_key_set(usable), algorithms=list(found.algorithms))  # type: ignore[arg-type]

    try:
        try:
            token = decode(found.keys)
        except JoseError:  # a key rotated since Lapse fetched them: fetch them once more
            found = await provider(settings, refresh=True)
            token = decode(found.keys)
    except (JoseError, ValueError, TypeError) as error:
        raise _bad_token(f"did not verify ({type(error).__name__})", pending) from None
    options = {
        "iss": {"essential": True, "value": found.issuer},
        "aud": {"essential": True, "value": client_id},
        "nonce": {"essential": True, "value": pending.nonce},
    }
    params = {"nonce": pending.nonce, "client_id": client_id, "access_token": tokens.get("access_token")}
    if pending.max_age is not None:
        params["max_age"] = pending.max_age
    claims = CodeIDToken(token.claims, token.header, options, params)
    try:
        claims.validate(leeway=LEEWAY_SECONDS)
    except JoseError as error:
        which = getattr(error, "claim", None) or getattr(error, "description", None) or type(error).__name__
        raise _bad_token(f"was refused ({str(which)[:100]})", pending) from None
    return dict(claims)


def _bad_token(why: str, pending: PendingSignIn) -> SignInFailed:
    return SignInFailed(
        RefusalKind.UNAUTHENTICATED, f"the identity provider's ID token {why}; start again", next_path=pending.next
    )


def _auth_time(claims: dict[str, Any], pending: PendingSignIn) -> datetime | None:
    """When the provider says the person authenticated, never later than now; None when it does not say. A
    sign-in that asked for a fresh authentication (``max_age``, 0 included) must be told when, and recently."""
    now = datetime.now(UTC)
    value = claims.get("auth_time")
    if not isinstance(value, int | float) or isinstance(value, bool):
        if pending.max_age is not None:
            raise SignInFailed(
                RefusalKind.UNAUTHENTICATED,
                "the identity provider did not say when you last signed in there (its ID token has no auth_time), "
                "so Lapse cannot tell that you signed in again as it asked",
                next_path=pending.next,
            )
        return None
    when = min(datetime.fromtimestamp(value, UTC), now)
    if pending.max_age is not None and now - when > timedelta(seconds=pending.max_age + LEEWAY_SECONDS):
        raise SignInFailed(
            RefusalKind.UNAUTHENTICATED,
            "the identity provider did not have you sign in again as Lapse asked (your last sign-in there is "
            f"older than {pending.max_age} seconds)",
            next_path=pending.next,
        )
    return when


def match_user(settings: Settings, claims: dict[str, Any]) -> User:
    """The active Lapse user (not a service account) the configured claim names, compared case-insensitively;
    a ``NotALapseUser`` refusal, audited, for anyone else."""
    claim = settings.oidc_user_claim
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise NotALapseUser(
            "",
            f"the identity provider did not say who you are: its ID token has no {claim} claim (Lapse matches "
            f"users by it; LAPSE_OIDC_USER_CLAIM, LAPSE_OIDC_SCOPES)",
        )
    who = value.strip().lower()
    if len(who) > MAX_EMAIL or control_characters(who):
        raise NotALapseUser(who[:80], f"the identity provider's {claim} claim is not an email Lapse could know")
    if claim == "email" and claims.get("email_verified") is not True and not settings.oidc_trust_unverified_email:
        # Anyone may put any address in an account at some providers: only a verified one names a person.
        said = "has not verified" if claims.get("email_verified") is False else "does not say it has verified"
        raise _refused(settings, NotALapseUser(who, f"your identity provider {said} the email {who}"))
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, who)
    if user is None or not user.active or user.is_service:
        why = "is not a Lapse user" if user is None else "cannot sign in to Lapse (not an active person)"
        if user is not None and user.is_service:
            why = "is a service account: it uses API tokens and never signs in"
        raise _refused(settings, NotALapseUser(who, f"{who} {why}"))
    return user


def _refused(settings: Settings, refusal: NotALapseUser) -> NotALapseUser:
    refused(settings, refusal.who, "sign_in", settings.oidc_issuer or "oidc", refusal)
    return refusal


async def finish_sign_in(settings: Settings, pending: PendingSignIn, *, code: str | None) -> SignedIn:
    """Exchange the code the provider sent back for ``pending`` and say who signed in."""
    if not code:
        raise SignInFailed(
            RefusalKind.UNAUTHENTICATED, "the identity provider sent no sign-in code", next_path=pending.next
        )
    found = await provider(settings)
    tokens = await _exchange(settings, found, pending, code)
    claims = await _verified_claims(settings, found, pending, tokens)
    auth_time = _auth_time(claims, pending)
    user = await asyncio.to_thread(match_user, settings, claims)
    return SignedIn(user=user, auth_time=auth_time, id_token=tokens["id_token"])


async def sign_out_url(settings: Settings, *, id_token_hint: str | None) -> str | None:
    """The provider's RP-initiated logout URL, coming back to Lapse's signed-out page; None when the provider
    offers none (or cannot be reached: signing out of Lapse never waits on it)."""
    try:
        _, client_id = _client(settings)
        found = await provider(settings)
    except SignInFailed:
        return None
    if found.end_session_endpoint is None:
        return None
    params = [("client_id", client_id), ("post_logout_redirect_uri", public_url(settings) + SIGNED_OUT_PATH)]
    if id_token_hint:
        params.append(("id_token_hint", id_token_hint))
    url: str = add_params_to_uri(found.end_session_endpoint, params)
    return url
