"""cartwise HTTP serving: the BentoML service (`serving.service:Cartwise`) and its parts.

Modules import Feast / torch / BentoML lazily where they can: `bentoml serve` imports
`serving.service`, and the service loads stores and models in its `__init__`, not at import.
"""
