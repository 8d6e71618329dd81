"""What `--resume` (and a restart) continues from, decided before any rank starts: the check
rank 0 makes when it resumes, run on rank 0's node, so the start line, the app's `r` dialog and
the ranks all name the same checkpoint, and one the ranks would refuse is refused here."""

from __future__ import annotations

from boltring.cluster.jobs import plan as launcher
from boltring.cluster.jobs.errors import ControllerError
from boltring.cluster.jobs.restart import resume_label
from boltring.cluster.nodes.transport import TransportError
from boltring.cluster.states import LogLevel

from .core import ControllerCore

RESUME_CHECK_TIMEOUT_S = 120.0  # the runner builds the example (imports MLX) and reads the checkpoint


class ResumeRefused(ControllerError):
    """The job's checkpoint directory holds checkpoints its ranks would refuse to resume from
    (another seed, example or model shape, or none that verifies): found before any rank
    starts, with the ranks' own check. Nothing was started because of what was given."""

    title = "cannot resume"
    nothing_started = True


class ResumePointMixin(ControllerCore):
    async def _resume_from(self) -> str | None:
        """What `--resume` continues from, as the ranks will decide it: "step 200
        (step-000200.safetensors)", or None when the job's checkpoint directory on rank 0's node
        holds no checkpoint. For an example, the runner's --check-resume runs there: the check
        rank 0's restore makes (checkpoint.choose), so the file named is the newest that
        verifies, and checkpoints the ranks would refuse raise ResumeRefused, one line naming
        the file, what differs and what to do. A script or a module reads its own checkpoints:
        the file `latest` names is all that is said."""
        node = self.config.rank_layout()[0].node
        directory = launcher.checkpoint_dir(node, self.config)
        try:
            t = await self.connect(node)
        except TransportError:
            return None
        job = self.config.job
        if job.script or job.module:
            return resume_label(await self._latest_name(t, directory))
        argv = launcher.runner_check_argv(self.config, node, "--check-resume", resume=True)
        stderr, code = "", None
        try:
            res = await t.run(argv, timeout=RESUME_CHECK_TIMEOUT_S)
            info, stderr, code = res.last_json() or {}, res.stderr, res.returncode
        except TransportError as e:
            info = {"resume": "unchecked", "why": str(e)}
        answer = info.get("resume")
        if answer == "ok":
            label = resume_label(str(info.get("file") or "")) or f"step {info.get('step')}"
            step, total = info.get("step"), self.config.job.steps
            if isinstance(step, int) and step >= total:  # the ranks would start and train nothing
                raise ResumeRefused(
                    f"cannot resume: the newest checkpoint, {label}, is at step {step} and the job "
                    f"has {total} steps: nothing is left to train; raise --steps (job.steps) above "
                    f"{step}, or start afresh without --resume"
                )
            return label
        if answer == "none":
            await self._say_old_layout(t, directory)
            return None
        if answer == "refused":
            raise ResumeRefused(f"cannot resume: {info.get('message')}")
        # The check could not run (an example that cannot be built here yet, an old boltring on
        # the node): say so, and name only the file that is there; the ranks check it.
        why = info.get("why") or (stderr.strip().splitlines() or [f"exit code {code}"])[-1]
        name = await self._latest_name(t, directory)
        if name:
            self._log(
                f"resume: {directory}/{name} was not checked before the launch ({why}); "
                "the ranks check it when they start",
                LogLevel.WARN,
            )
        return resume_label(name)

    async def _latest_name(self, t, directory: str) -> str | None:
        """The file `latest` names, when it is there; None (pointing out checkpoints of the old
        layout) when it is not."""
        try:
            name = (await t.read_from(f"{directory}/latest", 0, 4096)).decode(errors="replace").strip()
            if not name or not await t.read_from(f"{directory}/{name}", 0, 1):
                await self._say_old_layout(t, directory)
                return None
        except TransportError:
            return None
        return name

    async def _say_old_layout(self, t, directory: str) -> None:
        """Checkpoints used to be kept per config only (<config>/latest), shared by every job of
        it; now per job (<config>/<job key>/). A user's old ones would be passed over without
        a word: say where they are and where they would be read from."""
        parent = directory.rsplit("/", 1)[0]
        try:
            old = (await t.read_from(f"{parent}/latest", 0, 4096)).decode(errors="replace").strip()
        except TransportError:
            return
        if old:
            self._log(
                f"checkpoints of this config from before they were kept per job are in {parent} "
                f"(latest {old}); to resume this job from them, move them into {directory}",
                LogLevel.WARN,
            )
