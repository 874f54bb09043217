"""The self-contained demo: a procedurally generated, direction-paired action dataset
(:mod:`regionvit_video.demo.synthetic_actions`) and the ``make demo`` pipeline (``python -m regionvit_video.demo``)."""
