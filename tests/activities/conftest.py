"""The connector tests' secret policy: the default env prefix, and a secrets directory of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.connectors.secrets import SecretPolicy, use_secret_policy
from store.settings import Settings


@pytest.fixture(autouse=True)
def secrets_dir(tmp_path: Path) -> Iterator[Path]:
    """``<data_dir>/secrets`` of a data dir in ``tmp_path``, which is the only place ``*_file`` may read."""
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    policy = SecretPolicy.from_settings(settings)
    policy.secrets_dir.mkdir(parents=True)
    use_secret_policy(policy)
    yield policy.secrets_dir
    use_secret_policy(None)
