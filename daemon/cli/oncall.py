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

if TYPE_CHECKING:
    from rich.console import Console

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


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def parse_since(value: str) -> float:
    """``2h`` / ``30m`` / ``1d`` ago, an ISO 8601 time, or epoch seconds → epoch seconds."""
    if match := _AGO.match(value.strip()):
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return time.time() - float(match.group(1)) * scale
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
    from rich.table import Table

    answer = _call("GET", url, "/status")
    if as_json:
        return _print_json(answer)
    table = Table(title="lifeguard status", title_justify="left")
    for column in ("model", "deployed", "last evaluation", "breaches", "run (active or last)",
                   "mode"):
        table.add_column(column)
    for m in answer["models"]:
        ev = m["last_evaluation"]
        breaches = _e(", ".join(b["key"] for b in ev["breaches"])) if ev else ""
        run = m["active_run"] or m["last_run"]
        run_text = (f"{run['id']} {_state(run['state'])} {run['step']}/{run['n_steps']}"
                    if run else "-")
        mode = m["mode"] or "-"
        if m["paused"]:
            mode = f"[red bold]PAUSED[/] by {_e(m['paused']['actor'])}"
        table.add_row(_e(m["model"]), _e(m["deployed_version"] or "-"),
                      _when(ev["ts"]) if ev else "-",
                      f"[red]{breaches}[/]" if breaches else "[green]none[/]", run_text, mode)
    _console().print(table)


@app.command()
def runs(url: Url = DEFAULT_URL,
         model: Annotated[str | None, typer.Option(help="Only this model's runs.")] = None,
         state: Annotated[str | None, typer.Option(help="Comma-separated states.")] = None,
         limit: int = 50, as_json: AsJson = False) -> None:
    """Action runs, newest first."""
    from rich.table import Table

    answer = _call("GET", url, "/runs", params={"model": model, "state": state, "limit": limit})
    if as_json:
        return _print_json(answer)
    table = Table(title="runs", title_justify="left")
    for column in ("run", "model", "pipeline", "state", "step", "source", "created", "error"):
        table.add_column(column)
    for r in answer["runs"]:
        table.add_row(r["id"], _e(r["model"]), _e(r["pipeline"]), _state(r["state"]),
                      f"{r['step']}/{r['n_steps']}", r["source"], _when(r["created_at"]),
                      _e((r["error"] or "")[:60]))
    _console().print(table)


@app.command()
def show(run_id: Annotated[str, typer.Argument(help="The run id.")],
         url: Url = DEFAULT_URL, as_json: AsJson = False, token: Token = None) -> None:
    """One run: its steps, every transition with actor and evidence (tracebacks and log
    tails only with the token)."""
    from rich.table import Table

    r = _call("GET", url, f"/runs/{run_id}", token=token)
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
    done = {s["index"]: s for s in r["step_records"]}
    steps = Table(title="steps", title_justify="left")
    for column in ("#", "step", "status", "attempts", "artifacts"):
        steps.add_column(column)
    for i, step in enumerate(r["steps"]):
        rec = done.get(i)
        arts = ", ".join(f"{k} {v['sha256'][:12]}" for k, v in rec["artifacts"].items()) if rec \
            else ""
        steps.add_row(str(i), _e(step["name"]), rec["status"] if rec else "-",
                      str(rec["attempts"]) if rec else "-", _e(arts))
    console.print(steps)
    history = Table(title="transitions", title_justify="left")
    for column in ("time", "from", "to", "step", "actor", "evidence"):
        history.add_column(column)
    for t in r["transitions"]:
        history.add_row(_when(t["ts"]), t["from_state"] or "-", _state(t["to_state"]),
                        "-" if t["step"] is None else str(t["step"]), _e(t["actor"]),
                        _e(summarize(t["evidence"])))
    console.print(history)


def _mutate(path: str, url: str, token: str | None, reason: str | None) -> Any:
    return _call("POST", url, path, token=token, body={"reason": reason} if reason else {})


Reason = Annotated[str | None, typer.Option(help="Why; goes into the audit log.")]


@app.command()
def approve(run_id: str, url: Url = DEFAULT_URL, token: Token = None,
            reason: Reason = None) -> None:
    """Approve a run waiting in pending_approval: it is queued for the runner."""
    answer = _mutate(f"/runs/{run_id}/approve", url, token, reason)
    typer.echo(f"{answer['id']}: {answer['state']} (by {answer['actor']})")


@app.command()
def reject(run_id: str, url: Url = DEFAULT_URL, token: Token = None,
           reason: Reason = None) -> None:
    """Reject a run that is pending approval or queued: it never runs."""
    answer = _mutate(f"/runs/{run_id}/reject", url, token, reason)
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
    from rich.table import Table

    params = {"since": parse_since(since) if since else None, "model": model, "run": run,
              "limit": limit}
    answer = _call("GET", url, "/audit", token=token, params=params)
    if as_json:
        return _print_json(answer)
    table = Table(title="audit", title_justify="left")
    for column in ("time", "actor", "action", "model", "run", "evidence"):
        table.add_column(column)
    for e in answer["entries"]:
        table.add_row(_when(e["ts"]), _e(e["actor"]), e["action"], _e(e["model"] or "-"),
                      e["run_id"] or "-", _e(summarize(e["evidence"])))
    _console().print(table)
