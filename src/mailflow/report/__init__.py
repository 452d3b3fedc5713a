"""The statistics report: ``mailflow report`` and ``/report`` on the metrics listener.

``data`` computes the figures from the store (aggregates only), ``page``
renders them as HTML with plotly.js charts, ``http`` serves the page beside
``/metrics`` under the token rule of ``statistics.report_token``.
"""
