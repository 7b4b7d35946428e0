"""
A tunnel: once an upstream has switched protocols (101) for a WebSocket
handshake, the bytes of the client's connection and of the upstream's are
relayed both ways, untouched; the gateway decodes no frame (it follows
their headers, for their lengths only, to place a close frame of its own at
shutdown).

- Backpressure both ways: each connection is the producer of the other's
  transport, so a side that reads slowly stops the gateway reading from
  the other side (memory stays bounded whatever is sent).
- A side that half-closes (TCP FIN) has the other side's writing shut; a
  side that closes has the other closed once what was written is sent; a
  side that is lost (reset, aborted) has the other aborted.
- No byte either way for the idle timeout closes both.
- When both are closed, C{ended} is told once: who closed, the bytes each
  way, how long it lasted.
- At shutdown (L{Tunnel.going_away}) each side gets a close frame 1001,
  put between two frames: the frames' headers are followed for their
  lengths (L{FrameBoundaries}), and no payload is read.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Callable, Iterable, Optional, Tuple

import attrs
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableDescriptor,
    IReactorTime,
    ISSLTransport,
    ITransport,
)
from twisted.python.failure import Failure

from qeetgw.upstream.forwarding import client_response_fields

_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\n"


def switching_head(upstream_fields: Iterable[Tuple[bytes, bytes]], correlation_id: bytes) -> bytes:
    """
    The 101 head the client gets: the upstream's fields as for any response
    (without hop-by-hop fields, those naming server software, the CORS
    fields), then C{Connection: Upgrade}, C{Upgrade: websocket} and the
    correlation id.
    """
    lines = [_SWITCHING]
    for lowered, (name, values) in client_response_fields(list(upstream_fields)).items():
        if lowered in (b"content-length", b"x-correlation-id"):
            continue
        lines.extend(name + b": " + value + b"\r\n" for value in values)
    lines.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    lines.append(b"X-Correlation-ID: " + correlation_id + b"\r\n\r\n")
    return b"".join(lines)


#: RFC 6455 7.4.1: the endpoint is going away (a server going down).
GOING_AWAY = 1001


def close_frame(code: int, mask: Optional[bytes] = None) -> bytes:
    """
    A WebSocket close frame with status C{code} (RFC 6455 5.5.1), masked
    with the 4-byte C{mask} when given, as a frame toward a server must be
    (5.3), unmasked otherwise, as toward a client (5.1).
    """
    payload = struct.pack("!H", code)
    if mask is None:
        return bytes((0x88, len(payload))) + payload
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + mask + masked


class FrameBoundaries:
    """
    Where the frames of one direction of a WebSocket begin and end: only
    each frame's header is read, for its length (RFC 6455 5.2), so that a
    frame of the gateway's own (a close at shutdown) goes between two
    frames, never into one.  The payloads are skipped, never read.
    """

    __slots__ = ("_header", "_left")

    def __init__(self) -> None:
        self._header = bytearray()
        self._left = 0

    @property
    def between_frames(self) -> bool:
        """
        Whether the bytes so far end with a whole frame.
        """
        return self._left == 0 and not self._header

    def feed(self, data: bytes) -> None:
        """
        Follow C{data}, the next bytes of the stream.
        """
        at, end = 0, len(data)
        while at < end:
            if self._left:
                skipped = min(self._left, end - at)
                self._left -= skipped
                at += skipped
                continue
            header = self._header
            needed = _header_length(header)
            taken = min(needed - len(header), end - at)
            header += data[at:at + taken]
            at += taken
            if len(header) == _header_length(header):
                self._left = _payload_length(header)
                header.clear()


def _header_length(header: bytearray) -> int:
    # Two bytes, then the extended length (0, 2 or 8 bytes) and the mask
    # (0 or 4), which the second byte says.
    if len(header) < 2:
        return 2
    short = header[1] & 0x7F
    extended = 2 if short == 126 else 8 if short == 127 else 0
    return 2 + extended + (4 if header[1] & 0x80 else 0)


def _payload_length(header: bytearray) -> int:
    short = header[1] & 0x7F
    if short == 126:
        return int(struct.unpack("!H", header[2:4])[0])
    if short == 127:
        return int(struct.unpack("!Q", header[2:10])[0])
    return short


@attrs.frozen
class TunnelEnded:
    """
    How a tunnel ended.

    @ivar closed_by: C{"client"}, C{"upstream"}, C{"idle"} or C{"gateway"}.
    @ivar to_upstream: bytes relayed from the client to the upstream.
    @ivar to_client: bytes relayed from the upstream to the client.
    @ivar seconds: how long the tunnel was open.
    @ivar clean: whether both sides closed cleanly (no reset or abort).
    """

    closed_by: str
    to_upstream: int
    to_client: int
    seconds: float
    clean: bool


class Tunnel:
    """
    Relays bytes between C{client} and C{upstream}, two connected
    transports, neither with a producer registered.  The protocols of the
    two connections call the C{client_*} and C{upstream_*} methods.

    @param idle_timeout: seconds without a byte either way before both
        sides are closed; 0 for none.
    @param ended: told once, when both connections are closed.
    @param counted: told the size of every piece relayed, C{(to_upstream,
        to_client)} (one of them 0), for the metrics; L{None} for none.
    """

    def __init__(
        self,
        client: ITransport,
        upstream: ITransport,
        clock: IReactorTime,
        idle_timeout: float,
        ended: Callable[[TunnelEnded], Any],
        counted: Optional[Callable[[int, int], Any]] = None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._ended = ended
        self._counted = counted
        self._started = clock.seconds()
        self.to_upstream = 0
        self.to_client = 0
        self.closed_by: Optional[str] = None
        self._client_open = True
        self._upstream_open = True
        # Whether each side has sent its last byte (half-closed).
        self._client_done = False
        self._upstream_done = False
        self._clean = True
        self._idle: Optional[IDelayedCall] = None
        self._last_byte = self._started
        # Frame boundaries each way, for a close frame of our own.
        self._toward_upstream = FrameBoundaries()
        self._toward_client = FrameBoundaries()
        # A slow reader on one side stops the gateway reading the other.
        client.registerProducer(upstream, True)  # type: ignore[attr-defined]
        upstream.registerProducer(client, True)  # type: ignore[attr-defined]
        self._producing = True
        self._arm(idle_timeout)

    # -- bytes ---------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        """
        The client sent C{data}: to the upstream.
        """
        self.to_upstream += len(data)
        if self._counted is not None:
            self._counted(len(data), 0)
        self._touched()
        self._toward_upstream.feed(data)
        if self._upstream_open:
            self.upstream.write(data)

    def upstream_data(self, data: bytes) -> None:
        """
        The upstream sent C{data}: to the client.
        """
        self.to_client += len(data)
        if self._counted is not None:
            self._counted(0, len(data))
        self._touched()
        self._toward_client.feed(data)
        if self._client_open:
            self.client.write(data)

    # -- ends ------------------------------------------------------------

    def client_half_closed(self) -> None:
        """
        The client will send nothing more (it shut its writing side).
        """
        self._first_to_close("client")
        self._client_done = True
        if self._upstream_open:
            _shut_writing(self.upstream)
        self._maybe_both_done()

    def upstream_half_closed(self) -> None:
        """
        The upstream will send nothing more.
        """
        self._first_to_close("upstream")
        self._upstream_done = True
        if self._client_open:
            _shut_writing(self.client)
        self._maybe_both_done()

    def client_lost(self, reason: Failure) -> None:
        """
        The client's connection is closed (cleanly or not).
        """
        self._client_open = False
        self._first_to_close("client")
        self._pass_on(reason, self.upstream, self._upstream_open)
        self._maybe_ended()

    def upstream_lost(self, reason: Failure) -> None:
        """
        The upstream's connection is closed (cleanly or not).
        """
        self._upstream_open = False
        self._first_to_close("upstream")
        self._pass_on(reason, self.client, self._client_open)
        self._maybe_ended()

    def close(self, why: str = "gateway") -> None:
        """
        Close both sides once what was written is sent (C{why} says who
        wanted it).
        """
        self._first_to_close(why)
        self._stop_producing_for_each_other()
        for transport, open_ in ((self.client, self._client_open), (self.upstream, self._upstream_open)):
            if open_:
                transport.loseConnection()

    def going_away(self) -> None:
        """
        The gateway is shutting down: stop relaying, send each side a close
        frame 1001 (masked toward the upstream, RFC 6455 5.3), then close
        both.  A side whose stream is in the middle of a frame gets no
        frame of ours, which would corrupt it: it is closed all the same.
        """
        for transport in (self.client, self.upstream):
            transport.pauseProducing()  # type: ignore[attr-defined]
        if self._client_open and self._toward_client.between_frames:
            self.client.write(close_frame(GOING_AWAY))
        if self._upstream_open and self._toward_upstream.between_frames:
            self.upstream.write(close_frame(GOING_AWAY, os.urandom(4)))
        self.close("gateway")

    # -- inside ----------------------------------------------------------

    def _maybe_both_done(self) -> None:
        # Each side has sent its last byte, and each has been told: close.
        if self._client_done and self._upstream_done:
            self.close(self.closed_by or "gateway")

    def _first_to_close(self, who: str) -> None:
        if self.closed_by is None:
            self.closed_by = who

    def _stop_producing_for_each_other(self) -> None:
        if self._producing:
            self._producing = False
            self.client.unregisterProducer()  # type: ignore[attr-defined]
            self.upstream.unregisterProducer()  # type: ignore[attr-defined]

    def _pass_on(self, reason: Failure, other: ITransport, other_open: bool) -> None:
        self._stop_producing_for_each_other()
        if reason.check(ConnectionDone) is None:
            self._clean = False
            if other_open:
                other.abortConnection()  # type: ignore[attr-defined]
        elif other_open:
            other.loseConnection()

    def _maybe_ended(self) -> None:
        if self._client_open or self._upstream_open:
            return
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self._ended(
            TunnelEnded(
                self.closed_by or "gateway",
                self.to_upstream,
                self.to_client,
                self._clock.seconds() - self._started,
                self._clean,
            )
        )

    def _arm(self, delay: float) -> None:
        if self._idle_timeout > 0:
            self._idle = self._clock.callLater(delay, self._idle_check)

    def _touched(self) -> None:
        # The timer is not moved on every read (rescheduling a delayed call
        # per read would cost more than the relay): the time of the last
        # byte is noted, and the timer, when it fires, waits for the rest.
        self._last_byte = self._clock.seconds()

    def _idle_check(self) -> None:
        self._idle = None
        if not (self._client_open or self._upstream_open):
            return
        quiet = self._clock.seconds() - self._last_byte
        if quiet >= self._idle_timeout:
            self.close("idle")
        else:
            self._arm(self._idle_timeout - quiet)


def _shut_writing(transport: ITransport) -> None:
    """
    Shut C{transport}'s writing side once what was written is sent, or
    close it when it cannot half-close: TCP can; TLS cannot here (a TLS
    transport passes what it lacks on to the TCP connection beneath it,
    interfaces included, and that connection's half-close would cut the TLS
    stream), so a TLS side is closed.
    """
    if IHalfCloseableDescriptor.providedBy(transport) and not ISSLTransport.providedBy(transport):
        transport.loseWriteConnection()  # type: ignore[attr-defined]
    else:
        transport.loseConnection()
