"""Following a run on a terminal: a progress bar of sim_time toward its timeout, the log
lines as they are written, and the end."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from client.api import Client, Record

#: Exit codes of ``run`` and ``watch`` by how the run ended.
EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 2}


def follow(client: Client, sim_id: str, *, as_json: bool = False) -> Record:
    """Show the run until it ends; return its final record.

    Raises:
        KeyboardInterrupt: left to the caller (the run goes on).
    """
    if as_json:
        for event in client.events(sim_id):
            print(json.dumps({"type": event.type, "id": event.id, "data": event.data}),
                  flush=True)
        return client.simulation(sim_id)
    console = Console(stderr=False, highlight=False)
    progress = Progress(TextColumn("{task.fields[state]:<11}"), BarColumn(),
                        TextColumn("{task.fields[sim]}"), TimeElapsedColumn(),
                        console=console, transient=False, disable=not console.is_terminal)
    task = progress.add_task(sim_id, total=None, state="", sim="")
    partial: dict[str, str] = {}
    with progress:
        for event in client.events(sim_id):
            if event.type == "log":
                _print_lines(progress.console, event.data, partial)
            elif event.type in ("state", "status"):
                _advance(progress, task, event.data)
            elif event.type == "end":
                _advance(progress, task, event.data)
                break
    for name, rest in partial.items():
        if rest:
            console.print(f"{name}: {rest}", markup=False)
    return client.simulation(sim_id)


def _print_lines(console: Console, data: dict[str, Any], partial: dict[str, str]) -> None:
    name = data["file"]
    *lines, partial[name] = (partial.get(name, "") + data["text"]).split("\n")
    for line in lines:
        console.print(f"{name}: {line}", markup=False)


def _advance(progress: Progress, task: Any, data: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"state": data.get("state", "")}
    if "sim_time" in data:
        total = (data.get("timeout") or {}).get("sim_time")
        sim_time = float(data.get("sim_time") or 0.0)
        fields["sim"] = f"{sim_time:,.0f}" + (f" / {total:,.0f} ms" if total else " ms")
        progress.update(task, completed=sim_time, total=total, **fields)
    else:
        progress.update(task, **fields)


def print_end(record: Record, sim_id: str) -> int:
    """One line on how the run ended; the exit code that says it."""
    state = record["state"]
    line = f"simulation {sim_id} {state}"
    if record.get("error"):
        line += f": {record['error'].get('type')}: {record['error'].get('message')}"
    print(line, file=sys.stderr if state == "failed" else sys.stdout, flush=True)
    return EXIT_CODES.get(state, 1)
