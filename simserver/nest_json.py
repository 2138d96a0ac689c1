"""JSON of the NEST Server API: PyNEST results as JSON data, and the bytes Flask sends.

Nothing here imports NEST; PyNEST's collections are recognised by their type names.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np


class Unserializable(TypeError):
    """A result that has no JSON form (a ``nest.Parameter``, a module ...)."""


def to_json_data(value: Any) -> Any:
    """``value`` as JSON data, as NEST's ``serialize_data`` makes it: a ``NodeCollection``
    is its list of ids, a ``SynapseCollection`` its ``get()`` dict, numpy arrays and
    scalars plain lists and numbers.

    Raises:
        Unserializable: the value, or a part of it, has no JSON form.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.ndarray):
        # tolist() of a numeric array is already plain numbers: no walk per element
        # (NEST Server walks them all, which is most of its ~50 ms for 16k spikes).
        return value.tolist() if value.dtype.kind in "biuf" else to_json_data(value.tolist())
    if isinstance(value, np.generic):
        return to_json_data(value.item())
    if isinstance(value, (list, tuple)):
        return [to_json_data(item) for item in value]
    if isinstance(value, dict):
        return {to_json_data(key): to_json_data(item) for key, item in value.items()}
    kind = type(value).__name__
    if kind == "NodeCollection":
        return value.tolist()
    if kind == "SynapseCollection":
        return to_json_data(value.get())
    raise Unserializable(f"a {type(value).__module__}.{kind} is not JSON")


def dumps(payload: Any) -> bytes:
    """JSON bytes as NEST Server's Flask sends them: sorted keys, compact, a newline.

    NaN and infinities come out as ``NaN``/``-Infinity``, as there (``V_min`` of many
    neuron models is ``-inf``): Python's JSON readers accept them, strict ones do not.
    """
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    except TypeError:  # keys of mixed types cannot be sorted
        text = json.dumps(payload, separators=(",", ":"))
    return (text + "\n").encode()
