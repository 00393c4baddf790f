"""One image a destination refuses fails alone; an image whose UIDs are taken by a different
stored instance fails instead of counting as delivered. Real Orthanc (tests/services.py).

The Orthanc answers these tests rely on (Debian's Orthanc 1.10):
  * POST /instances of a file without SeriesInstanceUID (or Study/SOP Instance UID): HTTP 404,
    {"OrthancError": "Inexistent tag"}; with an empty SeriesInstanceUID: HTTP 400, "Bad file
    format". Over C-STORE both are status 0xA700 ("out of resources", which means "try later").
  * A Lua ReceivedInstanceFilter that returns false: POST answers 200 with Status FilteredOut;
    C-STORE answers success (0x0000) and the instance is simply not kept.
  * An instance whose four UIDs are already stored: POST answers AlreadyStored, C-STORE answers
    success, and Orthanc keeps the first copy either way.
  * A copy stored over C-STORE has Orthanc's own file meta header, so its MD5 differs from the
    sent file's even when the data set is the same.
"""

import http.server
import threading

import pydicom
import pytest

from sendit.storage import SendItem, get_destinations
from tests.services import Orthanc, make_ct_series, orthanc_binary, start_or_skip
from tests.storage.helpers import items_for

TRANSPORTS = ["rest", "dicom"]
FAST = {"SEND_RETRIES": 3, "SEND_BACKOFF": 0.05, "SEND_BACKOFF_MAX": 0.2}
DIFFERENT = "a different instance with this UID is already stored"


def destination(orthanc, transport, **overrides):
    [dest] = get_destinations(orthanc.settings(ORTHANC_TRANSPORT=transport, **{**FAST, **overrides}))
    return dest


def private_orthanc(folder, **config):
    return start_or_skip(Orthanc(folder, extra_config=config), None if orthanc_binary() else "Orthanc is not installed")


def variant(src, dst, change) -> str:
    """A copy of src with one header change (its UIDs kept unless the change touches them)."""
    ds = pydicom.dcmread(src)
    change(ds)
    ds.save_as(dst)
    return str(dst)


def item_of(path) -> SendItem:
    """A SendItem for a file whose header may lack a UID (SendItem.from_file needs them all)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return SendItem(
        str(path),
        str(ds.get("SOPInstanceUID", "")),
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
        str(ds.get("PatientID", "")),
    )


def stored_series_description(orthanc, remote_id) -> str:
    import io

    return str(pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{remote_id}/file"))).SeriesDescription)


def assert_plain(error, item):
    """No file name, no header value in a message."""
    assert ".dcm" not in error and "/tmp" not in error
    for value in (item.sop_instance_uid, item.series_instance_uid, item.study_instance_uid):
        if value:
            assert value not in error


# -- 1. one refused instance fails alone ------------------------------------------------------


def batch_with_refused(folder):
    good = make_ct_series(folder / "good", 4, patient_id="SUID-ISO")
    spare = make_ct_series(folder / "spare", 2, patient_id="SUID-ISO")
    no_series = variant(spare[0], folder / "a.dcm", lambda ds: delattr(ds, "SeriesInstanceUID"))
    empty_series = variant(spare[1], folder / "b.dcm", lambda ds: setattr(ds, "SeriesInstanceUID", ""))
    paths = [good[0], no_series, good[1], good[2], empty_series, good[3]]
    return [item_of(p) for p in paths]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_instance_without_series_uid_fails_alone(orthanc_private, tmp_path, transport):
    items = batch_with_refused(tmp_path)
    results = destination(orthanc_private, transport).send_batch(items)
    assert [r.ok for r in results] == [True, False, True, True, False, True], [r.error for r in results]
    good = [r for r in results if r.ok]
    assert sorted(orthanc_private.instances()) == sorted(r.remote_id for r in good)
    assert all(not r.already_stored for r in good)
    for index, words in ((1, "has no SeriesInstanceUID"), (4, "its SeriesInstanceUID is empty")):
        r = results[index]
        assert r.attempts == 1, r.error  # refused for good: not retried
        assert words in r.error, r.error
        assert "ORTHANC_URL" not in r.error  # not mistaken for a wrong address
        assert_plain(r.error, items[index])
    if transport == "rest":  # Orthanc's own reason, in its words
        assert "Orthanc refused this instance" in results[1].error
        assert "Inexistent tag" in results[1].error and "Bad file format" in results[4].error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_instance_orthanc_filters_out_fails_alone(tmp_path, transport):
    lua = tmp_path / "filter.lua"
    lua.write_text(
        'function ReceivedInstanceFilter(dicom, origin, info)\n  return dicom.SeriesDescription ~= "REFUSED"\nend\n'
    )
    server = private_orthanc(tmp_path / "orthanc", LuaScripts=[str(lua)])
    try:
        paths = make_ct_series(tmp_path / "in", 4, patient_id="SUID-FILTER")
        paths[2] = variant(paths[2], tmp_path / "refused.dcm", lambda ds: setattr(ds, "SeriesDescription", "REFUSED"))
        items = items_for(paths)
        results = destination(server, transport).send_batch(items)
        assert [r.ok for r in results] == [True, True, False, True], [r.error for r in results]
        assert len(server.instances()) == 3
        refused = results[2]
        assert "Orthanc did not keep this instance" in refused.error, refused.error
        # REST says so at once; C-STORE answers success, so it takes a second look to be sure
        assert refused.attempts == (1 if transport == "rest" else 2)
        assert_plain(refused.error, items[2])
    finally:
        server.stop(kill=True)


class _NotOrthanc(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_404_that_is_not_orthanc_stops_the_batch(tmp_path):
    """The half that must not change: an address that is not Orthanc fails every image at once."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotOrthanc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        items = items_for(make_ct_series(tmp_path / "in", 4))
        [dest] = get_destinations(
            {
                "SEND_TO_ORTHANC": True,
                "ORTHANC_TRANSPORT": "rest",
                "ORTHANC_URL": f"http://127.0.0.1:{server.server_port}",
                **FAST,
                "SEND_BACKOFF": 1.0,
            }
        )
        results = dest.send_batch(items)
    finally:
        server.shutdown()
        server.server_close()
    assert all(not r.ok and r.attempts == 1 for r in results), [(r.error, r.attempts) for r in results]
    assert all("is ORTHANC_URL the root of an Orthanc server?" in r.error for r in results)


def test_orthanc_at_a_wrong_path_stops_the_batch(orthanc, tmp_path):
    """Orthanc itself answers 404 "Unknown resource" when ORTHANC_URL is not its root."""
    items = items_for(make_ct_series(tmp_path / "in", 3))
    dest = destination(orthanc, "rest", ORTHANC_URL=orthanc.url + "/sendit", SEND_BACKOFF=1.0)
    results = dest.send_batch(items)
    assert all(not r.ok and r.attempts == 1 for r in results), [(r.error, r.attempts) for r in results]
    assert all("Unknown resource" in r.error and "ORTHANC_URL" in r.error for r in results)


# -- 2. AlreadyStored counts only when the stored instance is this one -----------------------------


def same_uids_pair(folder, patient_id="SUID-DUP"):
    """Two de-identified versions of one image (same four UIDs, other content) and a bystander."""
    a, bystander = make_ct_series(folder / "in", 2, patient_id=patient_id)
    b = variant(a, folder / "b.dcm", lambda ds: setattr(ds, "SeriesDescription", "ANOTHER VERSION"))
    return a, b, bystander


CASES = [("rest", "series"), ("rest", "md5"), ("dicom", "series")]


@pytest.mark.parametrize("transport,verify", CASES)
def test_a_different_instance_with_the_same_uids_fails(orthanc_private, tmp_path, transport, verify):
    a, b, bystander = same_uids_pair(tmp_path)
    dest = destination(orthanc_private, transport, ORTHANC_VERIFY=verify)
    [first] = dest.send_batch(items_for([a]))
    assert first.ok and not first.already_stored, first.error

    results = dest.send_batch(items_for([b, bystander]))
    assert not results[0].ok and DIFFERENT in results[0].error, results[0]
    assert results[0].attempts == 1  # permanent: not retried
    assert_plain(results[0].error, items_for([b])[0])
    assert results[1].ok and not results[1].already_stored, results[1].error
    assert stored_series_description(orthanc_private, first.remote_id) == "AXIAL 1.0"  # the first kept

    [again] = dest.send_batch(items_for([a]))  # the identical file: delivered already
    assert again.ok and again.already_stored and again.note is None, again
    assert len(orthanc_private.instances()) == 2


@pytest.mark.parametrize("first_transport,second_transport", [("dicom", "rest"), ("rest", "dicom")])
def test_the_comparison_ignores_how_the_first_copy_arrived(
    orthanc_private, tmp_path, first_transport, second_transport
):
    """A copy stored over C-STORE carries Orthanc's own file meta header (another MD5): the
    same data set still counts as the same instance, a different one still fails."""
    a, b, _ = same_uids_pair(tmp_path)
    [first] = destination(orthanc_private, first_transport).send_batch(items_for([a]))
    assert first.ok, first.error
    again, other = destination(orthanc_private, second_transport).send_batch(items_for([a, b]))
    assert again.ok and again.already_stored, again.error
    assert not other.ok and DIFFERENT in other.error


@pytest.mark.parametrize("verify", ["series", "md5"])
def test_without_stored_md5_the_file_is_compared(tmp_path, verify):
    """StoreMD5ForAttachments false: Orthanc has no MD5 to give (HTTP 404); the stored file is
    fetched and compared instead."""
    server = private_orthanc(tmp_path / "orthanc", StoreMD5ForAttachments=False)
    try:
        a, b, _ = same_uids_pair(tmp_path)
        dest = destination(server, "rest", ORTHANC_VERIFY=verify)
        [first] = dest.send_batch(items_for([a]))
        assert first.ok, first.error
        [other] = dest.send_batch(items_for([b]))
        assert not other.ok and DIFFERENT in other.error, other
        [again] = dest.send_batch(items_for([a]))
        assert again.ok and again.already_stored, again.error
    finally:
        server.stop(kill=True)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_versions_in_one_batch_deliver_one(orthanc_private, tmp_path, transport):
    """Both versions in the same call: Orthanc keeps one; the other must not count as delivered."""
    a, b, bystander = same_uids_pair(tmp_path)
    results = destination(orthanc_private, transport).send_batch(items_for([a, bystander, b]))
    assert results[1].ok, results[1].error
    versions = [results[0], results[2]]
    assert sorted(r.ok for r in versions) == [False, True], [r.error for r in versions]
    [kept] = [r for r in versions if r.ok]
    [lost] = [r for r in versions if not r.ok]
    assert DIFFERENT in lost.error
    kept_description = "AXIAL 1.0" if kept is results[0] else "ANOTHER VERSION"
    assert stored_series_description(orthanc_private, kept.remote_id) == kept_description


def test_same_dataset_looks_past_the_encoding(tmp_path):
    """The comparison behind AlreadyStored: the file meta header and group lengths (what a
    receiver may rewrite) do not make two files different; one changed value does."""
    import io
    import struct

    from sendit.storage.orthanc_rest import dataset_bytes, same_dataset

    [path] = make_ct_series(tmp_path, 1)

    def encoded(change=None, meta_name=None):
        ds = pydicom.dcmread(path)
        if change:
            change(ds)
        if meta_name:
            ds.file_meta.ImplementationVersionName = meta_name
        out = io.BytesIO()
        ds.save_as(out)
        return out.getvalue()

    original = encoded()
    # (0008,0000) Group Length, explicit VR little endian, before the group's first element
    # (pydicom drops group lengths when it writes, so they are put in by hand)
    start = len(original) - len(dataset_bytes(original))
    with_group_length = original[:start] + struct.pack("<HH2sHI", 8, 0, b"UL", 4, 0) + original[start:]
    assert dataset_bytes(with_group_length) != dataset_bytes(original)
    assert same_dataset(original, with_group_length) is True
    assert same_dataset(original, encoded(meta_name="OTHER_RECEIVER")) is True
    assert same_dataset(original, encoded(lambda ds: setattr(ds, "SeriesDescription", "OTHER"))) is False
    assert same_dataset(original, b"not dicom") is None


def test_a_c_store_failure_status_fails_that_image_only(tmp_path):
    """A Storage SCP (pynetdicom, in this process) that refuses one image with 0xC000 and
    answers another 0xA700 ("out of resources") once: the first fails alone, with the status
    and its meaning; the second is retried and delivered; the rest are delivered."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from tests.services import free_port

    answered: list[str] = []

    def on_store(event):
        description = str(event.dataset.get("SeriesDescription", ""))
        answered.append(description)
        if description == "REFUSE":
            return 0xC000
        if description == "BUSY" and answered.count("BUSY") == 1:
            return 0xA700
        return 0x0000

    ae = AE(ae_title="PEER")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        paths = make_ct_series(tmp_path / "in", 4, patient_id="SUID-SCP")
        paths[1] = variant(paths[1], tmp_path / "r.dcm", lambda ds: setattr(ds, "SeriesDescription", "REFUSE"))
        paths[2] = variant(paths[2], tmp_path / "b.dcm", lambda ds: setattr(ds, "SeriesDescription", "BUSY"))
        items = items_for(paths)
        [dest] = get_destinations(
            {
                "SEND_TO_ORTHANC": True,
                "ORTHANC_TRANSPORT": "dicom",
                "ORTHANC_URL": None,
                "ORTHANC_IPADDRESS": "127.0.0.1",
                "ORTHANC_PORT": port,
                "ORTHANC_AET": "PEER",
                **FAST,
            }
        )
        results = dest.send_batch(items)
    finally:
        server.shutdown()
    assert [r.ok for r in results] == [True, False, True, True], [r.error for r in results]
    assert results[1].error == "orthanc: C-STORE failed with status 0xC000 (Cannot Understand)"
    assert results[1].attempts == 1
    assert results[2].attempts == 2 and answered.count("BUSY") == 2
    assert answered.count("REFUSE") == 1
