"""Screenshots of `maskc explore` for the README, taken in the headless chromium the tests use.

Usage: python docs/explorer_screenshot.py SPEC OUT.png [--n N] [--head H] [--bad-line K TEXT]
With --head, head H is selected in the per-head controls; with --bad-line, line K of the spec is
replaced by TEXT once the page is drawn, to show an error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from maskc.explore.server import serving

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import chromium  # the tests' browser set-up


def settled(driver: object) -> bool:
    script = "return document.body.dataset.pending === '0' && document.getElementById('status').textContent === 'ready'"
    return bool(driver.execute_script(script))  # type: ignore[attr-defined]


def wait(driver: object, seconds: float = 120) -> None:
    time.sleep(0.6)
    deadline = time.monotonic() + seconds
    while not settled(driver) and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("out")
    parser.add_argument("--n", type=int)
    parser.add_argument("--head", type=int)
    parser.add_argument("--bad-line", nargs=2, metavar=("K", "TEXT"))
    parser.add_argument("--size", default="1500x1240")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    text = Path(args.spec).read_text()
    with (
        serving(text, Path(args.spec).name) as server,
        tempfile.TemporaryDirectory() as downloads,
        chromium(Path(downloads), width, height) as driver,
    ):
        driver.get(server.url)
        wait(driver)
        if args.n:
            driver.execute_script(f"setN({args.n}); refreshFromYaml();")
            wait(driver)
        if args.head is not None:
            script = (
                "const s = document.getElementById('head-select'); s.value = arguments[0];"
                " s.dispatchEvent(new Event('change'));"
            )
            driver.execute_script(script, str(args.head))
        if args.bad_line:
            lines = text.splitlines()
            lines[int(args.bad_line[0]) - 1] = args.bad_line[1]
            script = (
                "const e = document.getElementById('yaml'); e.value = arguments[0];"
                " e.dispatchEvent(new Event('input'));"
            )
            driver.execute_script(script, "\n".join(lines) + "\n")
            wait(driver)
        driver.save_screenshot(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
