// A simulation's log files: one tab per file, the tail of each (GET logs/<name>?offset=)
// and then the lines the event stream brings, with "follow" keeping the newest in view.
import {enc} from "./api.js";
import {fill, h, notice, toast} from "./dom.js";

/** Bytes of each file shown at first; earlier lines are one click away (the raw file). */
const TAIL_BYTES = 64 * 1024;
/** Characters kept per file in the page; the oldest go first. */
const KEEP_CHARS = 512 * 1024;

export class LogViewer {
  constructor(api, simId) {
    this.api = api;
    this.simId = simId;
    this.files = new Map();   // name -> {text, end, cut}
    this.current = null;
    this.picked = false;      // whether the user chose the file shown
    this.tabs = h("div", {class: "tabs", role: "tablist", "aria-label": "Log files"});
    this.follow = h("input", {type: "checkbox", id: "log-follow", checked: true});
    this.pre = h("pre", {class: "log", id: "log-text", tabindex: "0", role: "tabpanel",
                         "aria-live": "off", "aria-label": "Log"});
    this.empty = notice("empty", "No log lines yet.",
                        "They appear here as the simulation writes them.");
    this.raw = h("button", {type: "button", class: "btn btn-quiet btn-small", hidden: true,
                            onclick: () => this.openRaw()}, "Download file");
    this.pre.addEventListener("scroll", () => {
      const atBottom = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 8;
      if (!atBottom && this.follow.checked && !this.autoScrolling) this.follow.checked = false;
      this.autoScrolling = false;
    });
    this.follow.addEventListener("change", () => this.scroll());
    this.el = h("section", {class: "card logs", "aria-labelledby": "logs-title"},
      h("div", {class: "card-head"}, h("h2", {id: "logs-title"}, "Logs"),
        h("div", {class: "card-tools"},
          h("label", {class: "check", for: "log-follow"}, this.follow, "Follow"), this.raw)),
      this.tabs, this.empty, this.pre);
    this.pre.hidden = true;
  }

  /** Read the list and each file's tail; return the stream cursor that follows on from
   * them and from event `since`. */
  async load(since = "0") {
    const answer = await this.api.json(`/v1/simulations/${enc(this.simId)}/logs?limit=1000`);
    const positions = [];
    for (const {name, size} of answer.logs) {
      const start = Math.max(0, size - TAIL_BYTES);
      let text = "";
      if (size > start) {
        const response = await this.api.fetch(this.fileUrl(name, start, size - start));
        text = await response.text();
      }
      if (start > 0) text = text.slice(text.indexOf("\n") + 1); // a whole first line
      this.files.set(name, {text, end: size, cut: start > 0});
      positions.push(`${encodeURIComponent(name)}=${size}`);
    }
    this.renderTabs();
    return [since, ...positions].join(";");
  }

  fileUrl(name, offset, limit) {
    return `/v1/simulations/${enc(this.simId)}/logs/${enc(name)}?offset=${offset}&limit=${limit}`;
  }

  /** A `log` event: {file, offset, text}. */
  add({file, offset, text}) {
    let entry = this.files.get(file);
    const isNew = !entry;
    if (isNew) {
      entry = {text: "", end: 0, cut: false};
      this.files.set(file, entry);
    }
    const size = new TextEncoder().encode(text).length;
    if (offset + size <= entry.end) return; // seen it
    entry.text += text;
    entry.end = offset + size;
    const trimmed = entry.text.length > KEEP_CHARS;
    if (trimmed) {
      const cut = entry.text.indexOf("\n", entry.text.length - KEEP_CHARS) + 1;
      entry.text = entry.text.slice(cut);
      entry.cut = true;
    }
    if (isNew) this.renderTabs();
    else if (file === this.current) this.show(file, trimmed ? null : text);
  }

  renderTabs() {
    const names = [...this.files.keys()].sort(byImportance);
    // Until the user picks a file, show the most telling one (files appear as the run goes).
    if (!this.picked && names.length) this.current = names[0];
    fill(this.tabs, names.map((name) => h("button", {
      type: "button", role: "tab", class: "tab", id: `log-tab-${name}`,
      "aria-selected": String(name === this.current), "aria-controls": "log-text",
      tabindex: name === this.current ? "0" : "-1",
      onclick: () => { this.current = name; this.picked = true; this.renderTabs(); },
      onkeydown: (event) => this.arrowKeys(event, names),
    }, name)));
    if (this.current) this.show(this.current);
  }

  arrowKeys(event, names) {
    const step = {ArrowRight: 1, ArrowLeft: -1}[event.key];
    if (!step) return;
    const at = names.indexOf(this.current);
    this.current = names[(at + step + names.length) % names.length];
    this.picked = true;
    this.renderTabs();
    this.tabs.querySelector('[aria-selected="true"]').focus();
  }

  /** Show `name`; with `added`, only append that text. */
  show(name, added = null) {
    const entry = this.files.get(name);
    this.empty.hidden = entry.text.length > 0;
    this.pre.hidden = entry.text.length === 0;
    this.raw.hidden = false;
    this.pre.setAttribute("aria-labelledby", `log-tab-${name}`);
    if (added === null) {
      fill(this.pre, entry.cut ? h("span", {class: "log-cut"}, "… earlier lines are in the downloaded file\n")
                               : null, entry.text);
    } else {
      this.pre.append(added);
    }
    this.scroll();
  }

  scroll() {
    if (!this.follow.checked) return;
    this.autoScrolling = true;
    this.pre.scrollTop = this.pre.scrollHeight;
  }

  openRaw() {
    const name = this.current;
    this.api.download(`/v1/simulations/${enc(this.simId)}/logs/${enc(name)}`,
                      `${this.simId}-${name}`).catch((err) => toast(err.message, "error"));
  }
}

/** simulation.log first, then stdout, stderr, then the rest by name. */
function byImportance(a, b) {
  const order = ["simulation.log", "stdout.log", "stderr.log"];
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}
