"""The settings of one de-identification run.

Each flag is one option of DICOM PS3.15 Annex E; the table columns they select
are named in :data:`OPTION_COLUMNS`. The Django settings of the same meaning
are ``DEID_*`` (see docs/deidentify.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sendit.deid.recipe import Recipe

#: option flag -> column of Table E.1-1 that it switches on
OPTION_COLUMNS = {
    "retain_safe_private": "rtnSafePrivOpt",
    "retain_uids": "rtnUIDsOpt",
    "retain_device_identity": "rtnDevIdOpt",
    "retain_institution_identity": "rtnInstIdOpt",
    "retain_patient_characteristics": "rtnPatCharsOpt",
    "retain_long_modified_dates": "rtnLongModifDatesOpt",
    "clean_descriptors": "cleanDescOpt",
}

#: option flag -> (DCM code value, code meaning) for DeidentificationMethodCodeSequence
OPTION_CODES = {
    "retain_long_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


@dataclass
class DeidOptions:
    """Which profile options apply, and the keys that make the output stable.

    ``uid_secret`` keys the HMAC that maps UIDs: keep it constant for a site so
    that the same input UID always gets the same output UID. ``uid_root`` is
    ``"2.25."`` (UUID-derived form) or an organisation root ending in a dot.
    """

    uid_secret: bytes
    uid_root: str = "2.25."
    retain_long_modified_dates: bool = True
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    clean_descriptors: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    recipe: Recipe | None = None

    def __post_init__(self) -> None:
        if isinstance(self.uid_secret, str):
            self.uid_secret = self.uid_secret.encode("utf-8")
        if not self.uid_secret:
            raise ValueError("DeidOptions.uid_secret must not be empty")
        from sendit.deid.uids import check_root

        self.uid_root = check_root(self.uid_root)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], recipe: Recipe | None = None) -> DeidOptions:
        """The options a node's settings say, by NAME: each flag is ``DEID_`` + its name in
        capitals (``DEID_RETAIN_UIDS``), the key is ``DEID_SECRET``. One rule, so a new
        option is a field here and a setting of the same name in sendit.config."""
        named = {
            f.name: settings["DEID_" + f.name.upper()] for f in fields(cls) if f.name not in ("uid_secret", "recipe")
        }
        return cls(uid_secret=str(settings["DEID_SECRET"]).encode(), recipe=recipe, **named)

    def enabled(self) -> tuple[str, ...]:
        """The option flags that are on, in a stable order."""
        return tuple(name for name in OPTION_COLUMNS if getattr(self, name))
