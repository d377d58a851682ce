"""The building blocks of every retain report: one self-contained HTML page.

Figures are matplotlib PNGs and example images are PNG thumbnails, both embedded as
base64, so a report opens with no network and no other file. Every part of a page is a
`<section>` with a stable id (`accuracy-matrix`, `metrics`, `config`, ...) listed in the
page's navigation bar; the browser test looks them up by those ids.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import yaml


def pct(v: float) -> str:
    """A score as a percentage with one decimal ("-0.0" shown as "0.0")."""
    text = f"{100 * v:.1f}"
    return "0.0" if text == "-0.0" else text


def esc(text) -> str:
    return html.escape(str(text))


# ---- figures -----------------------------------------------------------------------
def plt():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt().close(fig)
    return buf.getvalue()


def image_png(image: np.ndarray, size: int = 96) -> bytes:
    """A uint8 image (H, W) or (H, W, C) as a PNG thumbnail `size` pixels on its long side."""
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    im = Image.fromarray(a.astype(np.uint8))
    scale = size / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.NEAREST if scale >= 1 else Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_figures(folder: Path, figures: dict[str, bytes]) -> None:
    """Also write each figure as `folder/<name>.png`, for papers and slides."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in figures.items():
        (folder / f"{name}.png").write_bytes(data)


# ---- HTML --------------------------------------------------------------------------
def figure(title: str, data: bytes) -> str:
    b64 = base64.b64encode(data).decode()
    return (f"<figure><img alt='{esc(title)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{esc(title)}</figcaption></figure>")


def figures(items: list[tuple[str, bytes]]) -> str:
    return "<div class='grid'>" + "".join(figure(t, d) for t, d in items) + "</div>"


class Estimate(tuple):
    """A score with its 95% interval: (value, low, high); low and high None when unknown.
    `noise` marks a difference whose interval holds zero."""

    def __new__(cls, value, low=None, high=None, noise: bool | None = None):
        self = super().__new__(cls, (value, low, high))
        self.noise = noise
        return self

    @property
    def value(self):
        return self[0]

    @property
    def interval(self):
        return None if self[1] is None else (self[1], self[2])


def cell_text(v) -> str:
    """A table cell as text: floats as percentages, an Estimate as "v [low, high]" (with "≈"
    where a difference is within noise), (mean, spread) tuples as "m ± s", None as "-"."""
    if v is None:
        return "-"
    if isinstance(v, Estimate):
        if v.value is None:
            return "-"
        text = pct(v.value) if v.interval is None else f"{pct(v.value)} [{pct(v[1])}, {pct(v[2])}]"
        return text + (" ≈" if v.noise else "")
    if isinstance(v, tuple):
        return f"{pct(v[0])} ± {pct(v[1])}"
    return pct(v) if isinstance(v, float) else str(v)


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table of `cell_text` cells."""
    def td(v):  # numbers right-aligned, text left
        number = v is None or isinstance(v, (int, float, tuple)) and not isinstance(v, bool)
        return f"<td class='n'>{esc(cell_text(v))}</td>" if number else f"<td>{esc(cell_text(v))}</td>"

    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(td(v) for v in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def gallery(items: list[tuple[bytes, list[str]]]) -> str:
    """Example images, each with caption lines (label, answer, ...)."""
    cells = []
    for data, lines in items:
        b64 = base64.b64encode(data).decode()
        caption = "<br>".join(esc(x) for x in lines)
        cells.append(f"<figure class='example'><img alt='{esc(lines[0] if lines else 'example')}' "
                     f"src='data:image/png;base64,{b64}'><figcaption>{caption}</figcaption></figure>")
    return "<div class='gallery'>" + "".join(cells) + "</div>"


def config_section(folder: Path) -> tuple[str, str, str]:
    """The resolved config (config.yaml) with its versions and seed pulled out into a table."""
    path = folder / "config.yaml"
    if not path.exists():
        return ("config", "Resolved config and versions", "<p>no config.yaml in this folder</p>")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        data = {}
    body = ""
    versions = data.get("versions") if isinstance(data, dict) else None
    if isinstance(versions, dict):
        rows = [["seed", data.get("seed", "-")]] + [[k, v] for k, v in versions.items()]
        body += table(["", "version"], rows)
    body += f"<pre>{esc(text)}</pre>"
    return ("config", "Resolved config and versions", body)


STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1f3b57;color:#fff;padding:1em 2em}header h1{margin:0;font-size:1.5em}
header p{margin:.3em 0 0;opacity:.85}
nav{position:sticky;top:0;background:#eef2f6;padding:.5em 2em;border-bottom:1px solid #cdd5de;z-index:1}
nav a{margin-right:1.2em;color:#1f3b57;text-decoration:none;font-size:.92em}
main{padding:0 2em 2em;max-width:1300px}section{margin-top:1.6em;scroll-margin-top:4.5em}
h2{border-bottom:2px solid #1f3b57;padding-bottom:.2em}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td:first-child{white-space:nowrap}th{background:#f3f3f3}
.grid{display:flex;flex-wrap:wrap;gap:1.2em}figure{margin:0}figcaption{font-size:.88em;color:#444}
.grid img{max-width:600px}
.gallery{display:flex;flex-wrap:wrap;gap:.8em}.example{width:120px;font-size:.8em}
.example img{width:96px;height:96px;image-rendering:pixelated;border:1px solid #999}
pre{background:#f7f7f7;padding:1em;overflow:auto;max-height:30em}
.note{color:#555;font-size:.92em}
"""


def page(title: str, sections: list[tuple[str, str, str]], subtitle: str = "") -> str:
    """A whole report: a header, a navigation bar, then one `<section id=...>` per (id, heading, html)."""
    nav = "".join(f"<a href='#{sid}'>{esc(head)}</a>" for sid, head, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{esc(head)}</h2>{content}</section>" for sid, head, content in sections)
    sub = f"<p>{esc(subtitle)}</p>" if subtitle else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='generator' content='retain'><style>{STYLE}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{sub}</header><nav>{nav}</nav><main>{body}</main></body></html>")
