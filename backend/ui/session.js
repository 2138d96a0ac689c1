// Who is signed in: the API key (this browser tab's sessionStorage only, never
// localStorage or a cookie) and what GET /v1/whoami says about it.

const KEY = "simbackend.apiKey";

export const ROLES = ["observer", "scientist", "operator", "admin"];

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

/**
 * The identity behind the key. A backend without authentication has no /v1/whoami
 * (404): everyone may do everything there, so the user is an anonymous admin.
 * Throws ApiError (401: the key was refused).
 */
export async function whoami(api) {
  try {
    return await api.json("/v1/whoami");
  } catch (err) {
    if (err.status === 404) return {name: "anonymous", role: "admin", kind: "none"};
    throw err;
  }
}

/** What a user may do, by role (the backend enforces it; the dashboard hides the rest). */
export class Permissions {
  constructor(user) {
    this.user = user;
  }

  get role() { return this.user.role; }

  /** Pause, resume or stop `record`: operators and admins any, scientists their own. */
  mayControl(record) {
    if (this.role === "operator" || this.role === "admin") return true;
    return this.role === "scientist" && record.owner === this.user.name;
  }

  /** Upload experiments and start simulations. */
  get mayRun() { return this.role !== "observer"; }

  get mayAudit() { return this.role === "operator" || this.role === "admin"; }
}
