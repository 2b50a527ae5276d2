"""Labels to stick on a pole or a cabinet: device id, asset, ward, date and a QR code.

The QR code opens the asset's page on the fleet (`{fleet}/assets/{asset}`), or the device's page
(`{fleet}/devices/{id}`) when no asset is given, so a technician or an inspector with a phone lands
on what the city knows of the place. A label is 50 x 30 mm at 300 dpi (591 x 354 px), a common
thermal-printer label; a batch is an A4 PDF sheet of 3 x 9 labels per page with thin cut lines.
Text is drawn with DejaVu Sans (Debian: fonts-dejavu-core), which has every Vietnamese letter.
"""

from __future__ import annotations

import csv
import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import qrcode
from PIL import Image, ImageDraw, ImageFont

from provisioning.errors import ProvisionError

DPI = 300
LABEL_MM = (50, 30)
LABEL_PX = (591, 354)  # 50 x 30 mm at 300 dpi
A4_PX = (2480, 3508)  # 210 x 297 mm at 300 dpi
SHEET_COLUMNS, SHEET_ROWS = 3, 9  # 27 labels a page, with room for gaps and a printer's margins
MARGIN = 18  # px inside a label
QR_PX = 270  # about 23 mm: a phone reads it from arm's length
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
FONT_REGULAR, FONT_BOLD = "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"
NO_FONT = ("no DejaVu Sans font found (in /usr/share/fonts/truetype/dejavu): install the Debian package "
           "fonts-dejavu-core; labels need its Vietnamese letters")
CSV_FIELDS = ("device", "asset", "ward", "date")


@dataclass(frozen=True)
class Label:
    device_id: str
    url: str  # what the QR code opens
    asset: str = ""
    ward: str = ""
    date: str = ""  # YYYY-MM-DD, the day the board was flashed

    def line(self) -> str:
        """The label as one line of text (printed after a flash)."""
        parts = [self.device_id, f"asset {self.asset}" if self.asset else "", f"ward {self.ward}" if self.ward else "",
                 self.date, self.url]
        return "  ".join(part for part in parts if part)


def page_url(fleet_url: str, device_id: str, asset: str = "") -> str:
    base = fleet_url.rstrip("/")
    if asset:
        return f"{base}/assets/{quote(asset, safe='')}"
    return f"{base}/devices/{quote(device_id, safe='')}"


def make_label(fleet_url: str, device_id: str, *, asset: str = "", ward: str = "",
               date: datetime.date | None = None) -> Label:
    if not fleet_url.startswith(("http://", "https://")):
        raise ProvisionError(f"the label's link needs the fleet's http(s):// URL (--fleet or --public-url), "
                             f"not {fleet_url!r}")
    day = (date or datetime.date.today()).isoformat()
    return Label(device_id=device_id, url=page_url(fleet_url, device_id, asset), asset=asset, ward=ward, date=day)


def _font_path(name: str) -> Path:
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise ProvisionError(NO_FONT)


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_font_path(name)), size)


def _qr(url: str, size: int) -> Image.Image:
    """The QR code, black on white, its modules a whole number of pixels, quiet zone included."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    code.add_data(url)
    code.make(fit=True)
    modules = code.modules_count + 2 * code.border
    box = max(1, size // modules)
    matrix = code.get_matrix()  # with the border
    image = Image.new("L", (modules * box, modules * box), 255)
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                draw.rectangle((x * box, y * box, (x + 1) * box - 1, (y + 1) * box - 1), fill=0)
    return image


def _fit(draw: ImageDraw.ImageDraw, text: str, font_name: str, size: int, width: int,
         smallest: int) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest font (down to `smallest`) that fits `text` in `width`, else `smallest` wrapped after
    hyphens and spaces."""
    for points in range(size, smallest - 1, -2):
        font = _font(font_name, points)
        if draw.textlength(text, font=font) <= width:
            return font, [text]
    font = _font(font_name, smallest)
    lines: list[str] = []
    for piece in re.split(r"(?<=[- ])", text):  # break after a hyphen or a space
        if lines and draw.textlength(lines[-1] + piece, font=font) <= width:
            lines[-1] += piece
        else:
            lines.append(piece)
    return font, [line.rstrip() for line in lines]


def render_label(label: Label) -> Image.Image:
    """One label, 591 x 354 px (50 x 30 mm at 300 dpi), 8-bit greyscale."""
    image = Image.new("L", LABEL_PX, 255)
    draw = ImageDraw.Draw(image)
    qr = _qr(label.url, QR_PX)
    top = (LABEL_PX[1] - qr.height) // 2
    image.paste(qr, (MARGIN - 8, top))
    left = MARGIN - 8 + qr.width + 10
    width = LABEL_PX[0] - left - MARGIN
    y = MARGIN + 6
    font, lines = _fit(draw, label.device_id, FONT_BOLD, 30, width, 20)
    for line in lines:
        draw.text((left, y), line, font=font, fill=0)
        y += int(font.size * 1.2)
    y += 10
    rows = [("Tài sản", label.asset or "—"), ("Phường/xã", label.ward or "—"), ("Ngày lắp", label.date)]
    caption = _font(FONT_REGULAR, 17)
    for title, value in rows:
        draw.text((left, y), title, font=caption, fill=90)
        y += 21
        value_font, value_lines = _fit(draw, value, FONT_BOLD, 24, width, 16)
        for line in value_lines[:2]:  # a third line would run off the label: 2 lines of 16 px hold ~50 letters
            draw.text((left, y), line, font=value_font, fill=0)
            y += int(value_font.size * 1.2)
        y += 3
    return image


def save_png(label: Label, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    render_label(label).save(path, dpi=(DPI, DPI))
    return path


def sheet_pages(labels: Sequence[Label]) -> list[Image.Image]:
    """A4 pages of labels in reading order, each label framed by a light-grey cut line."""
    per_page = SHEET_COLUMNS * SHEET_ROWS
    gap_x = (A4_PX[0] - SHEET_COLUMNS * LABEL_PX[0]) // (SHEET_COLUMNS + 1)
    gap_y = (A4_PX[1] - SHEET_ROWS * LABEL_PX[1]) // (SHEET_ROWS + 1)
    pages: list[Image.Image] = []
    for start in range(0, len(labels), per_page):
        page = Image.new("L", A4_PX, 255)
        draw = ImageDraw.Draw(page)
        for i, label in enumerate(labels[start:start + per_page]):
            col, row = i % SHEET_COLUMNS, i // SHEET_COLUMNS
            x = gap_x + col * (LABEL_PX[0] + gap_x)
            y = gap_y + row * (LABEL_PX[1] + gap_y)
            page.paste(render_label(label), (x, y))
            draw.rectangle((x - 1, y - 1, x + LABEL_PX[0], y + LABEL_PX[1]), outline=200)
        pages.append(page)
    return pages


def save_sheet(labels: Sequence[Label], path: Path) -> Path:
    """The batch's labels as an A4 PDF (Pillow's PDF writer: one image a page, 300 dpi)."""
    if not labels:
        raise ProvisionError("no labels to put on a sheet")
    pages = sheet_pages(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    pages[0].save(path, "PDF", resolution=DPI, save_all=True, append_images=pages[1:],
                  title="IOC device labels", creator="provision")
    return path


def read_label_list(path: Path, fleet_url: str) -> list[Label]:
    """`provision labels --batch FILE`: a CSV with the header device,asset,ward[,date]."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ProvisionError(f"cannot read {path}: {err}") from err
    labels: list[Label] = []
    for number, row in enumerate(rows, start=2):
        device = (row.get("device") or "").strip()
        if not device:
            raise ProvisionError(f"{path}:{number}: no device id (the header must be {','.join(CSV_FIELDS)})")
        date = (row.get("date") or "").strip()
        try:
            day = datetime.date.fromisoformat(date) if date else None
        except ValueError as err:
            raise ProvisionError(f"{path}:{number}: the date must be YYYY-MM-DD") from err
        labels.append(make_label(fleet_url, device, asset=(row.get("asset") or "").strip(),
                                 ward=(row.get("ward") or "").strip(), date=day))
    if not labels:
        raise ProvisionError(f"{path}: no labels (the header must be {','.join(CSV_FIELDS)})")
    return labels


def write_labels(labels: Iterable[Label], folder: Path) -> list[Path]:
    """One PNG per label, named after the device id."""
    return [save_png(label, folder / f"{label.device_id}.png") for label in labels]
