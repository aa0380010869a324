"""Report: the campaign's results as one self-contained HTML file (verdict first, one section per step)."""

from atomtune.report.html import render_report
from atomtune.report.results import read_results

__all__ = ["read_results", "render_report"]
