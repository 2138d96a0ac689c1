// A simulation's results: the files with downloads, and its images shown inline.
import {enc} from "./api.js";
import {fill, h, notice, toast} from "./dom.js";
import * as fmt from "./format.js";

const IMAGE = /\.(png|jpe?g|gif|svg|webp)$/i;

export class ResultsPanel {
  constructor(api, simId) {
    this.api = api;
    this.simId = simId;
    this.urls = [];
    this.ended = false;
    this.list = h("div", {class: "results-list"}, notice("loading", "Loading results…"));
    this.images = h("div", {class: "figures"});
    this.el = h("section", {class: "card results", "aria-labelledby": "results-title"},
      h("div", {class: "card-head"}, h("h2", {id: "results-title"}, "Results"),
        h("div", {class: "card-tools"}, h("button", {type: "button", class: "btn btn-quiet btn-small",
                                                      onclick: () => this.load()}, "Refresh"))),
      this.images, this.list);
  }

  path(name) {
    return `/v1/simulations/${enc(this.simId)}/results/${name.split("/").map(enc).join("/")}`;
  }

  /** List the results again; `ended`: the run is over (nothing more will come). */
  async load(ended = this.ended) {
    this.ended = ended;
    let files;
    try {
      files = (await this.api.json(`/v1/simulations/${enc(this.simId)}/results?limit=1000`)).results;
    } catch (err) {
      fill(this.list, notice("error", "The results could not be listed.", err.message));
      return;
    }
    if (files.length === 0) {
      fill(this.images);
      fill(this.list, this.ended ? notice("empty", "This run left no results.")
        : notice("empty", "No results yet.",
                 "Files the script writes to sim.results_dir appear here."));
      return;
    }
    fill(this.list, h("table", {class: "table files"},
      h("caption", {class: "visually-hidden"}, "Result files"),
      h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "File"),
        h("th", {scope: "col", class: "col-size"}, "Size"), h("th", {scope: "col"},
          h("span", {class: "visually-hidden"}, "Download")))),
      h("tbody", {}, files.map(({name, size}) => h("tr", {},
        h("th", {scope: "row", class: "mono", "data-label": "File"}, name),
        h("td", {class: "col-size num", "data-label": "Size"}, fmt.bytes(size)),
        h("td", {class: "col-action"}, h("button", {
          type: "button", class: "btn btn-small", "aria-label": `Download ${name}`,
          onclick: () => this.api.download(this.path(name), name.split("/").pop())
            .catch((err) => toast(err.message, "error")),
        }, "Download")))))));
    await this.showImages(files.filter(({name}) => IMAGE.test(name)));
  }

  async showImages(files) {
    this.revoke();
    const figures = [];
    for (const {name} of files) {
      try {
        const blob = await (await this.api.fetch(this.path(name))).blob();
        const url = URL.createObjectURL(blob);
        this.urls.push(url);
        figures.push(h("figure", {class: "figure"},
          h("a", {href: url, target: "_blank", title: "Open at full size"},
            h("img", {src: url, alt: `${name} of simulation ${this.simId}`})),
          h("figcaption", {class: "mono"}, name)));
      } catch (err) {
        figures.push(notice("error", `${name} could not be shown.`, err.message));
      }
    }
    fill(this.images, figures);
  }

  revoke() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }
}
