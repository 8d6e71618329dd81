"""The worker entry point every rank runs: ``python -m boltring.cluster.train.runner``.

The launcher starts one per rank, in the folder boltring was started from (or its mirror on the
node: plan.rank_cwd), so the job's relative paths mean what they meant there; the rank's own
files (rank.log, metrics.jsonl, why.json, W&B's) go to its run directory, BOLTRING_RUN_DIR. The
job is described by environment variables that ``boltring.netio.init()`` reads::

    python -m boltring.cluster.train.runner --example mlp --steps 200 --seed 0 \\
        --global-batch 256 --lr 0.05 --checkpoint-every 50 --checkpoint-dir DIR [--resume] \\
        [--data FILE] [-- EXTRA ARGS]

``--example NAME`` runs a built-in example (``mlp``, ``charlm``) through the shared
data-parallel loop (loop.py); the extra arguments after ``--`` go to the example.
``--script PATH`` runs a user script instead, like ``python PATH EXTRA ARGS`` (``__name__`` is
``"__main__"``, ``sys.argv`` is ``[PATH, *EXTRA]``, the script's directory is first on
``sys.path``); ``--module NAME`` runs an installed module like ``python -m NAME``. The script
calls ``boltring.netio.init()`` (or, with ``--backend mlx-ring``/``jaccl``,
``mx.distributed.init()``) itself; the runner does not, so the group is created once. Under the
boltring backend with several ranks, ``mx.distributed`` raises a clear error (mx_guard.py)
instead of letting every rank train alone. The job options given on the command line are
passed to the script as environment variables ``BOLTRING_STEPS``, ``BOLTRING_SEED``,
``BOLTRING_GLOBAL_BATCH``, ``BOLTRING_LR``, ``BOLTRING_CHECKPOINT_EVERY``,
``BOLTRING_CHECKPOINT_DIR``, ``BOLTRING_RESUME`` (``1``), ``BOLTRING_LOG_EVERY``,
``BOLTRING_DATA`` and ``BOLTRING_STEPS_PER_EVAL``.

Exit status: 0 when training finished; 1 on an error, after the traceback and then one final
line ``boltring-train: error: <Type>: <message>`` on stderr; 2 for bad command-line arguments
(argparse); 143 on SIGTERM and 130 on SIGINT. A signal raises ``SystemExit`` in the main thread
and the run unwinds at once: a checkpoint being written is abandoned (its temp file is removed,
``latest`` still names the previous complete checkpoint) and the group is closed.

(Over 400 lines: one entry point that every rank runs; its arguments, the example/script/
module dispatch and the error record the controller reads (why.json) are one contract.)
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import re
import runpy
import signal
import sys
import traceback
from pathlib import Path

from .loop import TrainConfig, train

EXAMPLES = {
    "mlp": "MLP classifier on a synthetic dataset generated from the seed (4096 x 32 features, 4 classes)",
    "charlm": "small character-level transformer LM (2 blocks) on the shipped corpus or --data FILE",
    "lm": "fine-tune an mlx-lm model (LoRA, DoRA or full); mlx-lm's own flags after '--' "
    "(needs pip install 'boltring[lm]')",
}
# Examples with their own training loop (module.run(cfg, args) instead of make_task + loop.train).
OWN_LOOP = {"lm"}
PREFIX = "boltring-train"
HELP_WORDS = ("-h", "--help")
WHY_RESERVE = 4096


class Terminated(SystemExit):
    """Raised from the signal handler; ``code`` is 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def _on_signal(signum: int, _frame) -> None:
    # Ignore further signals while unwinding so the cleanup is not interrupted twice.
    signal.signal(signum, signal.SIG_IGN)
    raise Terminated(signum)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m boltring.cluster.train.runner",
        description="Run one rank of a boltring data-parallel training job. Every rank runs the\n"
        "same command; the rank, world size and peers come from the environment the\n"
        "launcher sets (with none, this is a single-rank run).",
        epilog="Examples:\n"
        "  %(prog)s --example mlp --steps 200 --global-batch 256 --lr 0.05\n"
        "  %(prog)s --example charlm --data book.txt --steps 500 -- --layers 3 --dim 64\n"
        "  %(prog)s --script train.py -- --epochs 3\n"
        "  %(prog)s --module mypkg.train -- --epochs 3\n"
        "  %(prog)s --example lm --steps 100 --global-batch 8 -- --model DIR --data DIR "
        "--fine-tune-type lora\n\n"
        "Built-in examples:\n"
        + "".join(f"  {k:8s}{v}\n" for k, v in EXAMPLES.items())
        + "\nArguments after '--' go to the example or the script; for an example's own "
        "options run it with '-- --help'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--example", choices=sorted(EXAMPLES), help="built-in example to train")
    what.add_argument(
        "--script", metavar="PATH", help="user script to run on this rank (it calls boltring.netio.init())"
    )
    what.add_argument(
        "--module",
        metavar="NAME",
        help="installed module to run on this rank, like python -m NAME (it calls boltring.netio.init() "
        "or, with an MLX backend, mx.distributed.init())",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=200,
        help="total optimizer steps; a resumed run continues up to this step (default 200)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data, the data order and the initial parameters (default 0)",
    )
    p.add_argument(
        "--global-batch",
        type=int,
        default=None,
        metavar="B",
        help="examples per step over all ranks; each rank takes B / world size; "
        "must be divisible by the world size (default: 128 per rank, as in a config without it)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: the example's own, mlp 0.05, charlm 0.003)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        # 100 is schema.DEFAULT_CHECKPOINT_EVERY (a test keeps them equal; importing the config
        # package here would slow every rank's start for one help line).
        help="rank 0 writes a checkpoint every N steps and at the last step; 0 = never "
        "(default 0 when started by hand; jobs launched by boltring pass job.checkpoint_every, "
        "100 unless set)",
    )
    p.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        default=None,
        help="checkpoint directory (default: ./checkpoints in the run directory)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in --checkpoint-dir (rank 0 reads it and "
        "sends it to the other ranks); start fresh if there is none",
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=1,
        metavar="N",
        help="report metrics (global mean loss, throughput) every N steps (default 1)",
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        default=None,
        help="data file for examples that read one (charlm: a UTF-8 text file; "
        "default: the corpus shipped with boltring)",
    )
    p.add_argument(
        "--steps-per-eval",
        type=int,
        default=None,
        metavar="N",
        help="validation loss every N steps, for examples with a validation set (lm); 0 = none "
        "(default: the example's own; lm: mlx-lm's --steps-per-eval after '--', else none)",
    )
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="keep training when the loss becomes NaN or infinite (default: fail naming the step and "
        "rank; a script's group.report() reads it as BOLTRING_ALLOW_NONFINITE=1)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=3,
        metavar="K",
        help="rank 0 keeps the newest K checkpoints and removes older ones; 0 keeps all (default 3)",
    )
    p.add_argument(
        "--check-args",
        action="store_true",
        help="only check the arguments (the example's too) and exit: 0 when they are good, "
        "2 with one line when not; with '-- --help', print the example's options instead; the "
        "launcher runs this before starting any rank",
    )
    p.add_argument(
        "--check-resume",
        action="store_true",
        help="only check what --resume would continue from in --checkpoint-dir, with the check "
        "rank 0 makes, and exit: one JSON line; 0 when there is a checkpoint this run can use or "
        "none at all, 2 when it cannot use them; the launcher runs this on rank 0's node before "
        "it announces a resume point and starts any rank",
    )
    p.add_argument(
        "extra", nargs=argparse.REMAINDER, metavar="-- ARGS", help="arguments for the example or the script"
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Split at the first "--" ourselves: argparse.REMAINDER is unreliable with options after it.
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ns = build_parser().parse_args(argv)
    if ns.extra:
        build_parser().error(f"unrecognized arguments: {' '.join(ns.extra)} (put them after '--')")
    ns.extra = extra
    return ns


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(
        steps=ns.steps,
        seed=ns.seed,
        global_batch=ns.global_batch,
        lr=ns.lr,
        checkpoint_every=ns.checkpoint_every,
        checkpoint_dir=ns.checkpoint_dir,
        resume=ns.resume,
        log_every=ns.log_every,
        data=ns.data,
        args=tuple(ns.extra),
        steps_per_eval=ns.steps_per_eval,
        allow_nonfinite=ns.allow_nonfinite,
        keep_checkpoints=ns.keep_checkpoints,
    )
    cfg.validate()
    return cfg


def asks_for_help(args) -> bool:
    """The example's arguments ask for its options (`-- --help`, `-- -h`), as argparse reads
    them: anywhere among the arguments."""
    return any(a in HELP_WORDS for a in args)


def run_example(name: str, cfg: TrainConfig) -> None:
    module = importlib.import_module(f"{__package__}.{name}")
    if asks_for_help(cfg.args):
        print(module.extra_parser().format_help())
        return
    if name in OWN_LOOP:
        module.run(cfg, cfg.args)
        return
    from boltring.netio import init

    task = module.make_task(cfg, cfg.args)  # validates extra args before any network setup
    with init() as group:
        train(group, cfg, task)
        if group.rank == 0 and hasattr(module, "summary"):
            line = module.summary(task)
            if line:
                print(f"[rank 0] {line}", flush=True)


def _script_env(ns: argparse.Namespace) -> dict[str, str]:
    env = {
        "BOLTRING_STEPS": ns.steps,
        "BOLTRING_SEED": ns.seed,
        "BOLTRING_GLOBAL_BATCH": ns.global_batch,
        "BOLTRING_LR": ns.lr,
        "BOLTRING_CHECKPOINT_EVERY": ns.checkpoint_every,
        "BOLTRING_CHECKPOINT_DIR": ns.checkpoint_dir,
        "BOLTRING_RESUME": "1" if ns.resume else None,
        "BOLTRING_LOG_EVERY": ns.log_every,
        "BOLTRING_DATA": ns.data,
        "BOLTRING_STEPS_PER_EVAL": ns.steps_per_eval,  # "0" when given: none, not the script's own
        # group.report() reads it (netio/jobenv.py): --allow-nonfinite by hand works as in a job
        "BOLTRING_ALLOW_NONFINITE": "1" if ns.allow_nonfinite else None,
    }
    return {k: str(v) for k, v in env.items() if v is not None}


def guard_mx_distributed(environ=None) -> bool:
    """Under the boltring backend with several ranks, make mx.distributed fail loudly (mx_guard)."""
    from boltring.netio.jobenv import JobEnv

    job = JobEnv.from_environ(environ)
    if job.backend != "boltring" or job.size < 2:
        return False
    from .mx_guard import install

    install()
    return True


def run_script(path: str, args: list[str], env: dict[str, str]) -> int:
    script = Path(path)
    if not script.is_file():
        raise FileNotFoundError(f"script not found: {path}")
    return _run_user_code(
        lambda: runpy.run_path(str(script), run_name="__main__"),
        [str(script), *args],
        str(script.resolve().parent),
        env,
    )


def run_module(name: str, args: list[str], env: dict[str, str]) -> int:
    """Run an installed module like ``python -m NAME ARGS`` (sys.argv[0] is its file)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:
        raise ModuleNotFoundError(f"module {name!r} cannot be found on this rank: {e}") from None
    if spec is None:
        raise ModuleNotFoundError(
            f"no module named {name!r} on this rank (is it installed in {sys.executable}?)"
        )
    return _run_user_code(
        lambda: runpy.run_module(name, run_name="__main__", alter_sys=True),
        [spec.origin or name, *args],
        os.getcwd(),
        env,
    )


def _run_user_code(run, argv: list[str], path0: str, env: dict[str, str]) -> int:
    os.environ.update(env)
    guard_mx_distributed()
    old_argv, old_path = sys.argv[:], sys.path[:]
    sys.argv = argv
    sys.path.insert(0, path0)
    try:
        run()
    except SystemExit as e:
        if isinstance(e, Terminated):
            raise
        code = e.code
        if code is None or code == 0:
            return 0
        if isinstance(code, int):
            return code
        print(f"{PREFIX}: script exited: {code}", file=sys.stderr, flush=True)
        return 1
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    return 0


def check_args(ns: argparse.Namespace) -> int:
    """--check-args: the whole command line, the example's extras included, without training.
    With `-- --help` the example's options are printed on stdout instead (exit 0): what
    `boltring --example NAME -- --help` shows, without starting a rank."""
    from .lm_setup import MissingPackage

    try:
        cfg = config_from_args(ns)
        if ns.example:
            module = importlib.import_module(f"{__package__}.{ns.example}")
            if asks_for_help(cfg.args):
                print(module.extra_parser().format_help(), flush=True)
            else:
                _check_example_args(ns.example, module, cfg)
    except ValueError as e:
        print(f"{PREFIX}: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return 2
    except MissingPackage as e:  # mlx-lm is not installed here
        if asks_for_help(ns.extra):  # the options cannot be shown without it
            print(f"{PREFIX}: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
            return 2
        # the ranks run on their nodes' Pythons, which may have it: they check there
        print(f"{PREFIX}: not checked here: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
    return 0


def _check_example_args(name: str, module, cfg: TrainConfig) -> None:
    """ValueError when the example would refuse its arguments. lm: mlx-lm's flags and what
    boltring's lm loop refuses of them (--grad-accumulation-steps), as its ranks read them."""
    if name == "lm":
        from .lm_setup import parse_lm_args

        try:
            parse_lm_args(cfg, cfg.args, log=lambda *_: None)
        except OSError:
            pass  # a -c YAML that is on the nodes only: the ranks read it there
        return
    from .loop import parse_extra

    parse_extra(module.extra_parser, cfg.args)


def check_resume(ns: argparse.Namespace) -> int:
    """--check-resume: checkpoint.choose(), the check rank 0's restore makes, on this run's
    example built as a rank builds it (mlp, charlm; the lm example, whose model is expensive
    to load, only by example and seed). One JSON line on stdout: {"resume": "ok", "file",
    "step", "skipped", "checked"}, {"resume": "none"}, or {"resume": "refused", "message"}
    (exit 2); an example that cannot be built is {"resume": "unchecked", "why"} (exit 1)."""
    from . import checkpoint

    def answer(code: int, **info) -> int:
        print(json.dumps(info), flush=True)
        return code

    if not ns.example:
        return answer(1, resume="unchecked", why="a script or a module keeps its own checkpoints")
    try:
        cfg = config_from_args(ns)
        module = importlib.import_module(f"{__package__}.{ns.example}")
        name, template, fingerprint = getattr(module, "NAME", ns.example), None, None
        if ns.example not in OWN_LOOP:
            task = module.make_task(cfg, cfg.args)
            task.optimizer.init(task.model.trainable_parameters())  # as loop.train, before restore
            name, template, fingerprint = task.name, checkpoint.resume_template(task), task.fingerprint
    except Exception as e:  # any failure to build the example here: the ranks will say it
        return answer(1, resume="unchecked", why=f"{type(e).__name__}: {' '.join(str(e).split())}")
    directory = cfg.checkpoint_dir or str(Path.cwd() / "checkpoints")
    try:
        loaded, skipped = checkpoint.choose(directory, name, cfg.seed, template, fingerprint)
    except checkpoint.CheckpointError as e:
        return answer(2, resume="refused", message=" ".join(str(e).split()), directory=directory)
    except OSError as e:
        return answer(1, resume="unchecked", why=f"cannot read checkpoints in {directory}: {e}")
    if loaded is None:
        return answer(0, resume="none", directory=directory)
    checked = ["example", "seed"] + (["tensors"] if template is not None else [])
    file = loaded.path.name if loaded.path else ""
    return answer(0, resume="ok", file=file, step=loaded.step, skipped=skipped, checked=checked)


def write_why(exc: BaseException) -> None:
    """RUN_DIR/why.json: this rank's reason in a form the controller reads without parsing text
    (the error type, and for a ring error the peer it lost and the direction). The spawn keeper
    merges it into exit.json."""
    run_dir = os.environ.get("BOLTRING_RUN_DIR")
    if not run_dir:
        return
    why: dict = {"error": type(exc).__name__, "message": " ".join(str(exc).split())[:2000]}
    peer = getattr(exc, "peer", None)
    if peer:
        why["peer"] = str(peer)
        m = re.match(r"rank (\d+)", str(peer))
        if m:
            why["peer_rank"] = int(m[1])
        text = str(exc)
        why["direction"] = (
            "send" if ("we sent" in text or "sending" in text or "accepted no data" in text) else "recv"
        )
    if isinstance(exc, OSError):
        file = exc.filename or _file_being_written(exc)
        if file:
            why["file"] = str(file)
    why["message"] = describe_error(exc)[:2000]
    path = Path(run_dir) / "why.json"
    data = json.dumps(why).encode()[:WHY_RESERVE]
    try:  # into the bytes reserved at start: a full disk still gets the reason
        fd = os.open(Path(run_dir) / "why.reserve", os.O_WRONLY)
        try:
            os.write(fd, data.ljust(WHY_RESERVE, b" "))
        finally:
            os.close(fd)
        os.replace(Path(run_dir) / "why.reserve", path)
        return
    except OSError:
        pass
    try:
        tmp = path.with_name(".why.json.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass  # nothing more can be written: the exit code remains


def reserve_why() -> None:
    """Take the room for why.json while the disk has it (see write_why)."""
    run_dir = os.environ.get("BOLTRING_RUN_DIR")
    if run_dir:
        try:
            (Path(run_dir) / "why.reserve").write_bytes(b" " * WHY_RESERVE)
        except OSError:
            pass


def describe_error(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, OSError) and not exc.filename and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        path = _file_being_written(exc)
        where = str(path) if path else f"a file under {os.environ.get('BOLTRING_RUN_DIR') or os.getcwd()}"
        msg = f"cannot write {where}: {exc.strerror}"
    return msg


def _file_being_written(exc: BaseException) -> Path | None:
    """The file a write error came from, when the error itself does not say (a buffered write
    such as the metrics writer's): the innermost frame whose object has a `path`."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        path = getattr(obj, "path", None)
        if isinstance(path, Path):
            found = path
        tb = tb.tb_next
    return found


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)  # exits 2 with usage on bad arguments
    if ns.check_args:
        return check_args(ns)
    if ns.check_resume:
        return check_resume(ns)
    reserve_why()
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ns.script:
            return run_script(ns.script, ns.extra, _script_env(ns))
        if ns.module:
            return run_module(ns.module, ns.extra, _script_env(ns))
        run_example(ns.example, config_from_args(ns))
        return 0
    except Terminated as e:
        name = signal.Signals(e.signum).name
        print(f"{PREFIX}: stopped by {name}", file=sys.stderr, flush=True)
        return 128 + e.signum
    except Exception as e:
        known = type(e).__name__ in ("PeerClosed", "PeerTimeout", "NonFiniteLoss", "CheckpointError")
        if not known:  # a ring error or a NaN is one line; a bug in user code keeps its traceback
            traceback.print_exc()
        write_why(e)
        try:
            print(f"{PREFIX}: error: {type(e).__name__}: {describe_error(e)}", file=sys.stderr, flush=True)
        except OSError:
            pass
        return 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
