"""Multi-step distillation: the :class:`AssistantChain` callback, its runner, manifest and configuration.

* :mod:`~lit_kd.callbacks.chain.callback`: :class:`AssistantChain`, the callback users configure;
* :mod:`~lit_kd.callbacks.chain.runner`: :class:`ChainRunner`, the orchestration across Trainer runs;
* :mod:`~lit_kd.callbacks.chain.manifest`: ``chain.json`` (:class:`ChainManifest`, :class:`StepRecord`);
* :mod:`~lit_kd.callbacks.chain.config`: :class:`ChainStep`, the YAML format, config data to objects.
"""

from lit_kd.callbacks.chain.callback import AssistantChain, run_chain
from lit_kd.callbacks.chain.config import ChainConfigError, ChainStep, load_chain_config
from lit_kd.callbacks.chain.manifest import ChainManifest, StepRecord
from lit_kd.callbacks.chain.runner import ChainRunner

__all__ = ["AssistantChain", "ChainStep", "StepRecord", "ChainRunner", "ChainManifest", "ChainConfigError",
           "load_chain_config", "run_chain"]
