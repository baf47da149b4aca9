"""Runs hostile cases in one process under a memory limit, each under a time limit (tests/test_hostile.py).

Reads a JSON list of cases from stdin: {"id", "argv"} runs the `maskc` command in process,
{"id", "python"} runs a snippet whose last expression statement assigns `result`. Prints one
JSON line per case as it finishes (so a case that kills the process is named by the last line):
exit code, stdout and stderr tails, wall and CPU seconds, and the exception type of anything
uncaught. The wall limit only catches hangs; the tests bound CPU seconds, which other processes
on a shared machine do not inflate.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import sys
import time
import traceback
from typing import Any


class CaseTimeoutError(Exception):
    """A case ran past its time limit."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeoutError()


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    from maskc.cli import main

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    signal.alarm(int(case.get("timeout", 120)))
    outcome: dict[str, Any] = {"id": case["id"]}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if "argv" in case:
                outcome["code"] = main(case["argv"])
            else:
                scope: dict[str, Any] = {}
                exec(case["python"], scope)
                outcome["code"] = 0
                outcome["result"] = repr(scope.get("result"))
    except SystemExit as exit_:  # argparse usage errors
        outcome["code"] = exit_.code
    except BaseException as exc:  # the test reports whatever escaped
        outcome["code"] = None
        outcome["raised"] = type(exc).__name__
        outcome["message"] = str(exc)[:500]
        outcome["trace"] = traceback.format_exc()[-2000:]
    finally:
        signal.alarm(0)
    used = resource.getrusage(resource.RUSAGE_SELF)
    outcome["seconds"] = round(time.perf_counter() - started, 3)
    outcome["cpu_seconds"] = round(used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime, 3)
    outcome["stdout"] = out.getvalue()[-3000:]
    outcome["stderr"] = err.getvalue()[-3000:]
    return outcome


def main() -> None:
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    for case in json.load(sys.stdin):
        print(json.dumps(run_case(case)), flush=True)


if __name__ == "__main__":
    main()
