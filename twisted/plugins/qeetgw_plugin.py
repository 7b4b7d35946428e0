"""
The twistd plugin: C{twistd -n qeetgw} runs the gateway.  All the work is in
qeetgw.process.tap.  (The echo upstream for trying the gateway is not a plugin: it
is C{make echo}, or the C{qeetgw-echo} console script.)
"""

from twisted.application.service import ServiceMaker

qeetgw = ServiceMaker(
    "qeetgw",
    "qeetgw.process.tap",
    "The QeetMart API gateway.",
    "qeetgw",
)
