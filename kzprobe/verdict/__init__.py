"""From observations to verdicts: pure analysis, the pipeline that applies it, the worker
process that runs it.
"""
