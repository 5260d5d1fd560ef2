"""Prometheus metrics, in a registry of their own (several servers may live in one test process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.num_running = Gauge("arborlm_num_running_reqs", "Requests in the running batch", registry=r)
        self.num_waiting = Gauge("arborlm_num_waiting_reqs", "Requests waiting for admission", registry=r)
        self.kv_used = Gauge("arborlm_kv_used_tokens", "KV slots in use (requests + radix tree)", registry=r)
        self.kv_usage = Gauge("arborlm_kv_cache_usage_ratio", "Used / total KV slots", registry=r)
        self.cache_hit_rate = Gauge("arborlm_cache_hit_rate", "Prompt tokens served from the radix cache",
                                    registry=r)
        self.prompt_tokens = Counter("arborlm_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("arborlm_generation_tokens", "Tokens generated", registry=r)
        self.cached_tokens = Counter("arborlm_cached_prompt_tokens", "Prompt tokens hit in the cache",
                                     registry=r)
        self.requests = Counter("arborlm_requests", "Finished requests", ["finish_reason"], registry=r)
        self.ttft = Histogram("arborlm_time_to_first_token_seconds", "Time to first token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("arborlm_inter_token_latency_seconds", "Time between streamed outputs",
                             buckets=_ITL_BUCKETS, registry=r)
        self.e2e = Histogram("arborlm_e2e_request_latency_seconds", "End-to-end request latency",
                             buckets=_LATENCY_BUCKETS, registry=r)

    def set_scheduler_stats(self, stats: dict[str, Any]) -> None:
        self.num_running.set(stats.get("num_running", 0))
        self.num_waiting.set(stats.get("num_waiting", 0))
        used, total = stats.get("kv_used_tokens", 0), stats.get("kv_total_tokens", 0)
        self.kv_used.set(used)
        self.kv_usage.set(used / total if total else 0.0)
        self.cache_hit_rate.set(stats.get("cache_hit_rate", 0.0) or 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
