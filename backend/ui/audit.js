// The audit trail (operators and admins): who did what, newest first, with filters.
import {query} from "./api.js";
import {fill, h, notice} from "./dom.js";
import * as fmt from "./format.js";

const FIELDS = [["identity", "Identity"], ["target", "Target"], ["method", "Method"],
                ["status", "Status"]];
const METHODS = ["POST", "PUT", "DELETE", "GET"];

export function renderAudit(ctx, {params}) {
  document.title = "Audit · simbackend";
  const body = h("div", {class: "table-wrap"});
  const page = h("section", {class: "page"}, h("div", {class: "page-head"}, h("h1", {}, "Audit trail")));
  ctx.main.replaceChildren(page);
  if (!ctx.perms.mayAudit) {
    page.append(notice("error", "The audit trail is for operators and admins.",
                       `You are signed in as ${ctx.user.role}.`));
    return;
  }
  const filters = Object.fromEntries(FIELDS.map(([name]) => [name, params.get(name) || ""]));
  page.append(filterForm(ctx, filters), body);
  fill(body, notice("loading", "Loading the audit trail…"));
  ctx.api.json(`/v1/audit${query({...filters, limit: 500})}`).then(({audit}) => {
    if (audit.length === 0) {
      fill(body, notice("empty", "Nothing recorded matches.", "Changes to simulations and " +
                        "experiments are recorded here as they happen."));
      return;
    }
    fill(body, h("table", {class: "table audit"},
      h("caption", {class: "visually-hidden"}, "Audit trail, newest first"),
      h("thead", {}, h("tr", {}, ["Time", "Identity", "Role", "Request", "Target", "Status",
                                  "Client"].map((label) => h("th", {scope: "col"}, label)))),
      h("tbody", {}, audit.map((entry) => h("tr", {},
        h("td", {class: "num col-time", "data-label": "Time"}, fmt.when(entry.time)),
        h("td", {"data-label": "Identity"}, entry.identity || "—"),
        h("td", {"data-label": "Role"}, entry.role || "—"),
        h("td", {class: "mono", "data-label": "Request"}, `${entry.method} ${entry.path}`),
        h("td", {class: "mono", "data-label": "Target"}, entry.target || "—"),
        h("td", {class: "num", "data-label": "Status"},
          h("span", {class: entry.status >= 400 ? "status-bad" : "status-ok"}, String(entry.status))),
        h("td", {class: "mono", "data-label": "Client"}, entry.client || "—"))))));
  }).catch((err) => {
    fill(body, err.status === 404
      ? notice("empty", "The audit trail is not available on this backend.",
               "It is recorded once authentication is enabled.")
      : notice("error", "The audit trail could not be loaded.", err.message));
  });
}

function filterForm(ctx, filters) {
  const inputs = FIELDS.map(([name, label]) => h("div", {class: "field"},
    h("label", {for: `audit-${name}`}, label),
    name === "method"
      ? h("select", {id: "audit-method", name},
          h("option", {value: ""}, "Any method"),
          METHODS.map((m) => h("option", {value: m, selected: m === filters.method}, m)))
      : h("input", {id: `audit-${name}`, name, value: filters[name], autocomplete: "off",
                    type: "text", inputmode: name === "status" ? "numeric" : null,
                    placeholder: name === "status" ? "e.g. 403" : null})));
  const form = h("form", {class: "filters", role: "search", "aria-label": "Filter the audit trail"},
    inputs, h("div", {class: "field field-actions"},
      h("button", {type: "submit", class: "btn"}, "Apply"),
      h("a", {href: "#/audit", class: "btn btn-quiet"}, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries(FIELDS.map(([name]) => [name, form.elements[name].value.trim()]));
    ctx.navigate(`#/audit${query(values)}`);
  });
  return form;
}
