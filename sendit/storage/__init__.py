"""Storage destinations: send de-identified DICOM files, verify each, report per file.

Plain Python (no Django). The caller passes a dict of settings::

    from sendit.storage import get_destinations, SendItem
    for dest in get_destinations(settings_dict):
        results = dest.send_batch([SendItem.from_file(p) for p in paths])
        # results[i].ok / .already_stored / .remote_id / .error, recorded under dest.name

Kinds, one module each: orthanc_rest, orthanc_dicom, dicomweb (STOW-RS), gcs (with nifti.py for the NIfTI
format and datastore.py for the Cloud Datastore entities it writes when GOOGLE_DATASTORE
is on). See docs/storage.md.
"""

from __future__ import annotations

import logging

from . import dicomweb, gcs, orthanc_dicom, orthanc_rest  # noqa: F401  (register the kinds)
from .base import (
    REGISTRY,
    Config,
    Destination,
    DestinationError,
    SendItem,
    SendResult,
    orthanc_id,
    register,
    setting_bool,
    setting_str,
)

__all__ = [
    "get_destinations",
    "Destination",
    "DestinationError",
    "SendItem",
    "SendResult",
    "REGISTRY",
    "register",
    "orthanc_id",
]

logger = logging.getLogger("sendit.storage")


def get_destinations(config: Config | None) -> list[Destination]:
    """The destinations switched on in `config` (SEND_TO_ORTHANC, SEND_TO_DICOMWEB,
    SEND_TO_GOOGLE [+ GOOGLE_DATASTORE]).

    Raises DestinationError when a destination is switched on but misconfigured.
    """
    config = dict(config or {})
    destinations: list[Destination] = []
    if setting_bool(config, "SEND_TO_ORTHANC"):
        transport = (setting_str(config, "ORTHANC_TRANSPORT", "rest") or "rest").lower()
        kind = {"rest": "orthanc_rest", "http": "orthanc_rest", "dicom": "orthanc_dicom"}.get(transport)
        if kind is None:
            raise DestinationError(f"orthanc: ORTHANC_TRANSPORT must be 'rest' or 'dicom', not {transport!r}")
        destinations.append(REGISTRY[kind](config))
    if setting_bool(config, "SEND_TO_DICOMWEB"):
        destinations.append(REGISTRY["dicomweb"](config))
    if setting_bool(config, "SEND_TO_GOOGLE"):
        destinations.append(REGISTRY["gcs"](config))  # + Datastore entities if GOOGLE_DATASTORE
    elif setting_bool(config, "GOOGLE_DATASTORE"):
        logger.warning(
            "GOOGLE_DATASTORE is on but SEND_TO_GOOGLE is off: Datastore entities "
            "describe Cloud Storage objects, so nothing is written"
        )
    return destinations
