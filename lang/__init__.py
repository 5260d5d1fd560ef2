"""arborlm: a structured-generation runtime for language models.

`import arborlm` is cheap: the runtime (torch, transformers) is imported lazily.
"""

__version__ = "0.1.0"
