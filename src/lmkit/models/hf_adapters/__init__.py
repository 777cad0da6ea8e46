"""One adapter per Hugging Face class, beside the families (as torchtitan's state-dict adapters).

Layout: ``base.py`` says what an adapter is (:class:`~lmkit.models.hf_adapters.base.HFAdapter`: the
class, config.json ⇄ ModelConfig, tensor rules, storage facts) and holds the rule engine;
``rope.py`` reads and writes the rotary settings in both transformers spellings; then one module
per class: ``llama``, ``qwen2``, ``gpt2``, ``gpt_neox``, ``bloom`` (decoders), ``bert``, ``roberta``,
``roformer`` (encoders), ``t5``, ``bart`` (encoder-decoders). The registry that maps an architecture or ``model_type`` to
its adapter, and a ModelConfig to the class it exports as, is ``lmkit.models.hf``.
"""
