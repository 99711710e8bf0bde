"""One CFDP entity (CCSDS 727.0-B-5) as a sans-I/O engine around cfdp-py's handlers.

cfdp-py (``cfdppy``, from the authors of ``spacepackets``) implements the CFDP
procedures: the Copy File procedure (4.6), Class 1 unacknowledged and Class 2
acknowledged transfers with NAKs (4.6.4), the positive acknowledgement procedure
(4.7), file checksums (4.2.2).  It does no I/O of its own besides its filestore and
its timers; this adapter gives it the aioquic surface of the rest of linkstack:

- ``put(...)`` (the Put.request primitive, 3.4.1), ``receive_pdu(pdu, now)``,
  ``pdus_to_send(now, limit)``, ``get_timer()`` / ``handle_timer(now)``,
  ``next_event()``;
- time is the caller's ``now`` (``linkstack.cfdp.clock``), the filestore is the
  caller's (a ``VirtualFilestore``: on disk for the programs, in memory for the
  simulation), so that nothing here reads a clock or opens a file;
- bad PDUs from the link become :class:`~linkstack.errors.Dropped` events and counters;
- an admission check (``admit``) lets the receiving application refuse a file before a
  byte of it is written (no space, a name that escapes the store, a duplicate): the
  refusal goes back in a Finished PDU whose condition code says why (4.4.7: Filestore
  rejection, File size error) and whose filestore response TLV (5.4.3) says it in words;
  the sender's entity ends its transaction with that reason instead of sending the rest.

One transaction at a time in each direction (cfdp-py's handlers are single-transaction):
a second ``put`` while one is sending raises :class:`~linkstack.errors.InvalidState`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cfdppy import CfdpState, PutRequest
from cfdppy.exceptions import (
    InvalidDestinationId,
    InvalidNakPdu,
    InvalidPduDirection,
    InvalidPduForDestHandler,
    InvalidPduForSourceHandler,
    InvalidSourceId,
    InvalidTransactionSeqNum,
    NoRemoteEntityConfigFound,
    PduIgnoredForDest,
    PduIgnoredForSource,
)
from cfdppy.filestore import VirtualFilestore
from cfdppy.handler.dest import DestHandler
from cfdppy.handler.source import SourceHandler
from cfdppy.mib import (
    DefaultFaultHandlerBase,
    IndicationConfig,
    LocalEntityConfig,
    RemoteEntityConfig,
    RemoteEntityConfigTable,
)
from cfdppy.user import (
    CfdpUserBase,
    FileSegmentRecvdParams,
    MetadataRecvParams,
    TransactionFinishedParams,
    TransactionParams,
)
from spacepackets.cfdp import (
    ChecksumType,
    ConditionCode,
    DeliveryCode,
    Direction,
    DirectiveType,
    FileStatus,
    PduType,
    TransactionId,
    TransmissionMode,
)
from spacepackets.cfdp.lv import CfdpLv
from spacepackets.cfdp.pdu import (
    AckPdu,
    EofPdu,
    FileDataPdu,
    FinishedPdu,
    MetadataPdu,
    NakPdu,
    PduConfig,
)
from spacepackets.cfdp.pdu.ack import TransactionStatus
from spacepackets.cfdp.pdu.file_data import FileDataParams
from spacepackets.cfdp.pdu.finished import FinishedParams
from spacepackets.cfdp.pdu.helper import GenericPduPacket, PduFactory
from spacepackets.cfdp.tlv import (
    FilestoreActionCode,
    FilestoreResponseStatusCode,
    FileStoreResponseTlv,
    MessageToUserTlv,
    TlvType,
)
from spacepackets.seqcount import SeqCountProvider
from spacepackets.util import ByteFieldU8, UnsignedByteField

from linkstack.cfdp.clock import CLOCK, CheckTimers
from linkstack.errors import DropCounter, Dropped, InvalidState, Layer, LocalProtocolError

logger = logging.getLogger(__name__)

#: What cfdp-py raises for a PDU that the book's rules or the transaction's state refuse:
#: the link's doing, never the caller's, so each becomes a drop.
_PDU_REFUSED = (
    InvalidDestinationId,
    InvalidNakPdu,
    InvalidPduDirection,
    InvalidPduForDestHandler,
    InvalidPduForSourceHandler,
    InvalidSourceId,
    InvalidTransactionSeqNum,
    NoRemoteEntityConfigFound,
    PduIgnoredForDest,
    PduIgnoredForSource,
)

#: Message to User (CCSDS 727.0-B-5 5.4.1, a user message, not one of the reserved CFDP
#: messages of 6.2, which start "cfdp") in a Metadata PDU: file data starts at the
#: decimal offset that follows; the receiver keeps what it holds of the file below it.
RESUME_MESSAGE: Final = b"linkstack:resume-from="

#: The book every drop of this layer cites.
CFDP_BOOK = "CCSDS 727.0-B-5"


@dataclass(frozen=True, slots=True, kw_only=True)
class CfdpConfig:
    """The managed parameters of one entity and its one remote peer (MIB, 727.0-B-5 8)."""

    #: This entity's id and the peer's (5.1.2, one octet each here).
    local_id: int
    remote_id: int
    #: Longest PDU sent to the peer, octets: with the Space Packet header it must fit
    #: the link's packet limit.  File data PDUs are as long as it allows.
    max_pdu_length: int = 4096
    #: File checksum (4.2.2; SANA checksum type 3, CRC-32 as ISO 3309).
    checksum: ChecksumType = ChecksumType.CRC_32
    #: Positive ACK timer and its expiration limit (4.7.1; MIB 8.3).
    ack_timer_s: float = 30.0
    ack_limit: int = 10
    #: NAK timer and its expiration limit (4.6.4.2.4; MIB 8.3).
    nak_timer_s: float = 30.0
    nak_limit: int = 10
    #: Check timer and limit of an unacknowledged receiver (4.6.3.2).
    check_timer_s: float = 10.0
    check_limit: int = 3
    #: How often a busy entity's timers are looked at, seconds (cfdp-py polls them).
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("local_id", "remote_id"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise LocalProtocolError(f"{name} {value} does not fit one octet (5.1.2)")
        if self.local_id == self.remote_id:
            raise LocalProtocolError(f"local_id and remote_id are both {self.local_id}")
        if self.max_pdu_length < 64:
            raise LocalProtocolError(f"max_pdu_length {self.max_pdu_length} < 64 octets")
        for name in ("ack_timer_s", "nak_timer_s", "check_timer_s", "poll_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LocalProtocolError(f"{name} {value} s must be positive and finite")
        for name in ("ack_limit", "nak_limit", "check_limit"):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"{name} {getattr(self, name)} must be >= 1")


def default_cfdp_config(*, local_id: int, remote_id: int) -> CfdpConfig:
    """CFDP parameters of the live programs (``onboard serve --store`` and the ground's
    file commands, each end's mirroring the other's): PDUs of 4 KB (4 TC frames), timers
    sized for a ground pass (positive ACK 10 s x 30, NAK 5 s x 30)."""
    return CfdpConfig(
        local_id=local_id,
        remote_id=remote_id,
        max_pdu_length=4050,
        ack_timer_s=10.0,
        ack_limit=30,
        nak_timer_s=5.0,
        nak_limit=30,
    )


@dataclass(frozen=True, slots=True)
class IncomingFile:
    """What a Metadata PDU announces (5.2.5): the receiving application may refuse it."""

    transaction: TransactionId
    source_name: str
    dest_name: str
    size: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a receiving application refuses a file: a condition code (5.2.2, table 5-5)
    and the reason in words, sent back in a filestore response TLV (5.4.3)."""

    condition: ConditionCode
    reason: str


#: The receiving application's admission check: None accepts the file.
Admit = Callable[[IncomingFile], Refusal | None]


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """A transaction began: ``sending`` at this entity's Put, else at a Metadata PDU."""

    transaction: TransactionId
    sending: bool
    source_name: str
    dest_name: str
    size: int
    at: float


@dataclass(frozen=True, slots=True)
class TransferFinished:
    """A transaction ended (Transaction-Finished.indication, 3.4.8)."""

    transaction: TransactionId
    sending: bool
    dest_name: str
    condition: ConditionCode
    #: Data complete and, with a checksum, verified (5.2.3, Delivery Code).
    delivered: bool
    #: Why, in words, when the peer refused the file or a fault ended it; else "".
    reason: str
    at: float

    @property
    def ok(self) -> bool:
        return self.condition == ConditionCode.NO_ERROR and self.delivered


Event = TransferStarted | TransferFinished | Dropped


@dataclass(slots=True)
class CfdpCounters:
    """What the entity sent and received (``CfdpEntity.counters``)."""

    pdus_sent: int = 0
    pdus_received: int = 0
    file_data_pdus_sent: int = 0
    file_data_octets_sent: int = 0
    #: File data PDUs sent again, answering a NAK (4.6.4.3.3), and their octets.
    file_data_retransmitted: int = 0
    file_data_octets_retransmitted: int = 0
    file_data_pdus_received: int = 0
    file_data_octets_received: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    #: Segment requests the NAKs carried (5.2.6).
    segment_requests_sent: int = 0
    transactions_refused: int = 0
    #: File octets a resumed transaction did not send again (kept from before a restart).
    file_data_octets_resumed: int = 0
    #: PDUs of a refused transaction, answered or dropped unwritten.
    pdus_refused: int = 0
    dropped: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class _User(CfdpUserBase):
    """The CFDP user (3.4): collects cfdp-py's indications for the entity."""

    def __init__(self, entity: CfdpEntity, vfs: VirtualFilestore) -> None:
        super().__init__(vfs)
        self.entity = entity

    def transaction_indication(self, transaction_indication_params: TransactionParams) -> None:
        pass

    def eof_sent_indication(self, transaction_id: TransactionId) -> None:
        pass

    def transaction_finished_indication(self, params: TransactionFinishedParams) -> None:
        self.entity._finished(params)

    def metadata_recv_indication(self, params: MetadataRecvParams) -> None:
        pass

    def file_segment_recv_indication(self, params: FileSegmentRecvdParams) -> None:
        pass

    def report_indication(self, transaction_id: TransactionId, status_report: Any) -> None:
        pass

    def suspended_indication(self, transaction_id: TransactionId, cond_code: ConditionCode) -> None:
        pass

    def resumed_indication(self, transaction_id: TransactionId, progress: int) -> None:
        pass

    def fault_indication(
        self, transaction_id: TransactionId, cond_code: ConditionCode, progress: int
    ) -> None:
        self.entity._fault(cond_code)

    def abandoned_indication(
        self, transaction_id: TransactionId, cond_code: ConditionCode, progress: int
    ) -> None:
        self.entity._fault(cond_code)

    def eof_recv_indication(self, transaction_id: TransactionId) -> None:
        pass


class _Faults(DefaultFaultHandlerBase):
    """Fault handlers (4.8): the book's defaults, counted by the entity."""

    def __init__(self, entity: CfdpEntity) -> None:
        super().__init__()
        self.entity = entity

    def notice_of_suspension_cb(
        self, transaction_id: TransactionId, cond: ConditionCode, progress: int
    ) -> None:
        self.entity._fault(cond)

    def notice_of_cancellation_cb(
        self, transaction_id: TransactionId, cond: ConditionCode, progress: int
    ) -> None:
        self.entity._fault(cond)

    def abandoned_cb(
        self, transaction_id: TransactionId, cond: ConditionCode, progress: int
    ) -> None:
        self.entity._fault(cond)

    def ignore_cb(self, transaction_id: TransactionId, cond: ConditionCode, progress: int) -> None:
        self.entity._fault(cond)


def _tid(source_id: UnsignedByteField, seq: UnsignedByteField) -> tuple[int, int]:
    return (int(source_id.value), int(seq.value))


class CfdpEntity:
    """A CFDP entity with one remote peer: a file sender and a file receiver."""

    def __init__(
        self,
        config: CfdpConfig,
        filestore: VirtualFilestore,
        *,
        admit: Admit | None = None,
        first_sequence_number: int = 0,
    ) -> None:
        """``admit`` checks every incoming file (None accepts all);
        ``first_sequence_number``: the next transaction sequence number (5.1.5), which a
        restarted entity must carry on from so that its transaction ids stay unique."""
        self.config = config
        self.filestore = filestore
        self._admit = admit
        self.counters = CfdpCounters()
        self.drops = DropCounter()
        self._events: deque[Event] = deque()
        self._local = ByteFieldU8(config.local_id)
        remote = RemoteEntityConfig(
            entity_id=ByteFieldU8(config.remote_id),
            max_file_segment_len=None,
            max_packet_len=config.max_pdu_length,
            closure_requested=True,
            crc_on_transmission=False,
            default_transmission_mode=TransmissionMode.ACKNOWLEDGED,
            crc_type=config.checksum,
            positive_ack_timer_interval_seconds=config.ack_timer_s,
            positive_ack_timer_expiration_limit=config.ack_limit,
            check_limit=config.check_limit,
            disposition_on_cancellation=True,
            immediate_nak_mode=True,
            nak_timer_interval_seconds=config.nak_timer_s,
            nak_timer_expiration_limit=config.nak_limit,
        )
        local = LocalEntityConfig(
            local_entity_id=self._local,
            indication_cfg=IndicationConfig(file_segment_recvd_indication_required=False),
            default_fault_handlers=_Faults(self),
        )
        self._user = _User(self, filestore)
        timers = CheckTimers(config.check_timer_s)
        table = RemoteEntityConfigTable([remote])
        sequence = SeqCountProvider(16)
        sequence.get_and_increment = _starting_at(first_sequence_number)
        self.source = SourceHandler(local, self._user, table, timers, sequence)
        self.dest = DestHandler(local, self._user, table, timers)
        self._now = 0.0
        self._last_fault: ConditionCode | None = None
        #: Transactions refused here (admission), with the Finished PDU that said so.
        self._refused: dict[tuple[int, int], FinishedPdu] = {}
        #: Transactions received whole, so that a repeated Metadata PDU is a duplicate.
        self._completed: set[tuple[int, int]] = set()
        #: The peer refused our transaction: its reason, until the source handler ends.
        self._peer_refusal: tuple[ConditionCode, str] | None = None
        self._sending: tuple[int, int] | None = None
        self._receiving: tuple[int, int] | None = None
        self._receiving_name = ""
        self._out: deque[bytes] = deque()
        #: Offsets of file data already sent once (for counting retransmissions).
        self._sent_up_to = 0

    # -- the CFDP user's requests ----------------------------------------------------------

    def put(
        self,
        source_name: str,
        dest_name: str,
        now: float,
        *,
        acknowledged: bool = True,
        resume_from: int = 0,
    ) -> TransactionId:
        """Put.request (3.4.1): copy ``source_name`` of the filestore to ``dest_name`` at the
        peer, Class 2 (``acknowledged``) or Class 1.

        ``resume_from``: the peer already holds the first ``resume_from`` octets of the
        file (an earlier transaction cut short by a restart): file data starts there, and
        the Metadata PDU says so in a Message to User (5.4.1, :data:`RESUME_MESSAGE`) so
        that the receiver keeps its partial file.  A receiver that cannot (no such file)
        NAKs the missing start and gets it: never a wrong file.
        """
        if self.source.state != CfdpState.IDLE:
            raise InvalidState(
                f"put({source_name!r}): transaction {self._sending} is still sending"
            )
        if not self.filestore.file_exists(Path(source_name)):
            raise LocalProtocolError(f"put: no file {source_name!r} in the filestore")
        size = self.filestore.file_size(Path(source_name))
        if not 0 <= resume_from <= size:
            raise LocalProtocolError(
                f"put({source_name!r}): resume_from {resume_from} outside 0..{size}"
            )
        CLOCK.now = now
        self._now = now
        self._peer_refusal = None
        self._sent_up_to = resume_from
        request = PutRequest(
            destination_id=ByteFieldU8(self.config.remote_id),
            source_file=Path(source_name),
            dest_file=Path(dest_name),
            trans_mode=(
                TransmissionMode.ACKNOWLEDGED if acknowledged else TransmissionMode.UNACKNOWLEDGED
            ),
            closure_requested=True,
            msgs_to_user=(
                [MessageToUserTlv(RESUME_MESSAGE + str(resume_from).encode())]
                if resume_from
                else None
            ),
        )
        self.source.put_request(request)
        self._run_source(None)
        if resume_from:
            # cfdp-py has no resume: its file progress (private) starts at the offset.
            self.source._params.fp.progress = resume_from
            self.counters.file_data_octets_resumed += resume_from
        tid = self.source.transaction_id
        if tid is None:
            raise InvalidState(f"put({source_name!r}): cfdp-py started no transaction")
        self._sending = _tid(tid.source_id, tid.seq_num)
        self._events.append(
            TransferStarted(
                tid, True, source_name, dest_name, self.filestore.file_size(Path(source_name)), now
            )
        )
        return tid

    def cancel(self, now: float) -> bool:
        """Cancel.request (3.4.2) of the transaction this entity is sending."""
        CLOCK.now = now
        tid = self.source.transaction_id
        if tid is None or self.source.state == CfdpState.IDLE:
            return False
        self._drain_handler(self.source)
        done = self.source.cancel_request(tid)
        self._run_source(None)
        return bool(done)

    # -- state ---------------------------------------------------------------------------

    @property
    def sending(self) -> bool:
        return bool(self.source.state != CfdpState.IDLE)

    @property
    def receiving(self) -> bool:
        return bool(self.dest.state != CfdpState.IDLE)

    @property
    def idle(self) -> bool:
        return not (self.sending or self.receiving or self._out)

    @property
    def send_progress(self) -> int:
        """Octets of the file sent at least once (the source's progress)."""
        return self.source.progress if self.sending else 0

    @property
    def receive_progress(self) -> int:
        """Highest offset the receiver wrote (gaps below it may still be missing)."""
        return self.dest.progress if self.receiving else 0

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- PDUs in and out -------------------------------------------------------------------

    def receive_pdu(self, data: bytes, now: float) -> None:
        """A PDU from the peer (the user data of one Space Packet on CFDP_APID)."""
        CLOCK.now = now
        self._now = now
        self.counters.pdus_received += 1
        try:
            pdu = PduFactory.from_raw(data)
        except (ValueError, IndexError, KeyError, struct.error) as exc:
            self._drop("undecodable", "5.1", f"{type(exc).__name__}: {exc}", len(data))
            return
        if pdu is None:
            self._drop("undecodable", "5.1", "empty or unknown directive", len(data))
            return
        if int(pdu.dest_entity_id.value) not in (self.config.local_id, self.config.remote_id):
            self._drop("unknown-entity", "5.1.2", f"entity {pdu.dest_entity_id.value}", len(data))
            return
        tid = _tid(pdu.source_entity_id, pdu.transaction_seq_num)
        to_sender = self._for_source(pdu)
        if to_sender:
            self._receive_at_source(pdu, tid)
        else:
            self._receive_at_dest(pdu, tid, len(data))

    def _for_source(self, pdu: GenericPduPacket) -> bool:
        """Where 4.5.3 sends a PDU: the sender's half (Finished, NAK, Keep Alive, the ACK
        of an EOF) or the receiver's half (everything else)."""
        if pdu.pdu_type == PduType.FILE_DATA:
            return False
        directive = pdu.directive_type
        if directive in (
            DirectiveType.FINISHED_PDU,
            DirectiveType.NAK_PDU,
            DirectiveType.KEEP_ALIVE_PDU,
        ):
            return True
        if directive == DirectiveType.ACK_PDU:
            return bool(pdu.directive_code_of_acked_pdu == DirectiveType.EOF_PDU)
        return False

    def _receive_at_source(self, pdu: GenericPduPacket, tid: tuple[int, int]) -> None:
        if tid != self._sending or not self.sending:
            self._drop("no-transaction", "4.6.1", f"transaction {tid} is not being sent", 0)
            return
        if isinstance(pdu, NakPdu):
            self.counters.naks_received += 1
        if (
            isinstance(pdu, FinishedPdu)
            and pdu.condition_code != ConditionCode.NO_ERROR
            and self.source.step.name not in ("WAITING_FOR_FINISHED", "WAITING_FOR_EOF_ACK")
        ):
            # The receiver ended the transaction early: it refused the file.
            reason = _finished_reason(pdu)
            logger.info("< Finished %s early: %s", pdu.condition_code.name, reason)
            self._peer_refusal = (pdu.condition_code, reason)
            self._drain_handler(self.source)
            tid_obj = self.source.transaction_id
            if tid_obj is not None:
                self.source.cancel_request(tid_obj)
            self._run_source(None)
            return
        if isinstance(pdu, FinishedPdu) and self.source.step.name == "WAITING_FOR_EOF_ACK":
            # The ACK of our EOF was lost but the Finished PDU came: the receiver had the
            # EOF (it sends Finished only after it, 4.6.3.2.2).  cfdp-py ignores a Finished
            # PDU until the ACK comes, and its receiver does not ACK a repeated EOF once it
            # waits for the ACK of its Finished: left alone, both would wait until their
            # positive ACK limits.  The ACK the EOF earned is given to the handler first.
            ack = AckPdu(
                dataclasses.replace(self.source.pdu_conf, direction=Direction.TOWARDS_SENDER),
                DirectiveType.EOF_PDU,
                ConditionCode.NO_ERROR,
                TransactionStatus.ACTIVE,
            )
            self._run_source(ack)
        self._run_source(pdu)

    def _receive_at_dest(self, pdu: GenericPduPacket, tid: tuple[int, int], octets: int) -> None:
        refused = self._refused.get(tid)
        if refused is not None:
            self._answer_refused(pdu, refused)
            return
        if isinstance(pdu, MetadataPdu) and not self.receiving:
            if tid in self._completed:
                self._refuse(
                    pdu,
                    Refusal(ConditionCode.FILESTORE_REJECTION, f"duplicate transaction {tid}"),
                )
                return
            incoming = IncomingFile(
                transaction=TransactionId(pdu.source_entity_id, pdu.transaction_seq_num),
                source_name=pdu.source_file_name or "",
                dest_name=pdu.dest_file_name or "",
                size=pdu.file_size,
            )
            refusal = None if self._admit is None else self._admit(incoming)
            if refusal is not None:
                self._refuse(pdu, refusal)
                return
            self._receiving = tid
            self._receiving_name = incoming.dest_name
            resume = _resume_offset(pdu)
            if resume:
                self._run_dest_resumed(pdu, incoming.dest_name, resume)
                return
            self._events.append(
                TransferStarted(
                    incoming.transaction,
                    False,
                    incoming.source_name,
                    incoming.dest_name,
                    incoming.size,
                    self._now,
                )
            )
        elif not self.receiving and tid in self._completed:
            # A repeat of a finished transaction's EOF: cfdp-py answers it as inactive.
            pass
        if isinstance(pdu, FileDataPdu):
            self.counters.file_data_pdus_received += 1
            self.counters.file_data_octets_received += len(pdu.file_data)
        self._run_dest(pdu)

    def _run_dest_resumed(self, pdu: MetadataPdu, dest_name: str, offset: int) -> None:
        """Start a resumed transaction: keep the first ``offset`` octets the file already
        holds.  cfdp-py truncates an existing destination file at the Metadata PDU, so
        the partial file is set aside, the handler starts the transaction, and the kept
        octets are replayed into it as local file data PDUs (written back, nothing sent
        or asked for): its progress then stands at ``offset``."""
        path = Path(dest_name)
        aside = Path(f"{dest_name}.resume")
        fs = self.filestore
        if not fs.file_exists(path) or fs.file_size(path) < offset:
            logger.info("resume of %s at %d: no such partial file, NAKs will fill", path, offset)
            self._run_dest(pdu)
            return
        fs.delete_file(aside)
        fs.rename_file(path, aside)
        self._run_dest(pdu)
        conf = dataclasses.replace(pdu.pdu_header.pdu_conf)
        step = max(1, self.config.max_pdu_length - 64)
        for start in range(0, offset, step):
            data = fs.read_data(aside, start, min(step, offset - start))
            self._run_dest(FileDataPdu(conf, FileDataParams(file_data=data, offset=start)))
        fs.delete_file(aside)
        self.counters.file_data_octets_resumed += offset
        logger.info("resumed %s at %d octets", path, offset)

    def _refuse(self, pdu: MetadataPdu, refusal: Refusal) -> None:
        tid = _tid(pdu.source_entity_id, pdu.transaction_seq_num)
        logger.info("refused transaction %s: %s", tid, refusal.reason)
        self.counters.transactions_refused += 1
        conf = PduConfig(
            source_entity_id=pdu.source_entity_id,
            dest_entity_id=pdu.dest_entity_id,
            transaction_seq_num=pdu.transaction_seq_num,
            trans_mode=pdu.transmission_mode,
            direction=Direction.TOWARDS_SENDER,
            file_flag=pdu.pdu_header.file_flag,
        )
        response = FileStoreResponseTlv(
            action_code=FilestoreActionCode.CREATE_FILE_SNM,
            status_code=FilestoreResponseStatusCode.CREATE_NOT_ALLOWED,
            first_file_name=(pdu.dest_file_name or "")[:200],
            filestore_msg=CfdpLv(refusal.reason.encode()[:255]),
        )
        finished = FinishedPdu(
            conf,
            FinishedParams(
                condition_code=refusal.condition,
                delivery_code=DeliveryCode.DATA_INCOMPLETE,
                file_status=FileStatus.DISCARDED_FILESTORE_REJECTION,
                file_store_responses=[response],
            ),
        )
        self._refused[tid] = finished
        self._queue(finished.pack())

    def _answer_refused(self, pdu: GenericPduPacket, finished: FinishedPdu) -> None:
        """A refused transaction's EOF is acknowledged (4.7) and answered with the Finished
        PDU again; its file data is dropped unwritten."""
        self.counters.pdus_refused += 1
        if isinstance(pdu, EofPdu):
            # spacepackets 0.32 unpacks the EOF's condition code unshifted (the octet's high
            # nibble, 5.2.2): bring it back to the code.
            code = int(pdu.condition_code)
            condition = ConditionCode(code >> 4 if code > 0x0F else code)
            ack = AckPdu(
                finished.pdu_header.pdu_conf,
                DirectiveType.EOF_PDU,
                condition,
                TransactionStatus.TERMINATED,
            )
            if pdu.pdu_header.transmission_mode == TransmissionMode.ACKNOWLEDGED:
                self._queue(ack.pack())
            # After an EOF (cancel) too: the sender waits for the Finished PDU (4.11.2.2).
            self._queue(finished.pack())
        elif isinstance(pdu, MetadataPdu):
            self._queue(finished.pack())

    def pdus_to_send(self, now: float, limit: int | None = None) -> list[bytes]:
        """PDUs for the peer, oldest first: at most ``limit`` (flow control: the caller
        asks for more when the link has room), all that are ready if None."""
        CLOCK.now = now
        self._now = now
        while (limit is None or len(self._out) < limit) and self.source.state != CfdpState.IDLE:
            before = len(self._out)
            self._run_source(None)
            if len(self._out) == before:
                break
        take = len(self._out) if limit is None else min(limit, len(self._out))
        return [self._out.popleft() for _ in range(take)]

    # -- timers ----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next: every ``poll_s`` while busy."""
        if self.sending or self.receiving:
            return self._now + self.config.poll_s
        return None

    def handle_timer(self, now: float) -> None:
        """Run cfdp-py's timers (positive ACK, NAK, check) at ``now``."""
        CLOCK.now = now
        self._now = now
        if self.receiving:
            self._run_dest(None)
        if self.sending and not self._out:
            self._run_source(None)

    # -- driving the handlers ----------------------------------------------------------------

    def _run_source(self, pdu: GenericPduPacket | None) -> None:
        self._drain_handler(self.source)
        try:
            self.source.state_machine(pdu)
        except _PDU_REFUSED as exc:
            self._drop(type(exc).__name__, "4.6", str(exc), 0)
        self._drain_handler(self.source)

    def _run_dest(self, pdu: GenericPduPacket | None) -> None:
        self._drain_handler(self.dest)
        try:
            self.dest.state_machine(pdu)
            if pdu is not None and self.dest.packets_ready:
                self._drain_handler(self.dest)
                self.dest.state_machine(None)
        except _PDU_REFUSED as exc:
            self._drop(type(exc).__name__, "4.6", str(exc), 0)
        self._drain_handler(self.dest)

    def _drain_handler(self, handler: SourceHandler | DestHandler) -> None:
        while (holder := handler.get_next_packet()) is not None:
            pdu = holder.pdu
            if pdu is None:
                continue
            if isinstance(pdu, FileDataPdu):
                octets = len(pdu.file_data)
                self.counters.file_data_pdus_sent += 1
                self.counters.file_data_octets_sent += octets
                if pdu.offset < self._sent_up_to:
                    self.counters.file_data_retransmitted += 1
                    self.counters.file_data_octets_retransmitted += octets
                else:
                    self._sent_up_to = pdu.offset + octets
            elif isinstance(pdu, NakPdu):
                self.counters.naks_sent += 1
                self.counters.segment_requests_sent += len(pdu.segment_requests)
            self._queue(pdu.pack())

    def _queue(self, raw: bytes | bytearray) -> None:
        self.counters.pdus_sent += 1
        self._out.append(bytes(raw))

    # -- indications -------------------------------------------------------------------------

    def _fault(self, condition: ConditionCode) -> None:
        self._last_fault = condition
        self.counters.faults[condition.name] = self.counters.faults.get(condition.name, 0) + 1

    def _finished(self, params: TransactionFinishedParams) -> None:
        tid = _tid(params.transaction_id.source_id, params.transaction_id.seq_num)
        sending = tid == self._sending and int(params.transaction_id.source_id.value) == (
            self.config.local_id
        )
        finished = params.finished_params
        condition = finished.condition_code
        reason = ""
        if sending and self._peer_refusal is not None:
            condition, reason = self._peer_refusal
            self._peer_refusal = None
        elif condition != ConditionCode.NO_ERROR:
            reason = _finished_reason_params(finished) or condition.name.lower().replace("_", " ")
        delivered = finished.delivery_code == DeliveryCode.DATA_COMPLETE and (
            condition == ConditionCode.NO_ERROR
        )
        if not sending:
            self._completed.add(tid)
        self._events.append(
            TransferFinished(
                params.transaction_id,
                sending,
                "" if sending else self._receiving_name,
                condition,
                delivered,
                reason,
                self._now,
            )
        )

    def _drop(self, reason: str, clause: str, detail: str, octets: int) -> None:
        self.counters.dropped += 1
        event = Dropped(
            layer=Layer.APPLICATION,
            reason=f"cfdp-{reason}",
            clause=f"{CFDP_BOOK} {clause}",
            octets=octets,
            detail=detail,
            at=self._now,
        )
        logger.debug("dropped %s: %s", event.reason, detail)
        self._events.append(self.drops.count(event))


def _finished_reason(pdu: FinishedPdu) -> str:
    return _finished_reason_params(pdu.finished_params) or pdu.condition_code.name


def _finished_reason_params(params: FinishedParams) -> str:
    for response in params.file_store_responses or ():
        text = response.filestore_msg.value.decode("utf-8", "replace")
        if text:
            return str(text)
    return ""


def _resume_offset(pdu: MetadataPdu) -> int:
    """The offset a Metadata PDU's resume Message to User gives, or 0."""
    for tlv in pdu.options_as_tlv() or ():
        if tlv.tlv_type != TlvType.MESSAGE_TO_USER:
            continue
        value = bytes(tlv.value)
        if value.startswith(RESUME_MESSAGE) and value[len(RESUME_MESSAGE) :].isdigit():
            return int(value[len(RESUME_MESSAGE) :])
    return 0


def _starting_at(first: int) -> Callable[[], int]:
    """A transaction sequence number counter (5.1.5) starting at ``first`` (two octets)."""
    state = [first % 65536]

    def next_number() -> int:
        value = state[0]
        state[0] = (value + 1) % 65536
        return value

    return next_number


__all__ = [
    "RESUME_MESSAGE",
    "Admit",
    "CfdpConfig",
    "CfdpCounters",
    "CfdpEntity",
    "Event",
    "IncomingFile",
    "Refusal",
    "TransferFinished",
    "TransferStarted",
    "default_cfdp_config",
]
