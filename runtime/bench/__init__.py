"""`arborlm bench <workload>`: each runs arborlm and a peer on the same inputs in one process run and
prints one JSON line per result. Workloads register here as "module:function(bench_subparsers)"."""

from __future__ import annotations

import argparse
import importlib

WORKLOADS: dict[str, str] = {
    "offline": "arborlm.runtime.bench.offline:add_offline_parser",
    "json": "arborlm.runtime.bench.json_bench:add_json_parser",
    "serving": "arborlm.runtime.bench.serving:add_serving_parser",
    "scheduler": "arborlm.runtime.bench.scheduler_bench:add_scheduler_parser",
    "programs": "arborlm.runtime.bench.programs:add_programs_parser",
    "peers": "arborlm.runtime.bench.peers:add_peers_parser",
    "quality": "arborlm.runtime.bench.quality:add_quality_parser",
}


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks against a peer, one JSON line per result")
    bench_sub = bench.add_subparsers(dest="workload", required=True)
    for target in WORKLOADS.values():
        module_name, func_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("arborlm"):
                raise
            continue
        getattr(module, func_name)(bench_sub)
