// The experiments: the list with a start button each, and the upload of a .tar.gz or of
// a folder (packed into a .tar.gz in the browser).
import {enc, query} from "./api.js";
import {fill, h, notice, toast} from "./dom.js";
import * as fmt from "./format.js";
import {folderEntries, tarGzip} from "./tar.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function renderExperiments(ctx) {
  document.title = "Experiments · simbackend";
  const list = h("div", {class: "table-wrap"}, notice("loading", "Loading experiments…"));
  const reload = () => loadList(ctx, list);
  ctx.main.replaceChildren(h("section", {class: "page"},
    h("div", {class: "page-head"}, h("h1", {}, "Experiments")),
    ctx.perms.mayRun ? uploadForm(ctx, reload) : null,
    list));
  reload();
}

async function loadList(ctx, list) {
  let experiments;
  try {
    experiments = (await ctx.api.json(`/v1/experiments${query({limit: 1000})}`)).experiments;
  } catch (err) {
    fill(list, notice("error", "The experiments could not be loaded.", err.message));
    return;
  }
  if (experiments.length === 0) {
    fill(list, notice("empty", "No experiments yet.", ctx.perms.mayRun
      ? "Upload an experiment folder or a .tar.gz of one above." : null));
    return;
  }
  fill(list, h("table", {class: "table experiments"},
    h("caption", {class: "visually-hidden"}, "Experiments"),
    h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Experiment"),
      h("th", {scope: "col"}, "Description"), h("th", {scope: "col"}, "Main script"),
      h("th", {scope: "col", class: "col-size"}, "Files"),
      h("th", {scope: "col", class: "col-action"}, h("span", {class: "visually-hidden"}, "Start")))),
    h("tbody", {}, experiments.map((e) => experimentRow(ctx, e)))));
}

function experimentRow(ctx, experiment) {
  const start = ctx.perms.mayRun && !experiment.problem ? h("button", {
    type: "button", class: "btn btn-primary btn-small", "data-start": experiment.name,
    "aria-label": `Start ${experiment.name}`,
    onclick: async (event) => {
      event.currentTarget.disabled = true;
      try {
        const record = await ctx.api.send("POST", "/v1/simulations",
                                           {experiment: experiment.name, state: "started"});
        ctx.navigate(`#/simulations/${enc(record.id)}`);
      } catch (err) {
        toast(`${experiment.name} could not be started: ${err.message}`, "error");
        event.target.disabled = false;
      }
    },
  }, "Start") : null;
  return h("tr", {dataset: {experiment: experiment.name}},
    h("th", {scope: "row", class: "mono", "data-label": "Experiment"}, experiment.name),
    h("td", {"data-label": "Description"}, experiment.problem
      ? h("span", {class: "problem-inline"}, experiment.problem)
      : experiment.description || h("span", {class: "muted"}, "—")),
    h("td", {class: "mono", "data-label": "Main script"}, experiment.main_script || "—"),
    h("td", {class: "col-size num", "data-label": "Files"},
      `${fmt.count(experiment.files)} · ${fmt.bytes(experiment.size)}`),
    h("td", {class: "col-action"}, start));
}

function uploadForm(ctx, reload) {
  const name = h("input", {id: "upload-name", name: "name", type: "text", required: true,
                           pattern: NAME.source, autocomplete: "off", spellcheck: "false",
                           "aria-describedby": "upload-name-help"});
  const archive = h("input", {id: "upload-archive", type: "file",
                              accept: ".tar.gz,.tgz,application/gzip"});
  const folder = h("input", {id: "upload-folder", type: "file", webkitdirectory: true,
                             multiple: true});
  const status = h("div", {class: "upload-status", "aria-live": "polite", id: "upload-status"});
  const button = h("button", {type: "submit", class: "btn btn-primary"}, "Upload");
  const suggest = (input) => input.addEventListener("change", () => {
    const other = input === archive ? folder : archive;
    other.value = "";
    if (!name.value) name.value = suggestedName(input);
  });
  suggest(archive);
  suggest(folder);
  const form = h("form", {class: "card upload", "aria-labelledby": "upload-title"},
    h("h2", {id: "upload-title"}, "Upload an experiment"),
    h("p", {class: "muted"}, "A folder with experiment.json at its top, or a .tar.gz of one. ",
      "An experiment of the same name is replaced."),
    h("div", {class: "upload-grid"},
      h("div", {class: "field"}, h("label", {for: "upload-folder"}, "Folder"), folder),
      h("div", {class: "field"}, h("label", {for: "upload-archive"}, "or a .tar.gz"), archive),
      h("div", {class: "field"}, h("label", {for: "upload-name"}, "Name"), name,
        h("p", {class: "help", id: "upload-name-help"},
          "Letters, digits, '.', '_' or '-'; up to 64."))),
    status,
    h("div", {class: "form-actions"}, button));
  const fields = {name, archive, folder, status, button};
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await upload(ctx, fields)) {
      form.reset();
      reload();
    }
  });
  return form;
}

/** Check the form, pack a folder, PUT the archive; say how it went in `status`.
 * Resolves to whether the experiment was stored. */
async function upload(ctx, {name, archive, folder, status, button}) {
  status.replaceChildren();
  const problem = !archive.files.length && !folder.files.length
    ? "Choose a folder or a .tar.gz first."
    : !NAME.test(name.value) ? "The name must be 1-64 letters, digits, '.', '_' or '-', " +
                               "starting with a letter or digit." : null;
  if (problem) {
    status.append(notice("error", problem));
    return false;
  }
  button.disabled = true;
  try {
    status.append(notice("loading", folder.files.length ? "Packing the folder…" : "Uploading…"));
    const body = folder.files.length ? await tarGzip(folderEntries(folder.files))
                                     : archive.files[0];
    fill(status, notice("loading", `Uploading ${fmt.bytes(body.size)}…`));
    const response = await ctx.api.fetch(`/v1/experiments/${enc(name.value)}`, {
      method: "PUT", body, headers: {"Content-Type": "application/gzip"}});
    fill(status, notice("ok", `Experiment ${name.value} ${response.status === 201
      ? "uploaded" : "replaced"}.`));
    return true;
  } catch (err) {
    fill(status, notice("error", "The upload failed.", err.message));
    return false;
  } finally {
    button.disabled = false;
  }
}

/** A name from the chosen folder or archive ("brunel", "brunel.tar.gz" -> "brunel"). */
function suggestedName(input) {
  const file = input.files[0];
  if (!file) return "";
  const raw = file.webkitRelativePath ? file.webkitRelativePath.split("/")[0]
                                      : file.name.replace(/\.(tar\.gz|tgz)$/i, "");
  const cleaned = raw.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 64);
  return cleaned;
}
