"""The Jupyter kernel that papermill executes notebooks in: a local kernel over IPC (Unix socket) files.

The default transport is TCP on localhost without encryption, and ipykernel warns about it on every start
("Kernel is running over TCP without encryption"). The kernel is our own child process, so the sockets are
plain files in the temporary folder: nothing to warn about, and nothing listening on a port. Windows has no
IPC transport and keeps TCP.
"""
from __future__ import annotations

import os
import tempfile
import uuid

from jupyter_client.manager import AsyncKernelManager
from traitlets import default


class IPCKernelManager(AsyncKernelManager):
    """Pass as `kernel_manager_class` to papermill.execute_notebook (it goes on to nbclient)."""

    @default("transport")
    def _default_transport(self):
        return "tcp" if os.name == "nt" else "ipc"

    @default("ip")
    def _default_ip(self):
        if self.transport != "ipc":
            return "127.0.0.1"
        # A short prefix: the sockets are <prefix>-<port>, and Unix socket paths are limited to ~100 characters.
        return os.path.join(tempfile.gettempdir(), f"imginav-kernel-{uuid.uuid4().hex[:12]}")
