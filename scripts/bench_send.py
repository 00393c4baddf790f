#!/usr/bin/env python
"""Benchmark sendit's Orthanc destinations against Orthanc's own ingest rate.

    .venv/bin/python scripts/bench_send.py [-n 200] [--workers 4] [--associations 2]

Generates n 512x512 16-bit CT images, starts a private Orthanc (tests/services.py), and
times (a) the reference: raw POST /instances of every file over 1, 2, 4 and 8 parallel
keep-alive connections (best taken), no verification; (b) the sendit REST transport;
(c) the sendit DICOM transport (both send_batch: sent AND verified). Orthanc is emptied
between runs. Prints images/s and the ratio to (a).
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from sendit.storage import SendItem, get_destinations  # noqa: E402
from tests.services import Orthanc, make_ct_series  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--workers", type=int, default=4, help="SEND_WORKERS for REST (default 4)")
    parser.add_argument("--associations", type=int, default=2,
                        help="ORTHANC_DICOM_ASSOCIATIONS (default 2)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case, best kept (default 2)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sendit-bench-") as tmp:
        paths = make_ct_series(os.path.join(tmp, "in"), args.n, patient_id="BENCH")
        size = sum(os.path.getsize(p) for p in paths) / 1e6
        items = [SendItem.from_file(p) for p in paths]
        print(f"{args.n} CT images 512x512x16 bit, {size:.1f} MB, {os.cpu_count()} CPUs")
        with Orthanc(os.path.join(tmp, "orthanc")) as orthanc:
            def best(fn):
                times = []
                for _ in range(args.repeat):
                    orthanc.clear()
                    times.append(fn())
                    assert len(orthanc.instances()) == args.n, "not every image was stored"
                return min(times)

            ref = {}
            for k in (1, 2, 4, 8):
                ref[k] = args.n / best(lambda: orthanc.ingest_seconds(paths, k))
                print(f"(a) Orthanc ingest, POST /instances x{k} connections: {ref[k]:7.1f} images/s")
            k_best = max(ref, key=ref.get)
            base = ref[k_best]

            def sendit(transport, **extra):
                [dest] = get_destinations(orthanc.settings(
                    ORTHANC_TRANSPORT=transport, SEND_WORKERS=args.workers,
                    ORTHANC_DICOM_ASSOCIATIONS=args.associations, **extra))

                def run():
                    started = time.perf_counter()
                    results = dest.send_batch(items)
                    elapsed = time.perf_counter() - started
                    bad = [r.error for r in results if not r.ok]
                    assert not bad, bad[:3]
                    return elapsed
                return args.n / best(run)

            rest = sendit("rest")
            dicom = sendit("dicom")
            print(f"(a) reference (best, x{k_best}):                  {base:7.1f} images/s")
            print(f"(b) sendit REST  send_batch (sent+verified):   {rest:7.1f} images/s  "
                  f"{rest / base:.2f}x")
            print(f"(c) sendit DICOM send_batch (sent+verified):   {dicom:7.1f} images/s  "
                  f"{dicom / base:.2f}x")


if __name__ == "__main__":
    main()
