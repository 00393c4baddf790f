"""The settings page: every setting of sendit.config, by its group, with the one-line
description docs/configuration.md gives it.

sendit.config says which settings there are, their group and which are secrets;
docs/configuration.md says what each means (its tables: `| \\`NAME\\` | default | meaning |`),
and the page shows the first sentence of each meaning, so the page and the document cannot
say different things (tests/apps/web/test_pages.py checks that every setting is documented).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from sendit import config
from sendit.redact import mask_setting

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"

GROUP_TEXT = {
    "Pipeline": "Where studies arrive and wait, and how they are found: folders, database, broker, "
    "watcher and DICOM receiver.",
    "De-identification": "How headers and pixels are de-identified, and where pseudonyms come from.",
    "Destinations": "Where de-identified images are sent, how receipt is verified and how failures are retried.",
    "Web": "The status page and the API: the password, tokens, hosts and HTTPS.",
    "Operations": "Workers, leases and recovery, logs, metrics and alerts.",
}
GROUPS = tuple(GROUP_TEXT)

_NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def _one_line(meaning: str) -> str:
    """The first sentence of a table cell, without markdown."""
    text = meaning.replace("**", "").replace("`", "").strip()
    match = re.search(r"(?<![ .][a-z])(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    first = text[: match.start() + 1] if match else text
    return first if len(first) <= 200 else first[:197].rsplit(" ", 1)[0] + "…"


@functools.lru_cache(maxsize=1)
def described() -> dict[str, str]:
    """{NAME: one-line description} from docs/configuration.md ({} when it is absent)."""
    try:
        lines = DOC.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        text = _one_line(cells[-1])
        for name in _NAME.findall(cells[0]):
            found.setdefault(name, text)
    return found


def grouped_settings(settings: Any) -> list[dict[str, Any]]:
    """[{title, text, rows: [(name, shown value, description)]}] in GROUPS order, secrets
    masked; the values are the running ones (django.conf.settings)."""
    docs = described()
    groups: dict[str, list[tuple[str, Any, str]]] = {g: [] for g in GROUPS}
    for name in config.names():
        group = config.group_of(name) or "Pipeline"
        groups[group].append((name, mask_setting(name, getattr(settings, name, None)), docs.get(name, "")))
    return [{"title": g, "text": GROUP_TEXT[g], "rows": sorted(groups[g])} for g in GROUPS if groups[g]]
