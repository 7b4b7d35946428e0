"""
Random hex for ids made on every request (correlation ids, trace and span
ids): read from the OS in batches, one system call per many ids rather than
one (or a UUID object) per id — these showed in the refused-request profile.
"""

from __future__ import annotations

import os


class RandomHex:
    """
    Lowercase hex digits from C{os.urandom}, read C{batch} bytes at a time.
    """

    def __init__(self, batch: int = 8192) -> None:
        self._batch = batch
        self._hex = ""
        self._used = 0

    def __call__(self, digits: int) -> str:
        """
        C{digits} random hex digits.
        """
        if self._used + digits > len(self._hex):
            self._hex = os.urandom(self._batch).hex()
            self._used = 0
        text = self._hex[self._used:self._used + digits]
        self._used += digits
        return text


#: The process's one source: the processes of --workers are exec'd, never
#: forked, so no two share a batch.
random_hex = RandomHex()
