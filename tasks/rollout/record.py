"""The record of one rollout attempt, as it lives in the desired-state repository
(`rollouts/<id>.json`): the plan frozen at its start (sites, waves, the policy and thresholds),
every wave's commit, measurements and decision, and the outcome.

An attempt has its own id (model, version and start time); resuming continues the recorded
plan, so a fleet file edited meanwhile affects the next rollout, not this one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["running", "succeeded", "rolled_back", "held", "noop", "superseded"]


Kind = Literal["rollout", "rollback"]


def attempt_id(model: str, version: int, kind: Kind, at: datetime) -> str:
    """`ro-<model>-v<version>-<UTC start>` (`rb-` for a rollback): one id per attempt."""
    return f"{'rb' if kind == 'rollback' else 'ro'}-{model}-v{version}-{at:%Y%m%dT%H%M%S%f}"[:-3] + "Z"


class Approval(BaseModel):
    """A person's answer at a wave's manual gate (the Prefect UI's Resume form); `approved` None: no
    answer before the gate's timeout."""

    approved: bool | None
    reason: str
    at: datetime


class WaveRecord(BaseModel):
    index: int
    name: str
    sites: list[str]
    status: Literal["pending", "committed", "advanced", "rolled_back", "held"] = "pending"
    deferred: list[str] = Field(default_factory=list, description="Unreachable before the commit, re-queued.")
    failed: list[str] = Field(default_factory=list, description="Sites counted failed (offline policy).")
    converged: list[str] = Field(default_factory=list)
    decision: str | None = None
    reason: str | None = None
    measurements: list[dict] = Field(default_factory=list)
    committed_at: datetime | None = None
    decided_at: datetime | None = None
    approval: Approval | None = Field(default=None, description="The answer at this wave's manual gate, if it has one.")


class RolloutRecord(BaseModel):
    id: str
    kind: Kind = "rollout"
    model: str
    version: int
    from_version: int | None
    requested_reason: str = Field(default="", description="Why a person (or the drift event) started it.")
    policy: dict = Field(default_factory=dict, description="The rollout policy as it was at the start.")
    fleet: dict = Field(default_factory=dict, description="The fleet's sites as they were at the start.")
    previous: dict[str, dict | None] = Field(default_factory=dict, description="Desired state to return to.")
    waves: list[WaveRecord]
    status: Status = "running"
    reason: str | None = None
    started_at: datetime
    finished_at: datetime | None = None



def with_approval(record: RolloutRecord, index: int, approved: bool | None, reason: str,
                  at: datetime) -> RolloutRecord:
    """The record after a person answered the manual gate of wave `index`: approved, the wave stays
    advanced; rejected, its decision becomes a rollback; no answer in time, a hold. The answer's
    reason is the wave's reason, so the run's name, the artifact and Git say who stopped it and why."""
    record = record.model_copy(deep=True)
    wave = record.waves[index]
    wave.approval = Approval(approved=approved, reason=reason, at=at)
    if approved is False:
        wave.decision, wave.reason, wave.decided_at = "rollback", f"rejected at the manual gate: {reason}", at
    elif approved is None:
        wave.decision, wave.status, wave.reason, wave.decided_at = "hold", "held", reason, at
    return record


def summary(record: RolloutRecord) -> list[dict]:
    """One row per wave for tables and artifacts; the reason in a few words (the whole of it: `reasons`)."""
    return [{"wave": f"{w.index + 1}/{len(record.waves)} {w.name}", "sites": len(w.sites), "status": w.status,
             "decision": w.decision or "", "reason": _why(w) if w.decision in ("rollback", "hold") else (w.reason or ""),
             "deferred": ", ".join(w.deferred), "failed": ", ".join(w.failed)} for w in record.waves]


def reasons(record: RolloutRecord) -> list[str]:
    """Each decided wave's whole reason, for below a table (a cell that long makes a table no screen fits)."""
    return [f"{w.index + 1}/{len(record.waves)} {w.name}: {w.reason}" for w in record.waves
            if w.decision in ("rollback", "hold") and w.reason]


SITE_CHECKS = ("error rate", "p99", "confidence", "failure-rate shift")  # how a site's failed checks begin


def headline(record: RolloutRecord) -> str:
    """How the attempt ended, in a few words, for the run's name and the artifact's description:
    `rollout v4: rolled back at wave rest — p99`, `rollout v4 → 6 sites: succeeded`."""
    what = f"{record.kind} {'to ' if record.kind == 'rollback' else ''}v{record.version}"
    sites = sum(len(w.sites) for w in record.waves)
    if record.status in ("succeeded", "noop", "running"):
        return f"{what} → {sites} site{'s' * (sites != 1)}: {record.status.replace('noop', 'nothing to do')}"
    decided = next((w for w in record.waves if w.status in ("rolled_back", "held")), None)
    where = f" at wave {decided.name}" if decided else ""
    return f"{what}: {record.status.replace('_', ' ')}{where}" + (f" — {_why(decided)}" if decided else "")


def _why(wave: WaveRecord) -> str:
    """What failed the wave: the metrics or site checks of its last failed measurement, else its reason."""
    failed = next((m for m in reversed(wave.measurements) if m.get("verdict") == "fail"), None)
    if failed:
        metrics = [m["metric"] for m in failed.get("metrics", []) if m.get("verdict") == "fail"]
        reasons = [r for s in failed.get("sites", []) if s.get("verdict") == "fail" for r in s.get("reasons", [])]
        checks = [check for r in reasons for check in SITE_CHECKS if r.startswith(check)]
        named = list(dict.fromkeys(metrics + checks))
        if named:
            return ", ".join(named)
    reason = wave.reason or ""
    return reason if len(reason) <= 80 else reason[:77] + "…"


def judgement(record: RolloutRecord) -> list[dict]:
    """Per wave, how its last measurement judged each metric: the changed sites against the controls,
    before the wave and now (tasks/rollout/controls.py). Waves judged another way have no rows."""
    from edgewave.tasks.rollout.analysis import cells

    rows = []
    for w in record.waves:
        last = w.measurements[-1] if w.measurements else {}
        for metric in last.get("metrics", []):
            rows.append({"wave": w.name, **cells(metric)})
    return rows


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    return (["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
            + ["| " + " | ".join(str(v).replace("|", "\\|") or "-" for v in row.values()) + " |" for row in rows])


def report_markdown(record: RolloutRecord, timeline_png: bytes | None, links: dict[str, str]) -> str:
    """The rollout as a person reads it in the Prefect UI's artifact view: outcome, the timeline
    picture itself (inline, so no one needs the control plane's disk), the waves, and links to the
    versions' MLflow pages when MLflow runs as a server (`links`: label → URL)."""
    import base64

    before = f"v{record.from_version}" if record.from_version else "no model"
    lines = [f"# {record.kind} {before} → v{record.version}: {record.status}", "", record.reason or "", "",
             f"Attempt `{record.id}`, started {record.started_at:%Y-%m-%d %H:%M:%S} UTC"
             + (f", finished {record.finished_at:%H:%M:%S}" if record.finished_at else ""), ""]
    if timeline_png:
        lines += [f"![timeline of {record.id}](data:image/png;base64,{base64.b64encode(timeline_png).decode()})", ""]
    lines += _table(summary(record))
    lines += ["", *(f"- {line}" for line in reasons(record))] if reasons(record) else []
    judged = judgement(record)
    if judged:
        lines += ["", "## How each wave was judged", "",
                  "Each wave's last measurement: the sites it changed against the controls (sites it did not change) "
                  "over the same window, and both before the wave. The effect is the changed sites' ratio to the "
                  "controls now over that ratio before (for the positive rate: how much more it moved than the "
                  "controls'); a metric fails only when the effect passes its limit and the test is significant.",
                  "", *_table(judged)]
    if links:
        lines += ["", "MLflow: " + " · ".join(f"[{label}]({url})" for label, url in links.items())]
    return "\n".join(lines) + "\n"
