"""Drive the vehicle until it reaches the light or the sim-time timeout.

The world saves results/trajectory.npz and results/trajectory.png; the brain
results/spikes.npz and results/raster.png (its motor populations).
"""
world = sim.engines["world"]
reach = sim.params.get("reach", 0.15)
start = world.get_datapack("distance")
file_logger.info("start: %.2f m from the light", start)
try:
    while world.get_datapack("distance") > reach:
        sim.run_loop(1)
        if sim.steps % 50 == 0:
            file_logger.info("t = %g ms: %.2f m from the light", sim.time,
                             world.get_datapack("distance"))
    file_logger.info("reached the light at t=%s ms", sim.time)
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
finally:
    end = world.get_datapack("distance")
    (sim.results_dir / "summary.txt").write_text(
        f"start distance {start:.4f}\nend distance {end:.4f}\nt {sim.time:g} ms\n")
    file_logger.info("distance to the light: %.2f m at the start, %.2f m at the end",
                     start, end)
