"""Run the Brunel network to the sim-time timeout; log the mean rates at the end.

The nest engine saves results/spikes.npz and results/raster.png when the run ends,
however it ends (completed, stopped, failed).
"""
brain = sim.engines["brain"]
file_logger.info("Brunel network: %d excitatory, %d inhibitory neurons",
                 len(brain.nodes["excitatory"]), len(brain.nodes["inhibitory"]))
try:
    while True:
        sim.run_loop(100)        # NEST steps in chunks of ~5 ms (README: run_loop)
        file_logger.info("t = %g ms", sim.time)
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
finally:
    seconds = sim.time / 1000.0
    n_record = sim.params.get("n_record")  # brain.py records the first n_record of each
    for recorder, population in (("ex_spikes", "excitatory"), ("in_spikes", "inhibitory")):
        spikes = len(brain.spikes(recorder)[0])  # read once: the engine saves the same
        size = len(brain.nodes[population])
        recorded = min(n_record, size) if n_record else size
        rate = spikes / recorded / seconds if seconds else 0.0
        file_logger.info("%s: %d spikes from %d neurons, %.1f Hz", recorder, spikes, recorded,
                         rate)
