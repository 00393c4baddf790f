"""Cases where Sendit knowingly differs from deid: case id -> why.

Keep it short and true: test_conformance fails on a disagreement that is not listed here, and on
an entry whose case now agrees (or no longer exists). Regenerate the candidates with
``.venv/bin/python scripts/deid_conformance.py --unlisted`` and write a reason for each one kept.
"""

DIFFERENCES: dict[str, str] = {
}
