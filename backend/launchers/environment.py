"""The environment a simulation server (and so the user's script) is given.

Not the backend's own: that holds its credentials (``AWS_SECRET_ACCESS_KEY``, an S3
URL, ``SIMBACKEND_*`` settings), and a script could read and send them anywhere.
Only the names below pass, plus those ``--script-env`` adds; the launcher then sets
the control token, the run marker and ``PYTHONPATH``, and one thread for the BLAS and
OpenMP pools where the backend's environment sets no thread count
(:func:`thread_defaults`).
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


#: One thread each for a script's OpenMP, OpenBLAS and MKL pools, unless the backend's
#: environment sets a thread count of its own (any ``*_NUM_THREADS``).
THREAD_DEFAULTS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1"}


def thread_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """The thread counts to add to a server's environment ``env``: none where it sets
    any, else :data:`THREAD_DEFAULTS`.

    The host lends a run the threads it declares (``resources.threads``, one unless
    said; NEST sets its own from ``local_num_threads``, whatever ``OMP_NUM_THREADS``
    says). A BLAS pool sized to the host's cores takes more, and NumPy's OpenBLAS
    starts one thread per core at import, each spinning ~0.1 s: ~90 ms of CPU per
    simulation server on two cores, at every warm-up and cold start, and a core's worth
    more on every larger host.
    """
    if any(name.endswith("_NUM_THREADS") for name in env):
        return {}
    return dict(THREAD_DEFAULTS)
