"""The neuron engine in process, with real NEURON: building, stepping, datapacks, results.

NEURON is one interpreter per process. Every kernel is shut down by the ``nest_kernel``
fixture (it builds kernels of any engine), and a shut-down engine lets go of the model's
sections, so each test starts from an empty NEURON (asserted by ``empty_neuron``).
Reference runs build the same model by hand in this process and make one
``h.continuerun(tstop)``.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simserver.engines import ENGINE_TYPES
from simserver.errors import ExperimentError, KernelError
from simserver.neuron_engine import import_neuron
from tests.support import ROOT, python_c

# Not importorskip: CI installs NEURON (the ``neuron`` extra), and a broken install must fail.
neuron = import_neuron()
h = neuron.h
h.load_file("stdrun.hoc")

CELL = (ROOT / "examples" / "neuron_cell" / "cell.py").read_text()

#: The example's current step, early enough for short runs.
STEP = {"delay": 20.0, "dur": 150.0, "amp": 0.1}


def neuron_config(model: str = "cell_model.py", timestep: float = 1.0,
                  **engine: Any) -> dict[str, Any]:
    return {"timestep": timestep,
            "engines": {"cell": {"type": "neuron", "model": model, **engine}}}


@pytest.fixture
def neuron_kernel(nest_kernel: Callable, empty_neuron: None) -> Callable:
    """``neuron_kernel(config, files, params)``: a kernel, shut down after the test."""
    return nest_kernel


@pytest.fixture
def empty_neuron() -> Iterator[None]:
    assert not list(h.allsec()), "a test before this one left sections in NEURON"
    yield


def reference(params: dict[str, Any], tstop: float, dt: float = 0.025,
              v_init: float = -65.0, changes: tuple = ()) -> dict[str, np.ndarray]:
    """The example cell built by hand, run by one ``h.continuerun(tstop)``.

    ``changes`` are ``(t, attribute, value)`` set on the clamp at time t, each part of
    the run between two of them being one continuerun.
    """
    namespace: dict[str, Any] = {}
    exec(CELL, namespace)  # noqa: S102  (the example model, as the engine would import it)
    h.dt = dt
    built = namespace["build"](h, params)
    t = h.Vector().record(h._ref_t)
    m = h.Vector().record(built["soma"](0.5)._ref_m_hh)
    h.finitialize(v_init)
    for when, attribute, value in changes:
        h.continuerun(when)
        setattr(built["stim"], attribute, value)
    h.continuerun(tstop)
    found = {"t": np.array(t), "soma_v": np.array(built["soma_v"]), "m": np.array(m)}
    del built, t, m, namespace
    assert not list(h.allsec())
    return found


def run(kernel: Any, until: float, results: Path) -> dict[str, np.ndarray]:
    while kernel.time < until - 1e-9:
        kernel.step()
    kernel.finalize(results)
    kernel.draw(results)
    kernel.shutdown()
    return dict(np.load(results / "cell.npz"))


def spikes(v: np.ndarray) -> int:
    return int(((v[:-1] < 0.0) & (v[1:] >= 0.0)).sum())


# -- building -------------------------------------------------------------------------

def test_neuron_type_is_registered() -> None:
    assert "neuron" in ENGINE_TYPES


def test_python_only_experiments_never_import_neuron(tmp_path: Path) -> None:
    (tmp_path / "world_only.py").write_text("class World:\n    def step(self, t, dt):\n"
                                            "        pass\n")
    code = (
        "import sys\nfrom pathlib import Path\nfrom simserver.kernel import build_kernel\n"
        "config = {'engines': {'w': {'type': 'python', 'model': 'world_only.py:World'}}}\n"
        f"kernel = build_kernel(config, Path({str(tmp_path)!r}), {{}})\n"
        "kernel.step(); kernel.finalize(Path('.')); kernel.shutdown()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('neuron', 'matplotlib') "
        "or m in ('simserver.neuron_engine', 'simserver.traces')))\n")
    out = python_c(code, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_build_gets_h_params_and_settings(neuron_kernel: Callable) -> None:
    kernel = neuron_kernel(neuron_config(dt=0.01, v_init=-70.0, params={"diam": 30.0}),
                           {"cell_model.py": CELL}, {"amp": 0.25})
    cell = kernel.engines["cell"]
    assert cell.h is h and cell.version() == neuron.__version__
    assert (h.dt, cell.dt, h.t) == (0.01, 0.01, 0.0)
    assert set(cell.recordings) == {"soma_v", "t"} and set(cell.parts) == {"soma", "stim"}
    assert cell.parts["soma"].diam == 30.0                       # engine params
    assert cell.get_datapack("stim.amp") == 0.25                 # run params override
    assert cell.get_datapack("soma_v") == -70.0                  # finitialize(v_init)
    assert list(cell.step_samples("t")) == [0.0]


def test_run_params_override_dt_and_v_init(neuron_kernel: Callable) -> None:
    kernel = neuron_kernel(neuron_config(dt=0.01, v_init=-70.0), {"cell_model.py": CELL},
                           {"dt": 0.05, "v_init": -60.0})
    kernel.step()
    cell = kernel.engines["cell"]
    assert cell.dt == 0.05 and len(cell.step_samples("t")) == 20
    assert cell.recordings["soma_v"].x[0] == -60.0


# -- stepping ---------------------------------------------------------------------------

@pytest.mark.parametrize("dt, timestep", [(0.025, 1.0), (0.025, 0.1), (0.01, 0.5),
                                          (0.005, 2.5), (0.025, 0.025)])
def test_steps_are_one_continuerun(neuron_kernel: Callable, tmp_path: Path, dt: float,
                                   timestep: float) -> None:
    kernel = neuron_kernel(neuron_config(timestep=timestep, dt=dt,
                                         record={"m": "soma(0.5).m_hh"}),
                           {"cell_model.py": CELL}, STEP)
    stepped = run(kernel, 100.0, tmp_path)
    expected = reference(STEP, 100.0, dt)
    assert stepped.keys() == {"soma_v", "t", "m"}
    assert len(expected["t"]) == round(100.0 / dt) + 1
    assert spikes(expected["soma_v"]) >= 3, "the cell should fire in the reference"
    for key in expected:
        np.testing.assert_array_equal(stepped[key], expected[key], err_msg=key)


def test_each_step_takes_timestep_over_dt_samples(neuron_kernel: Callable) -> None:
    kernel = neuron_kernel(neuron_config(timestep=0.5, dt=0.025), {"cell_model.py": CELL},
                           STEP)
    cell = kernel.engines["cell"]
    pieces, lasts = [cell.step_samples("soma_v")], []
    for _ in range(200):
        kernel.step()
        pieces.append(cell.step_samples("soma_v"))
        lasts.append(cell.get_datapack("soma_v"))
        assert len(pieces[-1]) == 20
        assert cell.step_samples("t")[-1] == pytest.approx(kernel.time, abs=1e-9)
    whole = cell.recordings["soma_v"].as_numpy()
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert lasts == [piece[-1] for piece in pieces[1:]]
    assert spikes(whole) >= 3


@pytest.mark.parametrize("timestep, dt, message", [
    (0.03, 0.025, "the timestep 0.03 ms is not a whole multiple of NEURON's dt 0.025 ms"),
    (0.01, 0.025, "the timestep 0.01 ms is not a whole multiple of NEURON's dt 0.025 ms"),
    (1.0, 0.3, "the timestep 1 ms is not a whole multiple of NEURON's dt 0.3 ms"),
], ids=["off-multiple", "below-dt", "dt-not-dividing"])
def test_a_timestep_off_dt_is_refused_at_initialize(neuron_kernel: Callable, timestep: float,
                                                    dt: float, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        neuron_kernel(neuron_config(timestep=timestep, dt=dt), {"cell_model.py": CELL})
    assert not list(h.allsec()), "the refused engine let go of its sections"


# -- datapacks ----------------------------------------------------------------------------

def test_setting_the_clamp_acts_from_the_next_step(neuron_kernel: Callable,
                                                   tmp_path: Path) -> None:
    quiet = {**STEP, "amp": 0.0}
    kernel = neuron_kernel(neuron_config(record={"m": "soma(0.5).m_hh"}),
                           {"cell_model.py": CELL}, quiet)
    cell = kernel.engines["cell"]
    for _ in range(50):
        kernel.step()
    assert spikes(cell.recordings["soma_v"].as_numpy()) == 0
    cell.set_datapack("stim.amp", 0.2)
    assert cell.get_datapack("stim.amp") == 0.2
    stepped = run(kernel, 150.0, tmp_path)
    assert spikes(stepped["soma_v"]) >= 3
    expected = reference(quiet, 150.0, changes=((50.0, "amp", 0.2),))
    for key in expected:
        np.testing.assert_array_equal(stepped[key], expected[key], err_msg=key)


def test_section_attributes_are_datapacks(neuron_kernel: Callable) -> None:
    kernel = neuron_kernel(neuron_config(), {"cell_model.py": CELL}, STEP)
    cell = kernel.engines["cell"]
    assert cell.get_datapack("soma.gnabar_hh") == 0.12
    cell.set_datapack("soma.gnabar_hh", 0.0)           # no sodium: no spikes
    for _ in range(100):
        kernel.step()
    assert cell.parts["soma"](0.5).hh.gnabar == 0.0
    assert spikes(cell.recordings["soma_v"].as_numpy()) == 0


@pytest.mark.parametrize("call, message", [
    (lambda c: c.get_datapack("nothing"), "engine 'cell' has no datapack 'nothing'"),
    (lambda c: c.get_datapack("stim.nope"),
     ("cannot read 'stim.nope': AttributeError: 'hoc.HocObject' object has no attribute "
     "'nope'")),
    (lambda c: c.step_samples("stim"), "engine 'cell' has no recording 'stim'"),
    (lambda c: c.set_datapack("soma_v", 1.0), "engine 'cell' takes no datapack 'soma_v'"),
    (lambda c: c.set_datapack("stim", 1.0), "engine 'cell' takes no datapack 'stim'"),
    (lambda c: c.set_datapack("stim.amp", "strong"),
     "cannot set 'stim.amp' to 'strong': TypeError: must be real number, not str"),
    (lambda c: c.set_datapack("stim.ampp", 1.0),
     "cannot set 'stim.ampp' to 1.0: LookupError: 'ampp' is not a defined hoc variable name."),
], ids=["unknown-get", "unknown-attribute", "samples-of-a-part", "set-a-recording",
        "set-a-part", "bad-value", "unknown-set"])
def test_datapack_errors_are_kernel_errors(neuron_kernel: Callable, call: Callable,
                                           message: str) -> None:
    kernel = neuron_kernel(neuron_config(), {"cell_model.py": CELL})
    kernel.step()
    with pytest.raises(KernelError) as refused:
        call(kernel.engines["cell"])
    assert message in str(refused.value)
    assert refused.value.details() == {"engine": "cell"}


# -- results ------------------------------------------------------------------------------

def test_finalize_saves_every_recording_and_a_voltage_plot(neuron_kernel: Callable,
                                                           tmp_path: Path) -> None:
    kernel = neuron_kernel(neuron_config(record={"i_stim": "stim.i", "h": "soma(0.5).h_hh"}),
                           {"cell_model.py": CELL}, STEP)
    results = tmp_path / "results"
    results.mkdir()
    saved = run(kernel, 40.0, results)
    assert sorted(saved) == ["h", "i_stim", "soma_v", "t"]
    assert all(values.dtype == np.float64 and len(values) == 1601
               for values in saved.values())
    assert saved["t"][-1] == pytest.approx(40.0, abs=1e-9)
    assert saved["i_stim"].max() == 0.1 and saved["i_stim"][0] == 0.0
    assert (results / "cell_v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in results.iterdir()) == ["cell.npz", "cell_v.png"]


def test_finalize_before_any_step_and_without_voltages(neuron_kernel: Callable,
                                                       tmp_path: Path) -> None:
    kernel = neuron_kernel(neuron_config(), {"cell_model.py": CELL})
    kernel.finalize(tmp_path)
    assert {k: list(v) for k, v in np.load(tmp_path / "cell.npz").items()} == \
        {"t": [0.0], "soma_v": [-65.0]}
    kernel.shutdown()
    bare = tmp_path / "bare"
    bare.mkdir()
    kernel = neuron_kernel(neuron_config("cell_bare.py"), {"cell_bare.py": '''
def build(h, params):
    soma = h.Section(name="soma")
    return {"soma": soma, "ina": h.Vector().record(soma(0.5)._ref_v)}
'''})
    kernel.step()
    kernel.finalize(bare)
    assert sorted(p.name for p in bare.iterdir()) == ["cell.npz"]
    assert sorted(np.load(bare / "cell.npz")) == ["ina", "t"]


def test_shutdown_lets_go_of_the_model(neuron_kernel: Callable) -> None:
    kernel = neuron_kernel(neuron_config(), {"cell_model.py": CELL})
    assert [sec.name() for sec in h.allsec()] == ["soma"]
    kernel.shutdown()
    assert not list(h.allsec())


# -- failures ----------------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    ("def build(h, params)\n    return {}\n",
     "engine 'cell': cell_bad.py: syntax error at line 1: expected ':'"),
    ("import no_such_module_here\n",
     ("engine 'cell': cell_bad.py failed to import: ModuleNotFoundError: No module named "
     "'no_such_module_here'")),
    ("x = 1\n", "engine 'cell': cell_bad.py defines no build(h, params)"),
    ('def build(h, params):\n    raise ValueError("no such cell: pyramidal")\n',
     "engine 'cell': cell_bad.py build() failed: ValueError: no such cell: pyramidal"),
    ('def build(h, params):\n    soma = h.Section(name="soma")\n    soma.insert("nope")\n',
     ("engine 'cell': cell_bad.py build() failed: ValueError: argument not a density "
     "mechanism name.")),
    ('def build(h, params):\n    h.execerror("bad cell", "geometry")\n',
     ("engine 'cell': cell_bad.py build() failed: RuntimeError: hocobj_call error: "
     "hoc_execerror: bad cell geometry")),
    ('def build(h, params):\n    return [h.Vector()]\n',
     ("build() must return a dict of name -> h.Vector (recordings) or model part, names "
     "being identifiers, not list")),
    ('def build(h, params):\n    return {"soma v": h.Vector()}\n',
     "names being identifiers, not a dict with the name 'soma v'"),
    ('def build(h, params):\n    return {"t": 0.0}\n',
     "build() returned 't' but not as an h.Vector recording time"),
    ('def build(h, params):\n    h.cvode.active(1)\n    return {}\n',
     "build() switched CVode on; the neuron engine steps with NEURON's fixed time step dt"),
    (('def build(h, params):\n    soma = h.Section(name="soma")\n    soma.diam = -1\n'
     '    return {"soma": soma}\n'),
     ("engine 'cell': NEURON failed to initialize at v_init = -65 mV: RuntimeError: "
     "hocobj_call error: hoc_execerror: soma diameter diam = 0. Setting to 1e-6")),
], ids=["syntax", "import", "no-build", "raises", "unknown-mechanism", "hoc-error",
        "not-a-dict", "bad-name", "t-not-a-vector", "cvode", "finitialize"])
def test_bad_models_are_kernel_errors(neuron_kernel: Callable, source: str,
                                      message: str) -> None:
    with pytest.raises(KernelError) as refused:
        neuron_kernel(neuron_config("cell_bad.py"), {"cell_bad.py": source})
    assert message in str(refused.value)
    assert refused.value.details() == {"engine": "cell"}
    assert not list(h.allsec())
    h.cvode.active(0)


@pytest.mark.parametrize("engine, files, message", [
    ({}, {}, "'model' must name a .py file that defines build(h, params)"),
    ({"model": "absent.py"}, {}, "engine 'cell': 'absent.py' does not exist"),
    ({"model": "../cell.py"}, {}, "'../cell.py' is not a .py file inside the experiment"),
    ({"model": "cell_model.py", "dt": 0}, {"cell_model.py": CELL},
     "'dt' must be a positive number, not 0"),
    ({"model": "cell_model.py", "v_init": "rest"}, {"cell_model.py": CELL},
     "'v_init' must be a number, not 'rest'"),
    ({"model": "cell_model.py", "record": ["soma(0.5).v"]}, {"cell_model.py": CELL},
     "'record' must be an object of name -> \"part(x).variable\""),
    ({"model": "cell_model.py", "record": {"v": "dend(0.5).v"}}, {"cell_model.py": CELL},
     ("'record' 'v' must be \"part(x).variable\" or \"part.variable\" with a part build() "
     "returned (soma, stim), not 'dend(0.5).v'")),
    ({"model": "cell_model.py", "record": {"soma_v": "soma(0.5).v"}}, {"cell_model.py": CELL},
     "'record' name 'soma_v' must be an identifier that build() did not return"),
], ids=["no-model", "missing-file", "outside", "dt", "v_init", "record-list",
        "record-unknown-part", "record-clash"])
def test_bad_engine_configs_are_experiment_errors(neuron_kernel: Callable, engine: dict,
                                                  files: dict, message: str) -> None:
    config = {"engines": {"cell": {"type": "neuron", **engine}}}
    with pytest.raises(ExperimentError) as refused:
        neuron_kernel(config, files)
    assert message in str(refused.value)
    assert not list(h.allsec())


def test_recording_a_variable_neuron_lacks(neuron_kernel: Callable) -> None:
    with pytest.raises(KernelError, match=r"engine 'cell': cannot record 'soma\(0.5\).m_kv': "
                                          r"AttributeError: .*m_kv"):
        neuron_kernel(neuron_config(record={"m": "soma(0.5).m_kv"}), {"cell_model.py": CELL})


def test_neuron_that_cannot_be_imported(neuron_kernel: Callable,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "neuron", None)          # `import neuron` raises
        with pytest.raises(KernelError, match="engine 'cell': NEURON cannot be imported: "
                                              "ModuleNotFoundError"):
            neuron_kernel(neuron_config(), {"cell_model.py": CELL})
    # The failed engine let go of NEURON: the next one gets it.
    assert neuron_kernel(neuron_config(), {"cell_model.py": CELL})


def test_one_neuron_engine_per_process(neuron_kernel: Callable) -> None:
    config = {"engines": {"a": {"type": "neuron", "model": "cell_model.py"},
                          "b": {"type": "neuron", "model": "cell_model.py"}}}
    with pytest.raises(KernelError, match="engine 'b': NEURON is already used by engine 'a'"):
        neuron_kernel(config, {"cell_model.py": CELL})
    # build_kernel shut engine 'a' down when 'b' failed: NEURON is free again.
    assert not list(h.allsec())
    assert neuron_kernel(neuron_config(), {"cell_model.py": CELL})


def test_a_nest_engine_beside_it(neuron_kernel: Callable, tmp_path: Path) -> None:
    brain = (ROOT / "examples" / "brunel" / "brain.py").read_text()
    config = {"engines": {"brain": {"type": "nest", "network": "brain_beside.py", "seed": 7},
                          "cell": {"type": "neuron", "model": "cell_model.py"}}}
    kernel = neuron_kernel(config, {"cell_model.py": CELL, "brain_beside.py": brain},
                           {**STEP, "n_neurons": 100})
    results = tmp_path / "results"
    results.mkdir()
    stepped = run(kernel, 60.0, results)
    assert sorted(p.name for p in results.iterdir()) == ["cell.npz", "cell_v.png",
                                                         "raster.png", "spikes.npz"]
    assert len(np.load(results / "spikes.npz")["ex_spikes_times"]) > 0
    np.testing.assert_array_equal(stepped["soma_v"], reference(STEP, 60.0)["soma_v"])
