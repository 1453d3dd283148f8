"""The key that seals one-time credentials between the provision activity and the requester.

The password of an ephemeral grant rests in the app DB only as a Fernet token, and only
until its requester fetches it once; workflow history never sees it.
"""

from __future__ import annotations

from cryptography.fernet import Fernet

from store.keys import read_or_create_key_file
from store.settings import Settings

KEY_FILE = "secret.key"


def credential_cipher(settings: Settings) -> Fernet:
    """``LAPSE_SECRET_KEY``, else the key file in the data dir, created (mode 0600) on first use."""
    if settings.secret_key is not None:
        try:
            return Fernet(settings.secret_key.get_secret_value().encode())
        except ValueError as error:
            raise ValueError(
                "LAPSE_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`)'
            ) from error
    path = settings.data_dir / KEY_FILE
    return Fernet(read_or_create_key_file(path, lambda: Fernet.generate_key().decode()).strip().encode())
