"""cartwise feature pipeline, Feast helpers, training sets and the real-time push path.

Modules import Feast / torch lazily: `python -m features.pipeline --help` stays fast.
"""
