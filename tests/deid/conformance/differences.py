"""Cases where Sendit knowingly differs from deid: case id -> why.

Keep it short and true: test_conformance fails on a disagreement that is not listed here, and on
an entry whose case now agrees (or no longer exists). See the candidates with
``.venv/bin/python scripts/deid_conformance.py --unlisted`` and write a reason for each one kept.
Only differences that are deliberate belong here; a Sendit bug is fixed, not listed.
"""

_DEID_SKIPS = (
    "deid skips an action whose name or value it cannot resolve (with a warning, the field left "
    "as it was); Sendit refuses the recipe when it is read, so a typo cannot leave a field in the clear"
)

DIFFERENCES: dict[str, str] = {
    # deid raises on these recipes (a crash, not a refusal): there is no deid behaviour to follow.
    "header/deid_crash/ADD__0010_0010__Simpson/ctbrain1": "deid cannot ADD a field written (gggg,eeee) (it builds the tag '0x(0010,0010)' and raises); "
    "Sendit adds it as it would by keyword",
    "header/deid_crash/JITTER_PatientName_5/ctbrain1": "deid raises on JITTER of a person name (dateutil is given a PersonName); "
    "Sendit removes a value JITTER cannot shift",
    "header/deid_crash/REPLACE_BeamSequence_X/rtplan": "deid raises on REPLACE of a sequence with text (pydicom refuses a str as items); "
    "Sendit removes the sequence rather than keep its items",
    # Sendit refuses what deid silently skips.
    "header/unresolved/REPLACE_Rows_notanumber/ctbrain1": _DEID_SKIPS,
    "header/unresolved/REPLACE_PatientName_var:not_given/ctbrain1": _DEID_SKIPS,
    "header/unresolved/REPLACE_PatientName_func:not_given/ctbrain1": _DEID_SKIPS,
    "header/unresolved/REPLACE_ReferringPhysicianName_deid_func:not_a_function/ctbrain1": _DEID_SKIPS,
    "header/unresolved/REMOVE_PatientName_func:not_given/ctbrain1": _DEID_SKIPS,
    "header/errors/SHOUT_PatientName_x/ct_small": "deid skips a line with an unknown action (a warning); Sendit refuses the recipe, as for any unresolved name",
    # Sendit writes valid elements where deid does not.
    "header/single/ADD_00120062/ctbrain1": "deid gives an element ADDed by bare tag number the VR ST even when the dictionary knows the tag; "
    "Sendit uses the dictionary VR (CS for PatientIdentityRemoved), which a validator requires",
    # Where deid would leave the original value because an action gave nothing to write.
    "header/func/REPLACE_PatientName_func:returns_none/ctbrain1": "a func: that returns None: deid leaves the original value; Sendit removes it (says so in a note), "
    "so a site function that fails cannot leave a value in the clear",
    "header/func/REPLACE_PatientName_func:returns_none/mr_small": "a func: that returns None: deid leaves the original value; Sendit removes it (says so in a note), "
    "so a site function that fails cannot leave a value in the clear",
    "header/single/JITTER_InstitutionName_2/ctbrain1": "JITTER of a value that is not a date: deid leaves it (after dateutil fails to read it); "
    "Sendit removes what it cannot shift",
}
