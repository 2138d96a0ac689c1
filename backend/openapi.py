"""The OpenAPI 3 description of the REST API, served at ``/openapi.json``."""
from __future__ import annotations

from typing import Any

from lifecycle import REQUESTABLE_STATES, SimState

STATES = [s.value for s in SimState]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An operation; every one may also answer any status with the error object."""
    return {"summary": summary,
            "responses": {**responses, "default": {"$ref": "#/components/responses/Error"}},
            **extra}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


_SIM_ID = [_path_param("sim_id", "the simulation's id")]
_NAME = [_path_param("name", "the experiment's name")]
_RANGE = [{"name": n, "in": "query", "required": False, "description": d,
           "schema": {"type": "integer", "minimum": 0}}
          for n, d in (("offset", "first byte"), ("limit", "most bytes"))]
_PAGE = [{"name": "limit", "in": "query", "required": False,
          "description": "most items (default 100)",
          "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
         {"name": "cursor", "in": "query", "required": False,
          "description": "next_cursor of the previous page", "schema": {"type": "string"}}]
_NEXT = {"next_cursor": _nullable({"type": "string"})}
_FILE_LIST = {"type": "array", "items": _obj(["name", "size"], name={"type": "string"},
                                             size={"type": "integer"})}

_POSITIVE = {"type": "number", "exclusiveMinimum": True, "minimum": 0}
_NEST_SETTINGS = {"type": "object", "properties": {
    "threads": {"type": "integer", "minimum": 1, "maximum": 256},
    "seed": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "resolution": _POSITIVE, "idle_timeout": _POSITIVE, "exec": {"type": "boolean"}}}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], error=_obj(["code", "message"], code={"type": "string"},
                                        message={"type": "string"})),
    "State": _obj(["state"], state={"type": "string", "enum": STATES}),
    "Record": _obj(
        ["id", "experiment", "state", "created_at", "updated_at", "main_script", "params",
         "error", "exit_code", "logs_uploaded"],
        id={"type": "string"}, experiment=_nullable({"type": "string"}),
        kernel=_nullable({"type": "string", "enum": ["nest"]}), nest=_nullable(_NEST_SETTINGS),
        main_script={"type": "string"}, state={"type": "string", "enum": STATES},
        created_at={"type": "string"}, updated_at={"type": "string"},
        ended_at=_nullable({"type": "string"}), params={"type": "object"},
        timeout={"type": "object"}, limits={"type": "object"},
        effective_limits=_nullable(_obj(
            ["real_time", "memory_mb", "start_timeout"],
            real_time=_nullable({"type": "number"}), memory_mb=_nullable({"type": "number"}),
            start_timeout={"type": "number"})),
        error=_nullable({"type": "object"}), exit_code=_nullable({"type": "integer"}),
        logs_uploaded={"type": "boolean"}, status={"type": "object"},
        upload=_nullable({"type": "object"}),
        experiment_version=_nullable({"type": "string"}),
        owner=_nullable({"type": "string"}), priority={"type": "integer"},
        threads={"type": "integer"}, memory_mb={"type": "number"},
        queue=_nullable(_obj(["position", "reason"], position={"type": "integer"},
                             reason={"type": "string"}))),
    "Status": _obj(
        ["state", "sim_time", "real_time", "steps", "timestep", "timeout", "resources"],
        state={"type": "string", "enum": STATES},
        server_state=_nullable({"type": "string"}),
        sim_time=_nullable({"type": "number"}), real_time=_nullable({"type": "number"}),
        steps=_nullable({"type": "integer"}), timestep=_nullable({"type": "number"}),
        timeout=_nullable({"type": "object"}),
        nest_session={"type": "object", "description": "a NEST session's kernel: "
                      "biological_time, simulating, simulate_until, paused, stopping"},
        resources=_obj(["cpu_percent", "rss_bytes"], cpu_percent={"type": "number"},
                       rss_bytes={"type": "integer"}),
        usage={**_obj(["cpu_seconds", "max_rss_bytes"], cpu_seconds={"type": "number"},
                      max_rss_bytes={"type": "integer"}),
               "description": "once the run has ended: the CPU seconds it used and its "
                             "peak resident memory, as its server last reported them"},
        launcher=_obj(["name"], name={"type": "string"},
                      job_id=_nullable({"type": "string"}), state=_nullable({"type": "string"}),
                      reason=_nullable({"type": "string"}), node=_nullable({"type": "string"}))),
    "NewSimulation": {
        "type": "object", "additionalProperties": False,
        "description": "an experiment to run, or \"kernel\": \"nest\" for a NEST session "
                       "(then no experiment, main_script, params or timeout)",
        "properties": {
            "kernel": {"type": "string", "enum": ["nest"]},
            **_NEST_SETTINGS["properties"],
            "experiment": {"type": "string", "minLength": 1, "example": "closed_loop"},
            "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "main_script": {"type": "string"},
            "params": {"type": "object"},
            "timeout": {"type": "object", "additionalProperties": False, "properties": {
                "sim_time": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                "real_time": {"type": "number", "exclusiveMinimum": True, "minimum": 0}}},
            "limits": {"type": "object", "additionalProperties": False, "properties": {
                "memory_mb": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                "start_timeout": {"type": "number", "exclusiveMinimum": True, "minimum": 0}}},
            "state": {"type": "string", "enum": ["initialized", "started"]},
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "owner": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "resources": {"type": "object", "additionalProperties": False, "properties": {
                "threads": {"type": "integer", "minimum": 1},
                "memory_mb": {"type": "number", "exclusiveMinimum": True, "minimum": 0}}}}},
    "QueueEntry": _obj(
        ["id", "position", "priority", "owner", "target", "threads", "memory_mb", "queued_at",
         "reason"],
        id={"type": "string"}, position={"type": "integer"}, priority={"type": "integer"},
        owner=_nullable({"type": "string"}),
        target={"type": "string", "enum": ["initialized", "started"]},
        threads={"type": "integer"}, memory_mb={"type": "number"},
        queued_at={"type": "string"}, reason={"type": "string"}),
    "QueueChange": {
        "type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
            "position": {"type": "integer", "minimum": 0, "description": "0 is the front"},
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000}}},
    "StateRequest": _obj(["state"], state={"type": "string",
                                           "enum": sorted(s.value for s in REQUESTABLE_STATES)}),
    "ExperimentSummary": _obj(["name", "files", "size", "main_script"],
                              name={"type": "string"}, owner=_nullable({"type": "string"}),
                              files={"type": "integer"},
                              size={"type": "integer"},
                              main_script=_nullable({"type": "string"}),
                              description={"type": "string"}, timestep={"type": "number"},
                              engines={"type": "object"}, problem={"type": "string"}),
    "Experiment": _obj(["name", "version", "config", "files"], name={"type": "string"},
                       owner=_nullable({"type": "string"}),
                       version={"type": "string",
                                "description": "the stored version; 'plain' for a folder "
                                               "put into storage by another tool"},
                       config={"type": "object"},
                       files={"type": "array", "items": _obj(
                           ["path", "size"], path={"type": "string"},
                           size={"type": "integer"})}),
}


def _service_paths() -> dict[str, Any]:
    return {
        "/": {"get": _op("What this service is", {"200": _json(_obj(
            ["name", "version", "api", "kernels"], name={"type": "string"},
            version={"type": "string"}, api={"type": "string"},
            kernels=_obj(["nest", "neuron", "python"], nest=_nullable({"type": "string"}),
                         neuron=_nullable({"type": "string"}), python={"type": "string"}),
            launcher=_obj(["name"], name={"type": "string"},
                          boundary={"type": "string", "enum": ["cgroup", "marker"]}),
            pool={"type": "object", "description": "warm simulation servers by kind "
                  "(nest, python); {} without a pool",
                  "additionalProperties": _obj(
                      ["idle", "copying", "starting", "size", "forking"],
                      idle={"type": "integer", "description": "ready to take a run"},
                      copying={"type": "integer", "description": "of the idle, forks still "
                               "copying their pages (a run takes them all the same)"},
                      starting={"type": "integer"}, size={"type": "integer"},
                      forking={"type": "boolean",
                               "description": "whether its fork server is warm"})}))})},
        "/health": {"get": _op("Liveness", {"200": _json(_obj(["status"],
                                                              status={"type": "string"}))},
                               security=[])},
        "/ready": {"get": _op("Readiness: storage reachable, can spawn", {
            "200": _json(_obj(["status", "checks"], status={"type": "string"},
                              checks={"type": "object"})),
            "503": {"$ref": "#/components/responses/Error"}}, security=[])},
        "/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})},
                                     security=[])},
    }


def _nest_paths() -> dict[str, Any]:
    """The NEST Server API of a NEST session (answers as NEST Server 3.10 gives them)."""
    anything = _json({}, "what NEST Server answers: any JSON value")
    body = {"required": False, "content": {"application/json": {"schema": {}}}}

    def item(summary: str, *extra: dict[str, Any], post: bool = True) -> dict[str, Any]:
        ops = {"get": _op(summary, {"200": anything}),
               "options": _op("CORS preflight", {"200": {"description": "allowed"}})}
        if post:
            ops["post"] = _op(summary, {"200": anything}, requestBody=body)
        return {"parameters": _SIM_ID + list(extra), **ops}

    base = "/v1/simulations/{sim_id}/nest"
    call = _path_param("call", "a PyNEST function or attribute (Create, GetStatus, ...)")
    rest = _path_param("rest", "api, api/<call> or exec")
    return {
        base: item("NEST version ({\"mpi\", \"nest\"})", post=False),
        base + "/": item("NEST version ({\"mpi\", \"nest\"})", post=False),
        base + "/api": item("The PyNEST names that can be called", post=False),
        base + "/api/{call}": item("Call a PyNEST function (JSON kwargs, \"args\" "
                                   "positional; ?inspect=getdoc|getsource)", call),
        base + "/exec": item("Run a script in the session ({\"source\", \"return\"})"),
        base + "/{rest}": item("Any other path below the NEST root", rest),
    }


def _experiment_paths() -> dict[str, Any]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    archive = {"required": True, "content": {"application/gzip": binary,
                                             "application/octet-stream": binary}}
    return {
        "/v1/experiments": {"get": _op("List experiments", {"200": _json(_obj(
            ["experiments"], experiments={"type": "array", "items": _ref("ExperimentSummary")},
            **_NEXT))}, parameters=_PAGE)},
        "/v1/experiments/{name}": {
            "parameters": _NAME,
            "get": _op("Describe an experiment", {"200": _json(_ref("Experiment"))}),
            "put": _op("Store an experiment folder sent as .tar.gz", {
                "200": _json(_ref("Experiment"), "replaced"),
                "201": _json(_ref("Experiment"), "created")}, requestBody=archive),
            "delete": _op("Delete an experiment", {"204": {"description": "deleted"}}),
        },
    }


def _links() -> dict[str, Any]:
    """What a client can do with a simulation it just created."""
    targets = {"GetRecord": "getSimulation", "DeleteSimulation": "deleteSimulation",
               "GetState": "getState", "SetState": "setState", "GetStatus": "getStatus",
               "ListLogs": "listLogs", "ListResults": "listResults"}
    return {name: {"operationId": op, "parameters": {"sim_id": "$response.body#/id"}}
            for name, op in targets.items()}


def _simulation_paths() -> dict[str, Any]:
    def body(name: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}

    filters = [{"name": "state", "in": "query", "required": False,
                "schema": {"type": "string", "enum": STATES}},
               {"name": "experiment", "in": "query", "required": False,
                "schema": {"type": "string"}},
               {"name": "owner", "in": "query", "required": False,
                "schema": {"type": "string"}}]
    created = {**_json(_ref("Record"), "created"),
               "headers": {"Location": {"schema": {"type": "string"}}},
               "links": _links()}
    paths = {
        "/v1/simulations": {
            "get": _op("List simulations", {"200": _json(_obj(
                ["simulations"], simulations={"type": "array", "items": _ref("Record")},
                last_event_id={"type": "string", "description": "the newest event when the "
                               "list was read: follow /v1/events from it (Last-Event-ID)"},
                **_NEXT))}, parameters=filters + _PAGE),
            "post": _op("Create a simulation", {"201": created},
                        requestBody=body("NewSimulation")),
        },
        "/v1/simulations/{sim_id}": {
            "parameters": _SIM_ID,
            "get": _op("A simulation's record", {"200": _json(_ref("Record"))},
                       operationId="getSimulation"),
            "delete": _op("Delete a finished simulation", {"204": {"description": "deleted"}},
                          operationId="deleteSimulation"),
        },
        "/v1/simulations/{sim_id}/state": {
            "parameters": _SIM_ID,
            "get": _op("Its state", {"200": _json(_ref("State"))}, operationId="getState"),
            "put": _op("Request a state", {"200": _json(_ref("State"))},
                       requestBody=body("StateRequest"), operationId="setState"),
        },
        "/v1/simulations/{sim_id}/status": {
            "parameters": _SIM_ID,
            "get": _op("Live status", {"200": _json(_ref("Status"))},
                       operationId="getStatus")},
    }
    for kind, media in (("logs", "text/plain"), ("results", "application/octet-stream")):
        paths[f"/v1/simulations/{{sim_id}}/{kind}"] = {
            "parameters": _SIM_ID,
            "get": _op(f"List its {kind}",
                       {"200": _json(_obj([kind], **{kind: _FILE_LIST}, **_NEXT))},
                       operationId=f"list{kind.capitalize()}", parameters=_PAGE)}
        paths[f"/v1/simulations/{{sim_id}}/{kind}/{{name}}"] = {
            "parameters": _SIM_ID + [_path_param("name", "file name")],
            "get": _op(f"Download one of its {kind}", {"200": {
                "description": "the bytes", "content": {
                    "*/*" if kind == "results" else media: {"schema": {"type": "string"}}}}},
                parameters=_RANGE)}
    return paths


def _queue_paths() -> dict[str, Any]:
    held = _obj(["id", "owner", "threads", "memory_mb"], id={"type": "string"},
                owner=_nullable({"type": "string"}), threads={"type": "integer"},
                memory_mb={"type": "number"})
    return {
        "/v1/queue": {"get": _op("The queue in order, with why each run waits", {
            "200": _json(_obj(
                ["queue", "running", "capacity", "free"],
                queue={"type": "array", "items": _ref("QueueEntry")},
                running={"type": "array", "items": held},
                capacity=_obj(["threads", "memory_mb", "max_running", "max_running_per_owner"],
                              threads={"type": "integer"}, memory_mb={"type": "number"},
                              max_running={"type": "integer"},
                              max_running_per_owner={"type": "integer"}),
                free=_obj(["threads", "memory_mb"], threads={"type": "integer"},
                          memory_mb={"type": "number"})))})},
        "/v1/queue/{sim_id}": {
            "parameters": _SIM_ID,
            "get": _op("A queued run's entry", {"200": _json(_ref("QueueEntry"))}),
            "put": _op("Move a queued run and/or change its priority (operators)", {
                "200": _json(_ref("QueueEntry"))}, requestBody={"required": True, "content": {
                    "application/json": {"schema": _ref("QueueChange")}}}),
            "delete": _op("Cancel a queued run (it is stopped)",
                          {"204": {"description": "cancelled"}}),
        },
    }


def _event_paths() -> dict[str, Any]:
    stream = {"description": "Server-Sent Events until the end (a simulation's) or forever "
                             "(all); each event's id is what Last-Event-ID resumes from",
              "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    resume = [{"name": "Last-Event-ID", "in": "header", "required": False,
               "description": "the id of the last event received: resume after it",
               "schema": {"type": "string"}},
              {"name": "last_event_id", "in": "query", "required": False,
               "description": "the same, for a first connection that cannot set headers",
               "schema": {"type": "string"}}]

    def flag(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": {"type": "string", "enum": ["true", "false"]}}

    status = flag("status", "status ticks (default true)")
    return {
        "/v1/simulations/{sim_id}/events": {
            "parameters": _SIM_ID,
            "get": _op("Its events: state changes, status, log lines, end", {
                "200": stream,
                "204": {"description": "nothing more will ever come: the simulation is over "
                                       "and the position is at or past its end (an "
                                       "EventSource stops reconnecting)"}},
                       parameters=resume + [status, flag("logs", "log lines (default true)")],
                       operationId="getEvents")},
        "/v1/events": {"get": _op("The events of every simulation the caller may see",
                                  {"200": stream}, parameters=resume + [status])},
    }


def _access_paths() -> dict[str, Any]:
    entry = _obj(["id", "time", "identity", "role", "method", "path", "target", "status",
                  "client"], id={"type": "integer"}, time={"type": "string"},
                 identity={"type": "string"}, role={"type": "string"},
                 method={"type": "string"}, path={"type": "string"},
                 target=_nullable({"type": "string"}), status={"type": "integer"},
                 client={"type": "string"})

    def query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": {"type": kind}}
    return {
        "/v1/whoami": {"get": _op("Who the caller is", {"200": _json(_obj(
            ["name", "role", "kind"], name={"type": "string"},
            role={"type": "string", "enum": ["admin", "operator", "scientist", "observer"]},
            kind={"type": "string", "enum": ["api_key", "jwt", "none"]}))})},
        "/v1/audit": {"get": _op("The audit trail, newest first (admins, operators)", {
            "200": _json(_obj(["audit"], audit={"type": "array", "items": entry}))},
            parameters=[query("identity", "who"), query("target", "a simulation id or an "
                                                        "experiment name"),
                        query("method", "POST, PUT, DELETE, CLI"),
                        query("status", "the answer's status", "integer"),
                        query("since", "ISO 8601 time: at or after it"),
                        {**query("limit", "most entries (default 100)", "integer"),
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}])},
    }


def _dashboard_paths() -> dict[str, Any]:
    """The web dashboard's static files (they call the API above from the browser)."""
    page = {"description": "the dashboard", "content": {"text/html": {"schema": {
        "type": "string"}}}}
    asset = {"description": "a static file of the dashboard (JavaScript, CSS, an icon)",
             "content": {"*/*": {"schema": {"type": "string"}}}}
    return {
        "/ui/": {"get": _op("The web dashboard", {"200": page}, security=[])},
        "/ui/{file}": {"parameters": [_path_param("file", "a file of the dashboard")],
                       "get": _op("A static file of the web dashboard", {"200": asset},
                                  security=[])},
    }


def build_spec(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "simbackend", "version": version,
                 "description": "Run neural-simulation experiments: lifecycle, control, "
                                "logs and results."},
        "paths": {**_service_paths(), **_experiment_paths(), **_simulation_paths(),
                  **_queue_paths(), **_nest_paths(), **_event_paths(), **_access_paths(),
                  **_dashboard_paths()},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "an API key (sbk_..., from 'simbackend keys create') or a JWT "
                               "of the configured identity provider"}},
            "schemas": SCHEMAS,
            "responses": {"Error": _json(_ref("Error"), "an error")},
        },
    }
