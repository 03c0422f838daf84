"""The report: the run directory as one self-contained HTML page, OUT/report.html."""
