"""One self-contained HTML report of a cross-validation run.

``load_run`` (:mod:`calipers.report.run_data`) reads a run directory (design §3) into a
:class:`RunData`; ``render_report`` turns a ``RunData`` into HTML text;
:func:`calipers.report.write.write_report` does both, writes ``RUN/report.html`` (or a PDF) and
saves every figure as ``figures/NAME.svg`` and ``figures/NAME.png`` beside the report.

# NOTE [Self-contained report]
The report must open offline, years later, from an e-mail attachment: no external CSS, scripts,
fonts or images. Figures are PNGs embedded as ``data:image/png;base64,`` URIs, the CSS is inline,
and every string that came from a file (network names, sentences, environment values, the
config) is HTML-escaped, since a network may be called ``<b>``. Each figure is shown at the
fraction of the content width it was drawn for (NOTE [Figure style] in ``plots``), so its
fonts print at their size.
"""

from __future__ import annotations

import base64
import contextvars
import html
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from calipers import _format as fmt
from calipers.evaluation.metrics import reliability_curve
from calipers.gpu.report import gpu_section  # "" without RUN/gpu.json
from calipers.report import plots
from calipers.report.headline import chosen_label, summary_headline
from calipers.report.run_data import RunData, _pooled, load_run
from calipers.runs import read_json
from calipers.stats.scales import metric_scale

__all__ = ["RunData", "env_lines", "headline", "load_run", "render_report"]

_SEG_EXAMPLES = 4  # validation volumes shown per network

# --------------------------------------------------------------------------- formatting


def _num(x: Any) -> float:
    """``x`` as a float, NaN when it is missing or not a number."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
        return float("nan")
    return float(x)


def _is_percent(metric: str) -> bool:
    """Fractions such as accuracy and ECE read best in % (``MetricInfo.percent_points``)."""
    return metric_scale(str(metric)).percent  # per-class Dice (dice_1, ...) as mean Dice


def _fmt(x: Any, metric: str, *, diff: bool = False) -> str:
    """A metric value (NOTE [Number formatting] in ``calipers._format``)."""
    return fmt.estimate(_num(x), percent=_is_percent(metric), diff=diff).value()


def _interval(pair: Any) -> tuple[float, float]:
    """``[low, high]`` from JSON as two floats; NaNs when absent or malformed."""
    if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
        return (_num(pair[0]), _num(pair[1]))
    return (float("nan"), float("nan"))


def _estimate(mean: Any, pair: Any, metric: str, *, std: Any = None,
              diff: bool = False) -> fmt.Estimate:
    """A mean with its interval and spread, all with one precision."""
    lo, hi = _interval(pair)
    return fmt.estimate(_num(mean), lo, hi, std=_num(std), percent=_is_percent(metric),
                        diff=diff)


def _fmt_ci(pair: Any, metric: str, *, diff: bool = False) -> str:
    return _estimate(None, pair, metric, diff=diff).ci()


def _fmt_p(x: Any) -> str:
    return fmt.fmt_p(_num(x))


def _fmt_prob(x: Any, ci: Any = None) -> str:
    lo, hi = _interval(ci)
    return fmt.fmt_probability(_num(x), lo, hi)


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


class _FigureSet:
    """The figures of one rendering: name -> (figure, PNG bytes), for ``figures/``."""

    def __init__(self) -> None:
        self.figures: dict[str, tuple[Figure, bytes]] = {}

    def add(self, name: str, fig: Figure, png: bytes) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "figure"
        unique, k = base, 2
        while unique in self.figures:
            unique, k = f"{base}-{k}", k + 1
        self.figures[unique] = (fig, png)
        return unique


_COLLECTOR: contextvars.ContextVar[_FigureSet | None] = contextvars.ContextVar(
    "calipers_report_figures", default=None)


@contextmanager
def _collect() -> Iterator[_FigureSet]:
    figs = _FigureSet()
    token = _COLLECTOR.set(figs)
    try:
        yield figs
    finally:
        _COLLECTOR.reset(token)


def _img(fig: Figure, alt: str, *, dpi: int, name: str | None = None) -> str:
    """Render ``fig`` to PNG and return an ``<img>`` with the PNG as a base64 data URI, shown at
    its share of the content width (NOTE [Self-contained report])."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    png = buf.getvalue()
    figs = _COLLECTOR.get()
    if figs is not None:
        figs.add(name or alt, fig, png)
    share = min(100.0, 100.0 * fig.get_figwidth() / plots.CONTENT_WIDTH)
    data = base64.b64encode(png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" '
            f'style="width:{share:.1f}%">')


# --------------------------------------------------------------------------- sections


def _section_header(run: RunData) -> str:
    s = run.summary
    n_folds, n_rep = s.get("n_folds", "?"), s.get("n_repeats", 1)
    better = "higher" if s.get("higher_is_better", True) else "lower"
    repeats = "" if n_rep == 1 else f" × {n_rep} repeats"
    facts = (
        f"{s['task']} · {n_folds}-fold cross-validation{repeats} · "
        f"primary metric {s['metric']} ({better} is better) · {len(run.networks)} network(s)"
    )
    if s.get("protocol") == "holdout":  # one split: intervals come from its test samples
        first = next(iter(s["networks"].values()), {}).get(s["metric"], {})
        facts = (f"{s['task']} · one held-out split · {first.get('interval', '')} · primary "
                 f"metric {s['metric']} ({better} is better) · {len(run.networks)} network(s)")
    date = f"<p class='date'>{_e(fmt.fmt_datetime(run.date))}</p>" if run.date else ""
    return f"<h1>calipers report: {_e(run.name)}</h1>{date}<p class='facts'>{_e(facts)}</p>"


def headline(run: RunData) -> str:
    """The sentence the report opens with (:func:`calipers.report.headline.summary_headline`)."""
    return summary_headline(run.summary, incomplete=bool(run.incomplete))


def _section_verdict(run: RunData) -> str:
    sentences = [run.summary.get("sentence"), (run.summary.get("comparison") or {}).get("sentence")]
    unique = [s for i, s in enumerate(sentences) if isinstance(s, str) and s not in sentences[:i]]
    body = f"<p class='headline'>{_e(headline(run))}</p>"
    body += "".join(f"<p>{_e(s)}</p>" for s in unique)
    if run.incomplete:
        items = "".join(f"<li>{_e(x)}</li>" for x in run.incomplete)
        body += f"<div class='missing'><p>Missing from this run:</p><ul>{items}</ul></div>"
    return f"<div class='verdict'><h2>Verdict</h2>{body}</div>"


def _verdict_numbers(run: RunData) -> str:
    """The verdict pair's correlated-t probabilities and the design's detectable difference."""
    p = run.summary.get("comparison")
    if not isinstance(p, Mapping) or "p_equivalent" not in p:
        return ""
    a, b, metric = p.get("a"), p.get("b"), p.get("metric", run.summary["metric"])
    rope = _num(p.get("rope"))
    size = {k: _fmt(p.get(k) if k != "rope" else rope, metric, diff=True).lstrip("+")
            for k in ("rope", "detectable_diff")}  # unsigned sizes, in points for rates
    eq = f"P(equivalent within ±{size['rope']})" if rope > 0 else "P(equivalent) (no margin)"
    n = p.get("n_splits", "?")
    row = (_fmt_prob(p.get("p_b_better")), _fmt_prob(p.get("p_equivalent")),
           _fmt_prob(p.get("p_a_better")), size["detectable_diff"],
           f"{_num(p.get('fold_wins')):g} of {n}")  # fmt: skip
    headers = [f"P({b} better)", eq, f"P({a} better)", "detectable difference (80% power)",
               f"folds {b} won"]
    return (f"{_table(headers, [row], cls='verdict-numbers')}<p class='note'>Probabilities: "
            "Bayesian correlated t-test posterior (Benavoli et al. 2017); detectable difference: "
            "the smallest true difference this design finds with 80% power.</p>")


def _section_networks(run: RunData) -> str:
    best = run.summary.get("best")
    label = chosen_label(run.summary)
    rows = []
    for net in run.networks:
        for metric, m in run.summary["networks"][net].items():
            m = m if isinstance(m, Mapping) else {}
            n = len(m["folds"]) if isinstance(m.get("folds"), list) else "—"
            if isinstance(m.get("n_folds"), int) and m["n_folds"] != n:  # undefined on some
                n = f"{m['n_folds']} of {n}"
            est = _estimate(m.get("mean"), (m.get("ci_low"), m.get("ci_high")), metric,
                            std=m.get("std"))
            rows.append((net + (label if net == best else ""), metric, est.pm(), est.ci(), n))
    table = _table(["network", "metric", "mean ± std over folds", "95% CI (corrected)", "folds"],
                   rows)
    return f"<h2>Networks</h2>{table}"


def _section_learners(run: RunData) -> str:
    """Who trained each network (``fold-XX/learner.json``, calipers.learners) and its training
    time per fold (``metrics.json`` seconds): frameworks and backends side by side."""
    if run.run_dir is None:
        return ""
    rows = []
    for net in run.networks:
        secs, info = [], {}
        for f in sorted(Path(run.run_dir, net).glob("fold-*")):
            try:
                secs.append(float(read_json(f / "metrics.json")["seconds"]))
                if (f / "learner.json").is_file():
                    info = read_json(f / "learner.json")
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if not secs:
            continue
        backend = info.get("backend", "torch")
        version = info.get("backend_version") or info.get("version", "")
        rows.append((net, info.get("learner", "calipers"), info.get("framework", "calipers"),
                     f"{backend} {version}".strip(), info.get("device", "—"),
                     info.get("n_params", "—"),
                     f"{np.median(secs):.2f} ({min(secs):.2f}–{max(secs):.2f})"))
    if not rows:
        return ""
    table = _table(["network", "learner", "framework", "backend", "device", "parameters",
                    "training s per fold: median (range)"], rows)
    return f"<h2>Learners and training time</h2>{table}"


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
    img = _img(fig, "per-fold scores", dpi=dpi, name="fold-scores")
    return f"<h2>Per-fold scores ({_e(metric)})</h2>{img}"


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
        est = _estimate(p.get("diff_mean"), p.get("diff_ci"), metric, diff=True)
        rows.append((
            label, metric, est.value(), est.ci(), _fmt_p(p.get("p_corrected_t")),
            _fmt_p(p.get("p_holm")),
            _fmt_p(p.get("p_mcnemar") if metric == "accuracy" else None),  # tests accuracy only
            _fmt_prob(p.get("p_b_better"), p.get("p_b_better_ci")),
            p.get("verdict", "—"), p.get("chosen", "—"), p.get("criterion", "—"),
        ))
    metric = run.summary["metric"]
    figure = ""
    if diffs:
        fig = plots.plot_paired_differences(diffs, ci=ci, metric=metric,
                                            percent=_is_percent(metric))
        figure = _img(fig, "paired differences", dpi=dpi, name="paired-differences")
    headers = ["pair B − A", "metric", "mean B − A", "95% CI (corrected)", "p corrected t",
               "p Holm", "p McNemar", "P(B better)", "verdict", "chosen", "criterion"]
    headers, rows = _drop_empty_columns(headers, rows, ("p Holm", "p McNemar"),
                                        keep_holm=len(pairs) > 1)
    sentences = [p["sentence"] for p in pairs if isinstance(p.get("sentence"), str)]
    items = "".join(f"<li>{_e(s)}</li>" for s in [*sentences, *notes])
    return (f"<h2>Paired comparisons</h2>{figure}{_table(headers, rows, cls='pairs')}"
            + (f"<ul>{items}</ul>" if items else ""))


def _drop_empty_columns(headers, rows, optional, *, keep_holm):
    """Leave out McNemar where it does not apply (no paired class predictions: every cell
    "—") and Holm's p for a single pair (it equals the corrected t p-value)."""
    drop = {h for h in optional if all(r[headers.index(h)] == fmt.DASH for r in rows)}
    if not keep_holm:
        drop.add("p Holm")
    keep = [i for i, h in enumerate(headers) if h not in drop]
    return [headers[i] for i in keep], [[r[i] for i in keep] for r in rows]


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


_ECE_NOTE = (
    "<p class='note'>Two ECE figures: the <em>Networks</em> table gives the mean of the "
    "per-fold ECEs, each computed from one fold's test predictions; this table computes the ECE "
    "once from all out-of-fold predictions pooled. With fewer predictions per bin the ECE is "
    "biased upward, so the per-fold mean is usually the larger of the two. Both use 15 "
    "equal-width confidence bins.</p>"
)


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
            fmt.fmt_sig(pooled["entropy"].mean(), 3),
            fmt.DASH if mi is None else fmt.fmt_sig(np.mean(mi), 3), _fmt(ece, "ece"),
        ))
        rel_fig = plots.plot_reliability(y, proba, n_bins=15, title=net)
        ent_fig = plots.plot_entropy_histogram(pooled["entropy"], pooled["correct"],
                                               n_classes=proba.shape[1], title=net)
        figures.append(_img(rel_fig, f"reliability diagram of {net}", dpi=dpi,
                            name=f"reliability-{net}")
                       + _img(ent_fig, f"predictive entropy of {net}", dpi=dpi,
                              name=f"entropy-{net}"))
    headers = ["network", "folds", "predictions", "accuracy (pooled)", "mean entropy (nats)",
               "mean mutual information (nats)", "ECE (15 bins, pooled)"]
    per_fold_ece = any("ece" in m for m in run.summary["networks"].values())
    note = _ECE_NOTE if rows and per_fold_ece else ""
    return ("<h2>Calibration and uncertainty (pooled out-of-fold predictions)</h2>"
            + _section_missing(run) + (_table(headers, rows) if rows else "") + note
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
                     fmt.fmt_sig(np.sqrt(np.mean(res**2)), 3), fmt.fmt_sig(std.mean(), 3),
                     f"{fmt.fmt_number(100 * inside.mean(), 1)}%"))
        std_fig = plots.plot_std_vs_error(std, np.abs(res), title=net)
        res_fig = plots.plot_residual_histogram(res, title=net)
        figures.append(_img(std_fig, f"predictive std vs absolute error of {net}", dpi=dpi,
                            name=f"std-vs-error-{net}")
                       + _img(res_fig, f"residuals of {net}", dpi=dpi, name=f"residuals-{net}"))
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
        per_class = fmt.DASH if d is None else ", ".join(
            f"{fmt.fmt_number(100 * v, 1)}%" for v in d.mean(axis=0))
        rows.append((net, len(folds), n_vol, per_class,
                     fmt.DASH if d is None else f"{fmt.fmt_number(100 * d.mean(), 1)}%",
                     fmt.fmt_sig(np.concatenate(ent).mean(), 3) if ent else fmt.DASH,
                     fmt.fmt_sig(np.concatenate(mi).mean(), 3) if mi else fmt.DASH))
        if all(k in first for k in keys):
            k = min(_SEG_EXAMPLES, len(first["preview_image"]))
            n_classes = int(d.shape[1] + 1) if d is not None else 2
            fig = plots.plot_segmentation_examples(
                *(list(first[key][:k]) for key in keys), n_classes=n_classes,
                titles=[f"{net} volume {int(i)}" for i in first["index"][:k]])
            figures.append(_img(fig, f"validation volumes of {net}", dpi=dpi,
                                name=f"segmentation-{net}"))
    headers = ["network", "folds", "volumes", "Dice per class (1, 2, ...)", "mean Dice",
               "mean voxel entropy (nats)", "mean voxel mutual information (nats)"]
    return ("<h2>Segmentation and uncertainty (out-of-fold volumes)</h2>"
            + _section_missing(run) + (_table(headers, rows) if rows else "")
            + "<p>Validation volumes of the first fold, middle slice: image, ground truth, "
            "MC-dropout prediction and its predictive entropy.</p>"
            + "".join(f"<div class='figs'>{f}</div>" for f in figures))


def env_lines(env: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (name, value) rows ``calipers env`` prints, from an ``env.json`` record; records
    this version cannot read are shown key by key."""
    from calipers.repro.env import Environment

    try:
        return Environment.from_dict(env).lines()
    except (TypeError, ValueError, KeyError, AttributeError):
        return [(k, fmt.fmt_datetime(v) if k == "created" else _text(v)) for k, v in env.items()]


def _section_provenance(run: RunData) -> str:
    if isinstance(run.env, Mapping):
        full = json.dumps(run.env, indent=2, default=str)
        env = (_table(["", ""], env_lines(run.env), cls="env")
               + f"<details><summary>Full environment record (env.json)</summary>"
               f"<pre>{_e(full)}</pre></details>")
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
max-width:1000px;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.date,.facts{color:#555;margin:.2em 0}
.verdict{background:#fff8d6;border:1px solid #e0c84a;border-left:6px solid #d4a500;
padding:.4em 1em;margin:1em 0}.verdict h2{border:none;margin:.3em 0}
.verdict p.headline{font-size:1.25em;font-weight:700}.verdict p{font-size:1em}
.missing{background:#fdecea;border-left:4px solid #c0392b;padding:.3em .8em}
.note{color:#444;font-size:.92em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
td{font-variant-numeric:tabular-nums}
th{background:#f3f3f3}table.env thead{display:none}table.env td:first-child{font-weight:600}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.8em;overflow-x:auto;white-space:pre-wrap;
overflow-wrap:anywhere}
details{margin:.6em 0}summary{cursor:pointer;color:#0072B2}
img{max-width:100%;height:auto;display:block}
.figs{display:flex;flex-wrap:wrap;justify-content:space-between;margin:.6em 0}
footer{color:#888;font-size:.85em;margin-top:2em}
@media print{body{max-width:none;margin:0;font-size:10pt}h2{break-after:avoid}
img,table,.figs{break-inside:avoid}details pre{display:none}}
"""


def _render(run: RunData, *, dpi: int) -> tuple[str, _FigureSet]:
    """The HTML and the figures it embeds."""
    if not isinstance(run, RunData):
        raise TypeError(
            f"run must be a RunData; got {type(run).__name__}. Use load_run(run_dir) to read one."
        )
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 600:
        raise ValueError(f"dpi must be an integer in [10, 600]; got {dpi!r}. Use e.g. dpi=200.")
    task = run.summary["task"]
    with _collect() as figs:
        if task == "classification":
            uncertainty = _section_classification(run, dpi=dpi)
        elif task == "regression":
            uncertainty = _section_regression(run, dpi=dpi)
        elif task == "segmentation":
            uncertainty = _section_segmentation(run, dpi=dpi)
        else:
            uncertainty = f"<p>No prediction plots for task {_e(task)}.</p>"
        pairs = _section_pairs(run, dpi=dpi) if len(run.networks) > 1 and not run.incomplete else ""
        gpu = gpu_section(run.run_dir, lambda fig, alt: _img(fig, alt, dpi=dpi, name="gpu"))
        parts = [
            _section_header(run), _section_verdict(run), _verdict_numbers(run),
            _section_networks(run), _section_learners(run), _section_fold_scores(run, dpi=dpi),
            pairs, uncertainty,
            *([gpu] if gpu else []), _section_provenance(run),
        ]
    title = f"calipers report: {run.name}"
    text = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(p for p in parts if p)
        + f"\n<footer>{_e(_footer(run))}</footer></body></html>\n"
    )
    return text, figs


def _footer(run: RunData) -> str:
    from calipers import __version__

    wrote = None
    if isinstance(run.env, Mapping) and isinstance(run.env.get("packages"), Mapping):
        wrote = run.env["packages"].get("calipers")
    run_by = f"Run made with calipers {wrote}; " if wrote else ""
    return (f"{run_by}report written by calipers {__version__}. Self-contained: opens offline. "
            "Figures: figures/*.svg and figures/*.png beside this file.")


def render_report(run: RunData, *, dpi: int = 200) -> str:
    """Render ``run`` as one self-contained HTML page (NOTE [Self-contained report]).

    Parameters
    ----------
    run : RunData
        From :func:`load_run`, or built in memory.
    dpi : int, default 200
        Resolution of the embedded PNG figures (dots per inch of the printed figure).

    Returns
    -------
    str
        The HTML document.
    """
    return _render(run, dpi=dpi)[0]
