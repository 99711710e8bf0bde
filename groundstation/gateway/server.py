"""``groundstation serve``: the link, the station, the gateway and uvicorn in one loop.

The HTTP socket is bound first (a port in use fails at once), then the link opens,
then uvicorn serves on the bound socket until SIGINT or SIGTERM; on the way out every
request still in flight is cancelled on board.  TLS is uvicorn's (``--tls-cert``,
``--tls-key``: ``ssl_certfile`` / ``ssl_keyfile``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import uvicorn

from groundstation.gateway.app import Gateway, GatewayConfig
from groundstation.gateway.auth import ApiKeys
from groundstation.station import IdSource
from linkstack.inference.tokenizer import Tokenizer
from linkstack.sdls.keystore import RoleSecurity

#: Seconds uvicorn waits for open connections (streams) when stopping.
_GRACEFUL_S: Final = 3


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Where to listen, and TLS."""

    host: str
    port: int
    tls_cert: str | None = None
    tls_key: str | None = None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the caller's loop handles SIGINT and
    SIGTERM and stops it; uvicorn would re-raise the signal after stopping)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(options: ServeOptions) -> socket.socket:
    """The listening socket (port 0 picks a free one); raises OSError."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((options.host, options.port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    sock: socket.socket,
    options: ServeOptions,
    *,
    link_url: str,
    tokenizer: Tokenizer,
    config: GatewayConfig,
    keys: ApiKeys | None,
    id_source: IdSource,
    security: RoleSecurity | None,
    open_link_timeout_s: float,
    on_ready: Callable[[str], None],
) -> Gateway:
    """Serve until SIGINT/SIGTERM; returns the gateway (for its counters)."""
    from groundstation.session import keyed_station
    from linkstack.aio import open_link

    station = keyed_station(tokenizer, security, id_source=id_source)
    link = await asyncio.wait_for(
        open_link(link_url, role="ground", on_receive=station.on_receive), open_link_timeout_s
    )
    try:
        station.attach(link)
        gateway = Gateway(station, config, keys=keys, clock=asyncio.get_running_loop().time)
        server = _Server(
            uvicorn.Config(
                gateway.app,
                log_config=None,
                access_log=False,
                lifespan="off",
                ssl_certfile=options.tls_cert,
                ssl_keyfile=options.tls_key,
                timeout_graceful_shutdown=_GRACEFUL_S,
            )
        )
        loop = asyncio.get_running_loop()

        def stop() -> None:
            server.should_exit = True

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
        try:
            serving = loop.create_task(server.serve(sockets=[sock]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            if server.started:
                host, port = sock.getsockname()[:2]
                scheme = "https" if options.tls_cert else "http"
                shown = f"[{host}]" if ":" in host else host
                on_ready(f"{scheme}://{shown}:{port}")
            await serving
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await gateway.close()
            station.close()
    finally:
        link.close()
    return gateway


__all__ = ["ServeOptions", "bind", "serve"]
