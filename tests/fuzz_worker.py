"""A long-lived process that runs ``tvmq compile`` on the fuzzer's files, one request per line.

Importing TVM takes seconds, so the fuzz test keeps one worker and sends it requests
(``model calib out`` as a JSON list on stdin); the answer is one JSON line on stdout with
the exit code and everything written to file descriptor 2 (Python and native). A crash
kills this process, which the test sees as a death by signal; a hang, as a timeout.
"""

import json
import os
import sys
import tempfile

from tvmq.cli import main


def run(argv: list[str]) -> dict:
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            code = main(argv, isolated=False)
        except BaseException as err:  # noqa: BLE001 - anything escaping main is the finding
            code = f"escaped {type(err).__name__}: {err}"
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return {"code": code, "stderr": captured.read().decode(errors="replace")}


if __name__ == "__main__":
    answers = os.fdopen(os.dup(1), "w")  # the protocol keeps the real stdout; the CLI's report goes nowhere
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        model, calib, out = json.loads(line)
        answer = run(["compile", model, "--calib", calib, "--out", out, "--batch-size", "8", "--trials", "0"])
        print(json.dumps(answer), file=answers, flush=True)
