"""The measured figures of the fault and container tests: one `FIGURES <test>: key=value ...`
line each.

Each line is printed when the test measures it and again in pytest's summary, so
`just faults` and `just test` show every figure at the end whatever the output capture.
"""

from collections.abc import Callable

Figures = Callable[..., str]
"""The `figures` fixture (tests/conftest.py): figures(key=value, ...) prints one line."""

RECORDED: list[str] = []


def _text(value: object) -> str:
    if isinstance(value, list | tuple | set):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
    return str(value).replace(" ", "_")


def report(test: str, **figures: object) -> str:
    line = f"FIGURES {test}: " + " ".join(f"{k}={_text(v)}" for k, v in figures.items())
    print(line, flush=True)
    RECORDED.append(line)
    return line
