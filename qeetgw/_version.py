"""
Provides qeetgw version information.
"""

# This file is auto-generated! Do not edit!
# Use `python -m incremental.update qeetgw` to change this file.

from incremental import Version

__version__ = Version("qeetgw", 26, 11, 0)
__all__ = ["__version__"]
