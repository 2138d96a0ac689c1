"""Python engines loaded from an experiment folder, and building the kernel.

Experiment modules are imported by name, so every test uses module names of its own
and the ``experiment`` fixture forgets them afterwards.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from simserver.engines import PythonEngine
from simserver.errors import ExperimentError, KernelError
from simserver.kernel import build_kernel, parse_timestep
from tests.simserver.conftest import write_files

RECORDING_WORLD = '''
class World:
    def initialize(self, params):
        self.params = params
        self.steps = []

    def step(self, t, dt):
        self.steps.append((t, dt))
'''

ATTRIBUTE_WORLD = '''
class World:
    position = 1.5

    def step(self, t, dt):
        self.position += dt
'''


def load(experiment: Path, model: Any, files: dict[str, str] | None = None,
         run_params: dict[str, Any] | None = None, **config: Any) -> PythonEngine:
    """Write ``files`` into the experiment, then build and initialize one python engine
    (``config`` is its entry in experiment.json, ``run_params`` the run's params)."""
    write_files(experiment, files or {})
    engine = PythonEngine("world", {"type": "python", "model": model, **config}, experiment)
    engine.initialize(run_params or {})
    return engine


def test_model_is_loaded_from_module_and_class(experiment: Path) -> None:
    engine = load(experiment, "world_ok.py:World", {"world_ok.py": RECORDING_WORLD},
                  run_params={"b": 3}, params={"a": 1, "b": 2})
    assert engine.model.params == {"a": 1, "b": 3}     # run params override the config's
    engine.step(0.0, 0.5)
    engine.step(0.5, 0.5)
    assert engine.model.steps == [(0.0, 0.5), (0.5, 0.5)]
    assert isinstance(engine.version(), str)


def test_model_in_a_subfolder(experiment: Path) -> None:
    engine = load(experiment, "models_sub/arena.py:World",
                  {"models_sub/arena.py": RECORDING_WORLD})
    assert type(engine.model).__module__ == "models_sub.arena"


def test_datapacks_through_the_models_methods(experiment: Path) -> None:
    source = RECORDING_WORLD + '''
    def get_datapack(self, name):
        return self.packs[name]

    def set_datapack(self, name, value):
        self.packs = {**getattr(self, "packs", {}), name: value}
'''
    engine = load(experiment, "world_packs.py:World", {"world_packs.py": source})
    engine.set_datapack("motor", [1, 2])
    assert engine.get_datapack("motor") == [1, 2]
    assert engine.model.packs == {"motor": [1, 2]}
    assert not hasattr(engine.model, "motor")


def test_datapacks_fall_back_to_attributes(experiment: Path) -> None:
    engine = load(experiment, "world_attrs.py:World", {"world_attrs.py": ATTRIBUTE_WORLD})
    engine.step(0.0, 2.0)
    assert engine.get_datapack("position") == 3.5
    engine.set_datapack("motor", 0.25)
    assert engine.model.motor == 0.25
    with pytest.raises(KernelError, match="engine 'world' has no datapack 'missing'"):
        engine.get_datapack("missing")


def test_finalize_lets_the_model_save_results(experiment: Path, tmp_path: Path) -> None:
    source = ATTRIBUTE_WORLD + '''
    def save_results(self, results_dir):
        (results_dir / "position.txt").write_text(str(self.position))
'''
    engine = load(experiment, "world_saves.py:World", {"world_saves.py": source})
    engine.finalize(tmp_path)
    assert (tmp_path / "position.txt").read_text() == "1.5"


@pytest.mark.parametrize("model, files, message", [
    pytest.param("world_nocolon.py", {"world_nocolon.py": ATTRIBUTE_WORLD},
                 'must have the form "module.py:Name"', id="no-class"),
    pytest.param("world_noname.py:", {"world_noname.py": ATTRIBUTE_WORLD},
                 'must have the form "module.py:Name"', id="empty-class"),
    pytest.param("world_txt.txt:World", {"world_txt.txt": ATTRIBUTE_WORLD},
                 "not a .py file inside the experiment", id="not-py"),
    pytest.param("../world_up.py:World", {}, "not a .py file inside the experiment",
                 id="parent"),
    pytest.param("/tmp/world_abs.py:World", {}, "not a .py file inside the experiment",
                 id="absolute"),
    pytest.param("world_absent.py:World", {}, "'world_absent.py' does not exist",
                 id="missing-file"),
    pytest.param("world_other.py:World", {"world_other.py": "class Other:\n    pass\n"},
                 "world_other.py defines no 'World'", id="missing-class"),
    pytest.param("world_syntax.py:World",
                 {"world_syntax.py": "import math\n\nclass World(:\n    pass\n"},
                 "world_syntax.py: syntax error at line 3", id="syntax-error"),
    pytest.param("world_raises.py:World",
                 {"world_raises.py": "import no_such_module_here\n"},
                 "world_raises.py failed to import: ModuleNotFoundError", id="import-error"),
    pytest.param(None, {}, "'model' must be", id="no-model"),
    pytest.param(42, {}, "'model' must be", id="model-not-a-string"),
])
def test_bad_model_specs_are_experiment_errors(
        experiment: Path, model: Any, files: dict[str, str], message: str) -> None:
    with pytest.raises(ExperimentError) as refused:
        load(experiment, model, files)
    assert message in str(refused.value)
    assert refused.value.error_type == "experiment_error"


def test_initialize_raising_is_a_kernel_error(experiment: Path) -> None:
    source = '''
class World:
    def initialize(self, params):
        raise ValueError("no arena of size %s" % params["size"])

    def step(self, t, dt):
        pass
'''
    with pytest.raises(KernelError) as refused:
        load(experiment, "world_fails.py:World", {"world_fails.py": source},
             run_params={"size": 7})
    message = str(refused.value)
    assert "engine 'world'" in message and "ValueError: no arena of size 7" in message
    assert refused.value.details() == {"engine": "world"}
    assert refused.value.error_type == "kernel_error"


def test_model_without_step_is_a_kernel_error(experiment: Path) -> None:
    with pytest.raises(KernelError, match="step"):
        load(experiment, "world_nostep.py:World", {"world_nostep.py": "class World:\n  pass\n"})


def test_a_module_named_like_an_installed_one_is_refused_clearly(experiment: Path) -> None:
    # Loading it under that name would shadow the real module for everything else.
    with pytest.raises(ExperimentError, match="random.py clashes with the installed module"):
        load(experiment, "random.py:World", {"random.py": ATTRIBUTE_WORLD})


# -- build_kernel -----------------------------------------------------------------

CLOSED_LOOP = {
    "arena_k.py": ATTRIBUTE_WORLD,
    "brain_k.py": "class Brain:\n    sensed = None\n    def step(self, t, dt):\n        pass\n",
    "tf_k.py": '''
from simserver.script import transceiver

@transceiver
def sense(engines, t):
    engines["brain"].set_datapack("sensed", engines["arena"].get_datapack("position"))

@transceiver
def clock(engines, t):
    engines["brain"].set_datapack("t", t)

def not_a_transceiver(engines, t):
    raise AssertionError("unmarked functions are not called")
''',
}


def kernel_config(**config: Any) -> dict[str, Any]:
    return {"main_script": "main.py", "timestep": 0.5,
            "engines": {"arena": {"type": "python", "model": "arena_k.py:World"},
                        "brain": {"type": "python", "model": "brain_k.py:Brain"}},
            **config}


def test_build_kernel_closes_the_loop_through_transceivers(experiment: Path) -> None:
    write_files(experiment, CLOSED_LOOP)
    kernel = build_kernel(kernel_config(transceivers="tf_k.py"), experiment, {})
    assert list(kernel.engines) == ["arena", "brain"]
    assert [tf.__name__ for tf in kernel.transceivers] == ["sense", "clock"]
    for _ in range(3):
        kernel.step()
    brain = kernel.engines["brain"].model
    # The transceivers ran before the third step: they saw the world after two.
    assert (brain.sensed, brain.t) == (2.5, 1.0)
    assert kernel.time == 1.5


def test_build_kernel_names_the_known_engine_types(experiment: Path) -> None:
    config = {"engines": {"cortex": {"type": "nest2", "network": "brain.py"}}}
    with pytest.raises(ExperimentError, match="engine 'cortex' has unknown type 'nest2'; "
                                              "known types: nest, neuron, python"):
        build_kernel(config, experiment, {})


@pytest.mark.parametrize("engines", [[], {"world": "python"}, {"world": {"model": "a.py:A"}}],
                         ids=["list", "not-an-object", "no-type"])
def test_build_kernel_rejects_malformed_engine_entries(experiment: Path, engines: Any) -> None:
    with pytest.raises(ExperimentError, match="engine"):
        build_kernel({"engines": engines}, experiment, {})


def test_transceivers_module_without_marked_functions(experiment: Path) -> None:
    write_files(experiment, {**CLOSED_LOOP,
                             "tf_unmarked.py": "def sense(engines, t):\n    pass\n"})
    with pytest.raises(ExperimentError, match="tf_unmarked.py defines no function marked "
                                              "@transceiver"):
        build_kernel(kernel_config(transceivers=["tf_unmarked.py"]), experiment, {})


@pytest.mark.parametrize("transceivers", [42, ["tf.py", 3], {"tf": "tf.py"}])
def test_transceivers_must_name_files(experiment: Path, transceivers: Any) -> None:
    write_files(experiment, CLOSED_LOOP)
    with pytest.raises(ExperimentError, match="'transceivers' must be"):
        build_kernel(kernel_config(transceivers=transceivers), experiment, {})


@pytest.mark.parametrize("timestep", [0, -1, 0.0, "x", "1.0", True, math.nan, math.inf, None],
                         ids=repr)
def test_bad_timesteps_are_experiment_errors(experiment: Path, timestep: Any) -> None:
    with pytest.raises(ExperimentError, match="'timestep' must be a positive number"):
        build_kernel({"timestep": timestep}, experiment, {})


@pytest.mark.parametrize("config, timestep", [({}, 1.0), ({"timestep": 2}, 2.0),
                                              ({"timestep": 0.025}, 0.025)])
def test_timestep_defaults_to_one_ms(config: dict, timestep: float) -> None:
    parsed = parse_timestep(config)
    assert parsed == timestep and isinstance(parsed, float)


def test_experiment_modules_do_not_leak_between_tests() -> None:
    # Runs after the tests above: their modules and sys.path entries are gone.
    assert not any(name.startswith(("world_", "models_sub", "tf_k", "arena_k"))
                   for name in sys.modules)
    assert not any(entry.endswith("experiment") for entry in sys.path)
