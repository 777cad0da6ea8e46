"""Domain adaptation measured as BloombergGPT did (``lmkit adapt``).

One module per concept: ``experiment`` (the settings, the arms and the resumable run), ``split``
(the held-out split), ``tokenizers`` (the three tokenizers compared) and ``report`` (``adapt.json``,
``report.md``, ``tradeoff.png``). Nothing is re-exported here: import from the module.
"""
