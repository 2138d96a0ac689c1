"""The nest engine in process, with real NEST: building, stepping, datapacks, results.

Network modules get names of their own per test (the ``experiment`` fixture forgets the
modules it imported), and every kernel is shut down by the ``nest_kernel`` fixture.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from simserver.engines import ENGINE_TYPES
from simserver.errors import ExperimentError, KernelError, SimulationTimeout
from simserver.nest_engine import import_nest
from simserver.runloop import RunLoop
from simserver.spikes import sorted_spikes
from tests.support import ROOT, python_c

# Not importorskip: CI installs NEST (the ``nest`` extra), and a broken install must fail.
nest = import_nest()

BRUNEL = (ROOT / "examples" / "brunel" / "brain.py").read_text()

#: Ten neurons with an input of every kind the datapacks set, and a spike recorder.
DRIVEN = '''
def build(nest, params):
    pop = nest.Create("iaf_psc_alpha", 10, params={"I_e": params.get("I_e", 0.0)})
    drive = nest.Create("poisson_generator", params={"rate": params.get("rate", 0.0)})
    dc = nest.Create("dc_generator")
    nest.Connect(drive, pop, syn_spec={"weight": 200.0})
    nest.Connect(dc, pop)
    spikes = nest.Create("spike_recorder")
    nest.Connect(pop, spikes)
    return {"pop": pop, "drive": drive, "dc": dc, "spikes": spikes}
'''


def nest_config(network: str, timestep: float = 1.0, **engine: Any) -> dict[str, Any]:
    return {"timestep": timestep,
            "engines": {"brain": {"type": "nest", "network": network, **engine}}}


def events(recorder: Any) -> tuple[np.ndarray, np.ndarray]:
    """A recorder's events, sorted as spikes.npz sorts them."""
    return sorted_spikes([recorder.get("events")])


def reference_spikes(params: dict[str, Any], sim_time: float) -> dict[str, np.ndarray]:
    """The Brunel network in a fresh NEST kernel, run by one nest.Simulate."""
    namespace: dict[str, Any] = {}
    exec(BRUNEL, namespace)
    nest.ResetKernel()
    nest.set(rng_seed=12345, local_num_threads=1, resolution=0.1)
    nodes = namespace["build"](nest, params)
    nest.Simulate(sim_time)
    found = {}
    for name in ("ex_spikes", "in_spikes"):
        found[f"{name}_times"], found[f"{name}_senders"] = events(nodes[name])
    return found


# -- building -------------------------------------------------------------------------

def test_nest_type_is_registered_by_name_until_used() -> None:
    assert "nest" in ENGINE_TYPES


def test_python_only_experiments_never_import_nest(tmp_path: Path) -> None:
    (tmp_path / "world_only.py").write_text("class World:\n    def step(self, t, dt):\n"
                                            "        pass\n")
    code = (
        "import sys\nfrom pathlib import Path\nfrom simserver.kernel import build_kernel\n"
        "config = {'engines': {'w': {'type': 'python', 'model': 'world_only.py:World'}}}\n"
        f"kernel = build_kernel(config, Path({str(tmp_path)!r}), {{}})\n"
        "kernel.step(); kernel.finalize(Path('.')); kernel.shutdown()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('nest', 'matplotlib') or m == 'simserver.nest_engine'))\n")
    out = python_c(code, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_build_applies_the_kernel_settings(nest_kernel: Callable) -> None:
    kernel = nest_kernel(nest_config("net_settings.py", seed=7, threads=1, resolution=0.05),
                         {"net_settings.py": DRIVEN}, {"I_e": 10.0})
    brain = kernel.engines["brain"]
    assert brain.nest is nest
    assert set(brain.nodes) == {"pop", "drive", "dc", "spikes"}
    assert (nest.rng_seed, nest.local_num_threads, nest.resolution) == (7, 1, 0.05)
    assert brain.nodes["pop"].get("I_e") == (10.0,) * 10      # run params reach build
    assert brain.version() == nest.__version__


@pytest.mark.parametrize("timestep", [1.0, 0.5, 2.5])
def test_steps_are_one_simulate(nest_kernel: Callable, tmp_path: Path, timestep: float,
                                caplog: pytest.LogCaptureFixture) -> None:
    params = {"n_neurons": 200}
    kernel = nest_kernel(nest_config("brunel_steps.py", timestep, seed=12345),
                         {"brunel_steps.py": BRUNEL}, params)
    caplog.set_level(logging.WARNING, logger="simserver.nest_engine")
    while kernel.time < 100.0:
        kernel.step()
    kernel.finalize(tmp_path)
    kernel.shutdown()
    stepped = dict(np.load(tmp_path / "spikes.npz"))
    expected = reference_spikes(params, 100.0)
    assert stepped.keys() == expected.keys()
    assert len(stepped["ex_spikes_times"]) > 100
    for key in expected:
        np.testing.assert_array_equal(stepped[key], expected[key], err_msg=key)
    warned = [r for r in caplog.records if "not a multiple of NEST's min_delay" in r.message]
    assert len(warned) == (timestep % 1.0 != 0)      # min_delay is 1 ms (the recorders)


@pytest.mark.parametrize("timestep", [1.0, 0.5])
def test_chunked_steps_are_one_simulate(nest_kernel: Callable, tmp_path: Path,
                                        timestep: float) -> None:
    """``run_loop(n)`` hands NEST several steps per ``Run`` (see RunLoop._advance); the
    simulation is the same, up to the sim-time timeout exactly."""
    params = {"n_neurons": 200}
    kernel = nest_kernel(nest_config("brunel_chunks.py", timestep, seed=12345),
                         {"brunel_chunks.py": BRUNEL}, params)
    brain = kernel.engines["brain"]
    runs: list[float] = []
    step = brain.step
    brain.step = lambda t, dt: (runs.append(dt), step(t, dt))
    loop = RunLoop(kernel, sim_timeout=100.0)
    loop.release()
    with pytest.raises(SimulationTimeout):
        loop.run_loop(10_000)
    kernel.finalize(tmp_path)
    kernel.shutdown()
    assert len(runs) < 100.0 / timestep and sum(runs) == pytest.approx(100.0)
    assert kernel.time == 100.0 and nest.biological_time == pytest.approx(100.0)
    stepped = dict(np.load(tmp_path / "spikes.npz"))
    for key, expected in reference_spikes(params, 100.0).items():
        np.testing.assert_array_equal(stepped[key], expected, err_msg=key)


def test_a_tap_makes_nest_step_one_by_one(nest_kernel: Callable) -> None:
    kernel = nest_kernel(nest_config("net_compose.py"), {"net_compose.py": DRIVEN})
    brain = kernel.engines["brain"]
    assert brain.steps_compose() and kernel.steps_compose()
    brain.get_datapack("pop")
    assert not brain.steps_compose() and not kernel.steps_compose()


def test_reading_datapacks_does_not_change_the_simulation(nest_kernel: Callable,
                                                          tmp_path: Path) -> None:
    params = {"n_neurons": 200}
    kernel = nest_kernel(nest_config("brunel_taps.py", seed=12345),
                         {"brunel_taps.py": BRUNEL}, params)
    brain = kernel.engines["brain"]
    for _ in range(60):
        brain.get_datapack("excitatory")
        kernel.step()
    brain.get_datapack("inhibitory")            # attached mid-run
    for _ in range(40):
        kernel.step()
    kernel.finalize(tmp_path)
    kernel.shutdown()
    stepped = np.load(tmp_path / "spikes.npz")
    for key, expected in reference_spikes(params, 100.0).items():
        np.testing.assert_array_equal(stepped[key], expected, err_msg=key)


# -- datapacks ----------------------------------------------------------------------------

def test_population_datapack_counts_the_last_step(nest_kernel: Callable) -> None:
    kernel = nest_kernel(nest_config("net_counts.py", timestep=5.0),
                         {"net_counts.py": DRIVEN}, {"I_e": 450.0, "rate": 3000.0})
    brain = kernel.engines["brain"]
    assert brain.get_datapack("pop") == {"count": 0, "rate": 0.0}
    counts = []
    for _ in range(20):
        kernel.step()
        counts.append(brain.get_datapack("pop"))
        assert brain.get_datapack("pop") == counts[-1]      # reading again changes nothing
    times, _ = events(brain.nodes["spikes"])
    # A spike at exactly the end of a step belongs to that step: (t, t + dt].
    per_step = [int(np.sum((times > 5.0 * i) & (times <= 5.0 * (i + 1)))) for i in range(20)]
    assert [c["count"] for c in counts] == per_step
    assert sum(per_step) == len(times) > 20
    assert [c["rate"] for c in counts] == [n / 10 / 0.005 for n in per_step]


def test_population_datapacks_read_only_new_spikes(nest_kernel: Callable,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = nest_kernel(nest_config("net_incremental.py", timestep=5.0),
                         {"net_incremental.py": DRIVEN}, {"I_e": 450.0})
    brain = kernel.engines["brain"]
    brain.get_datapack("pop")
    asked: list[Any] = []
    real_get = nest.NodeCollection.get
    total = 0
    with monkeypatch.context() as patched:
        patched.setattr(nest.NodeCollection, "get", lambda self, *keys, **kw:
                        asked.append(keys) or real_get(self, *keys, **kw))
        for _ in range(30):
            kernel.step()
            total += brain.get_datapack("pop")["count"]
    assert not [keys for keys in asked if "events" in keys or "n_events" in keys]
    assert total == brain.nodes["spikes"].n_events > 0


def test_setting_a_poisson_rate_acts_from_the_next_step(nest_kernel: Callable) -> None:
    kernel = nest_kernel(nest_config("net_rate.py", timestep=10.0), {"net_rate.py": DRIVEN})
    brain = kernel.engines["brain"]
    for _ in range(3):
        kernel.step()
        assert brain.get_datapack("pop")["count"] == 0
    brain.set_datapack("drive", {"rate": 20000.0})
    kernel.step()
    assert brain.get_datapack("pop")["rate"] > 50
    assert brain.nodes["drive"].get("rate") == 20000.0
    brain.set_datapack("drive", {"rate": 0.0})
    for _ in range(3):                           # the synaptic currents decay first
        kernel.step()
    assert brain.get_datapack("pop")["count"] == 0


def test_setting_a_dc_amplitude(nest_kernel: Callable) -> None:
    kernel = nest_kernel(nest_config("net_dc.py", timestep=10.0), {"net_dc.py": DRIVEN})
    brain = kernel.engines["brain"]
    kernel.step()
    assert brain.get_datapack("pop")["count"] == 0
    kernel.step()
    brain.set_datapack("dc", {"amplitude": 1000.0})
    kernel.step()
    assert brain.get_datapack("pop")["count"] > 0
    assert brain.nodes["dc"].get("amplitude") == 1000.0


@pytest.mark.parametrize("call, message", [
    (lambda b: b.get_datapack("nothing"), "engine 'brain' has no datapack 'nothing'"),
    (lambda b: b.get_datapack("drive"), "'drive' is not a neuron population (stimulator)"),
    (lambda b: b.set_datapack("nothing", {"rate": 1.0}), "takes no datapack 'nothing'"),
    (lambda b: b.set_datapack("drive", 5.0), "takes a dict of parameters"),
    (lambda b: b.set_datapack("drive", {"rate": -1.0}),
     "cannot set 'drive' to {'rate': -1.0}: BadProperty: Setting status of a "
     "'poisson_generator' with node ID 11: The rate cannot be negative."),
    (lambda b: b.set_datapack("drive", {"rait": 1.0}), "UnaccessedDictionaryEntry"),
], ids=["unknown-get", "device-get", "unknown-set", "not-a-dict", "nest-refuses",
        "unknown-parameter"])
def test_datapack_errors_are_kernel_errors(nest_kernel: Callable, call: Callable,
                                           message: str) -> None:
    kernel = nest_kernel(nest_config("net_packs.py"), {"net_packs.py": DRIVEN})
    kernel.step()
    with pytest.raises(KernelError) as refused:
        call(kernel.engines["brain"])
    assert message in str(refused.value)
    assert refused.value.details() == {"engine": "brain"}


# -- results ----------------------------------------------------------------------------

def test_finalize_saves_sorted_spikes_and_a_raster(nest_kernel: Callable,
                                                   tmp_path: Path, experiment: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = nest_kernel(nest_config("net_results.py", timestep=5.0),
                         {"net_results.py": DRIVEN}, {"I_e": 450.0, "rate": 3000.0})
    kernel.engines["brain"].get_datapack("pop")
    for _ in range(8):
        kernel.step()
    assert list(experiment.glob("simserver-tap-*"))
    monkeypatch.chdir(tmp_path)                  # a script may change directory
    kernel.finalize(tmp_path)
    assert not (tmp_path / "raster.png").exists(), "drawn after the end is reported"
    kernel.draw(tmp_path)
    kernel.shutdown()
    spikes = np.load(tmp_path / "spikes.npz")
    assert sorted(spikes) == ["spikes_senders", "spikes_times"]
    times, senders = spikes["spikes_times"], spikes["spikes_senders"]
    assert times.dtype == np.float64 and senders.dtype == np.int64
    assert len(times) > 0 and times.max() <= 40.0            # what was simulated
    assert np.all(np.diff(times) >= 0)
    assert set(senders) <= set(range(1, 11))
    assert (tmp_path / "raster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(experiment.glob("simserver-tap-*")), "tap files are removed"


def test_spikes_are_read_once_per_simulated_time(nest_kernel: Callable,
                                                 tmp_path: Path) -> None:
    kernel = nest_kernel(nest_config("net_read.py", timestep=5.0),
                         {"net_read.py": DRIVEN}, {"I_e": 450.0, "rate": 3000.0})
    brain = kernel.engines["brain"]
    assert [len(a) for a in brain.spikes("spikes")] == [0, 0]
    kernel.step()
    first = brain.spikes("spikes")
    assert len(first[0]) > 0 and brain.spikes("spikes") is first
    for found, expected in zip(first, events(brain.nodes["spikes"]), strict=True):
        np.testing.assert_array_equal(found, expected)
    kernel.step()
    later = brain.spikes("spikes")
    assert len(later[0]) > len(first[0])             # time moved on: read again
    kernel.finalize(tmp_path)                         # the save takes the last read
    saved = np.load(tmp_path / "spikes.npz")
    np.testing.assert_array_equal(saved["spikes_times"], later[0])
    np.testing.assert_array_equal(saved["spikes_senders"], later[1])


@pytest.mark.parametrize("name, message", [
    ("pop", "'pop' is not a spike recorder"),
    ("nope", "'nope' is not a spike recorder"),
    ("ascii", "'ascii' is a spike recorder writing to ascii, not to memory"),
])
def test_spikes_of_what_is_no_memory_recorder(nest_kernel: Callable, name: str,
                                               message: str) -> None:
    kernel = nest_kernel(nest_config("net_noread.py"), {"net_noread.py": '''
def build(nest, params):
    pop = nest.Create("iaf_psc_alpha", 3)
    ascii = nest.Create("spike_recorder", params={"record_to": "ascii", "label": "x"})
    nest.Connect(pop, ascii)
    return {"pop": pop, "ascii": ascii}
'''})
    with pytest.raises(KernelError, match=message):
        kernel.engines["brain"].spikes(name)


def test_recorders_writing_files_are_left_to_nest(nest_kernel: Callable, tmp_path: Path,
                                                  experiment: Path) -> None:
    kernel = nest_kernel(nest_config("net_ascii.py", timestep=5.0), {"net_ascii.py": '''
def build(nest, params):
    pop = nest.Create("iaf_psc_alpha", 3, params={"I_e": 450.0})
    memory, ascii = nest.Create("spike_recorder"), nest.Create(
        "spike_recorder", params={"record_to": "ascii", "label": "user-ascii"})
    nest.Connect(pop, memory)
    nest.Connect(pop, ascii)
    return {"pop": pop, "memory": memory, "ascii": ascii}
'''})
    for _ in range(10):
        kernel.step()
    kernel.finalize(tmp_path)
    assert sorted(np.load(tmp_path / "spikes.npz")) == ["memory_senders", "memory_times"]
    assert len(list(experiment.glob("user-ascii-*.dat"))) == 1


def test_finalize_before_any_step_and_without_recorders(nest_kernel: Callable,
                                                        tmp_path: Path) -> None:
    kernel = nest_kernel(nest_config("net_early.py"), {"net_early.py": DRIVEN})
    kernel.finalize(tmp_path)
    assert len(np.load(tmp_path / "spikes.npz")["spikes_times"]) == 0
    kernel.shutdown()
    bare = tmp_path / "bare"
    bare.mkdir()
    kernel = nest_kernel(nest_config("net_bare.py"), {"net_bare.py": '''
def build(nest, params):
    return {"pop": nest.Create("iaf_psc_alpha", 2)}
'''})
    kernel.step()
    kernel.finalize(bare)
    assert list(bare.iterdir()) == []


# -- failures ----------------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    ('def build(nest, params):\n    raise ValueError("no such area: V9")\n',
     "engine 'brain': net_fail.py build() failed: ValueError: no such area: V9"),
    ('def build(nest, params):\n    return {"pop": nest.Create("iaf_nope", 3)}\n',
     "engine 'brain': net_fail.py build() failed: UnknownModelName: iaf_nope is not a known "
     "model name."),
    ('def build(nest, params):\n    return {"pop": nest.Create("iaf_psc_alpha", 3, '
     'params={"C_m": -1.0})}\n',
     "build() failed: BadProperty: Setting status of a 'iaf_psc_alpha' with node ID 1: "
     "Capacitance must be > 0."),
    ('def build(nest, params):\n    return [nest.Create("iaf_psc_alpha")]\n',
     "build() must return a dict of name -> NodeCollection, not list"),
    ('def build(nest, params):\n    return {"pop": 3}\n',
     "build() must return a dict of name -> NodeCollection, not dict"),
], ids=["raises", "unknown-model", "bad-parameter", "not-a-dict", "not-nodes"])
def test_build_failures_are_kernel_errors(nest_kernel: Callable, source: str,
                                          message: str) -> None:
    with pytest.raises(KernelError) as refused:
        nest_kernel(nest_config("net_fail.py"), {"net_fail.py": source})
    assert message in str(refused.value)
    assert refused.value.details() == {"engine": "brain"}


@pytest.mark.parametrize("engine, files, message", [
    ({}, {}, "'network' must name a .py file"),
    ({"network": "absent.py"}, {}, "'absent.py' does not exist"),
    ({"network": "net_nobuild.py"}, {"net_nobuild.py": "x = 1\n"},
     "net_nobuild.py defines no build(nest, params)"),
    ({"network": "net_cfg.py", "seed": 0}, {}, "'seed' must be a positive whole number, not 0"),
    ({"network": "net_cfg.py", "seed": True}, {}, "'seed' must be a positive whole number"),
    ({"network": "net_cfg.py", "threads": 1.5}, {}, "'threads' must be a positive whole number"),
    ({"network": "net_cfg.py", "resolution": "fine"}, {},
     "'resolution' must be a positive number, not 'fine'"),
    ({"network": "net_cfg.py", "verbosity": "LOUD"}, {"net_cfg.py": DRIVEN},
     "'verbosity' must be one of ALL, DEBUG"),
], ids=["no-network", "missing-file", "no-build", "seed-zero", "seed-bool", "threads",
        "resolution", "verbosity"])
def test_bad_engine_configs_are_experiment_errors(nest_kernel: Callable, engine: dict,
                                                  files: dict, message: str) -> None:
    config = {"engines": {"brain": {"type": "nest", **engine}}}
    with pytest.raises(ExperimentError) as refused:
        nest_kernel(config, files)
    assert message in str(refused.value)


@pytest.mark.parametrize("timestep", [0.25, 0.05])
def test_a_timestep_off_the_resolution_is_refused_at_initialize(nest_kernel: Callable,
                                                                  timestep: float) -> None:
    with pytest.raises(ExperimentError, match=f"the timestep {timestep:g} ms is not a "
                                              "multiple of NEST's resolution 0.1 ms"):
        nest_kernel(nest_config("net_dt.py", timestep), {"net_dt.py": DRIVEN})


def test_nest_refusing_a_kernel_setting(nest_kernel: Callable) -> None:
    with pytest.raises(KernelError, match=r"NEST refused the kernel settings .*BadProperty: "
                                          r"RNG seed must be in"):
        nest_kernel(nest_config("net_seed.py", seed=2 ** 40), {"net_seed.py": DRIVEN})


def test_nest_that_cannot_be_imported(nest_kernel: Callable,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "nest", None)          # `import nest` raises
        with pytest.raises(KernelError, match="engine 'brain': NEST cannot be imported: "
                                              "ModuleNotFoundError"):
            nest_kernel(nest_config("net_import.py"), {"net_import.py": DRIVEN})
    # The failed engine let go of NEST: the next one gets it.
    assert nest_kernel(nest_config("net_import.py"), {"net_import.py": DRIVEN})


def test_one_nest_engine_per_process(nest_kernel: Callable) -> None:
    config = {"engines": {"a": {"type": "nest", "network": "net_a.py"},
                          "b": {"type": "nest", "network": "net_a.py"}}}
    with pytest.raises(KernelError, match="engine 'b': NEST is already used by engine 'a'"):
        nest_kernel(config, {"net_a.py": DRIVEN})
    # build_kernel shut engine 'a' down when 'b' failed: NEST is free again.
    assert nest_kernel(nest_config("net_a.py"))


# -- NEST's own messages ----------------------------------------------------------------------

def test_nest_messages_at_the_chosen_verbosity(nest_kernel: Callable,
                                               capfd: pytest.CaptureFixture) -> None:
    kernel = nest_kernel(nest_config("net_quiet.py"), {"net_quiet.py": DRIVEN})
    for _ in range(5):
        kernel.step()
    kernel.shutdown()
    out, err = capfd.readouterr()
    assert "[INFO]" not in out and "Simulation time" not in out
    kernel = nest_kernel(nest_config("net_loud.py", verbosity="INFO"), {"net_loud.py": DRIVEN})
    kernel.step()
    kernel.shutdown()
    out, err = capfd.readouterr()
    assert "[INFO]" in out and "Preparing 13 nodes for simulation." in out


def test_min_delay_warning_is_said_once(nest_kernel: Callable,
                                        capfd: pytest.CaptureFixture,
                                        caplog: pytest.LogCaptureFixture) -> None:
    kernel = nest_kernel(nest_config("brunel_delay.py", timestep=0.5),
                         {"brunel_delay.py": BRUNEL}, {"n_neurons": 50})
    for _ in range(20):
        kernel.step()
    out, err = capfd.readouterr()
    assert "not an integer multiple of the minimal delay" not in out + err
    warned = [r for r in caplog.records if "not a multiple of NEST's min_delay" in r.message]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING


@pytest.mark.parametrize("count, senders", [(0, 10), (1, 10), (999, 3), (50_000, 800),
                                             (200, 2 ** 40)])
def test_spikes_sort_by_time_then_sender_as_lexsort_does(count: int, senders: int) -> None:
    """The single-key sort gives lexsort's order, ties and all; ids too large for the
    key fall back to lexsort itself."""
    rng = np.random.default_rng(count)
    times = np.round(rng.uniform(0.0, 50.0, count), 1)
    ids = rng.integers(1, senders + 1, count)
    half = count // 2
    found = sorted_spikes([{"times": times[:half], "senders": ids[:half]},
                           {"times": times[half:], "senders": ids[half:]}])
    order = np.lexsort((ids, times))
    assert found[0].tolist() == times[order].tolist()
    assert found[1].tolist() == ids[order].tolist()


@pytest.mark.parametrize("times, ids", [
    ([1.0000004, 1.0000001, 0.5], [1, 2, 3]),          # closer than the key's µs
    ([2.0, 1.0 + 1e-12, 1.0, 1.0], [1, 9, 5, 4]),      # off the grid, a hair apart
    ([3.0, np.inf, 1.0, np.inf], [1, 2, 3, 1]),        # not finite: no integer key
    ([7.5, 7.5, 7.5], [3, 3, 1]),                      # one time, a sender twice
])
def test_spikes_the_key_cannot_order_sort_as_lexsort_does(times: list[float],
                                                          ids: list[int]) -> None:
    """Times the integer key would put out of order (or cannot key) still come out in
    lexsort's order."""
    found = sorted_spikes([{"times": np.array(times), "senders": np.array(ids)}])
    order = np.lexsort((ids, times))
    assert found[0].tolist() == np.array(times)[order].tolist()
    assert found[1].tolist() == np.array(ids)[order].tolist()


@pytest.mark.parametrize("slice_ms", [0.1, 1.5, 10.0])
def test_spikes_in_recording_order_sort_as_lexsort_does(slice_ms: float) -> None:
    """Events as a recorder gets them (slice by slice, each sender's in turn: the times
    out of order, one time's senders ascending) come out in lexsort's order too."""
    rng = np.random.default_rng(7)
    times = np.round(rng.uniform(0.0, 100.0, 20_000), 1)
    ids = rng.integers(1, 801, len(times))
    recorded = np.lexsort((times, ids, np.floor(times / slice_ms)))  # slice, sender, time
    found = sorted_spikes([{"times": times[recorded], "senders": ids[recorded]}])
    order = np.lexsort((ids, times))
    assert found[0].tolist() == times[order].tolist()
    assert found[1].tolist() == ids[order].tolist()
