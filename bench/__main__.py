"""``python -m bench`` (what ``scripts/bench`` runs): measure, print the table, write the JSON."""

from __future__ import annotations

import json
import sys

from bench import options, report
from bench.run import Bench


def main(argv: list[str]) -> int:
    opts = options.parse(argv)
    result = Bench(opts).run()
    opts.json_out.parent.mkdir(parents=True, exist_ok=True)
    opts.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.table(result))
    for profiled in (result.get("profile") or {}).values():
        print(f"\nprofile of {profiled['label']}: {profiled['samples']} samples, raw stacks in {profiled['raw']}")
        print(f"  {'self time (the function itself)':52} | the platform's functions, inclusive")
        for own, inc in zip(profiled["self_top"][:15], profiled["platform_inclusive"][:15], strict=False):
            print(f"  {own['percent']:5.1f}%  {own['name'][:45]:45} | {inc['percent']:5.1f}%  {inc['name'][:60]}")
    print(f"\nJSON: {opts.json_out}")
    if result.get("logs"):
        print(f"logs: {result['logs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
