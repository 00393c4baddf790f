"""Regenerate ``profile_table.json`` from DICOM PS3.15 Table E.1-1.

The project carries its own copy of the table so that the profile does not
depend on a file outside the package. Run this after updating the reference:

    python sendit/deid/data/make_profile_table.py \
        /work/shared/reference/ps3.15-annex-e-table-e1-1.json

The output keeps, for every attribute, the tag (8 hex digits, ``x`` for the
repeating-group wildcards), the name, the Basic Profile action and the action
under each option that names one.
"""

import json
import sys
from pathlib import Path
from typing import Any

OPTION_COLUMNS = (
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
)
PRIVATE_ID = "ggggeeee-where-gggg-is-odd"


def convert(entries: list[dict[str, str]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in entries:
        if entry["id"] == PRIVATE_ID:
            tag = "private"
        else:
            tag = entry["tag"].strip("()").replace(",", "").lower()
            if len(tag) != 8:
                raise ValueError(f"unexpected tag form in {entry['id']}")
        row: dict[str, Any] = {"tag": tag, "name": entry["name"], "basic": entry["basicProfile"]}
        options = {c: entry[c] for c in OPTION_COLUMNS if entry.get(c)}
        if options:
            row["options"] = options
        rows.append(row)
    rows.sort(key=lambda r: r["tag"])
    return rows


def main(argv: list[str]) -> None:
    source = Path(argv[1])
    target = Path(__file__).with_name("profile_table.json")
    rows = convert(json.loads(source.read_text()))
    text = "[\n" + ",\n".join(json.dumps(r, sort_keys=True) for r in rows) + "\n]\n"
    target.write_text(text)
    print(f"wrote {len(rows)} attributes to {target}")


if __name__ == "__main__":
    main(sys.argv)
