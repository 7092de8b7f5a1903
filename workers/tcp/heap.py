"""glibc malloc tuning for a process that allocates and frees megabyte buffers many times a second.

With glibc's defaults, every frame buffer of about a megabyte makes the heap grow and then be
trimmed again (a brk call and a page fault per 4 KiB each time): that cost more CPU than copying
the frame. Keeping freed memory for reuse removes it; handing it back once the session is empty
keeps an idle worker small. Elsewhere (no glibc) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 8 * 1024 * 1024  # buffers up to this size come from the heap and are reused
TRIM_THRESHOLD = 64 * 1024 * 1024  # free memory kept at the top of the heap while clients are connected


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def tune() -> None:
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def trim() -> None:
    """Give freed memory back to the system (called when the last client has left)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
