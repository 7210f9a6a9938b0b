"""``protrnn report``: evaluation, diagnostics and training runs -> one self-contained HTML report and its figures.

:mod:`~protrnn.report.inputs` loads and checks what the other commands wrote, :mod:`~protrnn.report.figures` draws,
:mod:`~protrnn.report.html` assembles ``report.html``. No module here imports torch: a report is built from files.
"""

from __future__ import annotations

from protrnn.report.html import ReportResult, build_report
from protrnn.report.inputs import ReportInputs, load_inputs

__all__ = ["ReportInputs", "ReportResult", "build_report", "load_inputs"]
