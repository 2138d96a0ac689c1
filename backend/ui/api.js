// The REST API from the browser: every request carries the user's key; every error the
// API answers ({"error": {"code", "message"}}) becomes an ApiError with that message.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  /** @param {string} key the API key; @param {() => void} onUnauthorized called on 401 */
  constructor(key, onUnauthorized = () => {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
  }

  headers(extra = {}) {
    return {Authorization: `Bearer ${this.key}`, ...extra};
  }

  /** fetch() with the key; resolves to the Response when it is 2xx, else throws ApiError. */
  async fetch(path, {method = "GET", body, headers = {}, signal} = {}) {
    let response;
    try {
      response = await fetch(path, {method, body, headers: this.headers(headers), signal,
                                    cache: "no-store"});
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "unreachable", "The backend could not be reached. " +
                         "Check that it is running, then try again.");
    }
    if (response.ok) return response;
    const error = await errorOf(response);
    if (response.status === 401) this.onUnauthorized(error.message);
    throw error;
  }

  async json(path, options = {}) {
    const response = await this.fetch(path, options);
    return response.status === 204 ? null : response.json();
  }

  /** Send `data` as JSON with `method`; the answer's JSON. */
  send(method, path, data) {
    return this.json(path, {method, body: JSON.stringify(data),
                            headers: {"Content-Type": "application/json"}});
  }

  /** Save the file at `path` as `filename` (fetched with the key, handed over as a blob). */
  async download(path, filename) {
    const response = await this.fetch(path);
    const url = URL.createObjectURL(await response.blob());
    const link = Object.assign(document.createElement("a"), {href: url, download: filename});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  setState(simId, state) {
    return this.send("PUT", `/v1/simulations/${enc(simId)}/state`, {state});
  }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) {
      return new ApiError(response.status, body.error.code, body.error.message);
    }
  } catch { /* not JSON: a proxy's page */ }
  return new ApiError(response.status, `http_${response.status}`,
                      `The backend answered ${response.status} ${response.statusText}.`);
}

/** One path segment (ids, names). */
export function enc(part) {
  return encodeURIComponent(part);
}

/** A query string of the non-empty values of `params` ("" when none). */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
