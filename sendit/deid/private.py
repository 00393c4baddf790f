"""Private attributes: removed, except a short list known to be safe.

Under the Retain Safe Private option (PS3.15 E.3.10) private attributes that a
vendor documents as carrying no identity may stay. The list below is small on
purpose: acquisition physics that analysis pipelines need (diffusion b-values
and directions, CT pitch, PET scale factors), taken from PS3.15 Table E.3.10-1.
Each entry is (private creator, group, element offset within the block).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

SAFE_PRIVATE = frozenset(
    {
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
        ("GEMS_ACQU_01", 0x0019, 0x23),  # Table speed
        ("GEMS_PARM_01", 0x0043, 0x27),  # Scan pitch ratio
        ("GEMS_PARM_01", 0x0043, 0x39),  # Slop_int_6..9 (b-value)
        ("Philips Imaging DD 001", 0x2001, 0x03),  # Diffusion B-Factor
        ("Philips Imaging DD 001", 0x2001, 0x04),  # Diffusion Direction
        ("Philips PET Private Group", 0x7053, 0x00),  # SUV Factor
        ("Philips PET Private Group", 0x7053, 0x09),  # Activity Concentration Scale Factor
    }
)


def _creator_text(raw_value: object) -> str:
    if isinstance(raw_value, bytes):
        raw_value = raw_value.decode("latin-1")
    return str(raw_value or "").strip("\0 ")


def safe_private_tags(ds: Dataset) -> set[int]:
    """Tags of the private elements (and their creators) of ``ds`` to keep."""
    creators: dict[tuple[int, int], tuple[int, str]] = {}
    for tag in ds.keys():
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1 and 0x10 <= element <= 0xFF:
            creators[(group, element)] = (tag, _creator_text(ds.get_item(tag).value))
    keep: set[int] = set()
    for tag in ds.keys():
        group, element = tag >> 16, tag & 0xFFFF
        if not group & 1 or element < 0x1000:
            continue
        creator = creators.get((group, element >> 8))
        if creator and (creator[1], group, element & 0xFF) in SAFE_PRIVATE:
            keep.add(tag)
            keep.add(creator[0])
    return keep
