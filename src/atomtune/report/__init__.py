"""Report: the campaign's results as one self-contained HTML file (verdict first, one section per step)."""

from atomtune.report.html import render_report

__all__ = ["render_report"]
