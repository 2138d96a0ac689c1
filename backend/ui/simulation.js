// One simulation: its state and controls, live status figures, error, logs and results.
import {enc} from "./api.js";
import {fill, h, notice, stateBadge, toast} from "./dom.js";
import * as fmt from "./format.js";
import {LogViewer} from "./logs.js";
import {isLive, progressBar, setProgress} from "./progress.js";
import {ResultsPanel} from "./results.js";
import {follow} from "./sse.js";
import {TERMINAL, controlsFor} from "./states.js";

export function renderSimulation(ctx, {id}) {
  document.title = `${id} · simbackend`;
  const page = h("section", {class: "page"},
    h("nav", {class: "crumbs", "aria-label": "Breadcrumb"},
      h("a", {href: "#/simulations"}, "Simulations"), h("span", {"aria-hidden": "true"}, " / "),
      h("span", {class: "mono", "aria-current": "page"}, id)),
    notice("loading", "Loading the simulation…"));
  ctx.main.replaceChildren(page);
  const view = {closed: false, stream: null, results: null};
  open(ctx, id, page, view).catch((err) => {
    if (view.closed) return;
    page.lastChild.replaceWith(err.status === 404
      ? notice("error", `There is no simulation ${id}.`, "It may have been deleted.")
      : notice("error", "The simulation could not be loaded.", err.message));
  });
  return () => {
    view.closed = true;
    if (view.stream) view.stream.close();
    if (view.results) view.results.revoke();
  };
}

async function open(ctx, id, page, view) {
  const path = `/v1/simulations/${enc(id)}`;
  // Where the events stand before the record is read: following from there misses
  // nothing after the record and replays none of the run's history (a run that is over
  // answers 204 then: the page has it all).
  const {last_event_id: since} = await ctx.api.json("/v1/simulations?limit=1");
  const [record, status] = await Promise.all([ctx.api.json(path),
                                              ctx.api.json(`${path}/status`)]);
  const logs = new LogViewer(ctx.api, id);
  const cursor = await logs.load(since);
  if (view.closed) return;
  view.results = new ResultsPanel(ctx.api, id);
  const live = new LiveSimulation(ctx, path, record, status, logs, view.results);
  page.lastChild.replaceWith(live.el);
  view.stream = follow(ctx.api, `${path}/events`, (event) => live.apply(event),
                       {lastEventId: cursor, onTrouble: ctx.setConnection});
}

/** The page's parts, and what each event of the simulation's stream changes in them. */
class LiveSimulation {
  constructor(ctx, path, record, status, logs, results) {
    Object.assign(this, {ctx, path, record, logs, results});
    this.head = new Head(ctx, record);
    this.figures = new Figures(record, status);
    this.problem = h("div", {class: "problem-slot"});
    this.el = h("div", {class: "sim"}, this.head.el, this.problem, this.figures.el,
      h("div", {class: "sim-files"}, logs.el, results.el));
    showError(this.problem, record);
    results.load(TERMINAL.has(record.state));
  }

  /** Take in one event; false when the stream is over for this page. */
  apply(event) {
    const data = event.data || {};
    switch (event.type) {
      case "state":
        this.show({state: data.state, error: data.error ?? this.record.error});
        return true;
      case "server_state":
        this.head.serverState(data.state);
        return true;
      case "status":
        this.figures.update(data);
        return true;
      case "log":
        this.logs.add(data);
        return true;
      case "end":
        return this.ended(data);
      case "deleted":
        fill(this.problem, notice("error", "This simulation was deleted."));
        return false;
      default:
        return true;
    }
  }

  show(changes) {
    Object.assign(this.record, changes);
    this.head.update(this.record);
    this.figures.state(this.record.state);
    showError(this.problem, this.record);
  }

  ended(data) {
    this.show({state: data.state, error: data.error, exit_code: data.exit_code,
               ended_at: data.ended_at});
    this.results.load(TERMINAL.has(data.state));
    const api = this.ctx.api;
    api.json(`${this.path}/status`).then((last) => this.figures.update(last)).catch(() => {});
    // The record is the last word. An end that names no final state came before the
    // state change it follows (the backend can save them out of order): keep following,
    // the stream resumes after the end and brings that change.
    api.json(this.path).then((latest) => { if (TERMINAL.has(latest.state)) this.show(latest); })
      .catch(() => {});
    return !TERMINAL.has(data.state);
  }
}

/** The title, state, facts and the control buttons. */
class Head {
  constructor(ctx, record) {
    this.ctx = ctx;
    this.badge = h("span", {class: "sim-state", id: "sim-state", "aria-live": "polite"});
    this.server = h("span", {class: "muted server-state", id: "server-state"});
    this.controls = h("div", {class: "controls", role: "group", "aria-label": "Controls"});
    this.facts = h("dl", {class: "facts"});
    this.pending = false;
    this.el = h("div", {class: "sim-head card"},
      h("div", {class: "sim-title"}, h("h1", {class: "mono"}, record.id), this.badge, this.server),
      this.facts, this.controls);
    this.update(record);
  }

  update(record) {
    this.record = record;
    fill(this.badge, stateBadge(record.state));
    if (TERMINAL.has(record.state)) this.server.textContent = "";
    fill(this.facts,
      fact("Experiment", record.experiment || (record.kernel ? "NEST session" : "—")),
      fact("Owner", record.owner || "—"),
      fact("Main script", record.main_script || "—"),
      fact("Created", fmt.when(record.created_at)),
      fact("Ended", fmt.when(record.ended_at)),
      record.exit_code !== null && record.exit_code !== undefined
        ? fact("Exit code", String(record.exit_code)) : null,
      record.state === "queued" && record.queue
        ? fact("In the queue", `#${record.queue.position + 1}: ${record.queue.reason}`) : null,
      // Known once the launch resolved them (POST, experiment.json, the defaults).
      record.effective_limits ? fact("Limits", fmt.limits(record.effective_limits)) : null,
      record.params && Object.keys(record.params).length
        ? fact("Params", h("code", {class: "params"}, JSON.stringify(record.params))) : null);
    this.renderControls();
  }

  serverState(state) {
    if (!TERMINAL.has(this.record.state) && state && state !== this.record.state) {
      this.server.textContent = `server: ${state}`;
    } else {
      this.server.textContent = "";
    }
  }

  /** Draw the buttons, only when they change: a state event that leaves them as they
   * are (one the page saw already in its record) keeps the focus where the keyboard put
   * it. When they do change (Pause becomes Resume), a button that had the focus hands
   * it to the one in its place, once that one is enabled. */
  renderControls() {
    const record = this.record;
    const mayControl = this.ctx.perms.mayControl(record);
    const controls = mayControl ? controlsFor(record.state) : [];
    const drawn = JSON.stringify([mayControl, TERMINAL.has(record.state),
                                  controls.map((c) => c.label), this.pending]);
    if (drawn === this.drawn) return;
    this.drawn = drawn;
    const buttons = [...this.controls.querySelectorAll("button")];
    const focused = buttons.indexOf(document.activeElement);
    if (focused >= 0) {
      this.focusAt = focused;
    } else if (document.activeElement !== document.body) {
      this.focusAt = null;  // the focus went elsewhere since: leave it there
    }
    if (!mayControl) {
      fill(this.controls, TERMINAL.has(record.state) ? null
        : h("p", {class: "muted"}, "You may watch this simulation but not control it."));
      return;
    }
    fill(this.controls, controls.map((control) => h("button", {
      type: "button", class: control.danger ? "btn btn-danger" : "btn btn-primary",
      "data-control": control.label.toLowerCase(), disabled: this.pending,
      onclick: () => this.request(control),
    }, control.label)));
    const heir = this.focusAt == null ? null
      : this.controls.children[Math.min(this.focusAt, controls.length - 1)];
    if (heir && !heir.disabled) {
      heir.focus();
      this.focusAt = null;
    }
  }

  async request(control) {
    const id = this.record.id;
    if (control.target === "stopped") {
      const sure = await this.ctx.confirm({
        title: `Stop simulation ${id}?`,
        text: "The run ends now and cannot be resumed. Its logs and results so far are kept.",
        ok: "Stop simulation"});
      if (!sure) return;
    }
    this.pending = true;
    this.renderControls();
    try {
      await this.ctx.api.setState(id, control.target);
    } catch (err) {
      toast(`${control.label} failed: ${err.message}`, "error");
    } finally {
      this.pending = false;
      this.renderControls();
    }
  }
}

function fact(label, value) {
  return h("div", {class: "fact"}, h("dt", {}, label), h("dd", {}, value));
}

/** sim time, real time, steps, CPU, memory and the progress bar, updated by `status`. */
class Figures {
  constructor(record, status) {
    this.timeout = record.timeout;
    this.ticks = 0;
    this.values = {};
    const figure = (key, label) => {
      this.values[key] = h("dd", {class: "figure-value num", id: `fig-${key}`}, "—");
      return h("div", {class: "figure-box"}, h("dt", {}, label), this.values[key]);
    };
    this.meter = progressBar("Progress toward the sim-time timeout");
    this.el = h("section", {class: "card figures-card", "aria-labelledby": "status-title",
                            "data-ticks": "0", id: "status"},
      h("div", {class: "card-head"}, h("h2", {id: "status-title"}, "Status"),
        h("span", {class: "muted", id: "status-note"})),
      h("dl", {class: "figures-grid"},
        figure("sim_time", "Simulated time"), figure("real_time", "Real time"),
        figure("steps", "Steps"), figure("cpu", "CPU"), figure("rss", "Memory")),
      this.meter);
    this.update(status);
    this.state(record.state);
  }

  update(status) {
    if (status.timeout) this.timeout = status.timeout;
    this.values.sim_time.textContent = fmt.simTime(status.sim_time);
    this.values.real_time.textContent = fmt.seconds(status.real_time);
    this.values.steps.textContent = fmt.count(status.steps);
    // A run that has ended has no process to measure: what it used in all, if known.
    if (TERMINAL.has(status.state) && !status.resources?.rss_bytes) {
      const usage = status.usage || {};
      this.values.cpu.textContent = fmt.cpuTime(usage.cpu_seconds);
      this.values.rss.textContent = usage.max_rss_bytes === undefined ? "—"
        : `${fmt.bytes(usage.max_rss_bytes)} peak`;
    } else {
      this.values.cpu.textContent = fmt.percent(status.resources?.cpu_percent);
      this.values.rss.textContent = fmt.bytes(status.resources?.rss_bytes);
    }
    this.simTime = status.sim_time;
    setProgress(this.meter, this.simTime, this.timeout, isLive(this.current));
    this.ticks += 1;
    this.el.dataset.ticks = String(this.ticks);
  }

  state(state) {
    this.current = state;
    setProgress(this.meter, this.simTime, this.timeout, isLive(state));
    const note = this.el.querySelector("#status-note");
    note.textContent = TERMINAL.has(state) ? "final figures"
      : state === "paused" ? "live · paused, the time stands still"
      : state === "started" ? "live" : "waiting for the run to start";
  }
}

/** A failed run's error, plainly: its type, its message, and the details it has. */
function showError(slot, record) {
  const error = record.error;
  if (record.state !== "failed" || !error) { fill(slot); return; }
  const details = [];
  if (error.exception) details.push(fact("Exception", error.exception));
  if (error.line) details.push(fact("Line", String(error.line)));
  if (error.signal) details.push(fact("Signal", String(error.signal)));
  const trace = error.traceback || error.stderr_tail;
  fill(slot, h("section", {class: "card problem", role: "alert", "aria-labelledby": "error-title"},
    h("h2", {id: "error-title"}, "This run failed"),
    h("p", {class: "problem-type"}, h("span", {class: "badge state-failed"}, error.type || "error")),
    h("p", {class: "problem-message", id: "error-message"}, error.message || "No message was given."),
    details.length ? h("dl", {class: "facts"}, details) : null,
    trace ? h("details", {}, h("summary", {}, error.traceback ? "Traceback" : "Last lines of stderr"),
                          h("pre", {class: "log"}, trace)) : null));
}
