"""Every name and id check matches the whole string: ``$`` alone passes a trailing newline."""
from __future__ import annotations

import pytest

from backend.archive import validate_name
from backend.exceptions import InvalidRequest as BadRequest
from backend.schemas import new_simulation as _check_post

TRAILING = ["nl\n", "nl\r\n", "nl\n\n", "\nnl"]


@pytest.mark.parametrize("name", TRAILING)
def test_experiment_names_with_a_newline_are_refused(name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_name(name)
    assert caught.value.code == "invalid_name"


@pytest.mark.parametrize("sim_id", TRAILING)
def test_simulation_ids_with_a_newline_are_refused(sim_id: str) -> None:
    with pytest.raises(BadRequest) as caught:
        _check_post({"experiment": "loop", "id": sim_id})
    assert caught.value.code == "invalid_id"


def test_plain_names_and_ids_still_pass() -> None:
    assert validate_name("my-exp_1.0") == "my-exp_1.0"
    assert _check_post({"experiment": "loop", "id": "s1"}).id == "s1"
