"""CPU and wall seconds per test file from a `TEST_CPU_LOG` run (tests/conftest.py), costliest first.

TEST_CPU_LOG=/tmp/cpu.jsonl bash scripts/test.sh && python scripts/test_cpu_report.py /tmp/cpu.jsonl
"""

from __future__ import annotations

import collections
import json
import sys


def main(path: str, top: int = 30) -> None:
    cpu, wall, count = collections.Counter(), collections.Counter(), collections.Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            name = entry["test"].split("::")[0]
            cpu[name] += entry["cpu_s"]
            wall[name] += entry["wall_s"]
            count[name] += 1
    print(f"{'file':<48} {'tests':>5} {'cpu s':>8} {'wall s':>8}")
    for name, seconds in cpu.most_common(top):
        print(f"{name:<48} {count[name]:>5} {seconds:>8.1f} {wall[name]:>8.1f}")
    total = f"all {len(cpu)} files"
    print(f"{total:<48} {sum(count.values()):>5} {sum(cpu.values()):>8.1f} {sum(wall.values()):>8.1f}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
