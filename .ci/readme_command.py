"""Print one of the two Quick start commands of README.md: `main` (first) or `test` (second).

The README is the single source of truth; CI runs the command this prints.
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_commands(text: str) -> list[str]:
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", section, flags=re.S)


if __name__ == "__main__":
    commands = quick_start_commands(README.read_text())
    if len(commands) != 2:
        sys.exit(f"README Quick start must hold exactly two commands, found {len(commands)}")
    print(commands[{"main": 0, "test": 1}[sys.argv[1]]])
