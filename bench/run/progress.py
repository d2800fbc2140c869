"""What a running suite prints: one line per finished trial with ETA, throttled validation lines, a heartbeat."""

from __future__ import annotations

def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


HEARTBEAT_SECONDS = 300.0
EPOCH_LINE_SECONDS = 15.0  # at most one validation line per trial this often


def heartbeat_line(running: dict[str, tuple[float, int | None]], now: float) -> str:
    """One line naming every running trial, how long it has run and its last validated epoch.

    ``running`` maps a trial key to (start time, last validated epoch or None).
    It keeps a long epoch (TIGER or DiffuRec on a CPU: tens of minutes) from
    looking like a hang.
    """
    parts = [f"{key} {_format_seconds(now - started)}" + (f" (epoch {epoch} validated)" if epoch else " (first epoch)")
             for key, (started, epoch) in sorted(running.items())]
    return "    still running: " + "; ".join(parts)


def progress_line(record: dict, finished: int, total: int, already_done: int, elapsed: float) -> str:
    """'[3/8] dataset model seed=0  NDCG@10 ...  (elapsed, ETA)' for a trial that just finished."""
    done_here = finished - already_done
    eta = elapsed / done_here * (total - finished) if done_here else 0.0
    if record["status"] == "ok":
        outcome = (f"NDCG@10 {record.get('test_ndcg@10', float('nan')):.4f}  HR@10 {record.get('test_hr@10', float('nan')):.4f}  "
                   f"{record['epochs_run']} epochs, {record['fit_time_s']:.1f}s")
    else:
        outcome = f"FAILED: {record['error']}"
    return (f"[{finished}/{total}] {record['dataset']} {record['model']} seed={record['seed']}  {outcome}  "
            f"(elapsed {_format_seconds(elapsed)}, ETA {_format_seconds(eta)})")


def epoch_line(key: str, epoch: int, monitor: str, metrics: dict) -> str:
    return f"    {key}: epoch {epoch}, valid {monitor} {metrics.get(f'valid_{monitor}', float('nan')):.4f}"
