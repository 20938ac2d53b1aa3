"""Drawing skeletons (cv2) and the self-contained HTML report the evaluate step writes (inline CSS,
images as base64 JPEG), which opens in the KFP UI."""

import base64
import html

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
"""


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
    """Real photographs: the seed's CPM (left) and ours (right) on each, with their agreement."""
    if not photos:
        return ""
    found = photos.get("agreement_found") or {}
    compared = photos.get("joints_compared") or {}
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_cell(value, 2)} ({compared.get(name, '?')} joints)</td>"
        f"<td>{_cell(found.get(name), 2)}</td></tr>"
        for name, value in photos["agreement"].items()
    )
    figures = "".join(
        f'<figure><img src="{panel["uri"]}" alt="{html.escape(panel["file"])}"><figcaption>'
        f"{html.escape(panel['file'])}: agreement {panel['agreement']:.2f} "
        f"({panel.get('joints_compared', '?')} joints), "
        f"{panel['agreement_found']:.2f} (joints the seed finds)</figcaption></figure>"
        for panel in panels
    )
    return f"""<h2>Real photographs</h2>
<p>{len(photos["pictures"])} photographs from {html.escape(photos["folder"])} (public domain or CC0, see SOURCE.md
there). Reference: the seed's released {html.escape(photos["reference"])}. Agreement = PCK@{photos["threshold"]:.1f}:
the share of the joints within {photos["threshold"]:.1f} × the person's size of the reference's, the size being
{html.escape(photos["box"])}. Left <span style="color:#1e8ce6">■</span> the seed's, right
<span style="color:#e62828">■</span> ours ({html.escape(photos["drawn_model"] or "")}).</p>
<table><tr><th>model</th><th>mean agreement (the joints shared with the seed)</th>
<th>over the joints the seed finds (score ≥
{photos.get("found_score", 0.1)})</th></tr>{rows}</table>
<div class="gallery photos">{figures}</div>
"""


def render(results: dict, gallery: list[str], photo_panels: list[dict] = ()) -> str:
    """The HTML report for evaluate's results dict, gallery (data URIs) and real-photograph panels
    (pose.evaluation.photos.evaluate)."""
    settings = results["settings"]
    threads = settings["all_threads"]
    header = (
        f"<tr><th>model</th><th>size MB</th><th>{html.escape(settings.get('pck_name', 'PCKh@0.5'))}</th>"
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

    joint_rows = []
    joint_names = next(iter(results["models"].values()), {}).get("pckh_per_joint", {})
    for joint in joint_names:
        bars = []
        for name, model in results["models"].items():
            value = model["pckh_per_joint"][joint]
            width = 0 if value is None else 180 * value
            bars.append(
                f'<td>{html.escape(name)}</td><td><span class="bar" style="width:{width:.0f}px"></span> '
                f"{_cell(value, 1, 100)}</td>"
            )
        joint_rows.append(
            "".join(
                f"<tr>{'<td>' + joint + '</td>' if i == 0 else '<td></td>'}{bar}</tr>"
                for i, bar in enumerate(bars)
            )
        )

    images = "".join(
        f'<img src="{uri}" alt="validation person {i}">' for i, uri in enumerate(gallery)
    )
    anchors_note = (
        f"Anchors from {html.escape(str(settings['anchors_dir']))} "
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
<p>{settings["num_people"]} validation people from {html.escape(", ".join(settings["data_dirs"]))};
decoding: refine={html.escape(settings["refine"])}, flip test={"on" if settings["flip_test"] else "off"};
latency: LiteRT, median and p90 of {settings["latency_runs"]} runs after warm-up, 1 and {threads} threads, with
XNNPACK and with LiteRT's builtin kernels; each model shows the faster (its runtime column).
Ratios are ours ÷ the seed's model of the same family, measured in this run (≤ 1 is better).</p>
<h2>Models</h2>
<table>{header}{"".join(rows)}</table>
<p>{anchors_note}</p>
<h2>{html.escape(settings.get("pck_name", "PCKh@0.5"))} per joint</h2>
<table class="joint">{"".join(joint_rows)}</table>
<h2>Gallery ({html.escape(settings["gallery_model"] or "")})</h2>
<p><span style="color:#3cc83c">■</span> true skeleton, <span style="color:#e62828">■</span> predicted.</p>
<div class="gallery">{images}</div>
{_photos_section(results.get("photos"), list(photo_panels))}</body></html>
"""
