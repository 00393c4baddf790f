"""python -m sendit.deid INPUT_FOLDER OUTPUT_FOLDER (see sendit.deid.cli)."""

import sys

from sendit.deid.cli import main

sys.exit(main())
