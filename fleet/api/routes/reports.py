"""City reports (docs/relay.md, "City reports"): `GET /api/reports/city` (JSON) and
`GET /api/reports/city.csv`, permission `read`. The figures are fleet/relay/reports.py's."""

import csv
import io
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response

from fleet.api.deps import LOGGED_IN, Reader, RuntimeDep
from fleet.relay import reports

router = APIRouter(prefix="/api/reports", tags=["reports"], dependencies=[LOGGED_IN])
MonthQuery = Annotated[str, Query(max_length=16,
                                  description="a month of the city's calendar (FLEET_TIMEZONE): YYYY-MM")]
WardQuery = Annotated[str | None, Query(max_length=80, description="one ward only")]


async def report_of(runtime: RuntimeDep, month: str, ward: str | None) -> dict[str, Any]:
    try:
        chosen = reports.parse_month(month, ZoneInfo(runtime.settings.timezone))
    except reports.ReportError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    return await reports.city_report(chosen, ward)


@router.get("/city", responses={422: {"description": "month is not YYYY-MM"}})
async def city(_: Reader, runtime: RuntimeDep, month: MonthQuery, ward: WardQuery = None) -> dict[str, Any]:
    """The month's figures per ward (each ward that has a device not decommissioned, or `ward`) and
    in all (`totals`): camera events by category, every event type's starts, lamp failures, wifi
    accesses and user-days, device availability, lighting hours and energy, broadcast receipts."""
    return await report_of(runtime, month, ward)


@router.get("/city.csv", response_class=Response, responses={
    200: {"content": {"text/csv": {}}}, 422: {"description": "month is not YYYY-MM"}})
async def city_csv(_: Reader, runtime: RuntimeDep, month: MonthQuery, ward: WardQuery = None) -> Response:
    """The same figures as CSV (UTF-8, RFC 4180, a header): `month, ward, figure, value`, one row per
    ward and figure, then the totals with ward `*`."""
    report = await report_of(runtime, month, ward)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(reports.csv_rows(report))
    return Response(buffer.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="city-report-{report["month"]}.csv"'})
