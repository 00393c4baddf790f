"""Orthanc (or any Storage SCP) over DICOM: pynetdicom C-STORE, one association per batch.

Per send_batch call:
  * each file's header is read (pixels not read) for its SOP class, transfer syntax and
    identifiers; presentation contexts are proposed for exactly the (SOP class, transfer
    syntax) pairs of the batch, so files are sent as they are, never transcoded;
  * a file without StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID fails at once, in
    those words: Orthanc answers its C-STORE with 0xA700 ("out of resources", i.e. try
    later), which would be retried for nothing;
  * when ORTHANC_URL is set, instances already in Orthanc are found first (one
    GET /series/{id} per series); each is compared with the local file (orthanc_rest.
    compare_stored): the same instance is ok, already_stored, without a C-STORE; a different
    one with the same UIDs fails ("a different instance with this UID is already stored"),
    since Orthanc would answer its C-STORE with success and keep the other;
  * one association sends every file (streamed from disk); status 0x0000 is success,
    warnings 0xB000 / 0xB006 / 0xB007 count as success with a note, anything else fails
    that file only, with its status code and meaning; 0xA7xx (out of resources) and aborted
    associations are retried;
  * when ORTHANC_URL is set every stored instance is verified: its Orthanc id (SHA-1 of
    PatientID|Study|Series|SOP UIDs) must be listed by GET /series/{id}. Absent after a
    success twice in a row (a filter in Orthanc refused it), it fails. Two files of one round
    with the same UIDs are both compared with what Orthanc kept.
  * Without ORTHANC_URL nothing of this is checked: a C-STORE success is ok, "not verified".
TCP_NODELAY is set on the association's socket: Orthanc accepts 16 kB PDUs by default, and
Nagle's algorithm with delayed ACKs would otherwise stall every PDU-sized write.
"""

from __future__ import annotations

import concurrent.futures
import functools
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .base import (
    Config,
    Destination,
    DestinationError,
    Outcome,
    SendItem,
    SendResult,
    orthanc_id,
    register,
    setting_int,
    setting_str,
)
from .http import Client
from .orthanc_rest import compare_stored, missing_uids, orthanc_settings, series_instances

if TYPE_CHECKING:  # pragma: no cover - pynetdicom is imported when a destination talks DICOM
    from pynetdicom.ae import ApplicationEntity
    from pynetdicom.association import Association

#: (SOP class UID, transfer syntax UID) of a presentation context
Context = tuple[str, str]
#: what is C-STOREd: (index in the batch, item, its header)
Share = list[tuple[int, SendItem, "_Header"]]

WARNING_STATUSES = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}
MAX_CONTEXTS = 128

_config_lock = threading.Lock()


class _Header:
    """What a C-STORE needs from a file, read once per batch."""

    __slots__ = ("sop_class", "transfer_syntax", "patient_id", "study", "series", "sop", "streamable", "error")

    def __init__(self, path: str) -> None:
        import pydicom

        self.error: str | None = None
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except OSError as exc:
            from .base import describe_oserror

            self.error = f"cannot read the local file ({describe_oserror(exc)})"
            return
        except Exception as exc:
            self.error = f"not a readable DICOM file ({type(exc).__name__})"
            return
        meta = getattr(ds, "file_meta", None) or {}
        self.sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
        self.sop = str(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "")
        self.transfer_syntax = str(meta.get("TransferSyntaxUID") or "")
        self.patient_id = str(ds.get("PatientID") or "")
        self.study = str(ds.get("StudyInstanceUID") or "")
        self.series = str(ds.get("SeriesInstanceUID") or "")
        self.streamable = all(
            k in meta for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
        )
        if not (self.sop_class and self.sop and self.transfer_syntax):
            self.error = "file has no SOP Class UID, SOP Instance UID or Transfer Syntax UID"
        elif missing_uids(ds):  # a Storage SCP cannot file it (Orthanc: 0xA700, "try later")
            self.error = f"this instance cannot be stored: {missing_uids(ds)}"

    @property
    def instance_id(self) -> str:
        return orthanc_id(self.patient_id, self.study, self.series, self.sop)

    @property
    def series_id(self) -> str:
        return orthanc_id(self.patient_id, self.study, self.series)


@register("orthanc_dicom")
class OrthancDicom(Destination):
    name = "orthanc"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        host = setting_str(config, "ORTHANC_IPADDRESS")
        self.port = setting_int(config, "ORTHANC_PORT", 4242)
        self.called_aet = setting_str(config, "ORTHANC_AET", "ORTHANC")
        self.calling_aet = setting_str(config, "SENDIT_AET", "SENDIT")
        self.max_pdu = setting_int(config, "SENDIT_MAX_PDU", 0)  # what we accept; 0 = unlimited
        self.associations = max(1, setting_int(config, "ORTHANC_DICOM_ASSOCIATIONS", 4))
        self.url, self.auth = orthanc_settings(config)
        if not host:
            raise DestinationError("orthanc: the dicom transport needs ORTHANC_IPADDRESS")
        self.host: str = host
        if not (0 < self.port < 65536):
            raise DestinationError("orthanc: ORTHANC_PORT must be a TCP port number")
        for key, aet in (("ORTHANC_AET", self.called_aet), ("SENDIT_AET", self.calling_aet)):
            if not (0 < len(aet) <= 16):
                raise DestinationError(f"orthanc: {key} must be 1 to 16 characters")
        self.session: Client | None = None
        self._headers: dict[int, _Header] = {}
        # instance id -> indexes whose C-STORE this call had answered with success
        self._cstored: dict[str, set[int]] = {}
        self._absent: set[int] = set()  # C-STORE success, yet not in Orthanc, once
        self._paths: dict[int, str] = {}

    # -- association -----------------------------------------------------------------------
    def _ae(self, contexts: Iterable[Context]) -> ApplicationEntity:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.maximum_pdu_size = self.max_pdu
        ae.acse_timeout = min(self.timeout, 30)
        ae.dimse_timeout = self.timeout
        ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 10)
        for sop_class, ts in contexts:
            ae.add_requested_context(sop_class, ts)
        return ae

    def _associate(self, contexts: Iterable[Context]) -> Association | Outcome:
        """An established association, or why there is none."""
        ae = self._ae(contexts)
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, max_pdu=self.max_pdu)
        if assoc.is_established:
            _tune_socket(assoc)
            return assoc
        where = f"{self.called_aet}@{self.host}:{self.port}"
        if assoc.is_rejected:
            return Outcome.failed(
                f"orthanc: association rejected by {where} "
                "(check ORTHANC_AET / SENDIT_AET and the peer's "
                "modality list)",
                abort_batch=True,
            )
        return Outcome.retry(
            f"orthanc: cannot connect to {where} (connection refused, timed out or association aborted)",
            unreachable=True,
        )

    def open(self) -> None:
        if self.url and self.session is None:
            self.session = Client(self.auth)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    # -- REST helpers ----------------------------------------------------------------------
    def _rest(self) -> tuple[Client, str]:
        """The REST session and ORTHANC_URL (when ORTHANC_URL is set, between open() and close())."""
        if self.session is None or not self.url:
            raise RuntimeError("orthanc: no REST session (ORTHANC_URL not set, or open() not called)")
        return self.session, self.url

    def _stored_ids(self, series_ids: Iterable[str]) -> tuple[set[str], Outcome | None]:
        """Orthanc instance ids already stored in the given series (one GET per series)."""
        found: set[str] = set()
        for sid in series_ids:
            listed, failure = series_instances(*self._rest(), sid, self.timeout)
            if failure is not None:
                return found, failure
            found.update(listed)
        return found, None

    # -- one round -------------------------------------------------------------------------
    def send_round(self, batch: list[tuple[int, SendItem]]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        todo: Share = []
        self._paths = {i: item.path for i, item in batch}
        for i, item in batch:
            header = self._headers.get(i)
            if header is None:
                header = self._headers[i] = _Header(item.path)
            if header.error:
                outcomes[i] = Outcome.failed(f"orthanc: {header.error}")
            else:
                todo.append((i, item, header))
        if not todo:
            return outcomes

        # 1. what is already there (REST, when configured). Orthanc answers the C-STORE of an
        #    instance it has with success and keeps its copy: what it has must be compared
        #    first, so when it cannot be read now, nothing is sent this round.
        stored: set[str] = set()
        if self.session is not None:
            stored, problem = self._stored_ids({h.series_id for _, _, h in todo})
            if problem is not None:
                if not problem.abort_batch:
                    problem = Outcome.retry(problem.error or "pre-check failed", unreachable=problem.unreachable)
                outcomes.update({i: problem for i, _, _ in todo})
                return outcomes
        to_send: Share = []
        to_compare: list[tuple[int, SendItem]] = []
        for i, item, h in todo:
            if h.instance_id not in stored:
                to_send.append((i, item, h))
            elif self._cstored.get(h.instance_id) == {i}:
                # this call's own copy (its verification failed): nothing else to compare
                outcomes[i] = Outcome.success(h.instance_id, already_stored=True)
            else:
                to_compare.append((i, item))
        if to_compare:
            ids = {i: h.instance_id for i, _, h in todo}
            outcomes.update(
                self.parallel(
                    to_compare, lambda i, item: compare_stored(*self._rest(), ids[i], item.path, self.timeout)
                )
            )
        if not to_send:
            return outcomes

        # 2. C-STORE: contexts from this round's files; ORTHANC_DICOM_ASSOCIATIONS parallel
        #    associations (default 4), each sending an interleaved share of the files
        contexts = sorted({(h.sop_class, h.transfer_syntax) for _, _, h in to_send})
        sent: list[tuple[int, _Header, str | None]] = []
        for start in range(0, len(contexts), MAX_CONTEXTS):
            chunk = set(contexts[start : start + MAX_CONTEXTS])
            group = [t for t in to_send if (t[2].sop_class, t[2].transfer_syntax) in chunk]
            n = max(1, min(self.associations, len(group)))
            shares = [group[k::n] for k in range(n)]
            wanted = sorted(chunk)
            if n == 1:
                parts = [self._store_share(wanted, shares[0])]
            else:
                with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="cstore") as ex:
                    parts = list(ex.map(functools.partial(self._store_share, wanted), shares))
            for share_outcomes, share_sent in parts:
                outcomes.update(share_outcomes)
                sent.extend(share_sent)

        # 3. verify (REST, when configured)
        if not sent:
            return outcomes
        if self.session is None:
            for i, h, note in sent:
                outcomes[i] = Outcome.success(
                    h.instance_id,
                    note=_join(note, "not verified in Orthanc (ORTHANC_URL not set); C-STORE status success"),
                )
            return outcomes
        for i, h, _ in sent:
            self._cstored.setdefault(h.instance_id, set()).add(i)
        stored, problem = self._stored_ids({h.series_id for _, h, _ in sent})
        for i, h, note in sent:
            if problem is not None:
                out = Outcome.retry(problem.error or "verification failed", unreachable=problem.unreachable)
                out.stored_fresh = True
                outcomes[i] = out
            elif h.instance_id in stored:
                outcomes[i] = Outcome.success(h.instance_id, note=note)
            elif i in self._absent:
                outcomes[i] = Outcome.failed(
                    "orthanc: Orthanc did not keep this instance (it answered the C-STORE with "
                    "success twice but does not list it: a filter configured in Orthanc refuses it?)"
                )
            else:
                self._absent.add(i)
                outcomes[i] = Outcome.retry("orthanc: C-STORE succeeded but the instance is not in Orthanc")
        # Two files of this call with the same UIDs, both answered with success: Orthanc kept
        # one of them. Each is compared with the one it kept.
        for i, h, _ in sent:
            if outcomes[i].ok and len(self._cstored[h.instance_id]) > 1:
                note = outcomes[i].note
                out = compare_stored(*self._rest(), h.instance_id, self._paths[i], self.timeout)
                if out.ok:
                    out.already_stored, out.note = False, note
                outcomes[i] = out
        return outcomes

    def _store_share(
        self, contexts: list[Context], share: Share
    ) -> tuple[dict[int, Outcome], list[tuple[int, _Header, str | None]]]:
        """One association: C-STORE each (index, item, header) of `share`, then release."""
        outcomes: dict[int, Outcome] = {}
        sent: list[tuple[int, _Header, str | None]] = []
        assoc = self._associate(contexts)
        if isinstance(assoc, Outcome):
            return {i: assoc for i, _, _ in share}, sent
        try:
            dead: Outcome | None = None
            for i, item, h in share:
                if dead is not None:
                    outcomes[i] = dead
                    continue
                out, note = self._store_one(assoc, i, h, item)
                if out is None:
                    sent.append((i, h, note))
                else:
                    outcomes[i] = out
                    if out.unreachable:
                        dead = out
        finally:
            try:
                if assoc.is_established:
                    assoc.release()
                else:
                    assoc.abort()
            except Exception:
                pass
        return outcomes, sent

    def _store_one(
        self, assoc: Association, index: int, h: _Header, item: SendItem
    ) -> tuple[Outcome | None, str | None]:
        """C-STORE one file. (None, note) when stored; (Outcome, None) otherwise."""
        from pynetdicom import _config

        try:
            with _config_lock:
                _config.STORE_SEND_CHUNKED_DATASET = True
            if h.streamable:
                status = assoc.send_c_store(item.path, msg_id=(index % 65535) + 1)
            else:
                import pydicom

                ds = pydicom.dcmread(item.path)
                status = assoc.send_c_store(ds, msg_id=(index % 65535) + 1)
        except ValueError:
            return Outcome.failed(
                "orthanc: the peer accepted no presentation context for this file's SOP class and transfer syntax"
            ), None
        except (OSError, RuntimeError, AttributeError) as exc:
            if not assoc.is_established:
                return Outcome.retry("orthanc: association lost during C-STORE", unreachable=True), None
            return Outcome.failed(f"orthanc: C-STORE could not be sent ({type(exc).__name__})"), None
        if not status or "Status" not in status:
            return Outcome.retry(
                "orthanc: no C-STORE response (association aborted or timed out)", unreachable=True
            ), None
        code = int(status.Status)
        if code == 0x0000:
            return None, None
        if code in WARNING_STATUSES:
            return None, f"C-STORE warning 0x{code:04X} ({WARNING_STATUSES[code]})"
        if 0xA700 <= code <= 0xA7FF:
            return Outcome.retry(f"orthanc: C-STORE status 0x{code:04X} (out of resources)"), None
        return Outcome.failed(f"orthanc: C-STORE failed with status 0x{code:04X}{_status_meaning(code)}"), None

    def send_batch(
        self,
        items: list[SendItem],
        heartbeat: Callable[[], object] | None = None,
        on_wait: Callable[[str, float], object] | None = None,
    ) -> list[SendResult]:
        self._headers, self._cstored, self._absent, self._paths = {}, {}, set(), {}
        try:
            return super().send_batch(items, heartbeat, on_wait)
        finally:
            self._headers, self._cstored, self._absent, self._paths = {}, {}, set(), {}

    def check(self) -> tuple[bool, str]:
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time

        ae = self._ae([])
        ae.add_requested_context(Verification)
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.called_aet)
        except Exception as exc:
            return False, f"orthanc: cannot associate ({type(exc).__name__})"
        where = f"{self.called_aet}@{self.host}:{self.port}"
        if not assoc.is_established:
            state = "rejected" if assoc.is_rejected else "refused or aborted"
            return False, f"orthanc: association with {where} {state}"
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if status and int(status.get("Status", -1)) == 0:
            return True, f"DICOM C-ECHO to {where} succeeded"
        return False, f"orthanc: C-ECHO to {where} failed"


def _tune_socket(assoc: Association) -> None:
    """Disable Nagle on our side and ACK the peer's data immediately.

    Orthanc (DCMTK) leaves Nagle's algorithm on unless its environment has TCP_NODELAY=1,
    and writes each C-STORE response in two pieces: the second waits for our ACK, which
    Linux delays by up to 40 ms. Re-arming TCP_QUICKACK before every read removes that
    stall (measured: 55 ms -> 13 ms per 512x512 CT image).
    """
    wrapper = assoc.dul.socket
    sock = wrapper.socket if wrapper is not None else None
    if wrapper is None or sock is None:  # no connection (any more)
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        return
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None:
        return
    original_recv = wrapper.recv

    def recv(nr_bytes: int) -> bytearray:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except OSError:
            pass
        return original_recv(nr_bytes)

    wrapper.recv = recv  # type: ignore[method-assign]  # this connection's reads only


def _status_meaning(code: int) -> str:
    """' (Refused: SOP Class Not Supported)': the standard meaning of a C-STORE status."""
    try:
        from pynetdicom.status import GENERAL_STATUS, STORAGE_SERVICE_CLASS_STATUS

        meaning = {**GENERAL_STATUS, **STORAGE_SERVICE_CLASS_STATUS}.get(code, ("", ""))[1]
    except ImportError:  # pragma: no cover
        meaning = ""
    return f" ({meaning})" if meaning else ""


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None
