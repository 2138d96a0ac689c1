// The lifecycle as the dashboard needs it (README.rst, "Lifecycle").

export const STATES = ["created", "queued", "initialized", "started", "paused",
                       "completed", "stopped", "failed"];
export const TERMINAL = new Set(["completed", "stopped", "failed"]);

/** The controls valid in `state`: [{label, target, danger}] (target: the PUT state). */
export function controlsFor(state) {
  const controls = [];
  if (state === "created" || state === "initialized") {
    controls.push({label: "Start", target: "started"});
  }
  if (state === "started") controls.push({label: "Pause", target: "paused"});
  if (state === "paused") controls.push({label: "Resume", target: "started"});
  if (state && !TERMINAL.has(state)) {
    controls.push({label: "Stop", target: "stopped", danger: true});
  }
  return controls;
}
