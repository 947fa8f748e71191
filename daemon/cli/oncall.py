"""The on-call commands: ``lifeguard status | runs | show | approve | reject | pause | resume |
audit``, talking to a running daemon's control API over HTTP and printing for a terminal."""

from __future__ import annotations

import getpass
import json
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daemon.cli import app
from lifeguard.config import parse_duration

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

Url = Annotated[str, typer.Option("--url", envvar="LIFEGUARD_URL",
                                  help="The daemon's HTTP address.")]
Token = Annotated[str | None, typer.Option("--token", envvar="LIFEGUARD_TOKEN",
                                           help="Bearer token for approve/reject/pause/resume.",
                                           show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]
DEFAULT_URL = "http://127.0.0.1:9464"
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_STATE_STYLE = {"succeeded": "green", "failed": "red", "rolled_back": "magenta",
                "rejected": "dim", "dry_run": "dim", "pending_approval": "yellow bold",
                "queued": "cyan", "running": "cyan bold"}


def _console() -> Console:
    from rich.console import Console

    return Console()


def _call(method: str, url: str, path: str, token: str | None = None,
          body: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> Any:
    import httpx

    headers = {"X-Lifeguard-Actor": _actor()}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.request(method, f"{url.rstrip('/')}/api/v1{path}", headers=headers,
                                 json=body, params={k: v for k, v in (params or {}).items()
                                                    if v is not None}, timeout=10.0)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach lifeguard at {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        hint = " (set --token or LIFEGUARD_TOKEN)" if response.status_code == 401 else ""
        typer.echo(f"error: HTTP {response.status_code}: {detail}{hint}", err=True)
        raise typer.Exit(1)
    return response.json()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _state(state: str) -> str:
    return f"[{_STATE_STYLE.get(state, '')}]{state}[/]"


def _e(value: object) -> str:
    """Escape for rich: keys like drift.score[text] would otherwise read as markup."""
    from rich.markup import escape

    return escape(str(value))


def summarize(evidence: dict[str, Any], width: int = 110) -> str:
    """Evidence as ``key=value`` pairs an on-call can scan; --json has the whole thing."""
    parts = []
    for key, value in evidence.items():
        if value is None or value == {} or value == []:
            continue
        if key == "breaches" and isinstance(value, list):
            value = [b.get("key", "?") for b in value if isinstance(b, dict)]
        if key == "artifacts" and isinstance(value, dict):
            value = sorted(value)  # names; sums and paths are in `show --json`
        if key == "log_tail" and isinstance(value, str):
            value = value.strip().splitlines()[-1] if value.strip() else ""
        if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, dict | list):
            text = "{…}" if isinstance(value, dict) else "[…]"
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(title: str, columns: list[str], whole: dict[str, list[str]] | None = None) -> Table:
    """A table whose ``whole`` columns (ids, breach keys) are never cut: each is at least as
    wide as its longest value and never wraps, so at any terminal width the other columns fold
    instead. Nothing is ever elided with an ellipsis: text that does not fit folds."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        values = (whole or {}).get(name)
        if values is None:
            table.add_column(name, overflow="fold")
        else:
            width = max([1, *(len(v) for v in values)])  # a long header wraps on its words
            table.add_column(name, no_wrap=True, overflow="fold", min_width=width)
    return table


def resolve_run_id(url: str, given: str) -> str:
    """The one run whose id is ``given`` or starts with it (as git resolves a short hash);
    exits with an error naming the matches when there are none or several."""
    answer = _call("GET", url, "/runs", params={"id_prefix": given, "limit": 20})
    ids = [r["id"] for r in answer["runs"] if r["id"].startswith(given)]
    if given in ids:
        return given
    if len(ids) == 1:
        return str(ids[0])
    if not ids:
        typer.echo(f"error: no run id starts with {given!r} (see `lifeguard runs`)", err=True)
        raise typer.Exit(1)
    listed = "\n".join(f"  {r['id']}  {r['model']}  {r['state']}" for r in answer["runs"]
                        if r["id"] in ids)
    more = " (the first 20)" if len(answer["runs"]) >= 20 else ""
    typer.echo(f"error: run id prefix {given!r} is ambiguous; it matches{more}:\n{listed}",
               err=True)
    raise typer.Exit(1)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _verdict(breach: dict[str, Any]) -> str:
    """``0.41 above 0.3``: the statistic, the side of the threshold that breaches, the
    threshold."""
    return f"{_num(breach['statistic'])} {breach['direction']} {_num(breach['threshold'])}"


def _reference(described: dict[str, Any]) -> str:
    if described.get("kind") == "file":
        return f"the reference file {described.get('path')}"
    if described.get("kind") == "first_n":
        return (f"the first {described.get('first_n')} events version "
                f"{described.get('version', '?')} served")
    return "the model's reference window"


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def parse_since(value: str) -> float:
    """``2h`` / ``30m`` / ``1d`` ago, an ISO 8601 time, or epoch seconds → epoch seconds."""
    if _AGO.match(value.strip()):
        return time.time() - float(parse_duration(value))
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: use 2h, 30m, 1d, an ISO time or epoch") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@app.command()
def status(url: Url = DEFAULT_URL, as_json: AsJson = False) -> None:
    """Each model: last evaluation, breaches, active run, deployed version, paused."""
    answer = _call("GET", url, "/status")
    if as_json:
        return _print_json(answer)
    # One row per model, its facts one per line: the ids and breach keys, each on a line of
    # its own, keep their whole width at 80 columns, which six side-by-side columns cannot.
    cells = [(m["model"], _status_lines(m)) for m in answer["models"]]
    table = _table("lifeguard status", ["model", "now"], whole={
        "model": [model for model, _ in cells],
        "now": [plain for _, lines in cells for plain, _, whole in lines if whole] or ["-"]})
    table.show_lines = True
    for model, lines in cells:
        table.add_row(_e(model), "\n".join(markup for _, markup, _ in lines))
    _console().print(table)


_LABEL = 10  # width of the line labels in a status cell


def _status_lines(m: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """One model's status as (plain text, rich markup, must stay whole) per line."""
    ev = m["last_evaluation"]
    run = m["active_run"] or m["last_run"]
    head = f"{'deployed':<{_LABEL}}{m['deployed_version'] or '-'}, mode {m['mode'] or '-'}"
    lines = [(head, _e(head), False)]
    if m["paused"]:
        by = f"by {m['paused']['actor']}"
        lines.append((f"{'':<{_LABEL}}PAUSED {by}", f"{'':<{_LABEL}}[red bold]PAUSED[/] {_e(by)}",
                      False))
    when = f"{'evaluated':<{_LABEL}}{_when(ev['ts']) if ev else '-'}"
    lines.append((when, when, False))
    keys = [b["key"] for b in ev["breaches"]] if ev else []
    for i, key in enumerate(keys):
        label = f"{'breaches' if i == 0 else '':<{_LABEL}}"
        lines.append((label + key, f"{label}[red]{_e(key)}[/]", True))
    if not keys:
        lines.append(("breaches  none", f"{'breaches':<{_LABEL}}[green]none[/]", False))
    if run:
        state = f"{run['state']} {run['step']}/{run['n_steps']}"
        lines += [(f"{'run':<{_LABEL}}{run['id']}", f"{'run':<{_LABEL}}{run['id']}", True),
                  (f"{'':<{_LABEL}}{state}",
                   f"{'':<{_LABEL}}{_state(run['state'])} {run['step']}/{run['n_steps']}",
                   False)]
    return lines


@app.command()
def runs(url: Url = DEFAULT_URL,
         model: Annotated[str | None, typer.Option(help="Only this model's runs.")] = None,
         state: Annotated[str | None, typer.Option(help="Comma-separated states.")] = None,
         limit: int = 50, as_json: AsJson = False) -> None:
    """Action runs, newest first."""
    answer = _call("GET", url, "/runs", params={"model": model, "state": state, "limit": limit})
    if as_json:
        return _print_json(answer)
    table = _table("runs", ["run", "model", "pipeline", "state", "step", "source", "created",
                            "error"], whole={"run": [r["id"] for r in answer["runs"]],
                                             "state": [r["state"] for r in answer["runs"]]})
    for r in answer["runs"]:
        table.add_row(r["id"], _e(r["model"]), _e(r["pipeline"]), _state(r["state"]),
                      f"{r['step']}/{r['n_steps']}", r["source"], _when(r["created_at"]),
                      _e((r["error"] or "")[:60]))
    _console().print(table)


@app.command()
def show(run_id: Annotated[str, typer.Argument(help="The run id, or a unique prefix of it.")],
         url: Url = DEFAULT_URL, as_json: AsJson = False, token: Token = None) -> None:
    """One run: why it started (each breached detector's numbers), its steps, every transition
    with actor and evidence (tracebacks and log tails only with the token)."""
    r = _call("GET", url, f"/runs/{resolve_run_id(url, run_id)}", token=token)
    if as_json:
        return _print_json(r)
    console = _console()
    console.print(f"[bold]{r['id']}[/]  model [bold]{_e(r['model'])}[/]  pipeline "
                  f"{_e(r['pipeline'])}"
                  f"  {_state(r['state'])}  step {r['next_step']}/{r['n_steps']}")
    console.print(f"source {r['source']}, mode {r['mode']}, created {_when(r['created_at'])}")
    if r["error"]:
        console.print(f"[red]error:[/] {_e(r['error'])}")
    console.print(f"evidence: {_e(summarize(r['evidence'], width=400))}")
    for ev in r.get("evaluations", []):
        _print_evaluation(console, ev)
    done = {s["index"]: s for s in r["step_records"]}
    steps = _table("steps", ["#", "step", "status", "attempts", "artifacts"])
    for i, step in enumerate(r["steps"]):
        rec = done.get(i)
        arts = ", ".join(f"{k} {v['sha256'][:12]}" for k, v in rec["artifacts"].items()) if rec \
            else ""
        steps.add_row(str(i), _e(step["name"]), rec["status"] if rec else "-",
                      str(rec["attempts"]) if rec else "-", _e(arts))
    console.print(steps)
    history = _table("transitions", ["time", "from", "to", "step", "actor", "evidence"])
    for t in r["transitions"]:
        history.add_row(_when(t["ts"]), t["from_state"] or "-", _state(t["to_state"]),
                        "-" if t["step"] is None else str(t["step"]), _e(t["actor"]),
                        _e(summarize(t["evidence"])))
    console.print(history)


def _print_evaluation(console: Console, ev: dict[str, Any]) -> None:
    """One triggering evaluation: what was compared with what, and each breach's numbers."""
    if ev.get("missing"):
        console.print(f"evaluation {ev['id']}: no longer in the state store")
        return
    console.print(f"\n[bold]evaluation {ev['id']}[/]  version {_e(ev['model_version'])}, "
                  f"window ending {_when(ev['ts'])}, compared against "
                  f"{_e(_reference(ev.get('reference') or {}))}")
    table = _table("breached detectors", ["detector", "statistic vs threshold",
                                          "samples ref/cur", "method"],
                   whole={"detector": [b["key"] for b in ev["breaches"]],
                          "statistic vs threshold": [_verdict(b) for b in ev["breaches"]]})
    for b in ev["breaches"]:
        table.add_row(_e(b["key"]), _verdict(b),
                      f"{b.get('n_reference', '-')}/{b.get('n_current', '-')}",
                      _e(b.get("method") or "-"))
    console.print(table)


def _mutate(path: str, url: str, token: str | None, reason: str | None) -> Any:
    return _call("POST", url, path, token=token, body={"reason": reason} if reason else {})


Reason = Annotated[str | None, typer.Option(help="Why; goes into the audit log.")]
RunId = Annotated[str, typer.Argument(help="The run id, or a unique prefix of it.")]


@app.command()
def approve(run_id: RunId, url: Url = DEFAULT_URL, token: Token = None,
            reason: Reason = None) -> None:
    """Approve a run waiting in pending_approval: it is queued for the runner."""
    answer = _mutate(f"/runs/{resolve_run_id(url, run_id)}/approve", url, token, reason)
    typer.echo(f"{answer['id']}: {answer['state']} (by {answer['actor']})")


@app.command()
def reject(run_id: RunId, url: Url = DEFAULT_URL, token: Token = None,
           reason: Reason = None) -> None:
    """Reject a run that is pending approval or queued: it never runs."""
    answer = _mutate(f"/runs/{resolve_run_id(url, run_id)}/reject", url, token, reason)
    typer.echo(f"{answer['id']}: {answer['state']} (by {answer['actor']})")


@app.command()
def pause(model: str, url: Url = DEFAULT_URL, token: Token = None,
          reason: Reason = None) -> None:
    """Stop starting runs (and steps) for a model until resumed."""
    answer = _mutate(f"/models/{model}/pause", url, token, reason)
    typer.echo(f"{model}: paused" + ("" if answer["changed"] else " (already)"))


@app.command()
def resume(model: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Let lifeguard act for a paused model again."""
    answer = _mutate(f"/models/{model}/resume", url, token, None)
    typer.echo(f"{model}: resumed" + ("" if answer["changed"] else " (was not paused)"))


@app.command()
def audit(url: Url = DEFAULT_URL,
          since: Annotated[str | None, typer.Option(help="2h, 30m, 1d, ISO time or epoch.")]
          = None,
          model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
          run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
          limit: int = 200, as_json: AsJson = False, token: Token = None) -> None:
    """The audit log: every state change with its actor and evidence, oldest first."""
    params = {"since": parse_since(since) if since else None, "model": model, "run": run,
              "limit": limit}
    answer = _call("GET", url, "/audit", token=token, params=params)
    if as_json:
        return _print_json(answer)
    table = _table("audit", ["time", "actor", "action", "model", "run", "evidence"],
                   whole={"run": [e["run_id"] or "-" for e in answer["entries"]]})
    for e in answer["entries"]:
        table.add_row(_when(e["ts"]), _e(e["actor"]), e["action"], _e(e["model"] or "-"),
                      e["run_id"] or "-", _e(summarize(e["evidence"])))
    _console().print(table)
