"""Labels read back: the QR code decoded from the PNG (zxing-cpp), the text drawn with Vietnamese
letters (the glyphs differ from the plain ones: DejaVu has them), the PDF sheet's pages counted
(pypdf), and the commands' refusals, all through the real CLI."""

import argparse
from pathlib import Path

import pypdf
import zxingcpp
from PIL import Image, ImageChops, ImageDraw

from provisioning.batch_cli import write_flash_label
from provisioning.labels import (
    FONT_BOLD,
    LABEL_PX,
    SHEET_COLUMNS,
    SHEET_ROWS,
    _font,
    make_label,
    render_label,
    sheet_pages,
)
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import ANSWER_TIMEOUT, run_provision

FLEET = "https://fleet.dongxoai.example"


def qr_texts(image: Image.Image) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(image)]


def test_label_png_opens_the_assets_page(artifacts_dir: Path) -> None:
    out = artifacts_dir / "label.png"  # kept: what a technician sticks on the pole
    result = run_provision("label", "--device", "light-cho-dong-xoai-3fa2", "--asset", "cot-den-tan-phu-0142",
                           "--ward", "Tân Phú", "--date", "2026-11-30", "--public-url", FLEET, "--out", str(out))
    assert result.code == 0, result.err
    assert result.out.startswith(f"label {out}: light-cho-dong-xoai-3fa2  asset cot-den-tan-phu-0142  ward Tân Phú")
    image = Image.open(out)
    assert image.size == LABEL_PX and [round(d) for d in image.info["dpi"]] == [300, 300]  # 50 x 30 mm
    assert qr_texts(image) == [f"{FLEET}/assets/cot-den-tan-phu-0142"]
    # text is drawn right of the QR code: a good share of dark pixels there, none outside the label
    text_area = image.crop((300, 0, LABEL_PX[0], LABEL_PX[1])).convert("L")
    dark = text_area.histogram()[:128]
    dark_pixels = sum(dark)
    assert 2_000 < dark_pixels < text_area.width * text_area.height // 3


def test_without_an_asset_the_qr_code_opens_the_device(tmp_path: Path) -> None:
    label = make_label(FLEET + "/", "sensor-phu-rieng-00a1", ward="Tiến Thành")
    assert qr_texts(render_label(label)) == [f"{FLEET}/devices/sensor-phu-rieng-00a1"]


def test_vietnamese_letters_are_drawn_as_themselves() -> None:
    # a font without them draws the same box for every missing letter, or the bare letter
    font = _font(FONT_BOLD, 24)

    def drawn(text: str) -> Image.Image:
        image = Image.new("L", (200, 40), 255)
        ImageDraw.Draw(image).text((2, 2), text, font=font, fill=0)
        return image

    bare, marked = drawn("Tan Phu a o u"), drawn("Tân Phú ạ ở ữ")
    assert ImageChops.difference(bare, marked).getbbox() is not None
    assert ImageChops.difference(drawn("ạ"), drawn("ở")).getbbox() is not None  # no shared box glyph
    # the two labels differ only by the ward's diacritics: the rendered labels differ
    plain = render_label(make_label(FLEET, "light-x-0001", ward="Tan Phu", date=None))
    viet = render_label(make_label(FLEET, "light-x-0001", ward="Tân Phú", date=None))
    assert ImageChops.difference(plain, viet).getbbox() is not None


def test_labels_sheet_from_a_csv(tmp_path: Path) -> None:
    per_page = SHEET_COLUMNS * SHEET_ROWS
    count = per_page + 3
    rows = ["device,asset,ward,date"] + [f"light-phu-rieng-{i:04x},cot-{i:03d},Phú Riềng,2026-11-30"
                                         for i in range(count)]
    listing = tmp_path / "labels.csv"
    listing.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sheet = tmp_path / "sheet.pdf"
    result = run_provision("labels", "--batch", str(listing), "--out", str(sheet), "--public-url", FLEET,
                           "--png-dir", str(tmp_path / "png"))
    assert result.code == 0, result.err
    assert result.out.strip() == f"labels {sheet}: {count} labels; PNGs in {tmp_path / 'png'}"
    reader = pypdf.PdfReader(sheet)
    assert len(reader.pages) == 2
    width_mm = float(reader.pages[0].mediabox.width) / 72 * 25.4
    height_mm = float(reader.pages[0].mediabox.height) / 72 * 25.4
    assert (round(width_mm), round(height_mm)) == (210, 297)  # A4
    assert len(list((tmp_path / "png").glob("*.png"))) == count
    # every label on the pages is there and readable, in order
    from provisioning.labels import read_label_list
    pages = sheet_pages(read_label_list(listing, FLEET))
    found = [text for page in pages for text in qr_texts(page)]
    assert sorted(found) == sorted(f"{FLEET}/assets/cot-{i:03d}" for i in range(count))


def test_label_refusals(tmp_path: Path) -> None:
    no_url = run_provision("label", "--device", "light-x-0001")
    assert no_url.code == 1 and no_url.err.strip() == (
        "provision: a label's QR code links to the fleet: give --public-url URL (or --fleet)")
    bad = tmp_path / "bad.csv"
    bad.write_text("asset,ward\ncot-1,Tân Phú\n", encoding="utf-8")
    result = run_provision("labels", "--batch", str(bad), "--out", str(tmp_path / "x.pdf"), "--public-url", FLEET)
    assert result.code == 1 and "no device id (the header must be device,asset,ward,date)" in result.err
    assert "Traceback" not in result.err
    date = run_provision("label", "--device", "light-x-0001", "--public-url", FLEET, "--date", "30/11/2026")
    assert date.err.strip() == "provision: --date must be YYYY-MM-DD"


def test_flash_label_dir_writes_each_flashed_boards_label(vboard: VirtualBoard, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    result = run_provision("flash", "--port", vboard.port, "--kind", "sim", "--site", "Chợ Đồng Xoài", "--ward",
                           "Tân Bình", "--offline", "--enrollment-token", "ioc_test-token",
                           "--broker", "127.0.0.1:1883", "--fleet", "http://fleet.example:8000",
                           "--insecure-plaintext", "--answer-timeout", ANSWER_TIMEOUT, "--label-dir", str(labels))
    assert result.code == 0, result.err
    ok, label_line = result.out.splitlines()
    device_id = ok.split()[2]
    assert label_line.startswith(f"label {labels / device_id}.png: {device_id}  ward Tân Bình  ")
    # the QR code opens the device's page on --fleet (no --public-url given)
    assert qr_texts(Image.open(labels / f"{device_id}.png")) == [f"http://fleet.example:8000/devices/{device_id}"]


def test_a_swaps_label_names_the_asset(tmp_path: Path) -> None:
    # `provision swap` runs flash's handler with its own --asset: the label names it and opens its page
    args = argparse.Namespace(label_dir=tmp_path, public_url=FLEET, fleet=None, asset="cot-den-0142")
    line = write_flash_label(args, "light-cot-den-0142-77ab", "Tân Phú")
    assert line is not None and "asset cot-den-0142  ward Tân Phú" in line
    assert qr_texts(Image.open(tmp_path / "light-cot-den-0142-77ab.png")) == [f"{FLEET}/assets/cot-den-0142"]


def test_a_label_dir_without_a_url_is_refused_before_the_board(vboard: VirtualBoard, tmp_path: Path) -> None:
    result = run_provision("flash", "--port", vboard.port, "--kind", "sim", "--site", "x", "--offline",
                           "--enrollment-token", "ioc_test-token", "--broker", "127.0.0.1:1883",
                           "--insecure-plaintext", "--label-dir", str(tmp_path / "labels"))
    assert result.code == 1 and "give --public-url URL (or --fleet)" in result.err
    assert not (vboard.board_dir / "main.py").exists()
