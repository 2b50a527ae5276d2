"""The city reports page at `/reports` (docs/relay.md, "City reports"): a month and a ward picked
by a GET form, the figures of fleet/relay/reports.py as tables and bar charts (fleet/web/charts.py
`bars`), a link to the CSV. Texts from the catalogue (English and Vietnamese)."""

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from fleet.api.deps import RuntimeDep
from fleet.models import Device
from fleet.relay import reports
from fleet.web import charts, i18n
from fleet.web.pages import templates, viewer_of

router = APIRouter(include_in_schema=False)


def _charts(report: dict[str, Any], language: str) -> list[tuple[str, Markup]]:
    def t(key: str) -> str:
        return i18n.translate(language, key)

    rows = report["wards"]
    names = [row["ward"] or t("reports.no_ward") for row in rows]
    made = [
        (t("reports.camera_events"), charts.bars(names, [
            (t(f"reports.category.{c}"), [row["camera_events"][c] for row in rows]) for c in reports.CAMERA_CATEGORIES],
            title=t("reports.camera_events"))),
        (t("reports.wifi"), charts.bars(names, [
            (t("reports.wifi.accesses"), [row["wifi"]["accesses"] for row in rows]),
            (t("reports.wifi.user_days"), [row["wifi"]["user_days"] for row in rows])], title=t("reports.wifi"))),
        (t("reports.availability"), charts.bars(names, [
            (t("reports.availability.pct"), [row["availability"]["pct"] or 0.0 for row in rows])],
            title=t("reports.availability"), unit="%")),
        (t("reports.broadcasts"), charts.bars(names, [
            (t("reports.broadcasts.scheduled"), [row["broadcasts"]["scheduled"] for row in rows]),
            (t("reports.broadcasts.played"), [row["broadcasts"]["played"] for row in rows])],
            title=t("reports.broadcasts"))),
    ]
    return [(title, Markup(svg)) for title, svg in made]  # charts.bars escapes every text


@router.get("/reports")
async def reports_page(request: Request, runtime: RuntimeDep,
                       month: Annotated[str, Query(max_length=16)] = "",
                       ward: Annotated[str, Query(max_length=80)] = "") -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    tz = ZoneInfo(runtime.settings.timezone)
    language = i18n.language_of(request)
    error = None
    try:
        chosen = reports.parse_month(month, tz) if month else None
    except reports.ReportError:
        error = i18n.translate(language, "reports.bad_month")
        chosen = None
    if chosen is None:
        today = datetime.now(UTC).astimezone(tz)
        chosen = reports.Month(today.year, today.month, tz)
    report = await reports.city_report(chosen, ward or None)
    wards = sorted({str(w) for w in await Device.all().distinct().values_list("ward", flat=True) if w})
    query = {"month": chosen.label, **({"ward": ward} if ward else {})}
    return templates.TemplateResponse(request, "reports.html", {
        "viewer": viewer, "report": report, "charts": _charts(report, language), "wards": wards,
        "chosen": {"month": chosen.label, "ward": ward}, "error": error, "categories": reports.CAMERA_CATEGORIES,
        "category_names": {c: i18n.translate(language, f"reports.category.{c}") for c in reports.CAMERA_CATEGORIES},
        "csv_url": "/api/reports/city.csv?" + urlencode(query), "json_url": "/api/reports/city?" + urlencode(query),
        "tz": tz.key})
