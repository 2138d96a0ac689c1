"""Let the controller steer the body; record the trajectory and the final distance."""
import numpy as np

body, controller = sim.engines["body"], sim.engines["controller"]
target = controller.get_datapack("target")
path = [body.get_datapack("position")]
file_logger.info("closed loop: start %s, target %s", path[0], target)
try:
    while True:
        sim.run_loop(10)
        path.append(body.get_datapack("position"))
        if sim.steps % 1000 == 0:
            file_logger.info("t = %.0f ms, distance to target %.4f", sim.time,
                             np.linalg.norm(target - path[-1]))
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
finally:
    path = np.array(path)
    distance = float(np.linalg.norm(target - path[-1]))
    np.savez(sim.results_dir / "trajectory.npz", position=path, target=target)
    (sim.results_dir / "summary.txt").write_text(
        f"start {path[0].tolist()}\nend {path[-1].tolist()}\ntarget {target.tolist()}\n"
        f"final distance {distance:.6f}\n")
    file_logger.info("final distance to target: %.4f", distance)
