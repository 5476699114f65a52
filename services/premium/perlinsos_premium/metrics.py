"""Premium's metric instruments (OpenTelemetry metrics API; the provider is set up in shared).

Labels are funding lines, periods, thresholds: never a person.
"""

from __future__ import annotations

from opentelemetry import metrics

meter = metrics.get_meter("perlinsos.premium")

budget_crossings = meter.create_counter(
    "perlinsos_premium_budget_crossings",
    unit="1",
    description="APBD allocation thresholds (80%, 100%) crossed, per funding line and year",
)
summaries_published = meter.create_counter(
    "perlinsos_premium_summaries_published",
    unit="1",
    description="premium.summaries.v1 revisions written to the outbox, by status",
)
adjustments_booked = meter.create_counter(
    "perlinsos_premium_adjustments",
    unit="1",
    description="Per-participant corrections of closed months booked in an open month",
)
months_closed = meter.create_counter(
    "perlinsos_premium_months_closed",
    unit="1",
    description="Line-months frozen by a month close",
)
close_duration = meter.create_histogram(
    "perlinsos_premium_month_close_duration",
    unit="s",
    description="Time to close a month (bill running covers, freeze, publish)",
)
lapse_risk_lines = meter.create_up_down_counter(
    "perlinsos_premium_lapse_risk_lines",
    unit="1",
    description="Funding lines flagged at lapse risk at the last summary publication",
)
due_dates_missed = meter.create_counter(
    "perlinsos_premium_due_dates_missed",
    unit="1",
    description="Contribution months of a funding line unpaid past their due date, counted "
    "the day each is first missed (participants lose cover after 3 consecutive ones)",
)
