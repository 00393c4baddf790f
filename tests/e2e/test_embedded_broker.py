"""A worker on the embedded broker (filesystem://) lives through message files it cannot read.

With kombu's own filesystem transport, a message file taken while its producer had created
it but not yet written it raised JSONDecodeError out of the worker's event loop: the worker
exited, the message was gone, and a batch sat unseen (a crash test once waited 180 s for a
step that never ran). sendit.broker passes over such a file, and sets aside one that stays
unreadable, and the worker goes on with the next message."""

import json
import os
import time

import pytest

from tests.node import Node
from tests.services import make_ct_series

pytestmark = pytest.mark.e2e


def test_the_worker_survives_empty_and_broken_message_files(tmp_path, orthanc_server):
    orthanc_server.clear()
    with Node(tmp_path, "sqlite", "filesystem", workers=1, ORTHANC_URL=orthanc_server.url) as node:
        assert node.wait(lambda: "ready." in (tmp_path / "worker.log").read_text(errors="replace"), timeout=120), (
            node.diagnostics()
        )
        broker = tmp_path / "var" / "broker"
        ms = int(time.monotonic() * 1000)
        being_written = broker / f"{ms}_00000000-0000-0000-0000-000000000001.celery.msg"
        stale = broker / f"{ms}_00000000-0000-0000-0000-000000000002.celery.msg"
        broken = broker / f"{ms}_00000000-0000-0000-0000-000000000003.celery.msg"
        being_written.write_bytes(b"")
        stale.write_bytes(b"")
        old = time.time() - 3600
        os.utime(stale, (old, old))
        broken.write_text(json.dumps({"body": "cut short"})[:10])

        make_ct_series(node.data / "B.tmp1", 3, patient_id="BROKER-1")
        (node.data / "B.tmp1").rename(node.data / "B")
        done = node.wait(lambda: node.batches().get("B", ("",))[0] == "DONE", timeout=120)
        assert done, node.diagnostics()
        assert node.worker.poll() is None, node.diagnostics()
        assert len(orthanc_server.instances()) == 3
        assert being_written.exists()  # left for its writer
        assert sorted(p.name for p in (broker / "bad").iterdir()) == [stale.name, broken.name]
        assert "set aside" in (tmp_path / "worker.log").read_text(errors="replace")
