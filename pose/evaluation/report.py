"""Drawing skeletons (cv2) and the self-contained HTML report the evaluate step writes (inline CSS,
images as base64 JPEG), which opens in the KFP UI."""

import base64
import html
import math
from pathlib import PurePath

import cv2
import numpy as np

from pose.evaluation import results as results_file

TRUE_COLOUR = (60, 200, 60)  # BGR green
PREDICTED_COLOUR = (40, 40, 230)  # BGR red


def draw_skeleton(
    image: np.ndarray,
    points: np.ndarray,
    shown: np.ndarray | None,
    colour,
    skeleton,
    thickness: int = 2,
) -> np.ndarray:
    """Draws limbs (`skeleton`: the keypoint set's edges, 0-based) and joints of points [K, 2] on a BGR
    uint8 image, in place; joints where `shown` is False (and their limbs) are skipped."""
    points = np.asarray(points, dtype=np.float64)
    shown = np.ones(len(points), bool) if shown is None else np.asarray(shown, bool)
    pixel = [(int(round(x)), int(round(y))) for x, y in points]
    for a, b in skeleton:
        if shown[a] and shown[b]:
            cv2.line(image, pixel[a], pixel[b], colour, thickness, cv2.LINE_AA)
    for k in np.flatnonzero(shown):
        cv2.circle(image, pixel[k], thickness + 1, colour, -1, cv2.LINE_AA)
    return image


def jpeg_data_uri(image_bgr: np.ndarray, quality: int = 85) -> str:
    ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode a gallery image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


_CSS = """
body { font-family: -apple-system, Segoe UI, Roboto, sans-serif; margin: 16px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.anchor td { background: #fafafa; color: #555; }
.bar { height: 11px; background: #4a7bd0; display: inline-block; vertical-align: middle; }
.joint td { border: none; padding: 1px 6px; }
.gallery img { margin: 3px; border: 1px solid #ddd; }
.photos figure { display: inline-block; margin: 4px; } .photos figcaption { font-size: 13px; }
.ok { color: #197a2c; } .miss { color: #b3261e; }
.bar.seed { background: #e6a01e; } .bar.blazepose { background: #8a8a8a; }
.data { font-size: 15px; } .warning { color: #b3261e; font-weight: bold; }
figure.not-judged img { opacity: 0.5; }
"""

CHART_WIDTH = 180  # px of a bar from the axis floor to 100 %


def shown_path(path, parts: int = 3) -> str:
    """A path as the report shows it: its last `parts` parts, never this machine's file system."""
    if not path:
        return ""
    return "/".join(PurePath(str(path).replace("\\", "/")).parts[-parts:]).lstrip("/")


def _shown_source(source: str) -> str:
    """A data URI as is (gs://, s3://, synthetic://); a local folder or file:// by its last parts."""
    if "://" in source and not source.startswith("file://"):
        return source
    return shown_path(source.removeprefix("file://"))


def _data_sentence(settings: dict) -> str:
    """What the validation people are: rendered figures, or the user's own data, named at the top."""
    data = settings.get("data") or {}
    folders = data.get("folders") or [shown_path(d) for d in settings.get("data_dirs", [])]
    people = settings["num_people"]
    where = html.escape(", ".join(folders))
    set_name = html.escape(
        str(data.get("keypoint_set") or settings.get("keypoint_set", {}).get("name", ""))
    )
    source = data.get("source")
    if data.get("synthetic"):
        return (
            f'<p class="data"><b>Validation set:</b> {people} people of {html.escape(source)} '
            f"({set_name} keypoints; shards {where}): "
            '<span class="warning">rendered figures, not photographs: accuracy here says little '
            "about real pictures.</span></p>"
        )
    if source:
        return (
            f'<p class="data"><b>Validation set:</b> {people} people of {html.escape(_shown_source(source))} '
            f"({set_name} keypoints; the validation split, shards {where}).</p>"
        )
    # The KFP component does not pass the data's source to evaluate (pipeline/ops.py evaluate_op):
    # the report names the shard folders and says it does not know what the people are.
    return (
        f'<p class="data"><b>Validation set:</b> the validation split of {where}, {people} people '
        f"({set_name} keypoints). The evaluation was not told where they came from (rendered figures "
        "or photographs): read its accuracy with that in mind.</p>"
    )


def _floor(values: list[float]) -> float:
    """The axis floor: the nearest 10 % below the smallest value (0 when a value is at or under 10 %)."""
    smallest = min(values, default=0.0)
    return max(0.0, math.floor(100 * smallest / 10 - 1e-9) * 10 / 100)


def _compared(results: dict) -> list[tuple[str, str, dict]]:
    """The per-joint chart's models: the best of ours, the seed's CPM (else its first model scored per
    joint) and BlazePose where scored, as (label, css class, per-joint dict)."""
    chosen = []
    if results["models"]:
        best = max(results["models"], key=lambda n: results["models"][n].get("pckh") or -1)
        chosen.append((f"ours: {best}", "", results["models"][best]["pckh_per_joint"]))
    scored = {
        name: anchor
        for name, anchor in results["anchors"].items()
        if any(v is not None for v in (anchor.get("pckh_per_joint") or {}).values())
    }
    seeds = [n for n, a in scored.items() if results_file.is_seed(a)]
    seeds.sort(key=lambda n: "cpm" not in n)
    if seeds:
        chosen.append(
            (
                results_file.anchor_label(seeds[0], scored[seeds[0]]),
                "seed",
                scored[seeds[0]]["pckh_per_joint"],
            )
        )
    for name, anchor in scored.items():
        if results_file.anchor_source(anchor) == "blazepose":
            chosen.append(
                (results_file.anchor_label(name, anchor), "blazepose", anchor["pckh_per_joint"])
            )
    return chosen


def _per_joint(results: dict, pck_name: str) -> str:
    """Ours beside the seed's per joint, bars from an axis floor that shows the differences, and the
    other variants as a table of numbers."""
    settings = results["settings"]
    joints = list((settings.get("keypoint_set") or {}).get("keypoints") or [])
    chosen = _compared(results)
    if not joints and chosen:
        joints = list(chosen[0][2])
    values = [v for _, _, per in chosen for v in per.values() if v is not None]
    floor = _floor(values)
    span = max(1.0 - floor, 1e-9)
    rows = []
    for joint in joints:
        for i, (label, css, per) in enumerate(chosen):
            value = per.get(joint)
            width = 0 if value is None else CHART_WIDTH * max(0.0, value - floor) / span
            rows.append(
                f"<tr>{'<td>' + html.escape(joint) + '</td>' if i == 0 else '<td></td>'}"
                f'<td>{html.escape(label)}</td><td><span class="{("bar " + css).strip()}" '
                f'data-model="{html.escape(label)}" '
                f'data-joint="{html.escape(joint)}" style="width:{width:.0f}px"></span> '
                f"{_cell(value, 1, 100)}</td></tr>"
            )
    axis = (
        f"<p>Bars: {pck_name} per joint, the axis from {100 * floor:.0f} % (not 0: "
        f"the nearest 10 below the smallest value) to 100 %; – : the model has no such joint.</p>"
        if floor > 0
        else f"<p>Bars: {pck_name} per joint, the axis from 0 to 100 %; – : the model has no such joint.</p>"
    )
    chart = f'{axis}<table class="joint">{"".join(rows)}</table>'
    shown = {label.removeprefix("ours: ") for label, css, _ in chosen if not css}
    others = [name for name in results["models"] if name not in shown]
    if not others:
        return chart
    head = "".join(f"<th>{html.escape(j)}</th>" for j in joints)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(
            f"<td>{_cell(results['models'][name]['pckh_per_joint'].get(j), 1, 100)}</td>"
            for j in joints
        )
        + "</tr>"
        for name in others
    )
    return (
        f"{chart}<p>Our other variants, {pck_name} per joint (%):</p>"
        f"<table><tr><th>model</th>{head}</tr>{body}</table>"
    )


def _accuracy_latency_plot(results: dict, pck_name: str) -> str:
    """Every model of the run (ours, the seed's, BlazePose): latency at 1 thread against the set's PCK,
    as inline SVG with labelled points."""
    points = [(name, "ours", m) for name, m in results["models"].items()] + [
        (results_file.anchor_label(name, a), results_file.anchor_source(a), a)
        for name, a in results["anchors"].items()
    ]
    points = [
        (label, source, m["latency"]["1"]["median_ms"], m.get("pckh"))
        for label, source, m in points
        if m.get("pckh") is not None and m["latency"]["1"].get("median_ms") is not None
    ]
    if not points:
        return ""
    width, height, left, bottom, top, right = 560, 300, 50, 40, 15, 160
    most = max(ms for _, _, ms, _ in points) * 1.1 or 1.0
    floor = _floor([pck for *_, pck in points])
    span = max(1.0 - floor, 1e-9)

    def x(ms):
        return left + (width - left - right) * ms / most

    def y(pck):
        return top + (height - top - bottom) * (1 - (pck - floor) / span)

    colours = {"ours": "#4a7bd0", "seed": "#e6a01e", "blazepose": "#8a8a8a"}
    marks = "".join(
        f'<g class="point" data-model="{html.escape(label)}"><circle cx="{x(ms):.1f}" cy="{y(pck):.1f}" r="4" '
        f'fill="{colours.get(source, "#555")}"/><text x="{x(ms) + 6:.1f}" y="{y(pck) + 4:.1f}" '
        f'font-size="11">{html.escape(label)} ({100 * pck:.1f}, {ms:.1f} ms)</text></g>'
        for label, source, ms, pck in points
    )
    axes = (
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>'
        f'<text x="{left}" y="{height - 8}" font-size="12">latency at 1 thread (ms), 0 to {most:.1f}</text>'
        f'<text x="12" y="{height - bottom}" font-size="12" transform="rotate(-90 12 {height - bottom})">'
        f"{html.escape(pck_name)}, {100 * floor:.0f} to 100 %</text>"
    )
    return (
        f"<h2>Accuracy against latency</h2><p>Every model of this run; up and left is better.</p>"
        f'<svg class="accuracy-latency" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{axes}{marks}</svg>'
    )


def _cell(value, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


def _ratio_cell(value) -> str:
    if value is None:
        return "–"
    return f'<span class="{"ok" if value <= 1.0 else "miss"}">{value:.2f}×</span>'


def _size_note(ratio: dict) -> str:
    if not ratio or ratio.get("same_input_size", True):
        return ""
    return f' <small class="miss">({ratio["input_size"]} vs {ratio["seed_input_size"]} px)</small>'


def _photos_section(photos: dict | None, panels: list[dict]) -> str:
    """Real photographs: the seed's CPM (left) and ours (right) on each, with their agreement; a
    picture that cannot judge a model is marked and left out of the means."""
    if not photos:
        return ""
    # photos.evaluate's means, over the pictures judged (a file of before not_judged: all of them)
    found = photos.get("agreement_found") or {}
    means = photos.get("agreement") or {}
    compared = photos.get("joints_compared") or {}
    unjudged = {p["file"]: p["not_judged"] for p in photos["pictures"] if p.get("not_judged")}
    judged = len(photos["pictures"]) - len(unjudged)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_cell(value, 2)} ({compared.get(name, '?')} joints)</td>"
        f"<td>{_cell(found.get(name), 2)}</td></tr>"
        for name, value in means.items()
    )

    def caption(panel):
        reason = unjudged.get(panel["file"])
        if reason:
            return f"{html.escape(panel['file'])}: <b>not judged</b>: {html.escape(reason)}"
        return (
            f"{html.escape(panel['file'])}: agreement {panel['agreement']:.2f} "
            f"({panel.get('joints_compared', '?')} joints), "
            f"{panel['agreement_found']:.2f} (joints the seed finds)"
        )

    figures = "".join(
        f'<figure class="{"not-judged" if panel["file"] in unjudged else "judged"}">'
        f'<img src="{panel["uri"]}" alt="{html.escape(panel["file"])}"><figcaption>'
        f"{caption(panel)}</figcaption></figure>"
        for panel in panels
    )
    unjudged_note = (
        "<p>Not judged (left out of the means): "
        + "; ".join(
            f'<span class="not-judged">{html.escape(f)}: not judged: {html.escape(r)}</span>'
            for f, r in unjudged.items()
        )
        + ".</p>"
        if unjudged
        else ""
    )
    return f"""<h2>Real photographs</h2>
<p>{len(photos["pictures"])} photographs from {html.escape(shown_path(photos["folder"], 1))}
(public domain or CC0, see SOURCE.md there), {judged} judged. Reference: the seed's released
{html.escape(photos["reference"])}. Agreement = PCK@{photos["threshold"]:.1f}:
the share of the joints within {photos["threshold"]:.1f} × the person's size of the reference's, the size being
{html.escape(photos["box"])}. A photograph is not judged where the reference finds too few joints or the
person is too small in the picture for the model's input. Left <span style="color:#1e8ce6">■</span> the seed's, right
<span style="color:#e62828">■</span> ours ({html.escape(photos["drawn_model"] or "")}).</p>
{unjudged_note}
<table><tr><th>model</th><th>mean agreement over the photographs judged (the joints shared with the seed)</th>
<th>over the joints the seed finds (score ≥
{photos.get("found_score", 0.1)})</th></tr>{rows}</table>
<div class="gallery photos">{figures}</div>
"""


def render(results: dict, gallery: list[str], photo_panels: list[dict] = ()) -> str:
    """The HTML report for evaluate's results dict, gallery (data URIs) and real-photograph panels
    (pose.evaluation.photos.evaluate)."""
    settings = results["settings"]
    threads = settings["all_threads"]
    pck_name = html.escape(settings.get("pck_name", "PCKh@0.5"))
    header = (
        f"<tr><th>model</th><th>size MB</th><th>{pck_name}</th>"
        "<th>AP</th><th>AP50</th><th>AP75</th>"
        f"<th>runtime</th><th>1 thread ms (median / p90)</th><th>{threads} threads ms (median / p90)</th>"
        "<th>vs seed: latency 1 thread</th><th>latency all threads</th><th>size</th></tr>"
    )
    rows = []
    for name, model in results["models"].items():
        one, many, ratio = (
            model["latency"]["1"],
            model["latency"]["all"],
            model.get("vs_seed") or {},
        )
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_cell(model['size_bytes'] / 1e6, 2)}</td>"
            f"<td>{_cell(model['pckh'], 1, 100)}</td><td>{_cell(model['ap'], 3)}</td>"
            f"<td>{_cell(model['ap50'], 3)}</td><td>{_cell(model['ap75'], 3)}</td>"
            f"<td>{model['latency']['runtime']}</td>"
            f"<td>{_cell(one['median_ms'], 2)} / {_cell(one['p90_ms'], 2)}</td>"
            f"<td>{_cell(many['median_ms'], 2)} / {_cell(many['p90_ms'], 2)}</td>"
            f"<td>{_ratio_cell(ratio.get('latency_1_thread'))}{_size_note(ratio)}</td>"
            f"<td>{_ratio_cell(ratio.get('latency_all_threads'))}</td><td>{_ratio_cell(ratio.get('size'))}</td></tr>"
        )
    for name, anchor in results["anchors"].items():
        one, many = anchor["latency"]["1"], anchor["latency"]["all"]
        role = "reference" if results_file.is_seed(anchor) else "outside anchor (no family of ours)"
        rows.append(
            f'<tr class="anchor"><td>{html.escape(results_file.anchor_label(name, anchor))}</td>'
            f"<td>{_cell(anchor['size_bytes'] / 1e6, 2)}</td>"
            f"<td>{_cell(anchor.get('pckh'), 1, 100)}</td><td>{_cell(anchor.get('ap'), 3)}</td>"
            f"<td>{_cell(anchor.get('ap50'), 3)}</td><td>{_cell(anchor.get('ap75'), 3)}</td>"
            f"<td>{anchor['latency']['runtime']}</td>"
            f"<td>{_cell(one['median_ms'], 2)} / {_cell(one['p90_ms'], 2)}</td>"
            f"<td>{_cell(many['median_ms'], 2)} / {_cell(many['p90_ms'], 2)}</td><td colspan=3>{role}</td></tr>"
        )

    images = "".join(
        f'<img src="{uri}" alt="validation person {i}">' for i, uri in enumerate(gallery)
    )
    anchors_note = (
        f"Anchors from {html.escape(shown_path(settings['anchors_dir'], 1))} "
        f"({html.escape(', '.join(results_file.anchor_label(n, a) for n, a in results['anchors'].items()))}), "
        "scored on the same people: the seed's released models and any outside model beside them "
        "(BlazePose GHUM full, MediaPipe's, the phone model most users would pick instead); the ratios "
        "are against the seed's only. Every "
        "model is fed in its own contract (the seed's: BGR 0..255 in, its own channel order out; see "
        "each model's .json) and its heatmaps compared by joint name; a model of another keypoint set "
        "is scored on the joints both sets name. A latency ratio across different "
        "input sizes is marked: it is not like with like."
        if results["anchors"]
        else "No seed models measured (no anchors folder)."
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Pose model evaluation</title><style>{_CSS}</style></head>
<body>
<h1>Pose model evaluation</h1>
{_data_sentence(settings)}
<p>Decoding: refine={html.escape(settings["refine"])}, flip test={"on" if settings["flip_test"] else "off"};
latency: LiteRT, median and p90 of {settings["latency_runs"]} runs after warm-up, 1 and {threads} threads, with
XNNPACK and with LiteRT's builtin kernels; each model shows the faster (its runtime column).
Ratios are ours ÷ the seed's model of the same family, measured in this run (≤ 1 is better).</p>
<h2>Models</h2>
<table>{header}{"".join(rows)}</table>
<p>{anchors_note}</p>
{_accuracy_latency_plot(results, pck_name)}
<h2>{pck_name} per joint: ours beside the seed's</h2>
{_per_joint(results, pck_name)}
<h2>Gallery ({html.escape(settings["gallery_model"] or "")})</h2>
<p><span style="color:#3cc83c">■</span> true skeleton, <span style="color:#e62828">■</span> predicted.</p>
<div class="gallery">{images}</div>
{_photos_section(results.get("photos"), list(photo_panels))}</body></html>
"""
