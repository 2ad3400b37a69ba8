"""A recording TLS relay between one SuperNode and the SuperLink: what leaves a site.

The site's SuperNode connects to the tap (which presents a certificate of the
deployment's CA), the tap connects to the real SuperLink over TLS (verifying that CA)
and relays both directions, appending the decrypted bytes to ``uplink.bin``
(site -> SuperLink) and ``downlink.bin`` (SuperLink -> site). Tests then search the
exact bytes that crossed the network for tensor names.
"""
from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path


class TlsTap:
    """Run a TLS-terminating recording relay on 127.0.0.1 in a background thread.

    Parameters
    ----------
    upstream_port : int
        The SuperLink's port on 127.0.0.1.
    listen_port : int
        Port to listen on (127.0.0.1).
    cert, key : Path
        Server certificate and key the tap presents (signed by the deployment CA).
    ca_cert : Path
        CA used to verify the SuperLink.
    out_dir : Path
        Where ``uplink.bin`` and ``downlink.bin`` are written.
    """

    def __init__(
        self, upstream_port: int, listen_port: int, cert: Path, key: Path, ca_cert: Path,
        out_dir: Path,
    ) -> None:
        self.upstream_port = upstream_port
        self.listen_port = listen_port
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.uplink = self.out_dir / "uplink.bin"
        self.downlink = self.out_dir / "downlink.bin"
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ctx.load_cert_chain(str(cert), str(key))
        self._server_ctx.set_alpn_protocols(["http/1.1"])
        self._client_ctx = ssl.create_default_context(cafile=str(ca_cert))
        self._client_ctx.set_alpn_protocols(["http/1.1"])
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="tls-tap", daemon=True)
        self._lock = threading.Lock()
        self.connections = 0
        self.errors: list[str] = []

    def start(self) -> "TlsTap":
        """Start listening; returns self once the port is bound."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("TLS tap did not start")
        if self.errors:
            raise RuntimeError(f"TLS tap failed to start: {self.errors}")
        return self

    def stop(self) -> None:
        """Close the listener and every relayed connection; join the thread."""
        if self._stopped is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def _record(self, path: Path, data: bytes) -> None:
        with self._lock, open(path, "ab") as handle:
            handle.write(data)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    path: Path) -> None:
        try:
            while data := await reader.read(65536):
                self._record(path, data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 (already closed)
                pass

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            u_reader, u_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port, ssl=self._client_ctx,
                server_hostname="127.0.0.1",
            )
        except (OSError, ssl.SSLError) as err:
            self.errors.append(f"upstream: {err}")
            c_writer.close()
            return
        await asyncio.gather(
            self._pipe(c_reader, u_writer, self.uplink),
            self._pipe(u_reader, c_writer, self.downlink),
        )

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.listen_port, ssl=self._server_ctx
            )
        except OSError as err:
            self.errors.append(str(err))
            self._ready.set()
            return
        self._ready.set()
        async with server:
            await self._stopped.wait()
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    def uplink_bytes(self) -> bytes:
        """Everything the site sent so far (decrypted)."""
        return self.uplink.read_bytes() if self.uplink.exists() else b""

    def downlink_bytes(self) -> bytes:
        """Everything the site received so far (decrypted)."""
        return self.downlink.read_bytes() if self.downlink.exists() else b""
