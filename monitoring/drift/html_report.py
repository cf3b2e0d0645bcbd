"""A self-contained HTML page of the drift report, with inline SVG histograms.

The page loads nothing from elsewhere: no scripts, fonts or images, so it can
be opened from disk or attached to a ticket. It is rendered from the same
dictionary as `drift-report.json`.
"""

from __future__ import annotations

from html import escape
from typing import Any

SVG_WIDTH = 360
SVG_HEIGHT = 120
REFERENCE_COLOUR = "#4c72b0"
LIVE_COLOUR = "#dd8452"
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.drift { color: #b00020; font-weight: bold; }
.ok { color: #1b7f3b; }
.muted { color: #777; }
.legend span { display: inline-block; width: 0.8em; height: 0.8em; margin: 0 0.3em 0 1em; }
"""


def render_html(report: dict[str, Any]) -> str:
    """Render the report dictionary of `monitoring.drift.report.report_dict` as HTML."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>VisionServe drift report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>VisionServe drift report</h1>",
        f"<p>Generated {escape(report['generated_at'])}.</p>",
        _settings_section(report["settings"]),
        _errors_section(report["errors"]),
        _streams_section(report["streams"]),
    ]
    for version in report["versions"]:
        parts.append(_version_section(version))
    if not report["versions"]:
        parts.append("<p class='muted'>No prediction records in the window.</p>")
    parts.append(_bottleneck_section(report["bottlenecks"]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _settings_section(settings: dict[str, Any]) -> str:
    thresholds = settings["thresholds"]
    rows = [
        ("services", ", ".join(settings["services"])),
        ("window", f"up to {settings['window_max_records']} records, "
         f"at most {settings['window_max_age_seconds']:g} s old (0: any age)"),
        ("minimum samples", str(settings["min_samples"])),
        ("thresholds", f"PSI {thresholds['psi']:g}, KS statistic {thresholds['ks']:g}, "
         f"JS divergence {thresholds['js']:g}"),
        ("features that set the drift flag", ", ".join(settings["drift_features"])),
    ]  # fmt: skip
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<h2>Settings</h2><table>{body}</table>"


def _errors_section(errors: list[str]) -> str:
    if not errors:
        return ""
    items = "".join(f"<li>{escape(error)}</li>" for error in errors)
    return f"<h2>Errors</h2><ul class='drift'>{items}</ul>"


def _streams_section(streams: list[dict[str, Any]]) -> str:
    if not streams:
        return "<h2>Prediction logs</h2><p class='muted'>No prediction log streams found.</p>"
    rows = "".join(
        f"<tr><td>{escape(s['service'])}</td><td>{escape(s['model'])}</td>"
        f"<td>{escape(s['key'])}</td><td>{s['records']}</td><td>{s['malformed']}</td></tr>"
        for s in streams
    )
    header = (
        "<tr><th>service</th><th>model</th><th>stream</th><th>records</th><th>skipped</th></tr>"
    )
    return f"<h2>Prediction logs</h2><table>{header}{rows}</table>"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "." if text else ""


def _verdict_class(verdict: str) -> str:
    return {"drift": "drift", "no drift": "ok"}.get(verdict, "muted")


def _scores_text(scores: dict[str, Any]) -> str:
    parts = []
    for statistic, score in scores.items():
        text = f"{statistic.upper()} {score['value']:.4f} (threshold {score['threshold']:g})"
        if "p_value" in score:
            text += f", p = {score['p_value']:.3g}"
        css = "drift" if score["exceeded"] else "ok"
        parts.append(f"<span class='{css}'>{escape(text)}</span>")
    return "<br>".join(parts)


def _version_section(version: dict[str, Any]) -> str:
    title = f"{version['service']} / {version['model']} version {version['version']}"
    verdict = version["verdict"]
    parts = [
        f"<h2>{escape(title)}</h2>",
        f"<p>Verdict: <span class='{_verdict_class(verdict)}'>{escape(verdict)}</span>. "
        f"{escape(_sentence(version['message']))} Records: {version['samples']}. "
        f"Reference: {escape(version['reference_path'])}.</p>",
    ]
    if not version["features"]:
        return "\n".join(parts)

    parts.append(
        "<p class='legend'>Histograms show the share of each sample per bin:"
        f"<span style='background:{REFERENCE_COLOUR}'></span>reference"
        f"<span style='background:{LIVE_COLOUR}'></span>live</p>"
    )
    rows = ["<tr><th>feature</th><th>scores</th><th>values</th><th>histogram</th></tr>"]
    for feature in version["features"]:
        counted = "" if feature["counts_for_drift"] else " <span class='muted'>(not counted)</span>"
        scores = _scores_text(feature["scores"]) or escape(feature["note"])
        rows.append(
            f"<tr><td>{escape(feature['feature'])}{counted}</td><td>{scores}</td>"
            f"<td>reference {feature['reference_count']}<br>live {feature['live_count']}</td>"
            f"<td>{histogram_svg(feature['histogram'])}</td></tr>"
        )
    labels = version["predicted_class"]
    if labels:
        counted = "" if labels["counts_for_drift"] else " <span class='muted'>(not counted)</span>"
        scores = _scores_text(labels["scores"]) or escape(labels["note"])
        rows.append(
            f"<tr><td>predicted_class{counted}</td><td>{scores}</td>"
            f"<td>live {labels['live_count']}</td>"
            f"<td>{label_bars_svg(labels['reference_shares'], labels['live_shares'])}</td></tr>"
        )
    parts.append(f"<table>{''.join(rows)}</table>")
    return "\n".join(parts)


def _bars_svg(pairs: list[tuple[float, float]], captions: tuple[str, str]) -> str:
    """Draw a reference and a live bar per bin, scaled to the largest share."""
    top = max((max(pair) for pair in pairs), default=0.0) or 1.0
    plot_height = SVG_HEIGHT - 20
    slot = SVG_WIDTH / max(len(pairs), 1)
    bars = []
    for index, (reference, live) in enumerate(pairs):
        for offset, (share, colour) in enumerate(
            ((reference, REFERENCE_COLOUR), (live, LIVE_COLOUR))
        ):
            height = plot_height * share / top
            x = index * slot + offset * slot / 2
            bars.append(
                f"<rect x='{x:.1f}' y='{plot_height - height:.1f}' width='{slot / 2:.1f}' "
                f"height='{height:.1f}' fill='{colour}'/>"
            )
    left, right = (escape(caption) for caption in captions)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{SVG_WIDTH}' height='{SVG_HEIGHT}' "
        f"role='img'>{''.join(bars)}"
        f"<line x1='0' y1='{plot_height}' x2='{SVG_WIDTH}' y2='{plot_height}' stroke='#888'/>"
        f"<text x='0' y='{SVG_HEIGHT - 4}' font-size='11'>{left}</text>"
        f"<text x='{SVG_WIDTH}' y='{SVG_HEIGHT - 4}' font-size='11' "
        f"text-anchor='end'>{right}</text>"
        "</svg>"
    )


def histogram_svg(data: dict[str, Any]) -> str:
    if not data["edges"]:
        return "<span class='muted'>no values</span>"
    pairs = list(zip(data["reference"], data["live"], strict=True))
    return _bars_svg(pairs, (f"{data['edges'][0]:.4g}", f"{data['edges'][-1]:.4g}"))


def label_bars_svg(reference: dict[str, float], live: dict[str, float]) -> str:
    """Draw the label shares, most frequent reference labels first, at most 30 labels."""
    labels = sorted(set(reference) | set(live), key=lambda label: -reference.get(label, 0.0))
    drawn_labels = labels[:30]
    pairs = [(reference.get(label, 0.0), live.get(label, 0.0)) for label in drawn_labels]
    caption = f"{len(drawn_labels)} of {len(labels)} labels" if len(labels) > 30 else ""
    first_labels = ", ".join(drawn_labels[:3]) + (" ..." if len(drawn_labels) > 3 else "")
    return _bars_svg(pairs, (first_labels, caption))


def _bottleneck_section(bottlenecks: dict[str, Any]) -> str:
    parts = [
        "<h2>Performance bottlenecks</h2>",
        f"<p>Mean time per request stage over the last {escape(bottlenecks['window'])}, "
        "from visionserve_stage_duration_seconds in Prometheus.</p>",
    ]
    if bottlenecks["note"]:
        parts.append(f"<p class='muted'>{escape(bottlenecks['note'])}</p>")
    for item in bottlenecks["models"]:
        rows = "".join(
            f"<tr><td>{escape(stage['stage'])}</td><td>{stage['mean_seconds'] * 1000:.2f}</td>"
            f"<td>{stage['share']:.0%}</td></tr>"
            for stage in item["stages"]
        )
        parts.append(
            f"<h3>{escape(item['service'])} / {escape(item['model'])}</h3>"
            f"<p>Dominant stage: <b>{escape(item['dominant_stage'])}</b>, "
            f"of {item['mean_seconds'] * 1000:.2f} ms per request in all stages.</p>"
            f"<table><tr><th>stage</th><th>mean ms</th><th>share</th></tr>{rows}</table>"
        )
    return "\n".join(parts)
