"""Fuzzing the whole pipeline with broken files made from real ones.

mutate.py makes the files (seeded, named mutations of the DICOM files pydicom, pydicom-data
and deid-data ship, each carrying known identifying marker values), corpus.py finds the
shipped files, account.py runs files through a real node and Orthanc and says where each
one ended: delivered, held (with a reason), or lost; and whether anything identifying
reached Orthanc. scripts/fuzz.py is the command line; test_fuzz.py the part in `make test`.
"""
