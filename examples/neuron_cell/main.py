"""Run the cell to the sim-time timeout; log the membrane potential and the spikes.

The neuron engine saves results/cell.npz (every recording) and results/cell_v.png when
the run ends, however it ends (completed, stopped, failed).
"""
cell = sim.engines["cell"]
file_logger.info("soma: diam %g um, L %g um, current step %g nA from %g ms for %g ms",
                 cell.parts["soma"].diam, cell.parts["soma"].L, cell.get_datapack("stim.amp"),
                 cell.get_datapack("stim.delay"), cell.get_datapack("stim.dur"))
try:
    while True:
        sim.run_loop(1)
        if sim.steps % 100 == 0:
            file_logger.info("t = %g ms: v = %.2f mV", sim.time, cell.get_datapack("soma_v"))
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
finally:
    v = cell.recordings["soma_v"].as_numpy()
    spikes = int(((v[:-1] < 0.0) & (v[1:] >= 0.0)).sum())     # upward crossings of 0 mV
    file_logger.info("%d spikes in %g ms", spikes, sim.time)
