"""The embedded broker's transport (sendit.broker): a message is visible whole or not at all,
and a consumer passes over a file being written or a bad one instead of dying on it.

kombu's own filesystem transport creates a message file empty and writes it afterwards; a
worker that read it in between lost the message and exited on JSONDecodeError (a batch then
sat unseen until the next worker start or the sweeper)."""

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty

import kombu
import pytest

import sendit.broker as broker


def channel(folder, transport="sendit.broker:Transport", **options):
    opts = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        **options,
    }
    return kombu.Connection("filesystem://", transport=transport, transport_options=opts).default_channel


def message_name(queue="celery", ms=1):
    return f"{ms}_00000000-0000-0000-0000-{ms:012d}.{queue}.msg"


def messages(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".msg"))


def test_the_worker_uses_this_transport_for_filesystem_urls(settings):
    from sendit.celery import app

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("the test settings name another broker")
    assert settings.CELERY_BROKER_TRANSPORT == "sendit.broker:Transport"
    with app.connection_for_write() as conn:
        assert type(conn.transport) is broker.Transport


@pytest.mark.parametrize(
    "url,transport", [("filesystem://", "sendit.broker:Transport"), ("redis://127.0.0.1:6379/0", None)]
)
def test_settings_name_this_transport_only_for_the_embedded_broker(url, transport):
    """CELERY_BROKER_TRANSPORT wins over the URL's scheme in kombu: never set for Redis."""
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(getattr(settings, 'CELERY_BROKER_TRANSPORT', None))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sendit.settings", "CELERY_BROKER_URL": url}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip().splitlines()[-1] == str(transport)


def test_a_message_round_trips(tmp_path):
    ch = channel(tmp_path)
    ch._put("celery", {"body": "one"})
    ch._put("celery", {"body": "two"})
    assert ch._size("celery") == 2
    assert [ch._get("celery")["body"], ch._get("celery")["body"]] == ["one", "two"]
    with pytest.raises(Empty):
        ch._get("celery")
    assert os.listdir(tmp_path) == []


def test_messages_of_one_producer_come_out_in_their_order(tmp_path):
    """Many puts within one millisecond still come out first in, first out."""
    ch = channel(tmp_path)
    for n in range(200):
        ch._put("celery", {"body": n})
    assert [ch._get("celery")["body"] for _ in range(200)] == list(range(200))


def test_a_message_being_written_is_invisible(tmp_path, monkeypatch):
    """Between the write and the rename a consumer finds nothing, and never a part file."""
    producer, consumer = channel(tmp_path), channel(tmp_path)
    seen = []
    rename = os.rename

    def rename_after_a_poll(src, dst):
        try:
            consumer._get("celery")
            seen.append("a message")
        except Empty:
            seen.append("nothing")
        seen.append(json.loads(open(src, "rb").read()))  # the part file is already whole
        return rename(src, dst)

    monkeypatch.setattr(broker.os, "rename", rename_after_a_poll)
    producer._put("celery", {"body": "x" * 100_000})
    monkeypatch.undo()
    assert seen == ["nothing", {"body": "x" * 100_000}]
    assert consumer._get("celery") == {"body": "x" * 100_000}


@pytest.mark.parametrize(
    "transport",
    [
        "sendit.broker:Transport",
        pytest.param("kombu.transport.filesystem:Transport", marks=pytest.mark.xfail(raises=ValueError, strict=True)),
    ],
)
def test_an_empty_message_file_is_left_for_later_not_raised(tmp_path, transport):
    """What a plain kombu producer shows between open() and write(): kombu's consumer
    raises JSONDecodeError (a worker exits) and loses the message."""
    ch = channel(tmp_path, transport)
    # "0_..." sorts before every name kombu gives (milliseconds, no leading zero): its
    # consumer meets the empty file first, whatever the clock says.
    (tmp_path / message_name(ms=0)).write_bytes(b"")
    ch._put("celery", {"body": "next"})
    assert ch._get("celery") == {"body": "next"}
    assert messages(tmp_path) == [message_name(ms=0)]  # still there: its writer may finish it
    (tmp_path / message_name(ms=0)).write_text(json.dumps({"body": "finished"}))
    assert ch._get("celery") == {"body": "finished"}


def test_a_stale_empty_or_broken_message_is_set_aside(tmp_path, caplog):
    ch = channel(tmp_path)
    stale = tmp_path / message_name(ms=1)
    stale.write_bytes(b"")
    old = time.time() - broker.PARTIAL_SECONDS - 1
    os.utime(stale, (old, old))
    (tmp_path / message_name(ms=2)).write_bytes(b'{"body": "cut sho')
    ch._put("celery", {"body": "good"})
    assert ch._get("celery") == {"body": "good"}
    with pytest.raises(Empty):
        ch._get("celery")
    assert sorted(os.listdir(tmp_path / "bad")) == [message_name(ms=1), message_name(ms=2)]
    assert "is empty: set aside" in caplog.text and "is not JSON: set aside" in caplog.text


def test_a_message_locked_by_its_writer_waits(tmp_path):
    """kombu writes under an exclusive lock: the consumer does not read it meanwhile."""
    ch = channel(tmp_path)
    path = tmp_path / message_name(ms=1)
    with open(path, "wb", buffering=0) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        f.write(b'{"body": "half')
        with pytest.raises(Empty):
            ch._get("celery")
        f.write(b'"}')
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    assert ch._get("celery") == {"body": "half"}


def test_two_consumers_one_message(tmp_path):
    first, second = channel(tmp_path), channel(tmp_path)
    first._put("celery", {"body": "once"})
    got = []
    for ch in (first, second):
        try:
            got.append(ch._get("celery"))
        except Empty:
            pass
    assert got == [{"body": "once"}]


def test_store_processed_keeps_the_message(tmp_path):
    ch = channel(tmp_path, store_processed=True)
    ch._put("celery", {"body": "kept"})
    assert ch._get("celery") == {"body": "kept"}
    [kept] = os.listdir(tmp_path / "processed")
    assert json.loads((tmp_path / "processed" / kept).read_text()) == {"body": "kept"}


def test_a_new_exchange_table_is_created_whole(tmp_path, monkeypatch):
    """A second process that reads or binds while the table is created sees it complete."""
    ch, other = channel(tmp_path), channel(tmp_path)
    seen = []
    link = os.link

    def link_after_a_read(src, dst):
        seen.append(other.get_table("celery"))  # not there yet: no queue, not an error
        return link(src, dst)

    monkeypatch.setattr(broker.os, "link", link_after_a_read)
    ch._queue_bind("celery", "celery", None, "celery")
    monkeypatch.undo()
    other._queue_bind("celery", "other", None, "other")
    assert seen == [[]]
    assert [q.queue for q in ch.get_table("celery")] == ["other", "celery"]
    assert [p.name for p in (tmp_path / "control").iterdir()] == ["celery.exchange"]


@pytest.mark.parametrize(
    "transport",
    [
        "sendit.broker:Transport",
        pytest.param("kombu.transport.filesystem:Transport", marks=pytest.mark.xfail(raises=ValueError, strict=True)),
    ],
)
def test_an_exchange_table_being_created_by_kombu_is_waited_for(tmp_path, transport):
    """kombu creates the table empty, then locks and writes it: read and bind wait for it."""
    ch = channel(tmp_path, transport)
    (tmp_path / "control").mkdir()
    table = tmp_path / "control" / "celery.exchange"
    table.write_bytes(b"")
    fill = threading.Timer(0.1, lambda: table.write_text(json.dumps([["celery", "", "celery"]])))
    fill.start()
    try:
        assert [q.queue for q in ch.get_table("celery")] == ["celery"]
    finally:
        fill.join()
    table.write_bytes(b"")
    fill = threading.Timer(0.1, lambda: table.write_text(json.dumps([["celery", "", "celery"]])))
    fill.start()
    try:
        ch._queue_bind("celery", "other", None, "other")
    finally:
        fill.join()
    assert [q.queue for q in ch.get_table("celery")] == ["other", "celery"]
