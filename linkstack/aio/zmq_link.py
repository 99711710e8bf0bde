"""``zmq://`` links: the radio link as complex baseband samples over ZeroMQ, for a GNU
Radio flowgraph (or any other program) to sit between the two ends.

Two URL forms:

``zmq://?tx=ENDPOINT&rx=ENDPOINT[&sps=4][&baud=9600][&rolloff=0.35]``
    **both directions as IQ.**  Each end binds a PUSH socket at ``tx`` for what it
    sends and connects a PULL socket to ``rx`` for what it receives.  Wired straight
    together, one end's ``tx`` is the other's ``rx``; through a channel flowgraph
    (``examples/gnuradio_channel.py``), each end's ``tx`` is where the flowgraph pulls
    from and its ``rx`` where the flowgraph pushes to (four endpoints).
``zmq://HOST:PORT?iq=ENDPOINT[&sps=...]``
    **the downlink as IQ, the uplink as UDP** at ``HOST:PORT``
    (:class:`~linkstack.aio.links.UdpLink`: the spacecraft binds, the ground sends
    CLTUs to it); ``iq`` is the downlink's endpoint: the spacecraft binds its PUSH
    socket there, the ground connects its PULL socket to it.

An endpoint is a ZeroMQ address (``tcp://127.0.0.1:6001``; ``*`` as the port of a
bound one picks a free port, :attr:`ZmqLink.bound_url` tells which).  Samples are raw
little-endian complex64 with no header, what GNU Radio's ``zeromq.pull_source(
gr.sizeof_gr_complex, 1, ENDPOINT, timeout, False, -1)`` reads and ``push_sink``
writes.  ``sps`` (samples per symbol) and ``rolloff`` (SRRC) must agree at both ends;
``baud`` only scales what the demodulators report in Hz (sample rate ``baud * sps``).

* **Downlink** (:class:`IqCaduModulator` at the spacecraft): each CADU through the TM
  convolutional code (CCSDS 131.0-B-5 3.3, rate 1/2, K = 7, one continuous stream with
  no tail) and the BPSK :class:`~linkstack.radio.modem.Modulator`; ahead of the first
  CADU the modulator's ramp and 1024 bits of the pseudo-random sequence through the
  encoder, as :class:`~linkstack.radio.receiver.IqTransmitter` sends them.  The ground
  runs an :class:`~linkstack.radio.receiver.IqReceiver` with ``output="cadus"``
  (demodulator, then the soft CADU synchronizer: symbol alignment, carrier phase,
  Viterbi) and hands each CADU *as received* (ASM and codeblock, still randomized, not
  R-S corrected) to ``on_receive``, so that the ground endpoint derandomizes, corrects
  and counts the R-S corrections as it does for CADUs from a TCP or UDP link.
* **Uplink** (IQ form): each CLTU as PLOP-2 sends it, acquisition sequence, CLTU, idle
  sequence, BPSK (:class:`~linkstack.radio.uplink.CltuModulator`); the spacecraft
  demodulates, finds the start sequence at any bit offset and in either polarity
  (:class:`~linkstack.coding.cltu_sync.CltuBitSynchronizer`) and hands each CLTU,
  re-aligned, to ``on_receive``, for its CLTU decoder to correct and count.

PUSH/PULL is reliable: samples wait in the sender's socket until a peer connects, so
the ends and a flowgraph may start in any order.  A CADU comes out of the ground's
receiver once the samples of the next one are in (filters, the Viterbi decoder's
traceback, the synchronizer's look-ahead), so a spacecraft that sends idle frames
(``onboard serve`` does) keeps the last one moving; the uplink's idle sequence does
the same for each CLTU.

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

from linkstack.aio.links import LinkAddress, Receiver, Role, UdpLink, _open_udp
from linkstack.coding.convolutional import ConvolutionalEncoder, unpack_bits
from linkstack.coding.tm import TmCodingConfig, pseudo_random_sequence
from linkstack.errors import LocalProtocolError
from linkstack.radio.modem import C64, Modulator
from linkstack.radio.receiver import CaduReceived, IqReceiver
from linkstack.radio.uplink import CltuModulator, CltuReceiver

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
_QUERY_KEYS: Final = ("iq", "tx", "rx", "sps", "baud", "rolloff")


@dataclass(frozen=True, slots=True)
class ZmqOptions:
    """A ``zmq://`` URL: the IQ endpoints (and the UDP uplink of the ``iq=`` form) and
    the modem's parameters."""

    #: The UDP uplink (``zmq://HOST:PORT?iq=...``); None when both directions are IQ.
    uplink: LinkAddress | None
    #: ``iq=``: the downlink's endpoint (spacecraft binds, ground connects).
    iq: str | None = None
    #: ``tx=``: this end's transmit endpoint (bound PUSH).
    tx: str | None = None
    #: ``rx=``: this end's receive endpoint (connected PULL).
    rx: str | None = None
    sps: int = 4
    baud: float = 9600.0
    rolloff: float = 0.35

    @classmethod
    def parse(cls, url: str) -> ZmqOptions:
        """``zmq://?tx=ENDPOINT&rx=ENDPOINT[&sps=N][&baud=B][&rolloff=R]`` or
        ``zmq://HOST:PORT?iq=ENDPOINT[&...]``; raises LocalProtocolError."""
        parts = urlsplit(url)
        if parts.scheme != "zmq":
            raise LocalProtocolError(f"link {url!r}: not a zmq:// URL")
        usage = "expected zmq://?tx=ENDPOINT&rx=ENDPOINT or zmq://HOST:PORT?iq=ENDPOINT"
        if parts.path not in ("", "/"):
            raise LocalProtocolError(f"link {url!r}: {usage}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(_QUERY_KEYS))
        if unknown:
            raise LocalProtocolError(
                f"link {url!r}: unknown option {unknown[0]!r} (known: {', '.join(_QUERY_KEYS)})"
            )
        twice = sorted(key for key, values in query.items() if len(values) != 1)
        if twice:
            raise LocalProtocolError(f"link {url!r}: option {twice[0]!r} is given twice")
        options = {key: values[0] for key, values in query.items()}
        for key in ("iq", "tx", "rx"):
            if key in options and "://" not in options[key]:
                raise LocalProtocolError(
                    f"link {url!r}: {key}={options[key]!r} is not a ZeroMQ endpoint"
                    " such as tcp://127.0.0.1:6001"
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
                f" (got sps={sps}, baud={baud:g}, rolloff={rolloff:g})"
            )
        if "iq" in options:
            if "tx" in options or "rx" in options:
                raise LocalProtocolError(
                    f"link {url!r}: iq= (IQ downlink, UDP uplink) goes without tx= and rx="
                )
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None:
                raise LocalProtocolError(
                    f"link {url!r}: iq= needs HOST:PORT for the UDP uplink ({usage})"
                )
            uplink = LinkAddress("udp", parts.hostname, port)
            return cls(uplink, iq=options["iq"], sps=sps, baud=baud, rolloff=rolloff)
        if "tx" not in options or "rx" not in options:
            raise LocalProtocolError(f"link {url!r}: {usage}")
        if parts.netloc:
            raise LocalProtocolError(
                f"link {url!r}: HOST:PORT (a UDP uplink) goes with iq=, not with tx= and rx="
            )
        return cls(None, tx=options["tx"], rx=options["rx"], sps=sps, baud=baud, rolloff=rolloff)

    def transmit_endpoint(self, role: Role) -> str | None:
        """Where this end binds its PUSH socket (None: it sends by UDP)."""
        if self.uplink is None:
            return self.tx
        return self.iq if role == "spacecraft" else None

    def receive_endpoint(self, role: Role) -> str | None:
        """Where this end connects its PULL socket (None: it receives by UDP)."""
        if self.uplink is None:
            return self.rx
        return self.iq if role == "ground" else None


# -- the sans-I/O halves of the downlink ------------------------------------------------------


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
        bits = []
        if not self._started:
            self._started = True
            lead = unpack_bits(pseudo_random_sequence(-(-LEAD_BITS // 8)))[:LEAD_BITS]
            # The lead goes through the encoder first: one unbroken code sequence, so
            # the first CADU decodes as cleanly as the rest.
            bits.append(self._encoder.encode(lead))
        bits.append(self._encoder.encode(unpack_bits(cadu)))
        return self._modulator.process(np.concatenate(bits))


class IqCaduReceiver:
    """Samples in, CADUs as received out: an :class:`IqReceiver` with
    ``output="cadus"`` (demodulator + soft CADU synchronizer, no R-S decoding)."""

    __slots__ = ("receiver", "samples")

    def __init__(
        self, coding: TmCodingConfig, *, sps: int = 4, rolloff: float = 0.35, baud: float = 9600.0
    ) -> None:
        self.receiver = IqReceiver(
            coding,
            sample_rate=baud * sps,
            rate=CODE_RATE,
            sps=sps,
            rolloff=rolloff,
            block_samples=BLOCK_SAMPLES,
            output="cadus",
        )
        self.samples = 0

    def receive(self, samples: npt.NDArray[np.complex64]) -> list[bytes]:
        """The CADUs these samples completed, in order."""
        self.receiver.receive_samples(samples)
        self.samples += samples.size
        cadus: list[bytes] = []
        while (event := self.receiver.next_event()) is not None:
            if isinstance(event, CaduReceived) and event.cadu is not None:
                cadus.append(event.cadu)
        return cadus


# -- the asyncio link ----------------------------------------------------------------------


class ZmqLink:
    """IQ over ZeroMQ (a PUSH socket for what this end sends, a PULL socket for what it
    receives) and, in the ``iq=`` form, a UDP uplink."""

    def __init__(
        self,
        *,
        role: Role,
        options: ZmqOptions,
        coding: TmCodingConfig,
        receiver: Receiver,
        udp: UdpLink | None,
    ) -> None:
        import zmq
        import zmq.asyncio

        self.role: Role = role
        self.options = options
        self._receiver = receiver
        self._udp = udp
        self._loop = asyncio.get_running_loop()
        self._context = zmq.asyncio.Context()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._tx: zmq.asyncio.Socket | None = None
        self._rx: zmq.asyncio.Socket | None = None
        self._cadu_modulator = IqCaduModulator(sps=options.sps, rolloff=options.rolloff)
        self._cltu_modulator = CltuModulator(sps=options.sps, rolloff=options.rolloff)
        self._downlink_receiver = IqCaduReceiver(
            coding, sps=options.sps, rolloff=options.rolloff, baud=options.baud
        )
        self._uplink_receiver = CltuReceiver(
            sps=options.sps, rolloff=options.rolloff, sample_rate=options.baud * options.sps
        )
        #: Samples pushed, samples pulled, units (CADUs or CLTUs) handed to on_receive.
        self.samples_sent = 0
        self.samples_received = 0
        self.units_received = 0
        self.iq_error: str | None = None
        tx, rx = options.transmit_endpoint(role), options.receive_endpoint(role)
        endpoint = ""
        try:
            if tx is not None:
                endpoint = tx
                self._tx = self._context.socket(zmq.PUSH)
                self._tx.setsockopt(zmq.LINGER, 0)
                self._tx.bind(tx)
                self._tasks.append(self._loop.create_task(self._push()))
            if rx is not None:
                endpoint = rx
                self._rx = self._context.socket(zmq.PULL)
                self._rx.setsockopt(zmq.LINGER, 0)
                self._rx.connect(rx)
                self._tasks.append(self._loop.create_task(self._pull()))
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(exc.errno, f"{endpoint}: {exc}") from exc

    @staticmethod
    def _endpoint(socket: zmq.asyncio.Socket | None) -> str | None:
        import zmq

        if socket is None:
            return None
        endpoint: Any = socket.getsockopt(zmq.LAST_ENDPOINT)
        return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)

    @property
    def tx_endpoint(self) -> str | None:
        """The transmit endpoint as bound (a ``*`` port resolved); None: UDP."""
        return self._endpoint(self._tx)

    @property
    def bound_url(self) -> str:
        """This end's URL with its bound ports resolved (to print, or give the peer)."""
        o = self.options
        query = f"sps={o.sps}&baud={o.baud:g}&rolloff={o.rolloff:g}"
        if o.uplink is None:
            return f"zmq://?tx={self.tx_endpoint}&rx={o.rx}&{query}"
        address = self.local_address or (o.uplink.host, o.uplink.port)
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        iq = self.tx_endpoint or o.iq
        return f"zmq://{host}:{address[1]}?iq={iq}&{query}"

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The UDP uplink's bound (host, port), in the ``iq=`` form."""
        return None if self._udp is None else self._udp.local_address

    def send(self, data: bytes) -> None:
        """Modulate and push a unit (a CADU at the spacecraft, a CLTU at the ground),
        or send it by UDP in the ``iq=`` form's uplink."""
        if self._tx is None:
            if self._udp is not None:
                self._udp.send(data)
            return
        if self.role == "spacecraft":
            samples = self._cadu_modulator.modulate(data)
        else:
            samples = self._cltu_modulator.modulate(data)
        self.samples_sent += samples.size
        self._queue.put_nowait(samples.astype("<c8").tobytes())

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._context.destroy(linger=0)
        if self._udp is not None:
            self._udp.close()

    @property
    def failure(self) -> str | None:
        """Why the link broke (a ZeroMQ error), or what the UDP uplink last reported."""
        return self.iq_error or (None if self._udp is None else self._udp.failure)

    async def _push(self) -> None:
        assert self._tx is not None
        try:
            while True:
                await self._tx.send(await self._queue.get(), copy=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a closed context, a broken socket
            self.iq_error = f"IQ push to {self.options.transmit_endpoint(self.role)}: {exc}"
            logger.debug("zmq: %s", self.iq_error)

    def _demodulate(self, samples: npt.NDArray[np.complex64]) -> list[bytes]:
        if self.role == "ground":
            return self._downlink_receiver.receive(samples)
        return self._uplink_receiver.receive(samples)

    async def _pull(self) -> None:
        assert self._rx is not None
        try:
            while True:
                message = await self._rx.recv(copy=True)
                samples = np.frombuffer(message, "<c8")
                if samples.size == 0:
                    continue
                self.samples_received += samples.size
                # The demodulator and the decoders off the event loop, one message at
                # a time (in order).
                units = await asyncio.to_thread(self._demodulate, samples)
                now = self._loop.time()
                for unit in units:
                    self.units_received += 1
                    self._receiver(unit, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.iq_error = f"IQ pull from {self.options.receive_endpoint(self.role)}: {exc}"
            logger.debug("zmq: %s", self.iq_error)


async def open_zmq(
    url: str, *, role: Role, on_receive: Receiver, tm_coding: TmCodingConfig | None = None
) -> ZmqLink:
    """Open a ``zmq://`` link: its IQ sockets (PUSH bound at this end's transmit
    endpoint, PULL connected to its receive endpoint) and, in the ``iq=`` form, the UDP
    uplink (the spacecraft binds, the ground sends to it).  ``tm_coding`` (default
    ``TmCodingConfig()``) gives the CADU grid."""
    options = ZmqOptions.parse(url)
    udp: UdpLink | None = None
    if options.uplink is not None:
        udp = await _open_udp(options.uplink, role, on_receive)
    try:
        return ZmqLink(
            role=role,
            options=options,
            coding=tm_coding or TmCodingConfig(),
            receiver=on_receive,
            udp=udp,
        )
    except BaseException:
        if udp is not None:
            with contextlib.suppress(Exception):
                udp.close()
        raise
