"""Shell commands of ``!cmd`` cells, run the way a process with gRPC threads may."""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
from collections.abc import Callable


def run_command(command: str, write: Callable[[str], object]) -> int:
    """Run ``command`` in the user's shell (``$SHELL``, else ``/bin/sh``), stdin empty and
    stderr merged into stdout, passing its output to ``write`` as it arrives; return its
    exit status. Started like any ``subprocess`` child, never by a bare ``fork()`` (which
    a process with gRPC threads, the agent's, must avoid); killed if the cell is
    interrupted."""
    sys.stdout.flush()
    process = subprocess.Popen(
        command,
        shell=True,
        executable=os.environ.get("SHELL") or None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    stdout = process.stdout
    assert stdout is not None
    try:
        while chunk := os.read(stdout.fileno(), 65536):
            write(decoder.decode(chunk))
        write(decoder.decode(b"", final=True))
        return process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stdout.close()
