"""The glue of each study notebook, named after the paper's steps.

A notebook reads like its paper's method section: the markdown, the method as a few calls into
:mod:`medclust` (``DEC(...).fit``, ``case_signatures``, ``q_k``) and the figures. Data
preparation, parameter checks and table building live here, one module per study
(``cdcn``, ``jule3d``, ``deepcluster``, ``cae_dec``, ``population``, ``cohorts``), with the
pieces they share in :mod:`medclust.studies.common`.
"""
