"""
qeetgw: the QeetMart API gateway, on Twisted.
"""

from qeetgw._version import __version__

__all__ = ["__version__"]
