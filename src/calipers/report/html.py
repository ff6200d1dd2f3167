"""One self-contained HTML report of a cross-validation run.

``load_run`` reads a run directory (design §3) into a :class:`RunData`; ``render_report`` turns
a ``RunData`` into HTML text; ``write_report`` does both and writes ``RUN/report.html``.

# NOTE [Self-contained report]
The report must open offline, years later, from an e-mail attachment: no external CSS, scripts,
fonts or images. Figures are PNGs embedded as ``data:image/png;base64,`` URIs, the CSS is inline,
and every string that came from a file (network names, sentences, environment values, the
config) is HTML-escaped, since a network may be called ``<b>``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from calipers.evaluation.metrics import METRICS, reliability_curve
from calipers.exceptions import DataError
from calipers.report import plots
from calipers.runs import atomic_write_text, fold_dir, read_json

__all__ = ["RunData", "load_run", "render_report", "write_report"]

_NEEDED = {"classification": ("y_true", "proba"), "regression": ("y_true", "mean", "var"),
           "segmentation": ("y_true", "labels")}
_SEG_EXAMPLES = 4  # validation volumes shown per network


@dataclass(frozen=True)
class RunData:
    """Everything the report shows, read from one run directory (or built in memory).

    Parameters
    ----------
    summary : mapping
        The content of ``summary.json`` (design §3): ``task``, ``metric``, ``networks``, ...
    name : str, default "run"
        Run name for the title (the run directory's name).
    date : str, default ""
        When the run finished, shown under the title.
    env : mapping, optional
        ``env.json``; None when the file is absent.
    folds : mapping, optional
        ``hash``, ``n_samples``, ``n_folds``, ``n_repeats`` and ``n_splits`` from
        ``folds.json`` (the indices are dropped); None when the file is absent.
    config_text : str, optional
        ``config.toml`` verbatim; None when absent.
    predictions : mapping of str to mapping of int to mapping of str to ndarray
        ``predictions[network][fold]`` holds the arrays of that fold's ``predictions.npz``.
    missing : mapping of str to mapping of int to str
        ``missing[network][fold]`` says why a fold's predictions could not be used.
    run_dir : Path, optional
        Where the run was read from.
    """

    summary: Mapping[str, Any]
    name: str = "run"
    date: str = ""
    env: Mapping[str, Any] | None = None
    folds: Mapping[str, Any] | None = None
    config_text: str | None = None
    predictions: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]] = field(
        default_factory=dict, repr=False
    )
    missing: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        where = self.run_dir / "summary.json" if self.run_dir is not None else "summary"
        _check_summary(self.summary, where=str(where))

    @property
    def networks(self) -> list[str]:
        """Network names, in the order of ``summary.json``."""
        return list(self.summary["networks"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view; predictions are given as the number of samples per network."""
        return {
            "name": self.name,
            "date": self.date,
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "summary": dict(self.summary),
            "env": None if self.env is None else dict(self.env),
            "folds": None if self.folds is None else dict(self.folds),
            "config_text": self.config_text,
            "n_predictions": {
                net: int(sum(len(a["y_true"]) for a in folds.values()))
                for net, folds in self.predictions.items()
            },
            "missing": {net: {str(k): v for k, v in m.items()} for net, m in self.missing.items()},
        }


def _check_summary(summary: object, *, where: str) -> None:
    fix = "Rerun `calipers cv CONFIG.toml --out RUN_DIR` (it resumes) to rewrite it."
    if not isinstance(summary, Mapping):
        raise DataError(f"{where} must hold a JSON object; got {type(summary).__name__}. {fix}")
    nets = summary.get("networks")
    if not isinstance(nets, Mapping) or not nets:
        raise DataError(
            f"{where}: 'networks' must be a non-empty object mapping each network name to its "
            f"metrics; got {nets!r:.80}. {fix}"
        )
    for key in ("task", "metric"):
        if not isinstance(summary.get(key), str):
            raise DataError(f"{where}: {key!r} must be a string; got {summary.get(key)!r}. {fix}")
    for name, metrics in nets.items():
        if not isinstance(metrics, Mapping):
            raise DataError(
                f"{where}: networks[{name!r}] must map metric names to their summaries; "
                f"got {type(metrics).__name__}. {fix}"
            )


# --------------------------------------------------------------------------- loading


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a run directory written by ``calipers cv`` into a :class:`RunData`.

    Parameters
    ----------
    run_dir : str or path-like
        The run directory. ``summary.json`` is required; ``env.json``, ``folds.json``,
        ``config.toml`` and the predictions are shown as missing when absent.

    Returns
    -------
    RunData

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` or its ``summary.json`` does not exist.
    calipers.exceptions.DataError
        If ``summary.json`` does not have the documented shape.
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path} does not exist; the report needs the summary.json that "
            f"`calipers cv` writes when every fold is done. Finish the run (rerunning "
            f"`calipers cv CONFIG.toml --out {run_dir}` resumes it) and try again."
        )
    summary = read_json(summary_path)
    _check_summary(summary, where=str(summary_path))  # before its names become folder names
    env = read_json(run_dir / "env.json") if (run_dir / "env.json").is_file() else None
    folds = _folds_info(read_json(run_dir / "folds.json")) if (
        run_dir / "folds.json").is_file() else None
    config = run_dir / "config.toml"
    config_text = config.read_text(encoding="utf-8") if config.is_file() else None
    predictions, missing = _load_predictions(run_dir, summary)
    return RunData(
        summary=summary, name=run_dir.resolve().name, date=_run_date(summary, env, summary_path),
        env=env, folds=folds, config_text=config_text, predictions=predictions,
        missing=missing, run_dir=run_dir,
    )


def _folds_info(raw: Any) -> dict[str, Any] | None:
    """Hash and counts of ``folds.json``; the index lists are dropped."""
    if not isinstance(raw, Mapping):
        return None
    info = {k: raw.get(k) for k in ("hash", "n_samples", "n_folds", "n_repeats", "n_splits")}
    if info["n_splits"] is None and isinstance(raw.get("folds"), list):
        info["n_splits"] = len(raw["folds"])
    k, r = info["n_splits"], info["n_repeats"]
    if info["n_folds"] is None and isinstance(k, int) and isinstance(r, int) and r > 0:
        info["n_folds"] = k // r
    return info


def _run_date(summary: Mapping[str, Any], env: Any, path: Path) -> str:
    """The run's date: a date field of summary.json or env.json, else summary.json's mtime."""
    for source in (summary, env if isinstance(env, Mapping) else {}):
        for key in ("date", "created", "timestamp", "finished"):
            if isinstance(source.get(key), str):
                return source[key]
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, tz=_dt.UTC)
    return mtime.strftime("%Y-%m-%d %H:%M UTC")


def _n_expected_folds(summary: Mapping[str, Any]) -> int:
    if isinstance(summary.get("n_splits"), int) and summary["n_splits"] > 0:
        return summary["n_splits"]
    k, r = summary.get("n_folds"), summary.get("n_repeats", 1)
    if isinstance(k, int) and isinstance(r, int) and k > 0 and r > 0:
        return k * r
    lengths = [
        len(m["folds"]) for metrics in summary["networks"].values() for m in metrics.values()
        if isinstance(m, Mapping) and isinstance(m.get("folds"), list)
    ]
    return max(lengths, default=0)


def _load_predictions(
    run_dir: Path, summary: Mapping[str, Any]
) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], dict[str, dict[int, str]]]:
    task = summary["task"]
    predictions: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    missing: dict[str, dict[int, str]] = {}
    if task not in _NEEDED:
        return predictions, missing
    for net in summary["networks"]:
        predictions[net], missing[net] = {}, {}
        for j in range(_n_expected_folds(summary)):
            arrays, problem = _load_fold(fold_dir(run_dir, net, j) / "predictions.npz", task)
            if arrays is None:
                missing[net][j] = problem
            else:
                predictions[net][j] = arrays
    return predictions, missing


def _load_fold(path: Path, task: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """The arrays of one ``predictions.npz``, or None and the reason they cannot be used."""
    if not path.is_file():
        return None, "predictions.npz not found"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return None, f"predictions.npz unreadable ({type(exc).__name__}: {exc})"
    lacking = [k for k in _NEEDED[task] if k not in arrays]
    if lacking:
        return None, f"predictions.npz lacks {', '.join(lacking)}"
    for key in _NEEDED[task]:
        if not np.issubdtype(arrays[key].dtype, np.number) or arrays[key].ndim == 0:
            return None, f"predictions.npz: {key} is not a numeric array ({arrays[key].dtype})"
    n = len(arrays["y_true"])
    for key in _NEEDED[task][1:]:
        if len(arrays[key]) != n:
            return None, f"predictions.npz: {key} has shape {arrays[key].shape}, y_true ({n},)"
        if not np.isfinite(arrays[key]).all():
            return None, f"predictions.npz: {key} holds NaN or infinite values"
    if task == "classification" and arrays["proba"].ndim != 2:
        return None, f"predictions.npz: proba has shape {arrays['proba'].shape}, not (n, C)"
    return arrays, ""


def _pooled(run: RunData, net: str) -> dict[str, np.ndarray] | None:
    """Out-of-fold predictions of ``net`` concatenated in fold order; None if there are none."""
    folds = run.predictions.get(net, {})
    if not folds:
        return None
    keys = set.intersection(*(set(a) for a in folds.values()))
    pooled = {k: np.concatenate([np.asarray(folds[j][k]) for j in sorted(folds)]) for k in keys}
    if run.summary["task"] == "classification":
        proba = pooled["proba"].astype(float)
        if "entropy" not in pooled:
            with np.errstate(divide="ignore", invalid="ignore"):
                pooled["entropy"] = -np.sum(np.where(proba > 0, proba * np.log(proba), 0), 1)
        pooled["correct"] = proba.argmax(axis=1) == pooled["y_true"].reshape(-1)
    else:
        n = len(pooled["y_true"])
        pooled["mean"] = pooled["mean"].reshape(n, -1)
        pooled["var"] = pooled["var"].reshape(n, -1)
        pooled["y_true"] = pooled["y_true"].reshape(n, -1)
    return pooled


# --------------------------------------------------------------------------- formatting


def _num(x: Any) -> float:
    """``x`` as a float, NaN when it is missing or not a number."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
        return float("nan")
    return float(x)


def _is_percent(metric: str) -> bool:
    """Fractions such as accuracy and ECE read best in % (``MetricInfo.percent_points``)."""
    info = METRICS.get(str(metric))
    return bool(info is not None and info.percent_points)


def _fmt(x: Any, metric: str, *, diff: bool = False) -> str:
    """A metric value: accuracy-like metrics in % (differences in percentage points)."""
    v = _num(x)
    if not math.isfinite(v):
        return "—"
    sign = "+" if diff else ""
    if _is_percent(metric):
        return f"{100 * v:{sign}.2f}" + (" pp" if diff else "%")
    return f"{v:{sign}.4g}"


def _interval(pair: Any) -> tuple[float, float]:
    """``[low, high]`` from JSON as two floats; NaNs when absent or malformed."""
    if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
        return (_num(pair[0]), _num(pair[1]))
    return (float("nan"), float("nan"))


def _fmt_ci(pair: Any, metric: str, *, diff: bool = False) -> str:
    lo, hi = _interval(pair)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"[{_fmt(lo, metric, diff=diff)}, {_fmt(hi, metric, diff=diff)}]"


def _fmt_p(x: Any) -> str:
    p = _num(x)
    if not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_prob(x: Any, ci: Any = None) -> str:
    p = _num(x)
    if not math.isfinite(p):
        return "—"
    lo, hi = _interval(ci)
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{p:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"{p:.2f}"


def _text(value: Any) -> str:
    """Environment values: strings as they are, anything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> str:
    """An HTML table; every header and cell is escaped (NOTE [Self-contained report])."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(fig: Figure, alt: str, *, dpi: int) -> str:
    """Render ``fig`` to PNG and return an ``<img>`` with the PNG as a base64 data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


# --------------------------------------------------------------------------- sections


def _section_header(run: RunData) -> str:
    s = run.summary
    n_folds, n_rep = s.get("n_folds", "?"), s.get("n_repeats", 1)
    better = "higher" if s.get("higher_is_better", True) else "lower"
    facts = (
        f"{s['task']} · {n_folds}-fold cross-validation × {n_rep} repeat(s) · "
        f"primary metric {s['metric']} ({better} is better) · {len(run.networks)} network(s)"
    )
    if s.get("protocol") == "holdout":  # one split: intervals come from its test samples
        first = next(iter(s["networks"].values()), {}).get(s["metric"], {})
        facts = (f"{s['task']} · one held-out split · {first.get('interval', '')} · primary "
                 f"metric {s['metric']} ({better} is better) · {len(run.networks)} network(s)")
    date = f"<p class='date'>{_e(run.date)}</p>" if run.date else ""
    return f"<h1>calipers report: {_e(run.name)}</h1>{date}<p class='facts'>{_e(facts)}</p>"


def _section_verdict(run: RunData) -> str:
    sentences = [run.summary.get("sentence"), (run.summary.get("comparison") or {}).get("sentence")]
    unique = [s for i, s in enumerate(sentences) if isinstance(s, str) and s not in sentences[:i]]
    if not unique:
        unique = ["summary.json holds no verdict sentence."]
    body = "".join(f"<p>{_e(s)}</p>" for s in unique)
    return f"<div class='verdict'><h2>Verdict</h2>{body}</div>"


def _section_networks(run: RunData) -> str:
    best = run.summary.get("best")
    rows = []
    for net in run.networks:
        for metric, m in run.summary["networks"][net].items():
            m = m if isinstance(m, Mapping) else {}
            n = len(m["folds"]) if isinstance(m.get("folds"), list) else "—"
            rows.append((
                net + (" (best)" if net == best else ""), metric,
                f"{_fmt(m.get('mean'), metric)} ± {_fmt(m.get('std'), metric)}",
                _fmt_ci((m.get("ci_low"), m.get("ci_high")), metric), n,
            ))
    table = _table(["network", "metric", "mean ± std", "95% CI", "folds"], rows)
    return f"<h2>Networks</h2>{table}"


def _fold_scores(run: RunData, metric: str, net: str) -> np.ndarray:
    m = run.summary["networks"][net].get(metric)
    folds = m.get("folds") if isinstance(m, Mapping) else None
    return np.array([_num(v) for v in folds or []], dtype=float)


def _section_fold_scores(run: RunData, *, dpi: int) -> str:
    metric = run.summary["metric"]
    scores, ci = {}, {}
    for net in run.networks:
        scores[net] = _fold_scores(run, metric, net)
        m = run.summary["networks"][net].get(metric)
        if isinstance(m, Mapping):
            ci[net] = (_num(m.get("ci_low")), _num(m.get("ci_high")))
    if not any(v.size for v in scores.values()):
        return f"<h2>Per-fold scores</h2><p class='missing'>No per-fold {_e(metric)} scores.</p>"
    fig = plots.plot_fold_scores(
        scores, metric=metric, ci=ci, percent=_is_percent(metric),
        higher_is_better=bool(run.summary.get("higher_is_better", True)),
    )
    return f"<h2>Per-fold scores ({_e(metric)})</h2>{_img(fig, 'per-fold scores', dpi=dpi)}"


def _pairs(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``pairs``, or the single ``comparison``, without duplicates."""
    found = [p for p in summary.get("pairs") or [] if isinstance(p, Mapping)]
    comparison = summary.get("comparison")
    if isinstance(comparison, Mapping):
        found = [comparison, *found]
    seen, unique = set(), []
    for p in found:
        key = (p.get("a"), p.get("b"), p.get("metric"))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _section_pairs(run: RunData, *, dpi: int) -> str:
    pairs = _pairs(run.summary)
    if not pairs:
        return "<h2>Paired comparisons</h2><p>summary.json holds no comparison.</p>"
    diffs, ci, notes, rows = {}, {}, [], []
    for p in pairs:
        a, b, metric = p.get("a"), p.get("b"), p.get("metric", run.summary["metric"])
        label = f"{b} − {a}"
        if a in run.summary["networks"] and b in run.summary["networks"]:
            sa, sb = _fold_scores(run, metric, a), _fold_scores(run, metric, b)
            if sa.size and sa.size == sb.size:
                diffs[label] = sb - sa
                ci[label] = _interval(p.get("diff_ci"))
            else:
                notes.append(f"{label}: per-fold scores missing or of different lengths.")
        rows.append((
            f"B = {b}, A = {a}", metric, _fmt(p.get("diff_mean"), metric, diff=True),
            _fmt_ci(p.get("diff_ci"), metric, diff=True), _fmt_p(p.get("p_corrected_t")),
            _fmt_p(p.get("p_holm")), _fmt_p(p.get("p_mcnemar")),
            _fmt_prob(p.get("p_b_better"), p.get("p_b_better_ci")),
            p.get("verdict", "—"), p.get("chosen", "—"), p.get("criterion", "—"),
        ))
    metric = run.summary["metric"]
    figure = ""
    if diffs:
        fig = plots.plot_paired_differences(diffs, ci=ci, metric=metric,
                                            percent=_is_percent(metric))
        figure = _img(fig, "paired differences", dpi=dpi)
    headers = ["pair", "metric", "mean B − A", "95% CI (corrected)", "p corrected t",
               "p Holm", "p McNemar", "P(B > A) [95% CI]", "verdict", "chosen", "criterion"]
    sentences = [p["sentence"] for p in pairs if isinstance(p.get("sentence"), str)]
    items = "".join(f"<li>{_e(s)}</li>" for s in [*sentences, *notes])
    return (f"<h2>Paired comparisons</h2>{figure}{_table(headers, rows, cls='pairs')}"
            + (f"<ul>{items}</ul>" if items else ""))


def _section_missing(run: RunData) -> str:
    items = []
    for net in run.networks:
        for fold, why in sorted(run.missing.get(net, {}).items()):
            items.append(f"<li>{_e(net)} fold {fold:02d}: {_e(why)}</li>")
        if not run.predictions.get(net) and not run.missing.get(net):
            items.append(f"<li>{_e(net)}: no predictions</li>")
    if not items:
        return ""
    return ("<div class='missing'><p>Missing predictions (plots below pool the folds that are "
            f"present):</p><ul>{''.join(items)}</ul></div>")


def _section_classification(run: RunData, *, dpi: int) -> str:
    rows, figures = [], []
    for net in run.networks:
        pooled = _pooled(run, net)
        if pooled is None:
            continue
        y, proba = pooled["y_true"].reshape(-1), pooled["proba"]
        try:
            ece = reliability_curve(y, proba, n_bins=15).ece()
        except ValueError as exc:  # e.g. rows that do not sum to 1: say so, draw nothing
            rows.append((net, len(run.predictions[net]), len(y), f"invalid predictions: {exc}"))
            continue
        mi = pooled.get("mutual_info")
        rows.append((
            net, len(run.predictions[net]), len(y), _fmt(pooled["correct"].mean(), "accuracy"),
            f"{pooled['entropy'].mean():.4f}", "—" if mi is None else f"{np.mean(mi):.4f}",
            _fmt(ece, "ece"),
        ))
        rel_fig = plots.plot_reliability(y, proba, n_bins=15, title=net)
        ent_fig = plots.plot_entropy_histogram(pooled["entropy"], pooled["correct"],
                                               n_classes=proba.shape[1], title=net)
        figures.append(_img(rel_fig, f"reliability diagram of {net}", dpi=dpi)
                       + _img(ent_fig, f"predictive entropy of {net}", dpi=dpi))
    headers = ["network", "folds", "predictions", "accuracy (pooled)", "mean entropy (nats)",
               "mean mutual information (nats)", "ECE (15 bins)"]
    return ("<h2>Calibration and uncertainty (pooled out-of-fold predictions)</h2>"
            + _section_missing(run) + (_table(headers, rows) if rows else "")
            + "".join(f"<div class='figs'>{f}</div>" for f in figures))


def _section_regression(run: RunData, *, dpi: int) -> str:
    rows, figures = [], []
    for net in run.networks:
        pooled = _pooled(run, net)
        if pooled is None:
            continue
        res = pooled["y_true"] - pooled["mean"]
        std = np.sqrt(np.clip(pooled["var"], 0.0, None))
        inside = np.abs(res) <= 1.96 * std
        rows.append((net, len(run.predictions[net]), len(res),
                     f"{np.sqrt(np.mean(res**2)):.4g}", f"{std.mean():.4g}",
                     f"{100 * inside.mean():.1f}%"))
        std_fig = plots.plot_std_vs_error(std, np.abs(res), title=net)
        res_fig = plots.plot_residual_histogram(res, title=net)
        figures.append(_img(std_fig, f"predictive std vs absolute error of {net}", dpi=dpi)
                       + _img(res_fig, f"residuals of {net}", dpi=dpi))
    headers = ["network", "folds", "predictions", "RMSE (pooled)", "mean predictive std",
               "inside ± 1.96 std"]
    return ("<h2>Predictive uncertainty (pooled out-of-fold predictions)</h2>"
            + _section_missing(run) + (_table(headers, rows) if rows else "")
            + "".join(f"<div class='figs'>{f}</div>" for f in figures))


def _section_segmentation(run: RunData, *, dpi: int) -> str:
    """Dice and uncertainty per network, and a few validation volumes: image, ground truth,
    prediction and entropy side by side (middle slice, from ``preview_*`` arrays)."""
    rows, figures = [], []
    keys = ("preview_image", "preview_truth", "preview_pred", "preview_entropy")
    for net in run.networks:
        folds = run.predictions.get(net, {})
        if not folds:
            continue
        first = folds[min(folds)]
        dice = [np.asarray(f["dice"]) for f in folds.values() if "dice" in f]
        ent = [np.asarray(f["entropy"]) for f in folds.values() if "entropy" in f]
        mi = [np.asarray(f["mutual_info"]) for f in folds.values() if "mutual_info" in f]
        n_vol = sum(len(f["y_true"]) for f in folds.values())
        d = np.concatenate(dice) if dice else None
        per_class = "—" if d is None else ", ".join(f"{100 * v:.1f}%" for v in d.mean(axis=0))
        rows.append((net, len(folds), n_vol, per_class,
                     "—" if d is None else f"{100 * d.mean():.1f}%",
                     f"{np.concatenate(ent).mean():.4f}" if ent else "—",
                     f"{np.concatenate(mi).mean():.4f}" if mi else "—"))
        if all(k in first for k in keys):
            k = min(_SEG_EXAMPLES, len(first["preview_image"]))
            n_classes = int(d.shape[1] + 1) if d is not None else 2
            fig = plots.plot_segmentation_examples(
                *(list(first[key][:k]) for key in keys), n_classes=n_classes,
                titles=[f"{net} volume {int(i)}" for i in first["index"][:k]])
            figures.append(_img(fig, f"validation volumes of {net}", dpi=dpi))
    headers = ["network", "folds", "volumes", "Dice per class (1, 2, ...)", "mean Dice",
               "mean voxel entropy (nats)", "mean voxel mutual information (nats)"]
    return ("<h2>Segmentation and uncertainty (out-of-fold volumes)</h2>"
            + _section_missing(run) + (_table(headers, rows) if rows else "")
            + "<p>Validation volumes of the first fold, middle slice: image, ground truth, "
            "MC-dropout prediction and its predictive entropy.</p>"
            + "".join(f"<div class='figs'>{f}</div>" for f in figures))


def _section_provenance(run: RunData) -> str:
    if isinstance(run.env, Mapping):
        env = _table(["key", "value"], ((k, _text(v)) for k, v in run.env.items()), cls="env")
    else:
        env = "<p class='missing'>env.json not found.</p>"
    if isinstance(run.folds, Mapping):
        keys = ("hash", "n_samples", "n_folds", "n_repeats", "n_splits")
        folds = _table(["hash", "samples", "folds", "repeats", "splits (folds × repeats)"],
                       [[_text(run.folds.get(k)) for k in keys]])
    else:
        folds = "<p class='missing'>folds.json not found.</p>"
    if run.config_text is None:
        config = "<p class='missing'>config.toml not found.</p>"
    else:
        config = f"<pre>{_e(run.config_text)}</pre>"
    return (f"<h2>Environment</h2>{env}<h2>Folds</h2>{folds}"
            f"<h2>Configuration</h2>{config}")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.date,.facts{color:#555;margin:.2em 0}
.verdict{background:#fff8d6;border:1px solid #e0c84a;border-left:6px solid #d4a500;
padding:.4em 1em;margin:1em 0}.verdict h2{border:none;margin:.3em 0}
.verdict p{font-size:1.1em;font-weight:600}
.missing{background:#fdecea;border-left:4px solid #c0392b;padding:.3em .8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.env td{font-family:ui-monospace,Menlo,Consolas,monospace;
word-break:break-all;max-width:800px}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.8em;overflow-x:auto}
img{max-width:100%;height:auto}.figs{display:flex;flex-wrap:wrap;gap:1em}
footer{color:#888;font-size:.85em;margin-top:2em}
"""


def render_report(run: RunData, *, dpi: int = 80) -> str:
    """Render ``run`` as one self-contained HTML page (NOTE [Self-contained report]).

    Parameters
    ----------
    run : RunData
        From :func:`load_run`, or built in memory.
    dpi : int, default 80
        Resolution of the embedded PNG figures.

    Returns
    -------
    str
        The HTML document.
    """
    if not isinstance(run, RunData):
        raise TypeError(
            f"run must be a RunData; got {type(run).__name__}. Use load_run(run_dir) to read one."
        )
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 600:
        raise ValueError(f"dpi must be an integer in [10, 600]; got {dpi!r}. Use e.g. dpi=80.")
    task = run.summary["task"]
    if task == "classification":
        uncertainty = _section_classification(run, dpi=dpi)
    elif task == "regression":
        uncertainty = _section_regression(run, dpi=dpi)
    elif task == "segmentation":
        uncertainty = _section_segmentation(run, dpi=dpi)
    else:
        uncertainty = f"<p>No prediction plots for task {_e(task)}.</p>"
    parts = [
        _section_header(run), _section_verdict(run), _section_networks(run),
        _section_fold_scores(run, dpi=dpi), _section_pairs(run, dpi=dpi), uncertainty,
        _section_provenance(run),
    ]
    title = f"calipers report: {run.name}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n<footer>Written by calipers. Self-contained: opens offline.</footer></body></html>\n"
    )


def write_report(run_dir: str | os.PathLike[str], *, dpi: int = 80) -> Path:
    """Read ``run_dir`` and write its self-contained ``report.html`` atomically.

    Parameters
    ----------
    run_dir : str or path-like
        A run directory written by ``calipers cv`` (see :func:`load_run`).
    dpi : int, default 80
        Resolution of the embedded PNG figures.

    Returns
    -------
    Path
        ``run_dir / "report.html"``.

    Examples
    --------
    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    text = render_report(load_run(run_dir), dpi=dpi)
    return atomic_write_text(Path(run_dir) / "report.html", text)
