"""`python -m arborlm.runtime.bench.peers_llama_server ARGS`: `python -m llama_cpp.server ARGS`, with
models loaded with `use_extra_bufts = False`.

llama-cpp-python's server has no setting for it (neither a CLI flag nor a config-file field: its
ModelSettings do not carry it, and `Llama(...)` ignores the keyword), and on this machine's CPU the
AMX repacked-weight path crashes on the Q4_1 weights. So this runs the server's own `main()` with
llama.cpp's default model params patched, exactly as `peers_llamacpp.load_llama` loads in-process.
All arguments are llama_cpp.server's.
"""

from __future__ import annotations

from arborlm.runtime.bench.peers_llamacpp import without_extra_buffer_types


def main() -> None:
    from llama_cpp.server.__main__ import main as server_main

    with without_extra_buffer_types():
        server_main()


if __name__ == "__main__":
    main()
