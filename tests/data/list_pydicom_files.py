"""Write tests/data/pydicom_files.txt: the test files pydicom and pydicom-data ship that
pydicom reads, relative to site-packages (run after upgrading either)."""
import warnings
from pathlib import Path

import pydicom
from pydicom import dcmread
from pydicom.data import get_testdata_files

HERE = Path(__file__).resolve().parent
HEADER = """# The files pydicom ({pydicom}) and pydicom-data ship that pydicom reads, relative to
# site-packages: tests/deid/test_deid_files.py runs every one (a file missing here fails it,
# so the list does not depend on what a machine could download). Made by
# `python tests/data/list_pydicom_files.py`.
"""


def readable() -> list[str]:
    root = Path(pydicom.__file__).resolve().parents[1]
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(get_testdata_files()):
            try:
                dcmread(path)
            except Exception:
                continue
            found.append(str(Path(path).resolve().relative_to(root)))
    return found


if __name__ == "__main__":
    files = readable()
    (HERE / "pydicom_files.txt").write_text(HEADER.format(pydicom=pydicom.__version__) + "\n".join(files) + "\n")
    print(f"{len(files)} files")
