"""
The gateway as a process: how C{twistd qeetgw} starts it, and how it stops.

- L{qeetgw.process.tap}: the twistd plugin's options and service maker;
- L{qeetgw.process.service}: C{GatewayService}, the listening port, the
  gateway's parts with a lifetime, and the drain on SIGTERM;
- L{qeetgw.process.supervisor} and L{qeetgw.process.worker}: C{--workers},
  several processes on one port;
- L{qeetgw.process.startup}: every port bound before the reactor runs.
"""
