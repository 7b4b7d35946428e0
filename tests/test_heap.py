"""
Tests for L{qeetgw.process.heap}: the allocator keeps freed buffers, and the
heap is frozen once the gateway has started.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from typing import List, Tuple

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from qeetgw.process.heap import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD_BYTES,
    TRIM_THRESHOLD_BYTES,
    keep_freed_buffers,
)


class _LibC:
    """
    A C library whose mallopt records its calls and answers C{answer}.
    """

    def __init__(self, answer: int = 1) -> None:
        self.calls: List[Tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


#: A large response's buffers, as the gateway allocates them: four reads of
#: about 256 KiB and a copy of each held, then freed together, 300 times;
#: prints the minor page faults it took, after calling keep_freed_buffers
#: when asked to.
_WORKLOAD = """
import resource, sys
if sys.argv[1] == "kept":
    from qeetgw.process.heap import keep_freed_buffers
    assert keep_freed_buffers()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = faults()
for i in range(300):
    held = [bytes(256 * 1024 - (i % 7) * 1000) for _ in range(4)]
    copies = [piece[1:] for piece in held]
    del held, copies
print(faults() - start)
"""


class KeepFreedBuffersTests(SynchronousTestCase):
    """
    L{keep_freed_buffers}.
    """

    def test_parameters(self) -> None:
        libc = _LibC()
        self.assertTrue(keep_freed_buffers(libc))
        self.assertEqual(
            libc.calls,
            [(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)],
        )

    def test_refused(self) -> None:
        self.assertFalse(keep_freed_buffers(_LibC(answer=0)))

    def test_no_mallopt(self) -> None:
        self.assertFalse(keep_freed_buffers(object()))

    def test_fewer_page_faults(self) -> None:
        """
        On glibc, the workload of a large response takes a small fraction of
        the page faults it takes with malloc's defaults.
        """
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("mallopt's thresholds are glibc's")

        def faults(mode: str) -> int:
            out = subprocess.run(
                [sys.executable, "-c", _WORKLOAD, mode], capture_output=True, check=True, timeout=60
            )
            return int(out.stdout)

        plain, kept = faults("plain"), faults("kept")
        self.assertGreater(plain, 5000)
        self.assertLess(kept * 10, plain)
