"""
The gateway process's memory, settled once it has started.

Two settings, each measured on the bench (A/B, alternating rounds of
C{wrk -c50}), and neither raising the peak RSS:

- L{gc.freeze}: the objects made at start-up (modules, configuration, the
  resource tree, the parts) live as long as the process; frozen, the
  collector's full collections stop walking them again and again.  GET
  +9% requests/s.
- L{keep_freed_buffers}: the buffers of a large response (256 KiB reads
  from the upstream, up to 512 KiB sends) are allocated and freed on every
  read.  glibc's malloc gave that memory back to the kernel and took it
  again, each time as fresh pages the kernel faults in and zeroes: 35 to 60
  minor page faults per 1 MiB response.  Kept in the heap, freed blocks are
  reused: under 1 fault per response, 1 MiB responses +7% requests/s.
"""

from __future__ import annotations

import ctypes
import gc
from typing import Any, Optional

from twisted.logger import Logger

log = Logger()

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap, not from a mapping of their
#: own that is unmapped when freed (glibc's default is 128 KiB, moving up as
#: larger blocks are freed; setting it fixes it).
MMAP_THRESHOLD_BYTES = 1024 * 1024

#: The free memory at the top of the heap kept rather than given back to
#: the kernel (glibc's default follows the mmap threshold: twice it).
TRIM_THRESHOLD_BYTES = 16 * 1024 * 1024


def keep_freed_buffers(libc: Optional[Any] = None) -> bool:
    """
    Ask the C library's malloc to keep freed blocks of up to
    L{MMAP_THRESHOLD_BYTES}, and up to L{TRIM_THRESHOLD_BYTES} of free heap,
    for reuse.

    @param libc: the C library (by default the process's own).
    @return: whether it was done: only glibc has C{mallopt} as used here
        (on another C library it is absent, or refuses the parameters).
    """
    if libc is None:
        try:
            libc = ctypes.CDLL(None)
        except OSError:
            return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    # mallopt returns 1 on success, 0 on error.
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    )


def settle() -> None:
    """
    Settle the heap of a gateway process that has started: keep freed
    buffers for reuse, and freeze what start-up made (see the module
    docstring).
    """
    tuned = keep_freed_buffers()
    gc.freeze()
    log.debug(
        "heap settled: {frozen} objects frozen, malloc keeps freed buffers: {tuned}",
        frozen=gc.get_freeze_count(),
        tuned=tuned,
    )
