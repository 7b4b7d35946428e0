"""
Tools for developing and trying qeetgw, never imported by the gateway:
L{qeetgw_dev.echo}, an upstream that echoes every request
(C{make echo}, or the C{qeetgw-echo} console script).
"""
