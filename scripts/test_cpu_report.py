"""CPU and wall seconds per test file from a `TEST_CPU_LOG` run (tests/conftest.py), costliest first,
and per xdist worker: when it finished, and how long it then waited for the other (the suite's wall
time is the last worker's).

  TEST_CPU_LOG=/tmp/cpu.jsonl bash scripts/test.sh && python scripts/test_cpu_report.py /tmp/cpu.jsonl
"""

from __future__ import annotations

import collections
import json
import sys


def main(path: str, top: int = 30) -> None:
    cpu, wall, count = collections.Counter(), collections.Counter(), collections.Counter()
    spans: dict[str, list[float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            name = entry["test"].split("::")[0]
            cpu[name] += entry["cpu_s"]
            wall[name] += entry["wall_s"]
            count[name] += 1
            if "end" in entry:
                span = spans.setdefault(entry["worker"], [entry["end"] - entry["wall_s"], entry["end"], 0.0])
                span[0] = min(span[0], entry["end"] - entry["wall_s"])
                span[1] = max(span[1], entry["end"])
                span[2] += entry["cpu_s"]
    print(f"{'file':<48} {'tests':>5} {'cpu s':>8} {'wall s':>8}")
    for name, seconds in cpu.most_common(top):
        print(f"{name:<48} {count[name]:>5} {seconds:>8.1f} {wall[name]:>8.1f}")
    total = f"all {len(cpu)} files"
    print(f"{total:<48} {sum(count.values()):>5} {sum(cpu.values()):>8.1f} {sum(wall.values()):>8.1f}")
    if spans:
        start, end = min(s[0] for s in spans.values()), max(s[1] for s in spans.values())
        for worker, (first, last, seconds) in sorted(spans.items()):
            print(
                f"worker {worker}: tests from {first - start:.0f} s to {last - start:.0f} s, "
                f"{seconds:.0f} CPU s, then waited {end - last:.0f} s"
            )


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
