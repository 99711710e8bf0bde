"""``zmq://`` links: the downlink as complex baseband samples over ZeroMQ, for a GNU
Radio flowgraph (or any other program) to sit between the two ends.

``zmq://HOST:PORT?iq=ENDPOINT&sps=4&baud=9600&rolloff=0.35``

* the **uplink** stays a plain UDP link at ``HOST:PORT`` (:class:`~linkstack.aio.links.UdpLink`:
  the spacecraft binds, the ground sends CLTUs to it);
* the **downlink** is IQ: the spacecraft end runs each CADU it sends through the TM
  convolutional code (CCSDS 131.0-B-5 3.3, rate 1/2, K = 7, one continuous stream
  with no tail) and the BPSK modulator (:class:`~linkstack.radio.modem.Modulator`,
  SRRC, ``sps`` samples per symbol, ``rolloff``), and PUSHes the samples on a ZeroMQ
  socket bound at ``iq`` (a ZeroMQ endpoint, ``tcp://127.0.0.1:6001``; ``*`` as the
  port picks a free one): raw little-endian complex64, no header, what GNU Radio's
  ``zeromq.pull_source(gr.sizeof_gr_complex, 1, ENDPOINT, timeout, False, -1)``
  reads.  Ahead of the first CADU go the modulator's ramp and 1024 bits of the
  pseudo-random sequence through the encoder, as :class:`~linkstack.radio.receiver.IqTransmitter`
  sends them.  The ground end connects a PULL socket to its ``iq`` (a GNU Radio
  ``zeromq.push_sink``, or the spacecraft's endpoint directly), demodulates
  (:class:`~linkstack.radio.modem.Demodulator`) and hands the soft symbols to a
  :class:`~linkstack.coding.soft.SoftCaduSynchronizer` with ``output="cadus"``, which
  resolves the symbol alignment and the carrier phase, Viterbi-decodes and gives each
  CADU re-aligned (ASM and codeblock, still randomized); those go to ``on_receive``,
  as CADUs from a TCP or UDP link would.

PUSH/PULL is reliable: samples wait in the spacecraft's socket until a peer connects.
A CADU comes out of the ground's receiver once the samples of the next one are in
(filters, the Viterbi decoder's traceback, the synchronizer's look-ahead), so a
spacecraft that sends idle frames (``onboard serve`` does) keeps the last one moving.
``baud`` only scales what the demodulator reports in Hz (sample rate ``baud * sps``).

pyzmq is imported when a link is opened, so that the other links work without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt

from linkstack.aio.links import LinkAddress, Receiver, Role, UdpLink, _UdpProtocol
from linkstack.coding.convolutional import ConvolutionalEncoder, unpack_bits
from linkstack.coding.soft import CaduAligned, SoftCaduSynchronizer
from linkstack.coding.tm import TmCodingConfig, pseudo_random_sequence
from linkstack.errors import LocalProtocolError
from linkstack.radio.modem import C64, Demodulator, Modulator

if TYPE_CHECKING:
    import zmq.asyncio

logger = logging.getLogger(__name__)

__all__ = ["IqCaduModulator", "IqCaduReceiver", "ZmqLink", "ZmqOptions", "open_zmq"]

#: Uncoded idle symbols ahead of the first CADU (as IqTransmitter: the receiver's AGC
#: and loops settle on them).
RAMP_SYMBOLS: Final = 1024
#: Pseudo-random bits through the encoder ahead of the first CADU (as IqTransmitter).
LEAD_BITS: Final = 1024
#: Samples per demodulator call.
BLOCK_SAMPLES: Final = 4096
CODE_RATE: Final = "1/2"
_QUERY_KEYS: Final = frozenset({"iq", "sps", "baud", "rolloff"})


@dataclass(frozen=True, slots=True)
class ZmqOptions:
    """A ``zmq://`` URL: the UDP uplink address and the IQ downlink's parameters."""

    uplink: LinkAddress
    iq: str
    sps: int = 4
    baud: float = 9600.0
    rolloff: float = 0.35

    @classmethod
    def parse(cls, url: str) -> ZmqOptions:
        """``zmq://HOST:PORT?iq=ENDPOINT[&sps=N][&baud=B][&rolloff=R]``; raises
        LocalProtocolError."""
        parts = urlsplit(url)
        if parts.scheme != "zmq":
            raise LocalProtocolError(f"link {url!r}: not a zmq:// URL")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or parts.path not in ("", "/"):
            raise LocalProtocolError(f"link {url!r}: expected zmq://HOST:PORT?iq=ENDPOINT")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - _QUERY_KEYS)
        if unknown:
            raise LocalProtocolError(
                f"link {url!r}: unknown option {unknown[0]!r} (known: iq, sps, baud, rolloff)"
            )
        if any(len(values) != 1 for values in query.values()):
            raise LocalProtocolError(f"link {url!r}: an option is given twice")
        options = {key: values[0] for key, values in query.items()}
        iq = options.get("iq", "")
        if "://" not in iq:
            raise LocalProtocolError(
                f"link {url!r}: iq=ENDPOINT, a ZeroMQ endpoint such as tcp://127.0.0.1:6001"
            )
        try:
            sps = int(options.get("sps", "4"))
            baud = float(options.get("baud", "9600"))
            rolloff = float(options.get("rolloff", "0.35"))
        except ValueError as exc:
            raise LocalProtocolError(f"link {url!r}: {exc}") from exc
        if sps < 2 or not baud > 0 or not 0 < rolloff <= 1:
            raise LocalProtocolError(
                f"link {url!r}: sps must be >= 2, baud > 0 and rolloff in (0, 1]"
            )
        return cls(LinkAddress("udp", parts.hostname, port), iq, sps, baud, rolloff)


# -- the sans-I/O halves -------------------------------------------------------------------


class IqCaduModulator:
    """CADUs in, BPSK samples out: one continuous convolutionally coded stream."""

    __slots__ = ("_encoder", "_modulator", "_started")

    def __init__(self, *, sps: int = 4, rolloff: float = 0.35) -> None:
        self._encoder = ConvolutionalEncoder(CODE_RATE)
        self._modulator = Modulator("bpsk", sps, rolloff, ramp_symbols=RAMP_SYMBOLS)
        self._started = False

    def modulate(self, cadu: bytes) -> C64:
        """The samples of the next CADU (the ramp and the lead first, on the first call;
        the filter's last samples come with the next call)."""
        bits = [self._encoder.encode(unpack_bits(cadu))]
        if not self._started:
            self._started = True
            lead = unpack_bits(pseudo_random_sequence(-(-LEAD_BITS // 8)))[:LEAD_BITS]
            bits.insert(0, self._encoder.encode(lead))
        return self._modulator.process(np.concatenate(bits))


class IqCaduReceiver:
    """Samples in, re-aligned CADU octets out (demodulator + soft CADU synchronizer)."""

    __slots__ = ("demodulator", "samples", "synchronizer")

    def __init__(
        self, coding: TmCodingConfig, *, sps: int = 4, rolloff: float = 0.35, baud: float = 9600.0
    ) -> None:
        self.demodulator = Demodulator("bpsk", sps, rolloff, sample_rate=baud * sps)
        self.synchronizer = SoftCaduSynchronizer(coding, rate=CODE_RATE, output="cadus")
        self.samples = 0

    def receive(self, samples: npt.NDArray[np.complex64]) -> list[bytes]:
        """The CADUs these samples completed, in order."""
        for start in range(0, samples.size, BLOCK_SAMPLES):
            soft = self.demodulator.process(samples[start : start + BLOCK_SAMPLES])
            if soft.size:
                self.synchronizer.receive_symbols(soft)
        self.samples += samples.size
        cadus: list[bytes] = []
        while (event := self.synchronizer.next_event()) is not None:
            if isinstance(event, CaduAligned):
                cadus.append(event.cadu)
        return cadus


# -- the asyncio link ----------------------------------------------------------------------


class ZmqLink(UdpLink):
    """A UDP uplink and an IQ downlink over ZeroMQ (PUSH at the spacecraft, PULL at the
    ground).  ``send`` at the spacecraft modulates and pushes; at the ground it sends
    the CLTU by UDP."""

    def __init__(
        self,
        protocol: _UdpProtocol,
        *,
        role: Role,
        options: ZmqOptions,
        coding: TmCodingConfig,
        receiver: Receiver,
    ) -> None:
        super().__init__(protocol)
        import zmq
        import zmq.asyncio

        self.role: Role = role
        self.options = options
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._context = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket = self._context.socket(
            zmq.PUSH if role == "spacecraft" else zmq.PULL
        )
        self._socket.setsockopt(zmq.LINGER, 0)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._modulator = IqCaduModulator(sps=options.sps, rolloff=options.rolloff)
        self._demodulator = IqCaduReceiver(
            coding, sps=options.sps, rolloff=options.rolloff, baud=options.baud
        )
        self.samples_sent = 0
        self.cadus_received = 0
        self.iq_error: str | None = None
        try:
            if role == "spacecraft":
                self._socket.bind(options.iq)
                self._task = self._loop.create_task(self._push())
            else:
                self._socket.connect(options.iq)
                self._task = self._loop.create_task(self._pull())
        except zmq.ZMQError as exc:
            self._context.destroy(linger=0)
            super().close()
            raise OSError(exc.errno, f"{options.iq}: {exc}") from exc

    @property
    def iq_endpoint(self) -> str:
        """The IQ endpoint as bound or connected (a ``*`` port resolved)."""
        import zmq

        endpoint: Any = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)

    def send(self, data: bytes) -> None:
        if self.role == "ground":
            super().send(data)
            return
        samples = self._modulator.modulate(data)
        self.samples_sent += samples.size
        self._queue.put_nowait(samples.astype("<c8").tobytes())

    def close(self) -> None:
        self._task.cancel()
        self._context.destroy(linger=0)
        super().close()

    @property
    def failure(self) -> str | None:
        return self.iq_error or super().failure

    async def _push(self) -> None:
        try:
            while True:
                await self._socket.send(await self._queue.get(), copy=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a closed context, a broken socket
            self.iq_error = f"IQ push to {self.options.iq}: {exc}"
            logger.debug("zmq: %s", self.iq_error)

    async def _pull(self) -> None:
        try:
            while True:
                message = await self._socket.recv(copy=True)
                samples = np.frombuffer(message, "<c8")
                if samples.size == 0:
                    continue
                # The demodulator and the Viterbi decoder off the event loop, one
                # message at a time (in order).
                cadus = await asyncio.to_thread(self._demodulator.receive, samples)
                now = self._loop.time()
                for cadu in cadus:
                    self.cadus_received += 1
                    self._receiver(cadu, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.iq_error = f"IQ pull from {self.options.iq}: {exc}"
            logger.debug("zmq: %s", self.iq_error)


async def open_zmq(
    url: str, *, role: Role, on_receive: Receiver, tm_coding: TmCodingConfig | None = None
) -> ZmqLink:
    """Open a ``zmq://`` link: the UDP uplink (the spacecraft binds, the ground sends to
    it) and the IQ downlink (the spacecraft binds its PUSH socket, the ground connects
    its PULL socket).  ``tm_coding`` (default ``TmCodingConfig()``) gives the CADU grid."""
    options = ZmqOptions.parse(url)
    loop = asyncio.get_running_loop()
    protocol = _UdpProtocol(loop, on_receive, answer=role == "spacecraft")
    address = options.uplink
    if role == "spacecraft":
        await loop.create_datagram_endpoint(
            lambda: protocol, local_addr=(address.host, address.port)
        )
    else:
        await loop.create_datagram_endpoint(
            lambda: protocol, remote_addr=(address.host, address.port)
        )
        protocol.peer = (address.host, address.port)
    try:
        return ZmqLink(
            protocol,
            role=role,
            options=options,
            coding=tm_coding or TmCodingConfig(),
            receiver=on_receive,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            if protocol.transport is not None:
                protocol.transport.close()
        raise
