// Building DOM nodes without innerHTML: text from the API is always text, never markup.

/** h("button", {class: "btn", onclick}, "Pause") -> an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message block for empty, loading and error states. */
export function notice(kind, title, detail) {
  return h("div", {class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status"},
    h("p", {class: "notice-title"}, title),
    detail ? h("p", {class: "notice-detail"}, detail) : null);
}

/** The state of a simulation as a badge (word and colour: never colour alone). */
export function stateBadge(state) {
  return h("span", {class: `badge state-${state || "unknown"}`, "data-state": state || ""},
    state || "unknown");
}

/** Announce `text` to screen readers and show it briefly. */
export function toast(text, kind = "info") {
  const region = document.getElementById("toasts");
  const item = h("div", {class: `toast toast-${kind}`}, text);
  region.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 9000 : 4000);
}
