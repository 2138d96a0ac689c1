"""Launchers: the one seam through which simulation servers are started and ended."""
from __future__ import annotations

from backend.launchers.base import (
    Exit, ExitCallback, Launcher, LaunchSpec, ServerHandle, file_tail,
)
from backend.launchers.local import LocalLauncher, ProcessOps

__all__ = ["Exit", "ExitCallback", "LaunchSpec", "Launcher", "LocalLauncher", "ProcessOps",
           "ServerHandle", "file_tail"]
