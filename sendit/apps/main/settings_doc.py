"""The settings page's groups and one-line descriptions, read from docs/configuration.md.

docs/configuration.md is the one source: its tables (`| \\`NAME\\` | default | meaning |`)
describe every setting, and the page shows the first sentence of each meaning, so the page
and the document cannot say different things. Each section of the document belongs to one
of the page's groups; a secret goes to the group of what it protects.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from sendit.apps.main.display import config_names, mask_setting

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"

GROUPS = ("Pipeline", "De-identification", "Destinations", "Web", "Operations")
GROUP_TEXT = {
    "Pipeline": "Where studies arrive and wait, and how they are found: folders, database, broker, "
                "watcher and DICOM receiver.",
    "De-identification": "How headers and pixels are de-identified, and where pseudonyms come from.",
    "Destinations": "Where de-identified images are sent, how receipt is verified and how failures are retried.",
    "Web": "The status page and the API: the password, tokens, hosts and HTTPS.",
    "Operations": "Workers, leases and recovery, logs, metrics and alerts.",
}
# The document's sections (start of a heading) -> the page's group.
SECTIONS = (("Folders and services", "Pipeline"), ("`make run`", "Operations"), ("Watcher", "Pipeline"), ("DICOM receiver", "Pipeline"),
            ("De-identification", "De-identification"), ("Storage", "Destinations"),
            ("Workers", "Operations"), ("Web settings", "Web"), ("Deployment", "Operations"),
            ("Secrets", "Web"))
# Names whose section is not their group: a secret goes with what it protects.
OVERRIDES = {"DEID_SECRET": "De-identification", "ORTHANC_PASSWORD": "Destinations",
             "DICOMWEB_PASSWORD": "Destinations", "DICOMWEB_TOKEN": "Destinations",
             "METRICS_TOKEN": "Operations", "SENTRY_DSN": "Operations", "SENTRY_ENVIRONMENT": "Operations",
             "ADMINS": "Operations", "SERVER_EMAIL": "Operations", "EMAIL_HOST": "Operations",
             "EMAIL_PORT": "Operations", "EMAIL_HOST_USER": "Operations", "EMAIL_USE_TLS": "Operations",
             "SENDIT_LOG_LEVEL": "Operations", "LOG_DIR": "Operations"}
# Names the page shows beyond config.py's (read by main.py and auth.py).
WEB_NAMES = ("LOCKDOWN_ENABLED", "LOCKDOWN_PASSWORDS", "API_TOKENS", "SECURE_SSL", "DEBUG", "ALLOWED_HOSTS",
             "SESSION_COOKIE_AGE",
             "LOCKDOWN_MAX_FAILURES", "LOCKDOWN_LOCKOUT_SECONDS", "SECRET_KEY", "DEID_SECRET",
             "ORTHANC_PASSWORD", "DICOMWEB_PASSWORD", "DICOMWEB_TOKEN", "METRICS_TOKEN", "SENTRY_DSN",
             "LOG_DIR")

_NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def _one_line(meaning: str) -> str:
    """The first sentence of a table cell, without markdown."""
    text = meaning.replace("**", "").replace("`", "").strip()
    match = re.search(r"(?<![ .][a-z])(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    first = text[:match.start() + 1] if match else text
    return first if len(first) <= 200 else first[:197].rsplit(" ", 1)[0] + "…"


@functools.lru_cache(maxsize=1)
def described() -> dict[str, tuple[str, str]]:
    """{NAME: (group, one-line description)} from docs/configuration.md ({} when it is absent)."""
    try:
        lines = DOC.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    found: dict[str, tuple[str, str]] = {}
    group = "Pipeline"
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            group = next((g for start, g in SECTIONS if heading.startswith(start)), group)
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        text = _one_line(cells[-1])
        for name in _NAME.findall(cells[0]):
            found.setdefault(name, (OVERRIDES.get(name, group), text))
    return found


def grouped_settings(settings) -> list[dict]:
    """[{title, text, rows: [(name, shown value, description)]}] in GROUPS order, secrets masked."""
    from sendit.settings import config as _config

    docs = described()
    names = list(dict.fromkeys(config_names() + list(WEB_NAMES)))
    groups: dict[str, list] = {g: [] for g in GROUPS}
    for name in names:
        if not hasattr(settings, name) and not hasattr(_config, name):
            continue
        value = getattr(settings, name, getattr(_config, name, None))
        group, text = docs.get(name, (OVERRIDES.get(name, "Pipeline"), ""))
        groups[group].append((name, mask_setting(name, value), text))
    return [{"title": g, "text": GROUP_TEXT[g], "rows": sorted(groups[g])} for g in GROUPS if groups[g]]
