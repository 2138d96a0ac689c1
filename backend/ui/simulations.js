// The simulations list: filters (state, experiment, owner), live state and progress
// from GET /v1/events, newest first.
import {enc, query} from "./api.js";
import {fill, h, notice, stateBadge} from "./dom.js";
import * as fmt from "./format.js";
import {isLive, progressBar, setProgress} from "./progress.js";
import {follow} from "./sse.js";
import {STATES} from "./states.js";

const PAGE = 1000;

export function renderSimulations(ctx, {params}) {
  document.title = "Simulations · simbackend";
  const filters = {state: params.get("state") || "", experiment: params.get("experiment") || "",
                   owner: params.get("owner") || ""};
  const body = h("div", {class: "table-wrap"}, notice("loading", "Loading simulations…"));
  const summary = h("p", {class: "muted", id: "sim-count", "aria-live": "polite"});
  const form = filterForm(ctx, filters);
  ctx.main.replaceChildren(h("section", {class: "page"},
    h("div", {class: "page-head"}, h("h1", {}, "Simulations"), summary),
    form, body));
  const rows = new Map();
  let stream = null;
  let closed = false;

  load(ctx, filters).then(({records, lastEventId, experiments}) => {
    if (closed) return;
    fillExperiments(form, experiments, filters.experiment);
    const table = simulationsTable();
    const tbody = table.querySelector("tbody");
    for (const record of records.reverse()) {
      const row = simulationRow(record);
      rows.set(record.id, row);
      tbody.append(row.el);
    }
    const emptyState = notice("empty", anyFilter(filters) ? "No simulation matches these filters."
      : "No simulations yet.", anyFilter(filters) ? "Clear the filters to see all of them."
      : "Start one from the Experiments page.");
    const refresh = () => {
      table.hidden = rows.size === 0;
      emptyState.hidden = rows.size !== 0;
      summary.textContent = `${rows.size} ${rows.size === 1 ? "simulation" : "simulations"}`;
    };
    fill(body, table, emptyState);
    refresh();
    stream = follow(ctx.api, "/v1/events", (event) => {
      const simId = event.data && event.data.sim_id;
      const row = rows.get(simId);
      if (event.type === "deleted" && row) {
        row.el.remove();
        rows.delete(simId);
        refresh();
      } else if (row) {
        row.apply(event);
        if (event.type === "end") { // its last figures
          ctx.api.json(`/v1/simulations/${enc(simId)}/status`)
            .then((last) => row.apply({type: "status", data: last})).catch(() => {});
        }
      } else if (event.type === "state" && event.data.state === "created") {
        addNew(ctx, simId, filters).then((record) => {
          if (!record || rows.has(simId) || closed) return;
          const added = simulationRow(record);
          rows.set(simId, added);
          tbody.prepend(added.el);
          refresh();
        });
      }
    }, {lastEventId, onTrouble: ctx.setConnection});
  }).catch((err) => {
    if (!closed) fill(body, notice("error", "The simulations could not be loaded.", err.message));
  });

  return () => { closed = true; if (stream) stream.close(); };
}

async function load(ctx, filters) {
  const records = [];
  let cursor = null;
  let lastEventId = null;
  do {
    const page = await ctx.api.json(`/v1/simulations${query({...filters, limit: PAGE, cursor})}`);
    records.push(...page.simulations);
    lastEventId = lastEventId || page.last_event_id;
    cursor = page.next_cursor;
  } while (cursor);
  const experiments = await ctx.api.json(`/v1/experiments${query({limit: PAGE})}`)
    .then((answer) => answer.experiments.map((e) => e.name)).catch(() => []);
  return {records, lastEventId, experiments};
}

/** A new simulation's record, if it matches the filters (else null). */
async function addNew(ctx, simId, filters) {
  try {
    const record = await ctx.api.json(`/v1/simulations/${enc(simId)}`);
    const matches = (!filters.state || record.state === filters.state)
      && (!filters.experiment || record.experiment === filters.experiment)
      && (!filters.owner || record.owner === filters.owner);
    return matches ? record : null;
  } catch {
    return null;
  }
}

function anyFilter(filters) {
  return Boolean(filters.state || filters.experiment || filters.owner);
}

function filterForm(ctx, filters) {
  const state = h("select", {id: "filter-state", name: "state"},
    h("option", {value: ""}, "Any state"),
    STATES.map((s) => h("option", {value: s, selected: s === filters.state}, s)));
  const experiment = h("select", {id: "filter-experiment", name: "experiment"},
    h("option", {value: ""}, "Any experiment"),
    filters.experiment ? h("option", {value: filters.experiment, selected: true},
                           filters.experiment) : null);
  const owner = h("input", {id: "filter-owner", name: "owner", type: "text",
                            value: filters.owner, placeholder: "anyone", autocomplete: "off"});
  const form = h("form", {class: "filters", role: "search", "aria-label": "Filter simulations"},
    h("div", {class: "field"}, h("label", {for: "filter-state"}, "State"), state),
    h("div", {class: "field"}, h("label", {for: "filter-experiment"}, "Experiment"), experiment),
    h("div", {class: "field"}, h("label", {for: "filter-owner"}, "Owner"), owner),
    h("div", {class: "field field-actions"},
      h("button", {type: "submit", class: "btn"}, "Apply"),
      ctx.user.kind !== "none" ? h("button", {type: "button", class: "btn btn-quiet",
        onclick: () => { owner.value = ctx.user.name; apply(); }}, "Mine") : null,
      h("a", {href: "#/simulations", class: "btn btn-quiet"}, "Clear")));
  const apply = () => ctx.navigate(`#/simulations${query({
    state: state.value, experiment: experiment.value, owner: owner.value.trim()})}`);
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  state.addEventListener("change", apply);
  experiment.addEventListener("change", apply);
  return form;
}

function fillExperiments(form, names, chosen) {
  const select = form.querySelector("#filter-experiment");
  for (const name of names) {
    if (name !== chosen) select.append(h("option", {value: name}, name));
  }
}

function simulationsTable() {
  return h("table", {class: "table sims"},
    h("caption", {class: "visually-hidden"}, "Simulations, newest first"),
    h("thead", {}, h("tr", {},
      h("th", {scope: "col"}, "Simulation"), h("th", {scope: "col"}, "Experiment"),
      h("th", {scope: "col"}, "Owner"), h("th", {scope: "col", class: "col-state"}, "State"),
      h("th", {scope: "col", class: "col-progress"}, "Progress"),
      h("th", {scope: "col", class: "col-time"}, "Created"))),
    h("tbody", {}));
}

/** One row, and how events change it. */
function simulationRow(record) {
  const stateCell = h("td", {class: "col-state", "data-label": "State"}, stateBadge(record.state));
  const meter = progressBar(`Progress of ${record.id}`);
  let state = record.state;
  let timeout = record.timeout;
  let simTime = (record.status || {}).sim_time ?? null;
  setProgress(meter, simTime, timeout, isLive(state));
  const el = h("tr", {dataset: {simId: record.id}},
    h("th", {scope: "row", "data-label": "Simulation"},
      h("a", {href: `#/simulations/${enc(record.id)}`, class: "mono"}, record.id)),
    h("td", {"data-label": "Experiment"}, record.experiment || (record.kernel ? "NEST session" : "—")),
    h("td", {"data-label": "Owner"}, record.owner || h("span", {class: "muted"}, "—")),
    stateCell,
    h("td", {class: "col-progress", "data-label": "Progress"}, meter),
    h("td", {class: "col-time num", "data-label": "Created"}, fmt.when(record.created_at)));
  return {
    el,
    apply(event) {
      const data = event.data;
      if ((event.type === "state" || event.type === "end") && data.state) {
        state = data.state;
        fill(stateCell, stateBadge(state));
      } else if (event.type === "status") {
        if (data.timeout) timeout = data.timeout;
        simTime = data.sim_time;
      }
      setProgress(meter, simTime, timeout, isLive(state));
    },
  };
}
