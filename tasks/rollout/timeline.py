"""A rollout timeline image: sites × time, which version each ran, and the verdicts.

A fleet of more than `MAX_SITE_ROWS` sites gets one row per wave instead of one per site, so
the picture of a 2,000-site rollout stays a picture.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from edgewave.tasks.rollout.record import RolloutRecord

COLOURS = {"old": "#b0b0b0", "new": "#2e8b57", "rolled_back": "#c0392b"}
VERDICT = {"pass": ("o", "#2e8b57"), "fail": ("X", "#c0392b"), "inconclusive": ("s", "#e0a800")}
MAX_SITE_ROWS = 40


def rows(record: RolloutRecord) -> tuple[list[str], dict[str, int]]:
    """Row labels (top to bottom) and each site's row: per site, or per wave for a large fleet."""
    sites = list(dict.fromkeys(s for w in record.waves for s in w.sites + w.deferred))
    if len(sites) <= MAX_SITE_ROWS:
        return sites, {s: i for i, s in enumerate(sites)}
    labels = [f"{w.name} ({len(w.sites)} sites)" for w in record.waves]
    return labels, {s: w.index for w in record.waves for s in w.sites + w.deferred}


def render(record: RolloutRecord, path: Path) -> Path:
    """Draw the rollout and save it as PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    labels, row_of = rows(record)
    end = record.finished_at or max([w.decided_at or w.committed_at or record.started_at for w in record.waves])
    start = record.started_at
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.4 * len(labels)))
    y_of = {row: len(labels) - 1 - row for row in range(len(labels))}  # first row on top
    drawn: set[int] = set()
    for wave in record.waves:
        for site in wave.sites:
            row = row_of[site]
            if row in drawn:
                continue
            drawn.add(row)
            y = y_of[row]
            moved = wave.committed_at if wave.status != "pending" else None
            ax.barh(y, mdates.date2num(moved or end) - mdates.date2num(start), left=mdates.date2num(start),
                    color=COLOURS["old"], height=0.6)
            if moved:
                back = record.finished_at if record.status == "rolled_back" else None
                ax.barh(y, mdates.date2num(back or end) - mdates.date2num(moved), left=mdates.date2num(moved),
                        color=COLOURS["new"], height=0.6)
                if back:
                    ax.barh(y, max(mdates.date2num(end) - mdates.date2num(back), 1e-5), left=mdates.date2num(back),
                            color=COLOURS["rolled_back"], height=0.6)
        for m in wave.measurements:
            at = datetime.fromisoformat(m["at"])
            marker, colour = VERDICT[m["verdict"]]
            for y in sorted({y_of[row_of[j["site"]]] for j in m["sites"] if j["site"] in row_of}):
                ax.scatter(mdates.date2num(at), y, marker=marker, color=colour, zorder=3,
                           edgecolors="black", linewidths=0.5)
        if wave.committed_at:
            ax.axvline(mdates.date2num(wave.committed_at), color="#555", linestyle=":", linewidth=0.8)
            ax.text(mdates.date2num(wave.committed_at), len(labels) - 0.4, f" {wave.name}", fontsize=8, va="bottom")
    ax.set_yticks([y_of[i] for i in range(len(labels))], labels)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.set_ylim(-0.6, len(labels) + 0.2)
    ax.set_title(f"{record.id}: {f'v{record.from_version}' if record.from_version else 'no model'} → v{record.version}: "
                 f"{record.status}", fontsize=10)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    handles: list = [Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    handles += [Line2D([], [], marker=m, color=c, linestyle="") for m, c in VERDICT.values()]
    before = f"v{record.from_version}" if record.from_version else "no model"
    ax.legend(handles, [f"{before} (before)", f"v{record.version}", f"rolled back to {before}",
                        *(f"measurement: {v}" for v in VERDICT)], fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.12), ncol=6, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
