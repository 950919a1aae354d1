"""The evaluation suite: Retrain, weight filtering and five baselines, scored on every metric over seeds.

``catalogue`` names the methods and metrics, ``scoring`` scores one network, ``runner`` runs a
benchmark from a frozen :class:`~wfexplain.benchmark.runner.BenchmarkConfig`, ``reports`` writes its
tables, ``store`` keeps every scored result on disk, ``comparison`` turns a benchmark into the
Compare page's tables. Importing this package imports none of them.
"""
