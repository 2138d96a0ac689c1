// A run's progress toward its sim-time timeout: a bar and "sim time / timeout", with fixed
// widths so that live updates never move anything around.
import {h} from "./dom.js";
import * as fmt from "./format.js";

export function progressBar(label) {
  const bar = h("div", {class: "progress-track"}, h("div", {class: "progress-fill"}));
  const meter = h("div", {class: "progress", role: "progressbar", "aria-label": label,
                          "aria-valuemin": "0", "aria-valuemax": "100"},
    bar, h("span", {class: "progress-text num"}, "—"));
  return meter;
}

/**
 * Show `simTime` (ms, or null: not known yet) against `timeout` ({sim_time?}) on a bar
 * from progressBar(). A `live` run without a sim-time limit gets a striped track.
 */
export function setProgress(meter, simTime, timeout, live) {
  const share = fmt.progress(simTime, timeout);
  const fill = meter.querySelector(".progress-fill");
  const text = meter.querySelector(".progress-text");
  const limit = timeout && timeout.sim_time;
  const known = simTime !== null && simTime !== undefined;
  fill.style.width = share === null ? "0%" : `${(share * 100).toFixed(1)}%`;
  meter.classList.toggle("progress-unbounded", live && !limit);
  text.textContent = limit ? `${known ? fmt.count(Math.floor(simTime)) : "—"} / ${fmt.simTime(limit)}`
                           : fmt.simTime(simTime);
  if (share === null) meter.removeAttribute("aria-valuenow");
  else meter.setAttribute("aria-valuenow", (share * 100).toFixed(0));
  meter.setAttribute("aria-valuetext", text.textContent);
}

/** Whether a run in `state` has a process whose time may move. */
export function isLive(state) {
  return state === "initialized" || state === "started" || state === "paused";
}
