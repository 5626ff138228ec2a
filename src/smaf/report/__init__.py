"""The workflow's report: the paper's tables and figures from what the pipeline produced.

* :mod:`smaf.report.tables`: Tables 1-5 and per-class IoU as pandas DataFrames (paper numbers
  beside ours on VOC, replicates as mean ± std);
* :mod:`smaf.report.samples`: which images the figures show, and their maps;
* :mod:`smaf.report.plots`: the figures as matplotlib figures (attention in ``jet`` with a colour
  bar, label maps in the VOC palette with a class legend);
* :mod:`smaf.report.curves`: training curves from the stages' history.csv;
* :mod:`smaf.report.figures`: Fig. 1/4 through the teacher's own
  :func:`smaf.cam.class_maps_per_scale` (rule ``figure_scales``);
* :mod:`smaf.report.saved_figures`: Fig. 3 from the seeds' stored maps and Fig. 5 from the
  label folders (rules ``figure_eps_smaf``, ``figure_labels``: no network, no torch);
* :mod:`smaf.report.page`: ``results/report.html`` and the tables' pages (jinja2 templates in
  ``smaf/templates``).
"""

from smaf.report.page import build_report, write_tables

__all__ = ["build_report", "write_tables"]
