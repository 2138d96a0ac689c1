// How numbers, sizes and times are shown: fixed decimals, so live figures keep their width.

const number = new Intl.NumberFormat("en-US", {maximumFractionDigits: 0});

export function simTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return `${number.format(Math.floor(ms))} ms`;
}

export function seconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

/** CPU time used in all: milliseconds below a second, where seconds() would say 0.0 s. */
export function cpuTime(s) {
  if (s === null || s === undefined) return "—";
  return s < 1 ? `${Math.round(s * 1000)} ms in all` : `${seconds(s)} in all`;
}

export function count(n) {
  return n === null || n === undefined ? "—" : number.format(n);
}

export function percent(p) {
  return p === null || p === undefined ? "—" : `${p.toFixed(1)} %`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

/** The limits a run was launched with (the record's ``effective_limits``), in a line:
 * "real time 10 min 00 s · memory 512 MiB · start 1 min 00 s"; "none" for a limit it
 * has not; "—" before the launch resolved them. A narrow screen breaks the line between
 * two limits, never inside one (no-break spaces). */
export function limits(l) {
  if (!l) return "—";
  const memory = l.memory_mb === null || l.memory_mb === undefined ? "none"
    : `${number.format(l.memory_mb)} MiB`;
  const real = l.real_time === null || l.real_time === undefined ? "none" : seconds(l.real_time);
  return [`real time ${real}`, `memory ${memory}`, `start ${seconds(l.start_timeout)}`]
    .map((part) => part.replaceAll(" ", "\u00a0")).join(" · ");
}

/** "2026-12-01T21:03:11.254Z" -> "2026-12-01 21:03:11" (UTC, as the API keeps it). */
export function when(iso) {
  if (!iso) return "—";
  return iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
}

/** How far a run is toward its sim-time timeout, 0..1, or null when it has none. */
export function progress(simTimeMs, timeout) {
  const limit = timeout && timeout.sim_time;
  if (!limit || simTimeMs === null || simTimeMs === undefined) return null;
  return Math.max(0, Math.min(1, simTimeMs / limit));
}
