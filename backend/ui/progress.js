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

/** Show `simTime` (ms) against `timeout` ({sim_time?}) on a bar from progressBar(). */
export function setProgress(meter, simTime, timeout) {
  const share = fmt.progress(simTime, timeout);
  const fill = meter.querySelector(".progress-fill");
  const text = meter.querySelector(".progress-text");
  const limit = timeout && timeout.sim_time;
  fill.style.width = share === null ? "0%" : `${(share * 100).toFixed(1)}%`;
  meter.classList.toggle("progress-unbounded", share === null);
  text.textContent = limit ? `${fmt.count(Math.floor(simTime ?? 0))} / ${fmt.simTime(limit)}`
                           : fmt.simTime(simTime);
  if (share === null) meter.removeAttribute("aria-valuenow");
  else meter.setAttribute("aria-valuenow", (share * 100).toFixed(0));
  meter.setAttribute("aria-valuetext", text.textContent);
}
