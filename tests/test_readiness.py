"""
/ready and draining, in memory.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.gateway import MemoryGateway
from tests.memory import get


class ReadinessTests(SynchronousTestCase):
    """
    /ready flips when a drain starts; responses then close their connection.
    """

    def test_ready_then_draining(self) -> None:
        gateway = MemoryGateway({"REQUIRE_AUTH": "false"})
        ready = gateway.send(get(b"/ready"))
        self.assertEqual((ready.code, ready.json()["status"]), (200, "ready"))
        self.assertIsNone(gateway.send(get(b"/api/v1/products")).header(b"connection"))
        gateway.gateway.readiness.draining = True
        draining = gateway.send(get(b"/ready"))
        self.assertEqual((draining.code, draining.json()["status"]), (503, "draining"))
        proxied = gateway.send(get(b"/api/v1/products"))
        self.assertEqual((proxied.code, proxied.header(b"connection")), (200, b"close"))
        # liveness is unaffected
        self.assertEqual(gateway.send(get(b"/health")).code, 200)
