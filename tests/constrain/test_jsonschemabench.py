"""A fixed sample of JSONSchemaBench: honest compilation covers at least what plain outlines-core
converts, every failure names a keyword (or a size limit), and labelled instances agree.
The full run is `arborlm.constrain.coverage.coverage_report` (minutes, not for the suite)."""

from __future__ import annotations

import re

from arborlm.constrain import UnsupportedSchema, schema_to_regex
from arborlm.constrain.coverage import SUBSETS, instance_agreement, load_subset, plain_converts

PER_SUBSET = 6


def test_sample_coverage_and_labelled_instances(shared_data):
    ours = plain = agree = total = bad = 0
    for subset in SUBSETS:
        rows = load_subset(shared_data, subset)
        sample = rows[:: max(1, len(rows) // PER_SUBSET)][:PER_SUBSET]
        for r in sample:
            plain += plain_converts(r["schema"])
            try:
                regex = schema_to_regex(r["schema"])
            except UnsupportedSchema as e:
                assert re.search(r"keyword '[^']+' at \$|too large|unsatisfiable", str(e)), str(e)
                continue
            ours += 1
            a, n, b = instance_agreement(regex, r.get("tests") or [])
            agree, total, bad = agree + a, total + n, bad + b
    print(f"\nsample: ours {ours} vs plain outlines-core {plain} of {PER_SUBSET * len(SUBSETS)}; "
          f"labelled agreement {agree}/{total}; accepted-but-invalid {bad}")
    # Plain outlines-core "converts" some schemas by silently dropping keywords (minProperties,
    # uniqueItems, length next to pattern, overlapping oneOf); we enforce those through sound
    # narrowings (schema.py's table) and must still cover at least as much.
    assert ours >= plain
    assert bad == 0
    assert total == 0 or agree / total >= 0.6
