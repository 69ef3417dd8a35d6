"""What the keeper (``obsfs/keeper.py``) shares with ``obsfs mount`` and with the daemons it
serves: the socket's making and replies, the device's read size, the handover's exit code, the
lazy unmount. A module of its own because the first daemon is forked from ``obsfs mount``, and
whatever that command imports is on the path to the mount's first answer: the keeper's own code
(its process, its restarts, its re-exec) is imported only by the keeper.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess

# The kernel refuses reads of less than one request of the largest size it may send.
READ_SIZE = (1 << 20) + (1 << 16)
# The daemon's exit code for "drained on request (SIGUSR1): start the next one now".
EXIT_HANDOVER = 75
# The keeper's answer to a daemon's INIT reply: accepted (the first, or the same as the first) or not.
OK = b"OK"
DIFFERS = b"DIFFERS"


def listen(path: str) -> socket.socket:
    """The keeper's socket at ``path``, for its daemons: its uid only (0600)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(4)
    return listener


def unmount(mountpoint: str) -> None:
    """Detach lazily, as libfuse does: processes still inside keep what they hold."""
    subprocess.run(["fusermount3", "-u", "-q", "-z", "--", mountpoint], capture_output=True, check=False)
