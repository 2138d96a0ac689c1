// Server-Sent Events read with fetch(), because EventSource cannot send the Authorization
// header. Parses text/event-stream as the HTML standard describes it and reconnects with
// Last-Event-ID, so a dropped connection (or a `dropped` event) loses nothing.

/**
 * Follow the event stream at `path`; `onEvent({type, data, id})` gets each event with its
 * data parsed as JSON. Returns `{close()}`. The stream stops for good when `onEvent`
 * returns `false` (e.g. after a simulation's `end`), on close(), on a 204 (an ended
 * simulation's stream, from a position that has had everything), or on a 401/403/404.
 * `onTrouble(message|null)` hears about lost connections and recoveries.
 */
export function follow(api, path, onEvent, {lastEventId = null, onTrouble = () => {}} = {}) {
  const abort = new AbortController();
  let position = lastEventId;
  let retry = 1000;
  let done = false;

  async function run() {
    while (!done) {
      try {
        const headers = {Accept: "text/event-stream"};
        if (position) headers["Last-Event-ID"] = position;
        const response = await api.fetch(path, {headers, signal: abort.signal});
        onTrouble(null);
        if (response.status === 204) return; // over: this position has had everything
        await read(response.body, (event) => {
          if (event.id !== null) position = event.id;
          if (event.retry !== null) retry = event.retry;
          if (event.type === "") return true; // only a position or a retry delay
          if (event.type === "dropped" || event.type === "error") {
            // The server ended this stream; resume where it says.
            if (event.data && event.data.last_event_id) position = event.data.last_event_id;
            return true;
          }
          if (onEvent(event) === false) done = true;
          return !done;
        }, abort.signal);
      } catch (err) {
        if (abort.signal.aborted) return;
        if (err.status && [400, 401, 403, 404].includes(err.status)) {
          onTrouble(err.message);
          return;
        }
        onTrouble("Live updates were interrupted; reconnecting…");
      }
      if (!done) await pause(retry, abort.signal);
    }
  }

  run();
  return {close() { done = true; abort.abort(); }};
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}

/** Read `body` to its end; call `dispatch(event)` per event until it returns false. */
async function read(body, dispatch, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort, {once: true});
  const parser = new EventParser();
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      for (const event of parser.push(value)) {
        if (!dispatch(event)) {
          await reader.cancel().catch(() => {});
          return;
        }
      }
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Incremental text/event-stream parser: push text, get the complete events in it. */
export class EventParser {
  constructor() {
    this.buffer = "";
    this.retry = null; // the last reconnection delay the server asked for (it persists)
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = [];
    this.id = null;
    this.retryChanged = false;
  }

  *push(text) {
    this.buffer += text;
    // A line ends at CRLF, LF or CR; a trailing CR may be half of a CRLF still to come.
    const lines = this.buffer.split(/\r\n|\n|\r(?!$)/);
    this.buffer = lines.pop();
    for (const line of lines) {
      const event = this.line(line);
      if (event) yield event;
    }
  }

  line(line) {
    if (line === "") {
      if (this.data.length === 0) { // no event; but a new id or retry delay is news
        const news = this.retryChanged || this.id !== null ? {
          type: "", data: null, id: this.id, retry: this.retry} : null;
        this.reset();
        return news;
      }
      const raw = this.data.join("\n");
      let data = raw;
      try { data = JSON.parse(raw); } catch { /* plain text data */ }
      const event = {type: this.type || "message", data, id: this.id, retry: this.retry};
      this.reset();
      return event;
    }
    if (line.startsWith(":")) return null; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) {
      this.retry = Number(value);
      this.retryChanged = true;
    }
    return null;
  }
}
