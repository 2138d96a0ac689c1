// The dashboard's shell: sign-in state, the header, hash routing between the pages.
import {Api} from "./api.js";
import {notice} from "./dom.js";
import {renderAudit} from "./audit.js";
import {renderExperiments} from "./experiments.js";
import {renderSignIn} from "./signin.js";
import {renderSimulation} from "./simulation.js";
import {renderSimulations} from "./simulations.js";
import {Permissions, forgetKey, storedKey, whoami} from "./session.js";

const main = document.getElementById("main");
let session = null;          // {api, user, perms} once signed in
let leave = () => {};        // the current page's cleanup (closes its streams)
let signInMessage = null;    // why the user is back at the sign-in page
let wanted = null;           // the page asked for before signing in, shown after

/** The route of the current hash: {page, id, params}. */
function route() {
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [page = "", ...rest] = path.split("/");
  return {page: page || "simulations", id: rest.length ? decodeURIComponent(rest.join("/")) : null,
          params: new URLSearchParams(search)};
}

export function navigate(hash) {
  if (location.hash === hash) show(); else location.hash = hash;
}

function confirmDialog({title, text, ok}) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = ok;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"),
                            {once: true});
  });
}

function setConnection(message) {
  const bar = document.getElementById("connection");
  bar.textContent = message || "";
  bar.classList.toggle("connection-lost", Boolean(message));
}

function signedOut(message) {
  if (message) wanted = location.hash; // signed out by the backend: come back here
  forgetKey();
  session = null;
  signInMessage = message;
  navigate("#/signin");
}

async function signIn(key) {
  const api = new Api(key);
  const user = await whoami(api); // a refused key throws here, for the sign-in page to say
  api.onUnauthorized = () => signedOut(
    "Your API key is no longer accepted (it may have been revoked). Sign in again.");
  session = {api, user, perms: new Permissions(user)};
  header();
}

function header() {
  const signedIn = Boolean(session);
  document.querySelector(".nav").hidden = !signedIn;
  document.querySelector(".user").hidden = !signedIn;
  if (!signedIn) return;
  document.querySelector(".user-name").textContent = session.user.name;
  const role = document.querySelector(".user-role");
  role.textContent = session.user.role;
  role.className = `user-role badge role-${session.user.role}`;
  document.querySelector('[data-nav="audit"]').hidden = !session.perms.mayAudit;
}

const PAGES = {
  simulations: renderSimulations,
  experiments: renderExperiments,
  audit: renderAudit,
};

async function show() {
  leave();
  leave = () => {};
  setConnection(null);
  const {page, id, params} = route();
  if (!session && storedKey() && page !== "signin") {
    try {
      await signIn(storedKey());
    } catch (err) {
      signInMessage = err.status === 401
        ? "Your API key is no longer accepted (it may have been revoked). Sign in again."
        : err.message;
      forgetKey();
    }
  }
  header();
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (page === "signin" || !session) {
    if (page !== "signin") {
      wanted = location.hash;
      location.replace("#/signin");
      return;
    }
    document.title = "Sign in · simbackend";
    leave = renderSignIn(main, {
      message: signInMessage,
      submit: async (key) => {
        await signIn(key);
        signInMessage = null;
        navigate(wanted || "#/simulations");
        wanted = null;
      },
    }) || leave;
    return;
  }
  const ctx = {...session, main, navigate, confirm: confirmDialog, setConnection};
  let render = PAGES[page];
  if (page === "simulations" && id) render = renderSimulation;
  if (!render) {
    main.replaceChildren(notice("error", "There is no such page.",
                                "Use the navigation above to go on."));
    return;
  }
  leave = render(ctx, {id, params}) || leave;
  main.focus({preventScroll: true});
}

document.getElementById("sign-out").addEventListener("click", () => signedOut(null));
window.addEventListener("hashchange", show);
show();
