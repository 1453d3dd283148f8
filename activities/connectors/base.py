"""The base every connector driver derives from: errors leave its methods scrubbed of secrets."""

from __future__ import annotations

import inspect
from typing import Any

from activities.connectors.secrets import _scrubbing


class ConnectorBase:
    """The base of every connector: each public method's errors leave it scrubbed of every secret the
    connector resolved (the raw value, its URL-encoded and -decoded forms, a DSN's password), whatever
    the driver put in them, so no connector can forget to. Anything but a ConnectorError becomes a
    (retryable) ConnectorError naming its type; causes are kept as scrubbed text."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                setattr(cls, name, _scrubbing(value))
