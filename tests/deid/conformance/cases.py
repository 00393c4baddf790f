"""The generated cases: what deid's own test suite exercises, in combinations of our choosing.

Each case id is ``category/what/input``; ids are stable (the allow-list in differences.py is
keyed by them), so a generator only ever appends or changes the cases it owns.
"""

from __future__ import annotations

import itertools

from .harness import SHIPPED, FilterCase, HeaderCase

MITRA = '"MITRA OBJECT UTF8 ATTRIBUTES 1.0"'


def _recipe(lines: list[str], preamble: list[str] | None = None) -> str:
    return "\n".join(["FORMAT dicom", "", *(preamble or []), "%header", *lines, ""])


def _slug(text: str) -> str:
    text = text.replace("||", " or ").replace("+", " and ")
    keep = []
    for ch in text:
        keep.append(ch if ch.isalnum() or ch in "._-:" else "_")
    return "".join(keep).strip("_")


class _Header:
    """Collects header cases, refusing a duplicate id (the allow-list depends on them)."""

    def __init__(self) -> None:
        self.cases: dict[str, HeaderCase] = {}

    def add(
        self,
        category: str,
        what: str,
        input_name: str,
        lines: list[str],
        preamble: list[str] | None = None,
        shape_only: bool = False,
    ) -> None:
        case_id = f"header/{category}/{_slug(what)}/{input_name}"
        if case_id in self.cases:
            raise ValueError(f"duplicate case id {case_id}")
        self.cases[case_id] = HeaderCase(case_id, category, input_name, _recipe(lines, preamble), shape_only)


# ----------------------------------------------------------------------------- header cases

# (field as a keyword, as (gggg,eeee), as ggggeeee) and a value valid for its VR:
# present text, date, number, datetime, absent.
FIELD_SYNTAXES = {
    "PatientName": (("PatientName", "(0010,0010)", "00100010"), "Simpson^Homer"),
    "StudyDate": (("StudyDate", "(0008,0020)", "00080020"), "20221128"),
    "SeriesNumber": (("SeriesNumber", "(0020,0011)", "00200011"), "9"),
    "AcquisitionDateTime": (("AcquisitionDateTime", "(0008,002A)", "0008002A"), "20221128101010.000000"),
    "PatientIdentityRemoved": (("PatientIdentityRemoved", "(0012,0062)", "00120062"), "YES"),
}
SINGLE_ACTIONS = {
    "ADD": "ADD {f} {v}",
    "REPLACE": "REPLACE {f} {v}",
    "REMOVE": "REMOVE {f}",
    "BLANK": "BLANK {f}",
    "KEEP": "KEEP {f}",
    "JITTER": "JITTER {f} 5",
}
DATES = ("StudyDate", "AcquisitionDateTime")


def _single_actions(h: _Header) -> None:
    """Every action on every field syntax (deid's blank/remove/replace action tests).

    deid cannot ADD a field written ``(gggg,eeee)`` (it makes a tag of ``0x(gggg,eeee)`` and
    raises) and crashes when it JITTERs a person name: one case of each stays, in ``deid_crash``.
    """
    for name, (syntaxes, value) in FIELD_SYNTAXES.items():
        for action, template in SINGLE_ACTIONS.items():
            if action == "JITTER" and name not in DATES + ("PatientIdentityRemoved",):
                continue
            for syntax in syntaxes:
                if action == "ADD" and syntax.startswith("("):
                    continue
                h.add("single", f"{action}_{syntax}", "ctbrain1", [template.format(f=syntax, v=value)])
    for input_name in ("ct_small", "mr_small", "rtplan", "us_grey", "cookie1"):
        for action, template in SINGLE_ACTIONS.items():
            for name in ("PatientName", "StudyDate"):
                if action == "JITTER" and name == "PatientName":
                    continue
                value = FIELD_SYNTAXES[name][1]
                h.add("single", f"{action}_{name}", input_name, [template.format(f=name, v=value)])
    for line in (
        "REPLACE patientname lower",
        "REMOVE PATIENTID",
        "BLANK studydate",
        "JITTER studydate 2",
        "JITTER InstitutionName 2",
    ):
        h.add("single", line, "ctbrain1", [line])
    for line in (
        "ADD (0010,0010) Simpson",
        "JITTER PatientName 5",
        "REPLACE BeamSequence X",
        'ADD (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E) X',
        "REPLACE SeriesNumber NOTANUMBER",
    ):
        h.add("deid_crash", line, "rtplan" if "Beam" in line else "ctbrain1", [line])


def _values(h: _Header) -> None:
    """Literal values of every VR family, multi-valued text, comments, var:, func:, deid_func:."""
    literal = [
        "REPLACE Rows 256",
        "REPLACE SliceThickness 2.5",
        "REPLACE SeriesNumber 7",
        "ADD PatientWeight 70.5",
        "REPLACE ImageType DERIVED\\SECONDARY",
        "REPLACE PatientName Homer Simpson",
        "REPLACE PatientName Homer # a comment",
        "ADD PregnancyStatus 4",
        "REPLACE WindowCenter 40\\50",
        "ADD 11112221 PRIVATEVALUE",
        "ADD StudyDate 20221128",
        "REPLACE StudyTime 101010",
    ]
    for line in literal:
        for input_name in ("ctbrain1", "ct_small"):
            h.add("values", line, input_name, [line])
    # Names deid cannot resolve: deid skips the action, once each (not per input).
    for line in (
        "REPLACE Rows notanumber",
        "REPLACE PatientName var:not_given",
        "REPLACE PatientName func:not_given",
        "REPLACE ReferringPhysicianName deid_func:not_a_function",
        "REMOVE PatientName func:not_given",
    ):
        h.add("unresolved", line, "ctbrain1", [line])
    variable = [
        "REPLACE PatientID var:patient_suid",
        "ADD PatientIdentityRemoved var:patient_suid",
        "REPLACE PatientName var:patient_suid",
        "REPLACE StudyInstanceUID var:study_suid",
        "JITTER StudyDate var:jitter",
        "JITTER contains:Date var:jitter",
        "REPLACE contains:StudyInstanceUID var:study_suid",
        "ADD 11112221 var:patient_suid",
    ]
    for line in variable:
        for input_name in ("ctbrain1", "rtplan"):
            h.add("var", line, input_name, [line])
    functions = [
        "REPLACE PatientName func:constant_text",
        "ADD PatientIdentityRemoved func:constant_text",
        "REPLACE PatientID func:patient_prefix",
        "REPLACE PatientName func:returns_none",
        "ADD ClinicalTrialSponsorName func:constant_text",
    ]
    for line in functions:
        for input_name in ("ctbrain1", "mr_small"):
            h.add("func", line, input_name, [line])
    deid_funcs = [
        "REPLACE AcquisitionDate deid_func:jitter days=1",
        "REPLACE AcquisitionDate deid_func:jitter days=1 years=1",
        "REPLACE StudyDate deid_func:jitter days=-30",
        "REPLACE StudyDate deid_func:jitter",
        "REPLACE SOPInstanceUID deid_func:pydicom_uuid",
        "REPLACE SOPInstanceUID deid_func:pydicom_uuid prefix=1.55.",
        "REPLACE endswith:InstanceUID deid_func:pydicom_uuid",
        "REPLACE select:VR:UI deid_func:pydicom_uuid",
    ]
    for line in deid_funcs:
        for input_name in ("ctbrain1", "rtplan"):
            h.add("deid_func", line, input_name, [line])
    random_funcs = [
        "REPLACE ReferringPhysicianName deid_func:basic_uuid",
        "REPLACE ReferringPhysicianName deid_func:suffix_uuid",
        "REPLACE SOPInstanceUID deid_func:dicom_uuid org_root=1.2.826.0.1.3680043.10.188",
        "REPLACE SOPInstanceUID deid_func:dicom_uuid",
        "REPLACE SOPInstanceUID deid_func:pydicom_uuid stable_remapping=false",
        "ADD PatientIdentityRemoved deid_func:basic_uuid",
    ]
    for line in random_funcs:
        for input_name in ("ctbrain1", "ct_small"):
            h.add("random_func", line, input_name, [line], shape_only=True)


def _nested(h: _Header) -> None:
    """Nested paths (uid and keyword chains) and sequences themselves (deid's sequence_* tests)."""
    rtplan = [
        "(300A,00B0)__0__(300A,00C2)",  # BeamSequence item 0 BeamName
        "(300A,00B0)__0__(300A,0111)__1__(300A,011E)",  # control point 1 gantry angle
        "(300A,0010)__1__(300A,0012)",  # Dose Reference item 1
        "(300A,0010)__5__(300A,0012)",  # past the last item
        "BeamSequence__BeamName",
        "BeamSequence__ControlPointSequence__GantryAngle",
        "(300C,0002)__0__(0008,1155)",
    ]
    ctbrain1 = [
        "(0008,1140)__0__(0008,1155)",
        "ReferencedImageSequence__ReferencedSOPInstanceUID",
        "(0008,1032)__0__(0008,0100)",
        "ProcedureCodeSequence__CodeMeaning",
        "ReferencedSOPInstanceUID",
        "CodeValue",
    ]
    for input_name, fields in (("rtplan", rtplan), ("ctbrain1", ctbrain1)):
        for f in fields:
            value = "45" if "GantryAngle" in f or "(300A,011E)" in f or "(300A,0012)" in f else "NESTED"
            for line in (f"REPLACE {f} {value}", f"BLANK {f}", f"REMOVE {f}"):
                h.add("nested", line, input_name, [line])
            h.add("nested", f"KEEP+REMOVE {f}", input_name, [f"KEEP {f}", f"REMOVE {f}"])
    for line in ("JITTER contains:Date 3", "JITTER RTPlanDate 3", "JITTER (300A,0006) 3"):
        h.add("nested", line, "rtplan", [line])
    for f in ("(300A,00B0)", "BeamSequence", "select:VR:SQ"):
        for line in (f"REMOVE {f}", f"BLANK {f}", f"KEEP {f}"):
            h.add("nested", line, "rtplan", [line])
    for f in ("contains:Sequence", "contains:ReferencedSOPInstanceUID", "RequestAttributesSequence"):
        for line in (f"REMOVE {f}", f"BLANK {f}"):
            h.add("nested", line, "ctbrain2", [line])
    h.add("deid_crash", "ADD (0008,1140)__0__(0008,1155) 1.2.3", "ctbrain1", ["ADD (0008,1140)__0__(0008,1155) 1.2.3"])


def _expanders(h: _Header) -> None:
    """ALL, contains:, startswith:, endswith:, except:, select:VR:, select:group: (test_dicom_fields)."""
    # REPLACE with text where every selected field takes text, JITTER where every field is a date:
    # deid raises on text in a number or a sequence, and on jittering a person name.
    actions = {
        "REMOVE": [
            "ALL",
            "contains:Patient",
            "contains:Physician",
            "startswith:Patient",
            "startswith:Study",
            "endswith:Date",
            "endswith:UID",
            "except:Patient",
            "except:PatientName|StudyDate",
            "select:VR:DA",
            "select:VR:PN",
            "select:vr:tm",
            "select:group:0010",
            "select:group:0033",
            "contains:0010",
            "startswith:0008",
            "endswith:0020",
            "contains:(0010,0010)",
            "contains:Name$",
            "contains:^Study",
            "endswith:sequence",
        ],
        "BLANK": [
            "ALL",
            "contains:Patient",
            "endswith:Date",
            "except:Patient",
            "select:VR:PN",
            "select:group:0010",
            "contains:(0010,0010)",
            "endswith:sequence",
            "startswith:0008",
        ],
        "REPLACE": [
            "contains:Physician",
            "endswith:Name",
            "select:VR:PN",
            "select:VR:LO",
            "select:VR:DA",
            "contains:Name$",
            "endswith:InstanceUID",
            "select:group:0033",
        ],
        "JITTER": ["endswith:Date", "select:VR:DA", "select:VR:DT", "contains:Date"],
        "KEEP": ["contains:Patient", "select:VR:DA"],
    }
    for action, expressions in actions.items():
        for expression in expressions:
            line = f"{action} {expression}" + {"REPLACE": " EXPANDED", "JITTER": " 3"}.get(action, "")
            lines = [line, "REMOVE ALL"] if action == "KEEP" else [line]
            h.add("expander", line, "ctbrain1", lines)
    for expression in ("ALL", "contains:Date", "select:VR:DA", "except:Name", "select:group:300A"):
        for action in ("REMOVE", "BLANK"):
            h.add("expander", f"{action} {expression}", "rtplan", [f"{action} {expression}"])
    h.add("expander", "REPLACE endswith:Name EXPANDED", "rtplan", ["REPLACE endswith:Name EXPANDED"])
    h.add("expander", "JITTER endswith:Date 3", "rtplan", ["JITTER endswith:Date 3"])
    for line in ("REMOVE ALL func:is_true", "REMOVE ALL func:is_false", "REMOVE contains:Patient func:modality_is_ct"):
        for input_name in ("ctbrain1", "mr_small"):
            h.add("expander", line, input_name, [line])


def _private(h: _Header) -> None:
    """Private tags by creator syntax, by tag, and with KEEP (test_action_interaction's MITRA cases)."""
    forms = [
        f"(0033,{MITRA},1E)",
        f"0033,{MITRA},1E",
        "0033101E",
        "(0033,101E)",
        f"(0033,{MITRA},13)",
        '(0033,"NO SUCH CREATOR",1E)',
    ]
    for form in forms:
        for template in ("REPLACE {f} TestingReplace", "BLANK {f}", "REMOVE {f}"):
            line = template.format(f=form)
            for input_name in ("ctbrain1", "us_grey"):
                h.add("private", line, input_name, [line])
        h.add("private", f"KEEP+REMOVE {form}", "ctbrain1", [f"KEEP {form}", f"REMOVE {form}"])
        h.add("private", f"REPLACE+BLANK {form}", "ctbrain1", [f"REPLACE {form} TestingReplace", f"BLANK {form}"])
    for line in (
        "REMOVE select:group:0009",
        "REMOVE contains:MITRA",
        "REMOVE 00090010",
        "ADD 0033101E ADDED",
        "ADD 00331099 NEWPRIVATE",
    ):
        h.add("private", line, "ctbrain2", [line])


def _lists(h: _Header) -> None:
    """%fields and %values (FIELD, SPLIT) used by fields:NAME / values:NAME (test_replace_identifiers)."""
    fields_sections = {
        "names": ["FIELD PatientName", "FIELD contains:Physician"],
        "dates": ["FIELD select:VR:DA", "FIELD AcquisitionDateTime"],
        "private": [f"FIELD (0033,{MITRA},13)", "FIELD 0033101E"],
        "starts": ["FIELD startswith:Study"],
        "nothing": ["FIELD NoSuchKeyword"],
    }
    for name, entries in fields_sections.items():
        preamble = [f"%fields {name}", *entries, ""]
        jitter = [f"JITTER fields:{name} 2"] if name == "dates" else []
        for line in (
            f"REMOVE fields:{name}",
            f"BLANK fields:{name}",
            f"REPLACE fields:{name} LISTED",
            *jitter,
            f"KEEP fields:{name}",
        ):
            h.add("fields", line, "ctbrain1", [line] if not line.startswith("KEEP") else [line, "REMOVE ALL"], preamble)
    values_sections = {
        "name": ["FIELD PatientName"],
        "split": ['SPLIT PatientName by="^";minlength=3'],
        "splitdefault": ["SPLIT InstitutionName"],
        "private": [f"FIELD (0033,{MITRA},13)"],
        "physicians": ["FIELD contains:Physician", "FIELD PatientID"],
        "empty": ["FIELD NoSuchKeyword"],
    }
    for name, entries in values_sections.items():
        preamble = [f"%values {name}", *entries, ""]
        replace = [f"REPLACE values:{name} LISTED"] if name in ("name", "private") else []
        for line in (f"REMOVE values:{name}", f"BLANK values:{name}", *replace):
            for input_name in ("ctbrain1", "ctbrain2"):
                h.add("values_list", line, input_name, [line], preamble)


PAIR_ACTIONS = {
    "ADD": "ADD {f} {v1}",
    "REPLACE": "REPLACE {f} {v2}",
    "JITTER": "JITTER {f} 5",
    "REMOVE": "REMOVE {f}",
    "BLANK": "BLANK {f}",
    "KEEP": "KEEP {f}",
}


def _interactions(h: _Header) -> None:
    """Two actions on one field in both orders, and REMOVE ALL with one field (test_action_interaction)."""
    subjects = {  # field, first value, second value
        "StudyDate": ("20221128", "20230101"),
        "InstitutionName": ("No", "Yes"),
        "PregnancyStatus": ("1", "4"),  # US, present in ctbrain1
        "PatientIdentityRemoved": ("No", "Yes"),  # absent
        "AcquisitionDateTime": ("20221128101010.000000", "20230101000000.000000"),  # DT
    }
    for f, (v1, v2) in subjects.items():
        for a, b in itertools.product(PAIR_ACTIONS, repeat=2):
            if "JITTER" in (a, b) and f != "StudyDate":
                continue
            lines = [PAIR_ACTIONS[a].format(f=f, v1=v1, v2=v2), PAIR_ACTIONS[b].format(f=f, v1=v2, v2=v1)]
            h.add("interaction", f"{a}_{b}_{f}", "ctbrain1", lines)
    for other in ("KEEP", "ADD", "REPLACE", "JITTER", "BLANK"):
        lines = [PAIR_ACTIONS[other].format(f="StudyDate", v1="20221128", v2="20230101")]
        h.add("interaction", f"REMOVE_ALL_then_{other}", "ctbrain1", ["REMOVE ALL", *lines])
        h.add("interaction", f"{other}_then_REMOVE_ALL", "ctbrain1", [*lines, "REMOVE ALL"])
    h.add("interaction", "REMOVE_except_KEEP_other", "ctbrain1", ["REMOVE except:PatientName", "KEEP StudyDate"])
    h.add("interaction", "KEEP_REPLACE_by_tag_and_name", "ctbrain1", ["KEEP (0008,0020)", "REPLACE StudyDate 20000101"])
    h.add(
        "interaction", "REPLACE_by_tag_REMOVE_by_name", "ctbrain1", ["REPLACE (0008,0020) 20000101", "REMOVE StudyDate"]
    )
    h.add("interaction", "JITTER_twice", "ctbrain1", ["JITTER StudyDate 5", "JITTER StudyDate 5"])


def _conditional(h: _Header) -> None:
    """REMOVE X func:... (test_dicom_funcs)."""
    for f in ("PatientName", "contains:Physician", "ALL", "(0008,1140)__0__(0008,1155)", f"(0033,{MITRA},1E)"):
        for func in ("is_true", "is_false", "modality_is_ct"):
            for input_name in ("ctbrain1", "mr_small"):
                h.add("conditional", f"REMOVE {f} func:{func}", input_name, [f"REMOVE {f} func:{func}"])


def _file_meta(h: _Header) -> None:
    """File meta elements, including those deid never lists (test_file_meta)."""
    lines = [
        "REPLACE MediaStorageSOPInstanceUID 1.2.3.4.5.4.3.2.1",
        "REPLACE (0002,0003) 1.2.3",
        "BLANK MediaStorageSOPClassUID",
        "REMOVE ImplementationVersionName",
        "ADD SourceApplicationEntityTitle SENDIT",
        "REPLACE TransferSyntaxUID 1.2.840.10008.1.2",
        "REMOVE ImplementationClassUID",
        "REPLACE select:group:0002 X",
        "REMOVE ALL",
        "REPLACE contains:MediaStorage var:study_suid",
        "REPLACE MediaStorageSOPInstanceUID deid_func:pydicom_uuid",
    ]
    for line in lines:
        for input_name in ("ctbrain1", "rtplan"):
            h.add("file_meta", line, input_name, [line])


def _errors(h: _Header) -> None:
    """Recipes deid refuses (it calls sys.exit): both sides must refuse."""
    for line in ("REPLACE PatientName", "ADD PatientName", "JITTER StudyDate", "BLANK", "SHOUT PatientName x"):
        h.add("errors", line, "ct_small", [line])


def header_cases() -> list[HeaderCase]:
    h = _Header()
    for generate in (
        _single_actions,
        _values,
        _nested,
        _expanders,
        _private,
        _lists,
        _interactions,
        _conditional,
        _file_meta,
        _errors,
    ):
        generate(h)
    return list(h.cases.values())


# ----------------------------------------------------------------------------- filter cases

FILTER_INPUTS = (
    "ctbrain1",
    "ctbrain2",
    "ct_small",
    "mr_small",
    "rtplan",
    "rtstruct",
    "us_grey",
    "us_rgb",
    "us_multiframe",
    "cat",
    "cookie1",
    "cookie2",
    "cookie3",
    "cookie4",
    "cookie5",
    "cookie6",
    "cookie7",
    "jpeg2000",
    "priv_sq",
    "explvr_bigend",
)
GENERATED_FILTER_INPUTS = ("ctbrain1", "ct_small", "mr_small", "us_grey", "cookie1", "rtplan")


def _filter_recipe(rules: list[tuple[str, list[str]]], group: str = "graylist") -> str:
    lines = [f"%filter {group}", ""]
    for label, body in rules:
        lines += [f"LABEL {label}", *[f"  {b}" for b in body], ""]
    return "\n".join(["FORMAT dicom", "", *lines])


# Single criteria, each in a variant that is true and one that is false on most inputs.
CRITERIA = [
    "contains Modality CT",
    "contains Modality ^m",
    "contains ImageType ORIGINAL",
    "contains ImageType primary\\\\axial",
    "contains PatientName simpson",
    "contains Manufacturer GE|Philips",
    "notcontains Modality CT",
    "notcontains ImageType DERIVED",
    "equals Modality CT",
    "equals Modality ct",
    "equals Modality  CT ",
    "equals ImageType ORIGINAL",
    "equals ImageType ORIGINAL\\PRIMARY\\AXIAL",
    "equals Rows 512",
    "equals SliceThickness 5",
    "notequals Modality CT",
    "notequals ImageType ORIGINAL",
    "missing BurnedInAnnotation",
    "missing PatientName",
    "present BurnedInAnnotation",
    "present PatientName",
    "present SequenceOfUltrasoundRegions",
    "empty PatientBirthDate",
    "empty AccessionNumber",
    "empty NoSuchKeyword",
    "missing NoSuchKeyword",
    "contains 0x00080060 CT",
    "equals 0x00080060 CT",
    "present 0x00100010",
    "equals (0008,0060) CT",
    "equals 00080060 CT",
    "contains SeriesDescription a b",
    "contains 0x00110003 Agfa",
    "equals modality CT",
    "CONTAINS Modality CT",
]

COMBINATIONS = [
    ["contains Modality CT + present PatientName"],
    ["contains Modality CT || contains Modality MR"],
    ["contains Modality CT + contains Modality MR || present PatientName"],
    ["contains Modality MR || present PatientName + missing PatientName"],
    ["contains Modality CT", "+ present PatientName"],
    ["contains Modality CT", "|| contains Modality MR"],
    ["contains Modality XX", "|| contains Modality MR", "+ present PatientName"],
    ["contains Modality CT", "+ missing PatientName", "|| equals Rows 512"],
    ["missing BurnedInAnnotation + equals Modality US || equals Modality CT"],
    ["contains Manufacturer GE + contains PatientName a+b"],
    ["contains PatientName ^a|b$ || empty AccessionNumber"],
    ["notequals Modality CT", "+ notcontains ImageType DERIVED", "|| present PatientName"],
]


def filter_cases() -> list[FilterCase]:
    cases: list[FilterCase] = []
    for shipped in SHIPPED:
        for input_name in FILTER_INPUTS:
            cases.append(FilterCase(f"filter/shipped/{shipped}/{input_name}", "shipped", input_name, shipped=shipped))
    for criterion in CRITERIA:
        recipe = _filter_recipe([("single rule", [criterion]), ("always", ["present SOPClassUID"])])
        for input_name in GENERATED_FILTER_INPUTS:
            cases.append(
                FilterCase(f"filter/criterion/{_slug(criterion)}/{input_name}", "criterion", input_name, recipe)
            )
    for body in COMBINATIONS:
        recipe = _filter_recipe([("combined", body)])
        for input_name in GENERATED_FILTER_INPUTS:
            cases.append(
                FilterCase(
                    f"filter/combination/{_slug(' NL '.join(body))}/{input_name}", "combination", input_name, recipe
                )
            )
    structure = {
        "coordinates": _filter_recipe(
            [("with coordinates", ["present PatientName", "coordinates 0,0,10,10", "keepcoordinates 1,1,5,5"])]
        ),
        "ctpcoordinates": _filter_recipe([("ctp", ["present PatientName", "ctpcoordinates 10,20,30,40"])]),
        "coordinates_only": _filter_recipe([("first", ["present PatientName"]), ("no criteria", ["coordinates all"])]),
        "keep_from_regions": _filter_recipe(
            [
                (
                    "regions",
                    [
                        "present SequenceOfUltrasoundRegions",
                        "coordinates all",
                        "keepcoordinates from:SequenceOfUltrasoundRegions",
                    ],
                )
            ]
        ),
        "two_groups": (
            "FORMAT dicom\n\n%filter graylist\nLABEL gray one\n  present PatientName\n\n"
            "%filter blacklist\nLABEL black one\n  contains Modality CT|US\n"
        ),
        "whitelist": _filter_recipe([("white", ["equals Modality MR"])], "whitelist"),
        "label_comment": _filter_recipe([("labelled # with a comment", ["present PatientName"])]),
        "lowercase_label": "FORMAT dicom\n\n%filter graylist\nlabel lower\n  present PatientName\n",
        "label_no_text": "FORMAT dicom\n\n%filter graylist\nLABEL\n  present PatientName\n",
    }
    for name, recipe in structure.items():
        for input_name in ("ctbrain1", "us_grey", "mr_small"):
            cases.append(FilterCase(f"filter/structure/{name}/{input_name}", "structure", input_name, recipe))
    ids = [case.id for case in cases]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate filter case ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    return cases
