"""
Tests for L{qeetgw.upstream.tunnel}: the relay between a client's connection
and an upstream's, in memory.
"""

from __future__ import annotations

from typing import List

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from qeetgw.upstream.tunnel import FrameBoundaries, Tunnel, TunnelEnded, close_frame, switching_head


@implementer(IHalfCloseableDescriptor)
class HalfCloseable(StringTransport):
    """
    A StringTransport that can half-close, as TCP can, and records it.
    """

    write_shut = False

    def loseWriteConnection(self) -> None:
        self.write_shut = True


class TunnelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = HalfCloseable()
        self.upstream = HalfCloseable()
        self.ended: List[TunnelEnded] = []
        self.tunnel = Tunnel(self.client, self.upstream, self.clock, 60.0, self.ended.append)

    def test_bytes_both_ways(self) -> None:
        self.tunnel.client_data(b"\x81\x85abcd")
        self.tunnel.upstream_data(b"\x81\x05hello")
        self.assertEqual(self.upstream.value(), b"\x81\x85abcd")
        self.assertEqual(self.client.value(), b"\x81\x05hello")
        self.assertEqual((self.tunnel.to_upstream, self.tunnel.to_client), (6, 7))

    def test_each_side_produces_for_the_other(self) -> None:
        """
        A full buffer toward the client pauses reading the upstream, and the
        other way round.
        """
        self.assertIs(self.client.producer, self.upstream)
        self.assertIs(self.upstream.producer, self.client)
        self.assertTrue(self.client.streaming and self.upstream.streaming)

    def test_client_closes(self) -> None:
        self.tunnel.client_data(b"x")
        self.clock.advance(2.5)
        self.tunnel.client_lost(Failure(ConnectionDone()))
        self.assertTrue(self.upstream.disconnecting)
        self.assertEqual(self.ended, [])
        self.tunnel.upstream_lost(Failure(ConnectionDone()))
        self.assertEqual(self.ended, [TunnelEnded("client", 1, 0, 2.5, True)])
        self.assertIsNone(self.client.producer)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_upstream_closes(self) -> None:
        self.tunnel.upstream_lost(Failure(ConnectionDone()))
        self.assertTrue(self.client.disconnecting)
        self.tunnel.client_lost(Failure(ConnectionDone()))
        self.assertEqual([e.closed_by for e in self.ended], ["upstream"])

    def test_abort_passed_on_as_abort(self) -> None:
        self.tunnel.client_lost(Failure(ConnectionLost()))
        self.assertTrue(self.upstream.disconnected)
        self.tunnel.upstream_lost(Failure(ConnectionLost()))
        self.assertFalse(self.ended[0].clean)

    def test_half_close_both_ways(self) -> None:
        """
        A half-close is passed on as a half-close; when both sides have
        sent their last byte, both are closed.
        """
        self.tunnel.client_half_closed()
        self.assertTrue(self.upstream.write_shut)
        self.assertFalse(self.upstream.disconnecting)
        self.tunnel.upstream_data(b"last words")
        self.assertEqual(self.client.value(), b"last words")
        self.tunnel.upstream_half_closed()
        self.assertTrue(self.client.write_shut)
        self.assertTrue(self.client.disconnecting and self.upstream.disconnecting)
        self.tunnel.client_lost(Failure(ConnectionDone()))
        self.tunnel.upstream_lost(Failure(ConnectionDone()))
        self.assertEqual([e.closed_by for e in self.ended], ["client"])

    def test_no_half_close_over_tls(self) -> None:
        """
        A TLS side is closed rather than half-closed: Twisted's TLS
        transport seems to half-close (it passes what it lacks on to the TCP
        connection beneath), and doing so would cut its TLS stream.
        """
        factory = TLSMemoryBIOFactory(CertificateOptions(), False, Factory.forProtocol(Protocol))
        tls = factory.buildProtocol(None)
        tls.makeConnection(HalfCloseable())
        self.assertTrue(IHalfCloseableDescriptor.providedBy(tls))
        tunnel = Tunnel(HalfCloseable(), tls, self.clock, 0, self.ended.append)
        tunnel.client_half_closed()
        self.assertFalse(tls.transport.write_shut)
        self.assertTrue(tls.disconnecting)

    def test_no_half_close_without_the_interface(self) -> None:
        client, upstream = StringTransport(), StringTransport()
        tunnel = Tunnel(client, upstream, self.clock, 0, self.ended.append)
        tunnel.upstream_half_closed()
        self.assertTrue(client.disconnecting)

    def test_idle_timeout(self) -> None:
        """
        No byte either way for the idle timeout closes both sides, however
        the bytes before were spaced.
        """
        self.clock.advance(50)
        self.tunnel.upstream_data(b"ping")
        self.clock.advance(59)
        self.assertFalse(self.client.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.client.disconnecting and self.upstream.disconnecting)
        self.tunnel.client_lost(Failure(ConnectionDone()))
        self.tunnel.upstream_lost(Failure(ConnectionDone()))
        self.assertEqual([(e.closed_by, e.seconds) for e in self.ended], [("idle", 110.0)])

    def test_no_idle_timeout(self) -> None:
        clock = Clock()
        client, upstream = StringTransport(), StringTransport()
        Tunnel(client, upstream, clock, 0, self.ended.append)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10 ** 6)
        self.assertFalse(client.disconnecting or upstream.disconnecting)

    def test_close(self) -> None:
        self.tunnel.close()
        self.assertTrue(self.client.disconnecting and self.upstream.disconnecting)
        self.assertIsNone(self.client.producer)

    def test_bytes_after_a_side_closed_are_dropped(self) -> None:
        self.tunnel.upstream_lost(Failure(ConnectionDone()))
        self.upstream.clear()
        self.tunnel.client_data(b"late")
        self.assertEqual(self.upstream.value(), b"")


class SwitchingHeadTests(SynchronousTestCase):
    def test_head(self) -> None:
        head = switching_head(
            [
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                (b"Server", b"TwistedWeb/26.10.0"),
                (b"X-Correlation-ID", b"upstream-id"),
            ],
            b"req-1",
        )
        self.assertEqual(
            head,
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
            b"X-Correlation-ID: req-1\r\n\r\n",
        )


def frame(payload_length: int, masked: bool = False, opcode: int = 0x2) -> bytes:
    """
    A frame of C{payload_length} bytes, with the length encoding RFC 6455
    5.2 gives it.
    """
    mask_bit = 0x80 if masked else 0
    if payload_length < 126:
        header = bytes((0x80 | opcode, mask_bit | payload_length))
    elif payload_length < 65536:
        header = bytes((0x80 | opcode, mask_bit | 126)) + payload_length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, mask_bit | 127)) + payload_length.to_bytes(8, "big")
    return header + (b"MASK" if masked else b"") + b"p" * payload_length


class FrameBoundariesTests(SynchronousTestCase):
    def test_lengths_and_masks(self) -> None:
        for length in (0, 1, 125, 126, 65535, 65536, 200000):
            for masked in (False, True):
                stream = frame(length, masked)
                boundaries = FrameBoundaries()
                boundaries.feed(stream[:-1])
                self.assertFalse(boundaries.between_frames, (length, masked))
                boundaries.feed(stream[-1:])
                self.assertTrue(boundaries.between_frames, (length, masked))

    def test_every_split(self) -> None:
        stream = frame(3) + frame(130, True) + frame(0) + frame(70000)
        ends = {len(frame(3)), len(frame(3) + frame(130, True)), len(frame(3) + frame(130, True) + frame(0)), len(stream)}
        for split in range(0, len(stream) + 1, 97):
            boundaries = FrameBoundaries()
            boundaries.feed(stream[:split])
            self.assertEqual(boundaries.between_frames, split in ends or split == 0, split)
            boundaries.feed(stream[split:])
            self.assertTrue(boundaries.between_frames)

    def test_byte_at_a_time(self) -> None:
        stream = frame(5, True) + frame(126)
        boundaries = FrameBoundaries()
        seen = []
        for index in range(len(stream)):
            boundaries.feed(stream[index:index + 1])
            seen.append(boundaries.between_frames)
        self.assertEqual([index + 1 for index, between in enumerate(seen) if between], [len(frame(5, True)), len(stream)])


class GoingAwayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client, self.upstream = HalfCloseable(), HalfCloseable()
        self.tunnel = Tunnel(self.client, self.upstream, Clock(), 0, lambda ended: None)

    def test_close_frames(self) -> None:
        self.tunnel.client_data(frame(4, True))
        self.tunnel.upstream_data(frame(4))
        self.client.clear()
        self.upstream.clear()
        self.tunnel.going_away()
        self.assertEqual(self.client.value(), b"\x88\x02\x03\xe9")
        sent = self.upstream.value()
        self.assertEqual(sent[:2], b"\x88\x82")
        mask = sent[2:6]
        self.assertEqual(bytes(b ^ mask[i % 4] for i, b in enumerate(sent[6:])), b"\x03\xe9")
        self.assertTrue(self.client.disconnecting and self.upstream.disconnecting)
        self.assertEqual(self.client.producerState, "paused")

    def test_no_frame_into_a_frame(self) -> None:
        self.tunnel.upstream_data(frame(100)[:50])
        self.client.clear()
        self.tunnel.going_away()
        self.assertEqual(self.client.value(), b"")
        self.assertTrue(self.client.disconnecting)

    def test_close_frame(self) -> None:
        self.assertEqual(close_frame(1001), b"\x88\x02\x03\xe9")
        self.assertEqual(close_frame(1000, b"\x00\x00\x00\x00"), b"\x88\x82\x00\x00\x00\x00\x03\xe8")
