"""Devices: one credential per camera, verified by ingest, revoked on its own (docs/security.md).

``model``: the device record and its credential's verifiers; ``registry``: the registry an ingest
node holds in memory and checks; ``store`` and ``kafka``: where the registry lives and how a node
follows it. ``camflow device`` (``camflow.cli.devices``) writes it.
"""

from camflow.devices.model import (
    CREDENTIAL_PREFIX,
    DIGEST_REALM,
    Device,
    DeviceError,
    DeviceRefused,
    Seen,
    digest_ha1,
    is_device_credential,
)
from camflow.devices.registry import DeviceChange, DeviceRegistry, SeenWriter

__all__ = [
    "CREDENTIAL_PREFIX",
    "DIGEST_REALM",
    "Device",
    "DeviceChange",
    "DeviceError",
    "DeviceRefused",
    "DeviceRegistry",
    "Seen",
    "SeenWriter",
    "digest_ha1",
    "is_device_credential",
]
