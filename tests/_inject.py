"""Run the tinyrnn command line with a simulated kill: ``os._exit(137)`` at the K-th call of
``os.write`` / ``os.replace`` / ``os.rename`` made by the checkpoint and metrics code.

    python tests/_inject.py K train CORPUS --out RUN ...     (K = 0: count the calls, print them at exit)

Used by tests/test_reliability.py (in a subprocess, once for every K) and tests/kill_random.py.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    kill_at, args = int(sys.argv[1]), sys.argv[2:]
    import tinyrnn.checkpoint as ck

    calls = [0]
    real = {name: getattr(os, name) for name in ("write", "replace", "rename")}

    def wrap(name):
        def patched(*a, **k):
            calls[0] += 1
            if calls[0] == kill_at:
                os._exit(137)             # like SIGKILL: no cleanup, no finally, no flush
            return real[name](*a, **k)
        return patched

    # Patch only the names the checkpoint module (and the lock) call through `os.`: the module's own
    # reference to os is the global one, so patch a copy of it there.
    import types

    fake_os = types.ModuleType("os")
    fake_os.__dict__.update(os.__dict__)
    for name in real:
        setattr(fake_os, name, wrap(name))
    ck.os = fake_os
    try:
        from cli.main import cli
        code = cli.main(args, prog_name="tinyrnn", standalone_mode=False)
    finally:
        if kill_at == 0:
            print(f"calls={calls[0]}", file=sys.stderr)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
