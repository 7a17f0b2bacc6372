"""spotter.torch.Monitor: three lines in a PyTorch training loop.

    monitor = Monitor(model, optimizer, run="vit", server="localhost:50051",
                      total_steps=10_000)
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        monitor.step(loss)            # instead of optimizer.step()
        if monitor.should_stop:
            break
    monitor.close()

Every step, at the step boundary (inside step()), the Monitor
  1. reads the directive in force at this step from the adopted directives
     (non-advisory only; see "Distributed") and sets every param group's LR
     to lr_at(step) (group i keeps its initial ratio to group 0); switches
     the K-FAC preconditioner on or off as the directive says (a guarded
     switch snapshots model and optimizer first; a rollback restores them and
     makes no update: spotter.torch.guard); notes gradient-noise and stop;
  2. on sketch steps (step % sketch_every == 0) queues the sketch rows the taps
     captured during this step's backward, with the loss and LR (on a GPU:
     the rows of the previous sketch step, see "GPU" below);
  3. under natural gradient, refreshes K-FAC factors/inverses when due and
     preconditions the gradients; adds gradient noise if asked;
  4. calls optimizer.step() (or ``step_fn``) unless a stop directive is in
     force, in which case should_stop becomes True and no update is made.

Fail-open: without a server (unreachable, or a permanent error) the Monitor
keeps the last directive in force, or the optimizer's own LR if none ever
arrived. ADVISE-mode directives are exposed (``advice``), never applied.

Distributed: with torch.distributed initialised the run is opened with
world_size = the job's. By default (``directives="broadcast"``) only rank 0
holds a session (one Connect stream per job; with ``upload="all"`` every
rank also uploads through its own); at the step boundary before every step t
with t % sync_every == 0 rank 0 hands the directives it received to every
rank through torch.distributed, and all ranks adopt them at t: a directive
applies from max(effective_step, adoption step), so all ranks switch at the
same step or none does (spotter.torch.sync). ``directives="per_rank"``: every
rank its own session, each applying what it received at effective_step.
Build the Monitor after ``init_process_group``: with WORLD_SIZE > 1 in the
environment (torchrun) and no process group the constructor raises
RuntimeError rather than open the run as rank 0 of 1.

Restarts: ``state_dict()`` goes into the trainer's checkpoint;
``load_state_dict()`` (before the first step) or ``Monitor(..., resume=)``
resumes at its step with the directives the job had adopted.

Defaults (spotter.env): run from SPOTTER_RUN or torchrun's TORCHELASTIC_RUN_ID,
server from SPOTTER_SERVER (else 127.0.0.1:50051), token from SPOTTER_TOKEN,
rank/world size from the process group, else RANK/WORLD_SIZE, else 0/1.
Explicit arguments win.

GPU: no synchronous device-to-host copy on the step path. The projection
runs on the gradients' device; on a sketch step the (m x k) rows and the loss
are copied into pinned host buffers with non_blocking=True on a side stream
that waits for the training stream, and a CUDA event is recorded after the
copy. The host reads them (event.synchronize(), normally long done, then
upload) at the NEXT sketch step, or at report_eval(), flush() or close(): the
server sees step t's sketch one sketch interval later. On the CPU the rows
are uploaded at their own step, as before.

Not thread-safe: call it from the training thread.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Iterator, List, Mapping, Optional, Tuple

import torch

from spotter import env as spotter_env
from spotter.client import run_config
from spotter.schedule import Directive
from spotter.session import RunSession
from spotter.torch.guard import SnapshotGuard
from spotter.torch.kfac import KFAC
from spotter.torch.restart import Resumable
from spotter.torch.staging import _Staged
from spotter.torch.sync import Applied, DirectiveLog, GroupSync, session_resume
from spotter.torch.taps import Taps

log = logging.getLogger("spotter")


class Monitor(Resumable):
    """Args:
      model, optimizer: the model (plain or DDP) and its torch optimizer.
      run: run name [SPOTTER_RUN, else torchrun's TORCHELASTIC_RUN_ID unless
        "none"; ValueError if none of them]; server: spotterd "host:port"
        [SPOTTER_SERVER, else 127.0.0.1:50051] (None: no server, the Monitor
        only sketches locally and never changes the LR; run is then optional).
      rank, world_size: this process's rank and the job's size [the
        initialised torch.distributed group's (an explicit value must agree:
        ValueError), else RANK/WORLD_SIZE, else 0/1]. WORLD_SIZE > 1 without a
        process group and without these raises RuntimeError.
      token: bearer token [session_options' token, else SPOTTER_TOKEN].
      total_steps: planned optimizer steps (required by the run).
      peak_lr: peak LR of the warm-up [the optimizer's LR]; base_lr: LR at
        step 0 [server default peak/10].
      sample: "per_example" (LoGra hooks on Linear/Conv2d) or
        "per_microbatch" (every backward() in a step is one sample: use
        gradient accumulation or ``microbatches()``).
      sketch_every: steps between sketches; sketch_dim: k; max_rows: most
        rows per upload; microbatches: chunks ``microbatches()`` makes on
        sketch steps.
      seed, projection: the run's projection ("count_sketch"; "gaussian" only
        with per_microbatch).
      mode: "control" or "advise".
      upload: "rank0" or "all" (distributed jobs).
      directives: "broadcast" (one session, on rank 0; directives handed to
        every rank at sync steps) or "per_rank" [broadcast when a process
        group of more than one rank is initialised]; sync_every: steps
        between sync steps [sketch_every].
      resume: a state_dict() to resume from (as load_state_dict(), but the
        session is opened once, from its checkpoint).
      loss_reduction: "mean" or "sum": how the loss reduces over the batch.
      kfac_factor_decay, kfac_kl_clip: K-FAC settings (the directive gives
        damping and intervals).
      wait_for_server: seconds the constructor waits for the first directive
        (start-up only; 0 to not wait).
      config: further RunConfig fields (dict), e.g. {"phase": {...}, "eval_every": 5}.
      session_options: keyword arguments for RunSession (queue_size, ...).
      apply: "step" (step() replaces optimizer.step() and owns the LR) or
        "hooks" (the trainer keeps optimizer.step(), its scheduler, AMP and
        gradient accumulation; the Monitor only sketches, uploads and reads
        directives: call on_step_end() once per optimizer step and drive the
        LR with spotter.torch.DirectiveLR). See on_step_end().
      grad_scaler: hooks mode with AMP: the torch.cuda.amp.GradScaler scaling
        the loss; sketches are divided by its scale (unscaled gradients).
      snapshot_dir: where the guarded switch keeps its snapshot [None: in host
        memory] (spotter.torch.guard; step mode only).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 run: Optional[str] = None, server=spotter_env.FROM_ENV, total_steps: int,
                 rank: Optional[int] = None, world_size: Optional[int] = None,
                 token: Optional[str] = None,
                 peak_lr: Optional[float] = None, base_lr: Optional[float] = None,
                 sample: str = "per_example", sketch_every: int = 10, sketch_dim: int = 256,
                 max_rows: int = 256, microbatches: int = 4, seed: int = 0,
                 projection: str = "count_sketch", mode: str = "control", upload: str = "rank0",
                 loss_reduction: str = "mean", kfac_factor_decay: float = 0.95,
                 kfac_kl_clip: Optional[float] = 1e-3, wait_for_server: float = 5.0,
                 config: Optional[Mapping] = None, session_options: Optional[Mapping] = None,
                 apply: str = "step", grad_scaler=None, directives: Optional[str] = None,
                 sync_every: Optional[int] = None, resume: Optional[Mapping] = None,
                 snapshot_dir: Optional[str] = None):
        if apply not in ("step", "hooks"):
            raise ValueError("apply must be 'step' or 'hooks'")
        if sketch_every < 1:
            raise ValueError("sketch_every must be >= 1")
        if upload not in ("rank0", "all"):
            raise ValueError("upload must be 'rank0' or 'all'")
        if directives not in (None, "broadcast", "per_rank"):
            raise ValueError("directives must be 'broadcast' or 'per_rank'")
        if sync_every is not None and sync_every < 1:
            raise ValueError("sync_every must be >= 1")
        if projection not in ("count_sketch", "gaussian"):
            raise ValueError("projection must be 'count_sketch' or 'gaussian'")
        if projection == "gaussian" and sample == "per_example":
            raise ValueError("the per-example sketch is Kronecker-structured CountSketch; "
                             "use projection='count_sketch'")
        # Resolved before any hook is installed: a bad setup leaves the model alone.
        if server is spotter_env.FROM_ENV:
            server = spotter_env.server()
        self.server = server
        self.run = spotter_env.run_name(run) if server is not None else run
        place = spotter_env.placement(rank, world_size)
        self.distributed = place.distributed
        self.rank, self.world_size, self.local_rank = place.rank, place.world_size, place.local_rank
        self.model, self.optimizer = model, optimizer
        self.sample, self.sketch_every, self.max_rows = sample, sketch_every, max_rows
        self.n_microbatches = microbatches
        self.uploads = upload == "all" or self.rank == 0
        group = self.distributed and self.world_size > 1
        if directives == "broadcast" and not group and self.world_size > 1:
            raise ValueError("directives='broadcast' needs an initialised torch.distributed "
                             "process group (call init_process_group first)")
        broadcast = group and directives != "per_rank"
        self.directives_mode = "broadcast" if broadcast else "per_rank"
        self.sync_every = int(sync_every or sketch_every)
        self.taps = Taps(model, seed, sketch_dim, sample, loss_reduction)
        groups = optimizer.param_groups
        lr0 = groups[0]["lr"]
        self._ratios = [g["lr"] / lr0 if lr0 else 1.0 for g in groups]
        if peak_lr is None and resume is not None:
            peak_lr = resume.get("peak_lr")
        self.peak_lr = float(peak_lr if peak_lr is not None else lr0)

        fields = dict(config or {})
        fields.setdefault("sketch_dim", sketch_dim)
        fields["total_steps"] = int(total_steps)
        fields["peak_lr"] = self.peak_lr
        if base_lr is not None:
            fields["base_lr"] = float(base_lr)
        fields["world_size"] = self.world_size
        fields["mode"] = "MODE_ADVISE" if mode == "advise" else "MODE_CONTROL"
        proj = dict(fields.get("projection", {}))
        proj.update(kind="PROJECTION_KIND_" + projection.upper(), seed=str(int(seed)),
                    input_dim=str(self.taps.input_dim))
        fields["projection"] = proj
        labels = dict(fields.get("labels", {}))
        labels.setdefault("spotter.sample", sample)
        labels["spotter.sketched_fraction"] = self.taps.fraction_label()
        labels["spotter.sketched_params"] = str(self.taps.sketched_params)
        fields["labels"] = labels
        self.config = run_config(fields)
        self.session: Optional[RunSession] = None
        self._session_opts = dict(session_options or {})
        if token is not None:
            self._session_opts["token"] = token
        self._wait_for_server = wait_for_server
        if server is not None and (not broadcast or self.rank == 0 or upload == "all"):
            log.info("spotter: run %s on %s as rank %d of %d (%s, directives %s)", self.run,
                     server, self.rank, self.world_size, place.source, self.directives_mode)
            saved = session_resume(resume.get("session"), self.run, self.rank) if resume else None
            self._open_session(saved)
        # The directives the job adopted (spotter.torch.sync), and rank 0's hand-out.
        self._log = DirectiveLog()
        self._sync = GroupSync() if broadcast and server is not None else None
        self._synced = -1  # the last sync step
        self._adopt_lag = 1 if apply == "hooks" else 0
        self._lr_set = -1  # hooks mode: the last step whose LR the trainer has set
        self._stepped = False
        self._wall = [0.0, 0.0]  # first step's start, last step's end (perf_counter)

        self.guard = SnapshotGuard(model, optimizer, directory=snapshot_dir, run=str(self.run),
                                   rank=self.rank)
        self.kfac: Optional[KFAC] = None
        self._kfac_opts = dict(factor_decay=kfac_factor_decay, kl_clip=kfac_kl_clip)
        self._ng = False
        self._ng_since = 0
        self._t = 0
        self._applied_key = None
        self.applied: List[Applied] = []
        self.should_stop = False
        self.lr = lr0
        self._noise_gen = torch.Generator()
        self._noise_seed = int(seed)
        self._stats = dict(sketches=0, sketch_rows=0, skipped_single_row=0, late_directives=0,
                           kfac_steps=0, sketch_seconds=0.0, kfac_seconds=0.0)
        self._warned_single = False
        self._staged: Optional[_Staged] = None  # CUDA rows on their way to the host
        self._pinned: Optional[torch.Tensor] = None
        self._closed = False
        # Hooks mode: the LR (and AMP scale) in force at the step's first forward.
        self.apply_mode, self.grad_scaler = apply, grad_scaler
        self._step_lr: Optional[float] = None
        self._step_scale: Optional[float] = None
        self._warned_hooks = False
        self._start_hook = model.register_forward_pre_hook(self._note_step_start) \
            if apply == "hooks" else None
        if self._sync is not None:  # every rank starts under rank 0's first directive
            self._adopt(0, record=False)  # (resume= or not: the same collectives on all ranks)
        if resume is not None:
            self._restore(resume)
        self._plan_capture(self._t)

    # ---------------------------------------------------------------- loop
    @property
    def step_count(self) -> int:
        """Optimizer steps taken (the index of the next step)."""
        return self._t

    @property
    def directive(self) -> Optional[Directive]:
        """The directive in force at the current step, or None."""
        return self.directive_at(self._t)

    def directive_at(self, step: int) -> Optional[Directive]:
        """The directive in force at ``step`` among those adopted so far (what
        spotter.torch.DirectiveLR reads), or None. Never a collective."""
        self._adopt_own()  # hooks: DirectiveLR sets step t + 1's LR before on_step_end(t)
        self._lr_set = max(self._lr_set, int(step)) if self._adopt_lag else self._lr_set
        return self._log.at(step)

    @property
    def advice(self) -> Optional[Directive]:
        """The newest advisory directive (ADVISE mode): shown, never applied.
        Only ranks with a session have it (rank 0 under "broadcast")."""
        return self.session.advice() if self.session else None

    @property
    def natural_gradient(self) -> bool:
        """True while the K-FAC preconditioner is on."""
        return self._ng

    def sketching(self) -> bool:
        """True when the current step is a sketch step."""
        return self._t % self.sketch_every == 0

    def microbatches(self, *tensors: torch.Tensor) -> Iterator[Tuple[torch.Tensor, ...]]:
        """Splits a batch along dim 0 into ``microbatches`` chunks on sketch
        steps (per-microbatch mode needs >= 2 backward passes there) and
        yields it whole otherwise. Scale each chunk's loss by
        len(chunk) / len(batch) so the accumulated gradient is the batch's."""
        n = self.n_microbatches if (self.sample == "per_microbatch" and self.sketching()) else 1
        if n <= 1:
            yield tensors
            return
        yield from zip(*(t.tensor_split(n) for t in tensors))

    def step(self, loss=None, step_fn: Optional[Callable[[], object]] = None) -> None:
        """Ends the current step: applies the directive in force, uploads the
        sketch (on sketch steps), preconditions (under natural gradient) and
        calls optimizer.step() (or ``step_fn``). Call it after backward().
        ``loss``: the step's training loss (tensor or float; read only on
        sketch steps)."""
        if self.apply_mode == "hooks":
            raise RuntimeError("Monitor(apply='hooks') leaves optimizer.step() to the trainer: "
                               "call on_step_end() after it")
        t = self._t
        self._begin(t)
        d = self._log.at(t)
        noise = 0.0
        if d is not None:
            self.lr = d.lr.at(t)
            for g, r in zip(self.optimizer.param_groups, self._ratios):
                g["lr"] = self.lr * r
            want_ng = d.optimizer.kind == "natural_gradient"
            if self._note_switch(t, d, self.lr):
                if self.guard.on_directive(t, d):  # a rollback: no update at this step
                    self.kfac, self._ng = None, False  # a retry builds fresh factors
                    for g, r in zip(self.optimizer.param_groups, self._ratios):
                        g["lr"] = self.lr * r
                    self._finish_step(t)
                    return
                if want_ng:
                    if self.kfac is None:
                        self.kfac = KFAC(self.taps.layers, **self._kfac_opts)
                    self.kfac.configure(d.optimizer.damping, d.optimizer.factor_update_interval,
                                        d.optimizer.inverse_update_interval)
            if want_ng and not self._ng:
                self._ng_since = t
            self._ng = want_ng
            noise = d.noise_std
            if d.stop:
                self.should_stop = True
        else:
            self.lr = self.optimizer.param_groups[0]["lr"]

        if self.should_stop:
            self._finish_step(t)
            return
        self._upload(t, loss)
        if self._ng and self.kfac is not None:
            t0 = time.perf_counter()
            if self.taps.factors:
                self.kfac.update_factors()
            since = t - self._ng_since
            if self.kfac.A and (not self.kfac.ready or since % self.kfac.inverse_update_interval == 0):
                self.kfac.update_inverses()
            mu = self.optimizer.param_groups[0].get("momentum", 0.0) or 0.0
            self.kfac.precondition(self.lr / (1.0 - mu) if 0 <= mu < 1 else self.lr)
            self._stats["kfac_steps"] += int(self.kfac.ready)
            self._stats["kfac_seconds"] += time.perf_counter() - t0
        if noise > 0:
            self._add_noise(t, noise)
        if step_fn is not None:
            step_fn()
        else:
            self.optimizer.step()
        self._finish_step(t)


    def _upload(self, t: int, loss, scale: float = 1.0) -> None:
        """Queues the rows the taps captured since the last step boundary as
        step ``t``'s sketch (sketch steps of uploading ranks), divided by the
        gradient scale ``scale`` (AMP). CUDA rows are staged instead, and
        queued at the next sketch step (or report_eval/flush/close)."""
        if not (self.taps.sketch and self.uploads and self.session is not None):
            return
        t0 = time.perf_counter()
        self._drain()
        rows, spr = self.taps.collect_rows(self.max_rows, to_host=False)
        if rows is not None and scale and scale != 1.0:
            rows = rows / scale
        if rows is not None and rows.is_cuda:
            if self._pinned is None or self._pinned.numel() < rows.numel():
                self._pinned = torch.empty(rows.numel(), dtype=torch.float32, pin_memory=True)
            self._staged = _Staged(t, rows, spr, loss, self.lr, self._pinned)
        else:
            self._send(t, rows, spr, loss, self.lr)
        self._stats["sketch_seconds"] += time.perf_counter() - t0

    def _drain(self) -> None:
        """Queues the staged CUDA sketch, if any (waits for its copy only)."""
        if self._staged is not None:
            staged, self._staged = self._staged, None
            self._send(*staged.read())

    def _send(self, t: int, rows, spr: int, loss, lr: float) -> None:
        lv = float(loss) if loss is not None else math.nan
        if loss is not None and not math.isfinite(lv):  # divergence (docs/PHASES.md)
            self.session.report_nonfinite_loss(t, lr=lr)
        elif rows is not None and rows.shape[0] >= 2:
            if self.session.upload_sketch(t, rows, loss=lv, lr=lr, samples_per_row=spr):
                self._stats["sketches"] += 1
                self._stats["sketch_rows"] += rows.shape[0]
        elif rows is not None:
            self._stats["skipped_single_row"] += 1
            if not self._warned_single:
                self._warned_single = True
                log.warning("spotter: step %d: one gradient sample only; per-microbatch mode "
                            "needs >= 2 backward passes per sketch step (see "
                            "Monitor.microbatches())", t)

    def on_step_end(self, loss=None, global_step: Optional[int] = None) -> bool:
        """Hooks mode (apply="hooks"): ends the current optimizer step. Call it
        once per optimizer step, after optimizer.step() / scaler.step() and
        scheduler.step(); it never steps the optimizer, sets no LR and makes
        no K-FAC preconditioning or gradient noise (natural-gradient and
        noise directives are logged, not applied).

        It uploads (on sketch steps) the rows the taps captured in every
        forward/backward since the previous call, i.e. all micro-steps of a
        gradient-accumulation step, attributed to this optimizer step (up to
        max_rows rows; per-example rows carry the gradient of the loss as
        backpropagated, so a loss divided by the accumulation count divides
        them by it). With ``grad_scaler`` the rows are divided by the scale in
        force at the step's first forward. The sketch's LR is the optimizer's
        LR at that first forward. Notes the directive in force (``applied``,
        ``directive``) and sets should_stop when a stop directive is in force
        at the next step (so that no update is made under it).

        ``loss``: the step's training loss (read on sketch steps only).
        ``global_step``: optimizer steps completed so far, this one included
        (Lightning's trainer.global_step in on_train_batch_end, the HF
        Trainer's state.global_step in on_step_end) [one more than the last
        call]; a call that finds no new step (an accumulation micro-batch)
        does nothing. Returns True when it ended a step."""
        if self.apply_mode != "hooks":
            raise RuntimeError("on_step_end() is for Monitor(apply='hooks'); use step()")
        done = self._t + 1 if global_step is None else int(global_step)
        if done <= self._t:
            return False
        t = done - 1
        self._begin(t)
        d = self._log.at(t)
        self.lr = self._step_lr if self._step_lr is not None else self.optimizer.param_groups[0]["lr"]
        if d is not None and self._note_switch(t, d, d.lr.at(t)) and not self._warned_hooks \
                and (d.optimizer.kind == "natural_gradient" or d.noise_std > 0):
            self._warned_hooks = True
            log.warning("spotter: step %d: directive v%d asks for natural gradient or gradient"
                        " noise; hooks mode applies neither (Monitor.step() does)", t, d.version)
        scale = 1.0
        if self.grad_scaler is not None and self.grad_scaler.is_enabled():
            scale = self._step_scale if self._step_scale is not None else \
                float(self.grad_scaler.get_scale())
        self._upload(t, loss, scale)
        self._step_lr = self._step_scale = None
        self._finish_step(t)
        nxt = self._log.at(self._t)
        if (d is not None and d.stop) or (nxt is not None and nxt.stop):
            self.should_stop = True
        return True

    def _note_step_start(self, module, inputs) -> None:
        if self._step_lr is None and torch.is_grad_enabled():
            self._lr_set = max(self._lr_set, self._t)
            self._step_lr = self.optimizer.param_groups[0]["lr"]
            if self.grad_scaler is not None and self.taps.sketch and self.grad_scaler.is_enabled():
                self._step_scale = float(self.grad_scaler.get_scale())

    def _note_switch(self, t: int, d: Directive, lr: float) -> bool:
        """Records the switch to ``d`` at step ``t`` (once per directive)."""
        if d.key == self._applied_key:
            return False
        self._applied_key = d.key
        late = d.effective_step < t and bool(self.applied)
        self._stats["late_directives"] += int(late)
        self.applied.append(Applied(t, d.version, d.phase, lr, d.optimizer.kind, late,
                                    d.generation))
        log.info("spotter: step %d: applying directive v%d (%s, lr %.4g, %s)%s", t, d.version,
                 d.phase, lr, d.optimizer.kind,
                 " LATE: effective_step was %d" % d.effective_step if late else "")
        return True

    def _begin(self, t: int) -> None:
        """Start of step ``t``'s boundary work: adopts what is due (a sync
        step the boundary before did not cover, e.g. after a global_step jump)."""
        if not self._stepped:
            self._stepped = True
            self._wall[0] = time.perf_counter()
        self._adopt(t, self._adopt_lag)

    def _adopt(self, t: int, lag: int = 0, record: bool = True) -> None:
        """Adopts new directives for step ``t``: rank 0's, through the group,
        on sync steps ("broadcast"; at t + lag: hooks mode one step later, the
        scheduler having set step t's LR), or this rank's own (_adopt_own)."""
        if self._sync is None:
            self._adopt_own()
            return
        if t % self.sync_every or self._synced == t:
            return
        self._synced = t
        new = None
        if self.rank == self._sync.src:
            new = [d for d in self.session.directives()
                   if not d.advisory and not self._log.known(d.key)]
        self._log.adopt(self._sync.exchange(new, record), t + lag)

    def _adopt_own(self) -> None:
        """The session's new directives, from the first step whose LR is unset."""
        if self._sync is None and self.session is not None:
            self._log.adopt(self.session.directives(), max(self._t, self._lr_set + 1))

    def _finish_step(self, t: int) -> None:
        self._t = t + 1
        if self.session is not None:
            self.session.note_step(self._t)
        self._adopt(self._t, self._adopt_lag)
        self._plan_capture(self._t)
        self._wall[1] = time.perf_counter()

    def _plan_capture(self, t: int) -> None:
        sketch = self.session is not None and self.uploads and t % self.sketch_every == 0
        factors = False
        d = self._log.at(t)
        if d is not None and d.optimizer.kind == "natural_gradient" and self.apply_mode == "step":
            interval = self.kfac.factor_update_interval if self.kfac else \
                max(1, d.optimizer.factor_update_interval or 10)
            start = self._ng_since if self._ng else t
            factors = (self.kfac is None or not self.kfac.A) or (t - start) % interval == 0
        self.taps.begin_step(sketch, factors)

    def _add_noise(self, t: int, std: float) -> None:
        # Same generator state on every rank: identical noise keeps DDP replicas equal.
        self._noise_gen.manual_seed((self._noise_seed * 1_000_003 + t) & 0x7FFFFFFFFFFFFFFF)
        with torch.no_grad():
            grads = [p.grad for g in self.optimizer.param_groups for p in g["params"]
                     if p.grad is not None]
            if not grads:
                return
            rms = torch.sqrt(sum((g.float() ** 2).sum() for g in grads) /
                             sum(g.numel() for g in grads))
            for g in grads:
                z = torch.randn(g.shape, generator=self._noise_gen).to(g.device, g.dtype)
                g.add_(z * (std * rms))

    # ------------------------------------------------------------ reporting
    def report_eval(self, metrics: Mapping[str, float], step: Optional[int] = None) -> bool:
        """Sends validation metrics (e.g. {"val_loss": ..., "val_accuracy":
        ...}) at ``step`` [the current step]. Only uploading ranks send."""
        if self.session is None or not self.uploads:
            return False
        self._drain()  # a staged sketch's step comes first
        return self.session.report_eval(self._t if step is None else step, metrics)

    def stats(self) -> dict:
        """Monitor counters, the sketch's coverage (sketched_params of
        trainable_params, sketched_fraction) and the session's counters (under
        "session")."""
        out = dict(self._stats, step=self._t, natural_gradient=self._ng, lr=self.lr,
                   snapshots=self.guard.snapshots, restores=self.guard.restores,
                   sketched_params=self.taps.sketched_params,
                   trainable_params=self.taps.trainable_params,
                   sketched_fraction=self.taps.sketched_fraction)
        if self.kfac is not None:
            out.update(kfac_factor_updates=self.kfac.factor_updates, kfac_failures=self.kfac.failures,
                       kfac_inverse_updates=self.kfac.inverse_updates, kfac_nu=self.kfac.last_nu)
        out.update(directives_mode=self.directives_mode, sync_every=self.sync_every,
                   step_seconds=max(0.0, self._wall[1] - self._wall[0]))
        if self._sync is not None:
            out.update(self._sync.stats())
            out["sync_fraction"] = out["sync_seconds"] / out["step_seconds"] \
                if out["step_seconds"] > 0 else 0.0
        if self.session is not None:
            out["session"] = dataclasses.asdict(self.session.stats())
        return out

    def flush(self, timeout: float = 5.0) -> bool:
        """Queues the staged sketch (GPU) and waits, up to ``timeout``
        seconds, until the session has sent everything queued. True when
        everything was sent (or there is no server)."""
        self._drain()
        return self.session.flush(timeout) if self.session is not None else True

    def close(self, timeout: float = 5.0) -> None:
        """Removes the hooks and closes the session (flushing, bounded by
        ``timeout``). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.taps.remove()
        if self._start_hook is not None:
            self._start_hook.remove()
        if self.session is not None:
            self._drain()
            self.session.close(timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
