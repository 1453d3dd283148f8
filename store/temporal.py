"""Connecting to Temporal the way the settings say: dev server, cluster or Temporal Cloud.

Every client Lapse makes (API, workers, CLI, benchmarks) gets its data converter from here: pydantic
payloads sealed by :class:`store.codec.LapseCodec`, and failures whose message and stack trace travel
encrypted too (``DefaultFailureConverterWithEncodedAttributes``).
"""

from __future__ import annotations

import dataclasses

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from store.codec import LapseCodec, codec_keys
from store.settings import Settings
from store.temporal_metrics import metrics_runtime


def data_converter(settings: Settings, *, accept_plaintext: bool | None = None) -> DataConverter:
    """Lapse's one data converter; ``accept_plaintext`` overrides ``codec_accept_plaintext`` (replay tests).

    The codec quarantines what it refuses (see :class:`~store.codec.LapseCodec`): a forged update is
    rejected on its own instead of failing, and so wedging, the genuine run it was sent to.
    """
    codec = LapseCodec(
        codec_keys(settings),
        accept_plaintext=settings.codec_accept_plaintext if accept_plaintext is None else accept_plaintext,
        quarantine=True,
    )
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings) -> Client:
    tls: TLSConfig | bool = settings.temporal_tls
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls,
        api_key=settings.temporal_api_key,
        data_converter=data_converter(settings),
        runtime=metrics_runtime(),  # the SDK's metrics on this process's /metrics
    )
