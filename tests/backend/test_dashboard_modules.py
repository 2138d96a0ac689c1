"""The dashboard's own parts that are not pages, run in the browser: the text/event-stream
parser and the ustar writer (checked against Python's tarfile and the backend)."""
from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Backend

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser: Any, backend: Backend) -> Iterator[Any]:
    """A tab on the dashboard, where its modules can be imported."""
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(backend.url + "/ui/")
        yield tab
    finally:
        context.close()


PARSE = """async (chunks) => {
  const {EventParser} = await import("./sse.js");
  const parser = new EventParser();
  const events = [];
  for (const chunk of chunks) events.push(...parser.push(chunk));
  return events;
}"""


def test_the_event_parser_follows_the_standard(page: Any) -> None:
    chunks = ["retry: 1500\r\n\r",                       # a CRLF split between chunks
              "\nid: 7;a.log=3\r\nevent: state\r\ndata: {\"state\":",
              "\"paused\"}\r\n\r\n: keep-alive\n\n",    # a comment is no event
              "event: log\ndata: line one\ndata:line two\n\n",
              "data: no type\r\rid: 8\nevent: end\ndata: {}\n", "\n",
              "id: 9\n\n",                                # a position alone
              "event: state\ndata: {\"cut\": "]         # incomplete: not yet an event
    events = page.evaluate(PARSE, chunks)
    assert events == [
        {"type": "", "data": None, "id": None, "retry": 1500},
        {"type": "state", "data": {"state": "paused"}, "id": "7;a.log=3", "retry": 1500},
        {"type": "log", "data": "line one\nline two", "id": None, "retry": 1500},
        {"type": "message", "data": "no type", "id": None, "retry": 1500},
        {"type": "end", "data": {}, "id": "8", "retry": 1500},
        {"type": "", "data": None, "id": "9", "retry": 1500},
    ]


TAR = """async (entries) => {
  const {tarGzip} = await import("./tar.js");
  const files = entries.map(([path, text, repeat]) =>
    ({path, file: new Blob([text.repeat(repeat)])}));
  const blob = await tarGzip(files);
  return Array.from(new Uint8Array(await blob.arrayBuffer()));
}"""


def test_the_tar_writer_makes_archives_tarfile_and_the_backend_read(
        page: Any, backend: Backend) -> None:
    deep = "deep/" * 30 + "data.txt"                    # 158 bytes: needs the ustar prefix
    entries = [["experiment.json", '{"main_script": "main.py"}', 1],
               ["main.py", "print('made in a browser')\n", 1],
               [deep, "A", 1000],                        # not a multiple of 512
               ["ünïcode.txt", "ß", 3],
               ["empty.txt", "", 1]]
    data = bytes(page.evaluate(TAR, entries))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [e[0] for e in entries]
        assert all(m.isfile() and m.mode == 0o644 for m in members)
        for member, (_, text, repeat) in zip(members, entries, strict=True):
            assert tar.extractfile(member).read() == (text * repeat).encode()
    answer = backend.put("/v1/experiments/from-a-browser", data=data,
                         headers={"Content-Type": "application/gzip"})
    assert answer.status_code == 201, answer.text
    stored = {f["path"] for f in backend.get("/v1/experiments/from-a-browser").json()["files"]}
    assert stored == {e[0] for e in entries}


def test_the_tar_writer_refuses_a_path_it_cannot_store(page: Any) -> None:
    with pytest.raises(Exception, match="too long for a tar archive"):
        page.evaluate(TAR, [["x" * 120, "no folder to split at", 1]])


def test_a_runs_limits_read_in_one_line(page: Any) -> None:
    shown = page.evaluate("""async (cases) => {
      const fmt = await import("./format.js");
      return cases.map((limits) => fmt.limits(limits));
    }""", [{"real_time": 600, "memory_mb": 512, "start_timeout": 60},
           {"real_time": None, "memory_mb": None, "start_timeout": 5.5}, None])
    # No-break spaces inside a limit: a narrow screen breaks between two, not in one.
    assert [line.replace("\u00a0", " ") for line in shown] == [
        "real time 10 min 00 s · memory 512 MiB · start 1 min 00 s",
        "real time none · memory none · start 5.5 s", "—"]
    assert shown[0].split(" · ")[2] == "start\u00a01\u00a0min\u00a000\u00a0s"
