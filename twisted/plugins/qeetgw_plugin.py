"""
The twistd plugins: C{twistd -n qeetgw} runs the gateway and
C{twistd -n qeetgw-echo} the echo upstream.  All the work is in qeetgw.tap.
"""

from twisted.application.service import ServiceMaker

qeetgw = ServiceMaker(
    "qeetgw",
    "qeetgw.tap",
    "The QeetMart API gateway.",
    "qeetgw",
)
