"""Backends: `Engine` (in-process), `RuntimeEndpoint` (an `arborlm serve`), `OpenAICompatible`."""
