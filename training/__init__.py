"""Model training for cartwise: query intent (MiniLM fine-tune), CTR ranker (DCN-v2),
Online Retail next-purchase ranking, evaluation reports and the BentoML model store.

Nothing heavy is imported here so `python -m training.<job> --help` stays fast.
"""
