"""The environment a simulation server (and so the user's script) is given.

Not the backend's own: that holds its credentials (``AWS_SECRET_ACCESS_KEY``, an S3
URL, ``SIMBACKEND_*`` settings), and a script could read and send them anywhere.
Only the names below pass, plus those ``--script-env`` adds; the launcher then sets
the control token, the run marker and ``PYTHONPATH``.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable, Mapping

#: What a Python program, NumPy/BLAS, NEST and NEURON need from the environment;
#: ``*`` ends a prefix.
PASSED = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR", "LANG", "LANGUAGE",
    "LC_*", "PYTHON*", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "OMP_*", "OPENBLAS_*", "MKL_*", "NUMEXPR_*", "NEST_*", "PYNEST_*", "SLI_PATH",
    "NEURON_*", "NEURONHOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
)


def extra_names(setting: str) -> tuple[str, ...]:
    """The names of ``--script-env`` (comma- or space-separated)."""
    return tuple(name for name in setting.replace(",", " ").split() if name)


def allowed_environment(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The variables of ``environ`` a simulation server may see."""
    patterns = (*PASSED, *extra)
    return {name: value for name, value in environ.items()
            if any(fnmatchcase(name, pattern) for pattern in patterns)}
