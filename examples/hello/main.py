"""Run the oscillator until the timeout, logging progress and saving the trace."""
import numpy as np

osc = sim.engines["oscillator"]
times, xs = [], []
file_logger.info("hello: damped oscillator, params %s", sim.params)
try:
    while True:
        sim.run_loop(1)
        times.append(sim.time)
        xs.append(osc.get_datapack("x"))
        if sim.steps % 1000 == 0:
            file_logger.info("t = %.0f ms, x = %+.4f", sim.time, xs[-1])
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
finally:
    # Runs on stop too (SimulationStopped unwinds through here): partial traces are kept.
    np.savez(sim.results_dir / "trace.npz", t=np.array(times), x=np.array(xs))
    print(f"saved {len(times)} samples to results/trace.npz")
