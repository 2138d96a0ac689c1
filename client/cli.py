"""The ``simbackend`` verbs that talk to a backend (all but ``serve``).

Errors print one line (``simbackend: ...``) and exit 3; ``run``/``watch`` exit 0 when
the run completed, 1 failed, 2 stopped, 130 when interrupted (the run goes on).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from client.api import Client, SimbackendError
from client.follow import EXIT_CODES, follow, print_end

EXIT_ERROR = 3
EXIT_INTERRUPTED = 130


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="the backend (SIMBACKEND_URL; default: the one on this machine)")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="API key or JWT (SIMBACKEND_TOKEN; default: <data_dir>/admin.key)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON, for scripts")
    return common


def parser() -> argparse.ArgumentParser:
    common = _common()
    top = argparse.ArgumentParser(prog="simbackend", parents=[common],
                                  description="Run neural-simulation experiments over REST.")
    sub = top.add_subparsers(dest="command", required=True, metavar="<verb>")

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common], description=help)

    verb("serve", "start the backend (simbackend serve --help)")
    verb("nest-server", "start the backend with the drop-in NEST Server API "
                        "(simbackend nest-server --help)")
    verb("keys", "create, list or revoke API keys (simbackend keys --help)")
    run = verb("run", "push a folder if it is one, create a simulation, start it")
    run.add_argument("target", help="an experiment folder (pushed first) or an experiment name")
    run.add_argument("--name", help="the experiment's name when pushing (default: the folder's)")
    run.add_argument("--param", action="append", default=[], metavar="K=V",
                     help="a parameter (value parsed as JSON if it parses); repeatable")
    run.add_argument("--timeout", type=float, metavar="MS", help="sim-time timeout in ms")
    run.add_argument("--real-time", type=float, metavar="S", help="real-time timeout in s")
    run.add_argument("--id", help="your own id for the simulation")
    run.add_argument("-f", "--follow", action="store_true",
                     help="show progress and logs until it ends (exit 0/1/2: completed/"
                          "failed/stopped)")
    run.add_argument("--download", metavar="DIR", help="wait for the end, save the results here")
    watch = verb("watch", "follow a simulation until it ends (as run --follow)")
    watch.add_argument("id")
    watch.add_argument("--download", metavar="DIR", help="save the results here at the end")
    ls = verb("ls", "list simulations")
    ls.add_argument("--state")
    ls.add_argument("--experiment")
    verb("show", "a simulation's record and status").add_argument("id")
    for name in ("pause", "resume", "stop"):
        verb(name, f"{name} a simulation").add_argument("id")
    verb("rm", "delete a finished simulation, its logs and results").add_argument("id")
    logs = verb("logs", "print a simulation's logs")
    logs.add_argument("id")
    logs.add_argument("name", nargs="?", help="one log file (default: all)")
    logs.add_argument("-f", "--follow", action="store_true", help="go on as lines are written")
    results = verb("results", "list a simulation's results; 'results get ID' downloads them")
    results.add_argument("args", nargs="+", metavar="[get] ID [NAME ...]")
    results.add_argument("-o", "--output", default=".", help="folder to save into (get)")
    exps = verb("experiments", "list (ls), upload (push FOLDER) or delete (rm NAME) experiments")
    exps.add_argument("action", nargs="?", default="ls", choices=("ls", "push", "rm"))
    exps.add_argument("what", nargs="?", help="the folder to push or the name to remove")
    exps.add_argument("--name", help="the experiment's name when pushing")
    events = verb("events", "print events: of one simulation, or of all")
    events.add_argument("id", nargs="?")
    events.add_argument("--last-event-id", help="resume after this event")
    events.add_argument("--no-status", action="store_true", help="leave out status ticks")
    events.add_argument("--no-logs", action="store_true", help="leave out log lines")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command in ("serve", "nest-server", "keys"):
        print(f"simbackend: '{args.command}' takes no options before it: "
              f"simbackend {args.command} [...]",
              file=sys.stderr)
        return 2
    client = Client(getattr(args, "url", None), getattr(args, "token", None))
    as_json = getattr(args, "json", False)
    try:
        return VERBS[args.command](client, args, as_json)
    except SimbackendError as exc:
        print(f"simbackend: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return 0
    finally:
        client.close()


def _out(data: Any, as_json: bool, text: Callable[[], str]) -> int:
    print(json.dumps(data, indent=1) if as_json else text(), flush=True)
    return 0


def _param(raw: str) -> tuple[str, Any]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise SimbackendError(f"--param {raw!r} is not KEY=VALUE", code="bad_argument")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def cmd_run(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    target = Path(args.target)
    if target.is_dir():
        experiment = client.push_experiment(target, args.name)["name"]
    else:
        experiment = args.target
    timeout = {k: v for k, v in (("sim_time", args.timeout), ("real_time", args.real_time))
               if v is not None}
    record = client.create(experiment, id=args.id, params=dict(map(_param, args.param)) or None,
                           timeout=timeout or None, state="started")
    sim_id = record["id"]
    if not (args.follow or args.download):
        return _out(record, as_json, lambda: f"simulation {sim_id} of {experiment}: "
                    f"{record['state']}\n  follow it: simbackend watch {sim_id}")
    if not as_json:
        print(f"simulation {sim_id} of {experiment}: {record['state']}", flush=True)
    return _watch(client, sim_id, args.download, as_json, show=args.follow)


def cmd_watch(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    client.simulation(args.id)  # an unknown id is one clear error
    return _watch(client, args.id, args.download, as_json, show=True)


def _watch(client: Client, sim_id: str, download: str | None, as_json: bool,
           show: bool) -> int:
    try:
        record = follow(client, sim_id, as_json=as_json) if show else client.wait(sim_id)
    except KeyboardInterrupt:
        print(f"\nsimbackend: detached; simulation {sim_id} goes on.\n"
              f"  reattach: simbackend watch {sim_id}\n"
              f"  stop it:  simbackend stop {sim_id}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    code = print_end(record, sim_id) if not as_json else EXIT_CODES.get(record["state"], 1)
    if download:
        saved = client.download_results(sim_id, download)
        if not as_json:
            print(f"downloaded {len(saved)} result files to {download}", flush=True)
    return code


def cmd_ls(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    sims = client.simulations(state=args.state, experiment=args.experiment)
    rows = [f"{'ID':<14} {'EXPERIMENT':<16} {'STATE':<11} CREATED"]
    rows += [f"{s['id']:<14} {s['experiment']:<16} {s['state']:<11} {s['created_at']}"
             for s in sims]
    return _out(sims, as_json, lambda: "\n".join(rows))


def cmd_show(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    record, status = client.simulation(args.id), client.status(args.id)

    def text() -> str:
        lines = [f"{k:<14} {v}" for k, v in record.items() if k not in ("status",)]
        lines.append(f"{'sim_time':<14} {status.get('sim_time')} ms "
                     f"(steps {status.get('steps')}, real_time {status.get('real_time')} s)")
        lines.append(f"{'server_state':<14} {status.get('server_state')}")
        usage = status.get("usage")
        if usage:  # ended: what the run used in all
            lines.append(f"{'usage':<14} {usage['cpu_seconds']:.3f} s CPU, "
                         f"{usage['max_rss_bytes'] / 2**20:.1f} MiB peak memory")
        return "\n".join(lines)
    return _out({"record": record, "status": status}, as_json, text)


def _state_verb(target: str) -> Callable[[Client, argparse.Namespace, bool], int]:
    def cmd(client: Client, args: argparse.Namespace, as_json: bool) -> int:
        state = client.set_state(args.id, target)
        return _out({"id": args.id, "state": state}, as_json, lambda: f"{args.id}: {state}")
    return cmd


def cmd_rm(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    client.delete(args.id)
    return _out({"deleted": args.id}, as_json, lambda: f"deleted {args.id}")


def cmd_logs(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    if args.follow:
        try:
            for name, line in client.follow_logs(args.id):
                if args.name in (None, name):
                    print(json.dumps({"file": name, "line": line}) if as_json else
                          line if args.name else f"{name}: {line}", flush=True)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        return 0
    names = [args.name] if args.name else [f["name"] for f in client.logs(args.id)]
    texts = {name: client.log(args.id, name) for name in names}
    if as_json:
        return _out(texts, True, str)
    for name, text in texts.items():
        if not args.name:
            print(f"==> {name} <==")
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0


def cmd_results(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    rest = list(args.args)
    if rest[0] == "get" and len(rest) > 1:
        sim_id, names = rest[1], rest[2:]
        if names:
            saved = [client.download(sim_id, n, Path(args.output) / n) for n in names]
        else:
            saved = client.download_results(sim_id, args.output)
        return _out([str(p) for p in saved], as_json, lambda: "\n".join(map(str, saved)))
    files = client.results(rest[0])
    return _out(files, as_json, lambda: "\n".join(f"{f['size']:>12}  {f['name']}" for f in files))


def cmd_experiments(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    if args.action == "push":
        if not args.what:
            raise SimbackendError("experiments push needs a folder", code="bad_argument")
        pushed = client.push_experiment(args.what, args.name)
        return _out(pushed, as_json, lambda: f"pushed {pushed['name']} "
                    f"(version {pushed.get('version')}, {len(pushed.get('files', []))} files)")
    if args.action == "rm":
        if not args.what:
            raise SimbackendError("experiments rm needs a name", code="bad_argument")
        client.delete_experiment(args.what)
        return _out({"deleted": args.what}, as_json, lambda: f"deleted {args.what}")
    exps = client.experiments()
    return _out(exps, as_json, lambda: "\n".join(
        f"{e['name']:<20} {e.get('description', '')}" for e in exps))


def cmd_events(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    try:
        for event in client.events(args.id, last_event_id=args.last_event_id,
                                   logs=not args.no_logs, status=not args.no_status):
            if as_json:
                print(json.dumps({"type": event.type, "id": event.id, "data": event.data}),
                      flush=True)
            else:
                data = {k: v for k, v in event.data.items() if k != "sim_id"}
                print(f"{event.sim_id} {event.type:<12} {json.dumps(data)}", flush=True)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


VERBS: dict[str, Callable[[Client, argparse.Namespace, bool], int]] = {
    "run": cmd_run, "watch": cmd_watch, "ls": cmd_ls, "show": cmd_show, "rm": cmd_rm,
    "pause": _state_verb("paused"), "resume": _state_verb("started"),
    "stop": _state_verb("stopped"), "logs": cmd_logs, "results": cmd_results,
    "experiments": cmd_experiments, "events": cmd_events,
}
