// The sign-in page: one API key, kept in this tab's sessionStorage only.
import {h, notice} from "./dom.js";
import {forgetKey, storeKey} from "./session.js";

export function renderSignIn(main, {message, submit}) {
  const error = h("div", {class: "form-error", id: "signin-error", "aria-live": "assertive"});
  if (message) error.append(notice("error", message));
  const input = h("input", {id: "api-key", name: "api-key", type: "password", required: true,
                            autocomplete: "current-password", spellcheck: "false",
                            "aria-describedby": "api-key-help signin-error"});
  const button = h("button", {type: "submit", class: "btn btn-primary"}, "Sign in");
  const form = h("form", {class: "card signin", novalidate: true},
    h("h1", {}, "Sign in"),
    h("p", {class: "lead"}, "Watch and control simulations, upload experiments and review ",
      "their logs and results."),
    h("label", {for: "api-key"}, "API key"),
    input,
    h("p", {id: "api-key-help", class: "help"},
      "Your key stays in this browser tab and is forgotten when you close it."),
    error,
    h("div", {class: "form-actions"}, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    error.replaceChildren();
    if (!key) {
      error.append(notice("error", "Enter your API key."));
      input.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Signing in…";
    try {
      storeKey(key);
      await submit(key);
    } catch (err) {
      forgetKey();
      error.append(notice("error", err.status === 401
        ? "This API key was not accepted. Check it and try again." : err.message));
      button.disabled = false;
      button.textContent = "Sign in";
      input.select();
    }
  });
  main.replaceChildren(h("section", {class: "signin-page"}, form));
  input.focus();
}
