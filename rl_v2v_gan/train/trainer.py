"""One training step of DESIGN §6: D -> RL collect -> critic -> G -> soft update.

Each phase has its own optimizer and changes only its own networks' parameters:
D (frame and video discriminators), Q (critics), G (generators and predictors). Targets change
only through :func:`~rl_v2v_gan.rl.targets.soft_update`. The loss functions hold the math;
this class holds the schedule.

The hot loop does not wait for the device (DESIGN §9): losses and flags stay there as 0-d tensors
until :meth:`Trainer.read_logs` reads every pending step back in one transfer (the training loop
does so once per ``--log_every``); a non-finite update is skipped by the optimizer itself
(fused Adam's ``found_inf``), and the EMA follows only the steps taken, both decided on the device.
The one read-back left in a step is whether an RL rollout was finite (it decides what is stored).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from ..config import Config
from ..data.dataset import to_float
from ..losses import gan_losses as G
from ..losses.augment import diff_augment, parse_policy
from ..losses.rl_losses import actor_loss, critic_loss, td_target
from ..models.networks import Networks
from ..rl.agent import DOMAINS, OTHER, greedy_action, policy_for, rollout, steps_left
from ..rl.replay_buffer import ReplayBuffer, Transitions, mix, replay_nbytes, replay_placement
from ..rl.targets import batch_norms, params_frozen, running_stats_frozen, soft_update
from ..utils.precision import resolve_amp
from .distributed import all_reduce_flag, all_reduce_min
from .history_pool import HistoryPool

ADAM_BETAS = (0.5, 0.999)
# Each weighted term of the generators' loss and the flag that sets its weight (the adversarial term is 1).
LOSS_FLAGS = {"video": "lambda_v", "cyc": "lambda_cyc", "idt": "lambda_idt", "tc": "lambda_tc", "rr": "lambda_rr",
              "rc": "lambda_rc", "actor": "lambda_pg"}
# Flags that change the form of a term of the generators' loss (the cycle as back-translation, the
# temporal-consistency term relative to the target domain's flicker).
LOSS_SWITCHES = ("cycle_detach", "tc_relative")


def lr_factor(step: int, total: int, decay: float) -> float:
    """The learning-rate multiplier at step ``step`` (0-based) of ``total``: 1, then linearly
    down toward 0 over the last ``decay`` fraction of the run (CycleGAN's schedule)."""
    if decay <= 0 or total <= 0:
        return 1.0
    span = decay * total
    return max(0.0, min(1.0, (total - step) / span))


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class Trainer:
    """Holds networks, optimizers, replay buffers and the AMP scaler; ``train_step`` runs one step.

    ``ddp`` maps network names to their DistributedDataParallel wrappers (multi-process runs);
    a wrapper is used where that network is being trained, the plain module everywhere else.
    """

    def __init__(self, cfg: Config, nets: Networks, device: torch.device, ddp: dict[str, nn.Module] | None = None):
        self.cfg, self.nets, self.device = cfg, nets, device
        self.ddp = ddp or {}
        self.p = cfg.context_frames
        self.rl = cfg.method == "rl_v2v_gan"
        # Base learning rates per role (TTUR: the discriminators may have their own); the schedule
        # (--lr_decay) scales them each step, so a resumed run uses the flags it is given.
        self.base_lr = {"G": cfg.learning_rate, "D": cfg.lr_d, "Q": cfg.learning_rate}
        # The generators' loss weights, resolved (a default can change between versions): saved with the
        # checkpoint, so a resumed run can say when its objective is not the one it was trained with.
        self.loss_weights = {"adv": 1.0, "video": cfg.lambda_v, "cyc": cfg.cycle_weight, "idt": cfg.lambda_idt,
                             "tc": cfg.tc_weight, "rr": cfg.lambda_rr, "rc": cfg.lambda_rc, "actor": cfg.lambda_pg}
        # The switches that change a term's form rather than its weight, saved and compared alike.
        self.loss_switches = {flag: bool(getattr(cfg, flag)) for flag in LOSS_SWITCHES}
        # Fused Adam: one kernel per step, and it can skip a non-finite step on the device (found_inf).
        self.optimizers = {role: torch.optim.Adam([p for net in nets.role(role) for p in net.parameters()],
                                                  lr=self.base_lr[role], betas=ADAM_BETAS, fused=True)
                           for role in ("G", "D", "Q") if nets.role(role)}
        # Collected once: what the G phase freezes, and the batch norms whose statistics pause.
        critics = nets.role("D") + nets.role("Q")
        self._critic_params = [p for net in critics for p in net.parameters()]
        self._norms = {"critics": batch_norms(*critics), "G": batch_norms(*nets.role("G")), "all": batch_norms(nets)}
        self.total_steps = cfg.epochs * cfg.steps_per_epoch
        self.pools = {d: HistoryPool(cfg.pool_size) for d in DOMAINS} if cfg.pool_size > 0 else {}
        self.r1_gamma = cfg.r1_gamma
        self.augment = parse_policy(cfg.diff_augment)  # DiffAugment: applied alike to real and generated
        if self.r1_gamma > 0 and self.ddp:
            # The penalty needs a double backward, which DistributedDataParallel does not support.
            self.r1_gamma = 0.0
            if not dist.is_initialized() or dist.get_rank() == 0:
                print(f"warning: --r1_gamma {cfg.r1_gamma} is not applied under torchrun (DDP has no double "
                      f"backward); training without the R1 penalty (--spectral_norm is the alternative there)")
        self.amp_dtype = resolve_amp(cfg.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.replay = self._replay_buffers() if self.rl else {}
        self.step = 0
        self._scaled = False
        self._applied: dict[str, torch.Tensor | bool] = {}  # role -> was its update taken this step
        self._pending: list[tuple[int, dict]] = []  # (step, logs) not read back yet
        self.nonfinite_streak = 0  # as of the last read step
        self.nonfinite_total = 0
        self._nonfinite: str | None = None  # NonFiniteError's message once the streak reached the limit

    # --- helpers ------------------------------------------------------------------------------
    def _replay_buffers(self) -> dict[str, ReplayBuffer]:
        """One buffer per domain, half of ``--buffer_size`` each, placed by ``--replay_device``."""
        t, h, w, c = self.cfg.input_shape
        shape, capacity = (self.p, c, h, w), max(1, self.cfg.buffer_size // 2)
        where, pinned = replay_placement(self.cfg.replay_device, len(DOMAINS) * replay_nbytes(capacity, shape),
                                         self.device)
        return {d: ReplayBuffer(capacity, shape, where, pin_memory=pinned) for d in DOMAINS}

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        # Autocast caches a weight's cast for the rest of the region, so a network called twice casts
        # once; selective checkpointing's recomputation (in the backward pass, outside that cache) would
        # then meet casts its forward did not record, and fail. Without the cache each call casts alike.
        selective = any(getattr(net, "checkpointing", "off") == "selective" for net in self.nets.role("G"))
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, cache_enabled=not selective)

    def net(self, name: str) -> nn.Module:
        """The module to call for a network being trained (its DDP wrapper if there is one)."""
        return self.ddp.get(name, getattr(self.nets, name))

    def _everywhere(self, flag: bool) -> bool:
        """``flag`` on every rank: a skip decided by one rank must be taken by all of them, or
        their gradient synchronisations would pair up different networks."""
        if not self.ddp:
            return flag
        return all_reduce_flag(flag, dist.ReduceOp.MIN)

    def _update(self, role: str, loss: torch.Tensor) -> torch.Tensor:
        """Backward and step one role's optimizer (outside autocast). The update is skipped on a
        non-finite loss or gradient; returns whether it was taken, a 0-d bool tensor on the device
        (nothing is read back: fused Adam reads the decision as its ``found_inf``)."""
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        ok = torch.isfinite(loss.detach())
        if not self.scaler.is_enabled():  # with fp16, overflowing gradients are the scaler's to skip
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                ok = ok & torch.isfinite(torch.nn.utils.get_total_norm(grads))
        if self.ddp:  # DDP's all-reduce spreads a non-finite gradient; the loss flag is shared too
            ok = all_reduce_min(ok)
        if self.scaler.is_enabled():
            self.scaler.step(opt)  # fp16: the scaler skips overflowing steps (its own found_inf)
        else:
            opt.grad_scale, opt.found_inf = None, (~ok).float()
            try:
                opt.step()
            finally:
                del opt.grad_scale, opt.found_inf
        self._scaled = True
        self._applied[role] = ok
        return ok

    # --- the step -----------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor], read: bool = True) -> dict[str, float] | None:
        """One step on a batch of uint8 clips ``{"a": [B,T,C,H,W], "b": [B,T,C,H,W]}``: its logs
        as floats, or with ``read=False`` nothing yet (see :meth:`read_logs`)."""
        self._pending.append((self.step + 1, self._step(batch)))
        return self.read_logs()[-1][1] if read else None

    def read_logs(self, check: bool = True) -> list[tuple[int, dict[str, float]]]:
        """The pending steps' ``(step, logs)``, read back from the device in one transfer.

        Also keeps the non-finite count: once ``--max_nonfinite_steps`` consecutive steps skipped
        an update, :meth:`check_finite` raises :class:`NonFiniteError` -- here with ``check``, or
        where the caller has first written the rows (the training loop).
        """
        pending, self._pending = self._pending, []
        values = [v for _, logs in pending for v in logs.values() if isinstance(v, torch.Tensor)]
        flat = iter(torch.stack([v.detach().float().reshape(()) for v in values]).tolist() if values else [])
        rows = []
        for step, logs in pending:
            row = {k: next(flat) if isinstance(v, torch.Tensor) else v for k, v in logs.items()}
            bad = any(row.get(f"skipped/{role}", 0.0) for role in ("D", "Q", "G"))
            self.nonfinite_streak = self.nonfinite_streak + 1 if bad else 0
            self.nonfinite_total += int(bad)
            row["nonfinite_steps"] = float(self.nonfinite_total)
            rows.append((step, row))
            if self.nonfinite_streak >= self.cfg.max_nonfinite_steps and self._nonfinite is None:
                skipped = [role for role in ("D", "Q", "G") if row.get(f"skipped/{role}")]
                self._nonfinite = (f"{self.nonfinite_streak} consecutive steps had a non-finite loss or gradient "
                                   f"(step {step}, skipped updates: {', '.join(skipped)}); stopping "
                                   f"(see --max_nonfinite_steps)")
        if check:
            self.check_finite()
        return rows

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if the logs read so far hold too long a non-finite streak."""
        if self._nonfinite is not None:
            raise NonFiniteError(self._nonfinite)

    def _step(self, batch: dict[str, torch.Tensor]) -> dict:
        self.nets.train()
        real = {d: to_float(batch[d].to(self.device, non_blocking=True)) for d in DOMAINS}  # [B,T,C,H,W]
        for d in DOMAINS:
            if real[d].shape[1:] != real["a"].shape[1:] or real[d].dim() != 5:
                raise ValueError(f"batch[{d!r}]: expected [B,T,C,H,W] clips, got {list(real[d].shape)}")
        logs: dict = {}  # floats, and 0-d tensors read back later
        self._scaled, self._applied = False, {}
        factor = lr_factor(self.step, self.total_steps, self.cfg.lr_decay)
        for role, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lr[role] * factor
        logs["lr/G"] = self.base_lr["G"] * factor
        with self.autocast():
            # Translations with their graph: detached for D now, differentiated in the G phase.
            fake = {OTHER[d]: self.net(f"gen_{d}{OTHER[d]}")(real[d]) for d in DOMAINS}  # fake[b] = gen_ab(real_a)
        self._d_phase(real, fake, logs)
        minibatch = None  # the critic's states, which the actor also uses (DDPG)
        if self.rl:
            fresh = self._collect(real, logs)
            if fresh is not None:
                minibatch = self._minibatch(fresh, logs)
                self._critic_phase(minibatch, logs)
                # After the draw: the buffer part of a minibatch is older experience.
                for d in DOMAINS:
                    self.replay[d].push(fresh[d])
                logs["rl/replay_size"] = float(sum(len(r) for r in self.replay.values()))
            else:
                self._applied["Q"] = False  # a non-finite rollout: no critic update this step
        self._g_phase(real, fake, logs, minibatch)
        if self._scaled:  # GradScaler.update needs at least one scaled step in the iteration
            self.scaler.update()
        if self.rl:
            for target, online in self.nets.target_pairs():
                soft_update(target, online, self.cfg.tau)
        # The average follows the generators' updates, not skipped steps.
        self.nets.ema_update(self.step, self._applied["G"])
        self.step += 1
        for role in ("D", "Q", "G"):  # phase order; 1.0 where this step skipped the role's update (non-finite)
            if role in self.optimizers:
                applied = self._applied[role]
                logs[f"skipped/{role}"] = ~applied if isinstance(applied, torch.Tensor) else float(not applied)
        return logs

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """What a discriminator is shown of ``x`` (frames ``[N,C,H,W]`` or clips ``[B,T,C,H,W]``):
        ``--diff_augment``'s random transforms, fresh per call, or ``x`` itself."""
        return diff_augment(x, self.augment) if self.augment else x

    def _d_phase(self, real, fake, logs) -> bool:
        mode, every = self.cfg.gan_mode, self.cfg.r1_every
        # Lazy R1 (StyleGAN2): the penalty on every ``every``-th step, weighted ``every`` times.
        r1 = self.r1_gamma * every if self.step % every == 0 else 0.0
        aug = self._augment
        loss_frame = loss_video = penalty = 0.0
        with self.autocast():
            for d in DOMAINS:  # disc_d: real d frames vs translated-into-d frames
                # The generated clips this step shows: fresh, or partly from the history pool.
                shown = self.pools[d].query(fake[d].detach()) if self.pools else fake[d].detach()
                # R1 is taken at the input the discriminator sees (the augmented one, as in ADA).
                r = aug(real[d].detach().flatten(0, 1)).requires_grad_(r1 > 0)  # [B*T,C,H,W]
                disc = self.net(f"disc_{d}")
                real_logits = disc(r)
                loss_frame = loss_frame + G.discriminator_loss(real_logits, disc(aug(shown.flatten(0, 1))), mode)
                if r1 > 0:
                    penalty = penalty + G.r1_penalty(real_logits, r)
                if self.rl:
                    vd = self.net(f"vdisc_{d}")
                    clips = aug(real[d].detach()).requires_grad_(r1 > 0)
                    real_logits = vd(clips)
                    loss_video = loss_video + G.discriminator_loss(real_logits, vd(aug(shown)), mode)
                    if r1 > 0:
                        penalty = penalty + G.r1_penalty(real_logits, clips)
        loss = loss_frame + loss_video + 0.5 * r1 * penalty
        logs["loss/D/frame"] = loss_frame.detach()
        if self.rl:
            logs["loss/D/video"] = loss_video.detach()
        if r1 > 0:
            logs["loss/D/r1"] = penalty.detach()
        return self._update("D", loss)

    @torch.no_grad()
    def _collect(self, real, logs) -> dict | None:
        """Roll out one episode per clip (the first ``--rl_episodes`` of the batch) and domain under
        ``no_grad``: the fresh transitions.

        None when a rollout is not finite: such a batch is neither learned from nor stored. This
        is the step's one read-back from the device (one flag for both domains, on every rank).
        """
        cfg, fresh, finite = self.cfg, {}, []
        for d in DOMAINS:
            with self.autocast(), running_stats_frozen(self._norms["all"]):
                # The batch's clips are random draws, so its first --rl_episodes are a random subset.
                episodes = real[d][:cfg.rl_episodes]  # [E,T,C,H,W]
                fresh[d], stats = rollout(policy_for(self.nets, d), getattr(self.nets, f"disc_{d}"),
                                          getattr(self.nets, f"vdisc_{d}"), episodes, self.p, cfg.sigma2,
                                          cfg.lambda_rr, cfg.lambda_rc, cfg.lambda_v, cfg.gan_mode)
            finite += [torch.isfinite(fresh[d].cost).all(), torch.isfinite(fresh[d].action).all()]
            logs[f"rl/mean_reward_{d}"] = -stats.mean_cost
            logs[f"rl/greedy_a1_share_{d}"] = stats.greedy_a1_share
        if not self._everywhere(bool(torch.stack(finite).all())):
            for d in DOMAINS:
                del logs[f"rl/mean_reward_{d}"], logs[f"rl/greedy_a1_share_{d}"]
            return None
        return fresh

    def _minibatch(self, fresh, logs) -> dict:
        """The critic's σ1-mixed minibatch per domain: ``--rl_batch`` of the fresh transitions
        (a uniform subsample), each replaced by a replay draw with probability σ1."""
        batches = {}
        for d in DOMAINS:
            n = len(fresh[d])
            keep = torch.randperm(n, device=self.device)[:min(self.cfg.rl_batch, n)]
            batches[d], share = mix(Transitions(*(x[keep] for x in fresh[d])), self.replay[d], self.cfg.sigma1)
            logs[f"rl/from_buffer_{d}"] = share
        return batches

    def _critic_phase(self, batches, logs) -> bool:
        cfg = self.cfg
        loss = 0.0
        for d in DOMAINS:
            batch = batches[d]
            left = steps_left(batch.t, cfg.clip_length, self.p)
            with torch.no_grad(), self.autocast():  # TD target from the target networks
                next_left = steps_left(batch.t + 1, cfg.clip_length, self.p)
                _, next_q = greedy_action(policy_for(self.nets, d, target=True), batch.next_state, next_left)
                y = td_target(batch.cost, batch.done, next_q.float(), cfg.gamma)
            with self.autocast():
                q = self.net(f"q_{d}")(batch.state, batch.action, left)
            logs[f"rl/td_error_{d}"] = (q.detach().float() - y).abs().mean()
            loss = loss + critic_loss(q.float(), y)
            logs[f"rl/q_mean_{d}"] = q.detach().mean()
        logs["rl/q_loss"] = loss.detach()
        return self._update("Q", loss)

    def _g_phase(self, real, fake, logs, minibatch=None) -> bool:
        """The generator objective of DESIGN §4 (+ the DDPG actor term of §5) for G's networks.

        ``fake[y] = gen_xy(real[x])`` is the translation with its graph. The recycle term reads
        ``gen_xy(w_t)`` off it: the generator is causal, so those frames see the window plus the
        clip's earlier frames, and one generator pass serves the adversarial, cycle and recycle
        terms (as in Recycle-GAN, whose per-frame generator makes them equal).
        """
        cfg, nets, mode = self.cfg, self.nets, self.cfg.gan_mode
        terms: dict[str, torch.Tensor] = {}
        actor_on = self.rl and cfg.lambda_pg > 0 and minibatch is not None and self.step >= cfg.actor_start_step

        def add(name: str, value: torch.Tensor) -> None:
            terms[name] = terms.get(name, 0.0) + value

        # Critics are frozen here, their batch-norm statistics too (they are being used, not trained).
        with params_frozen(self._critic_params), running_stats_frozen(self._norms["critics"]):
            with self.autocast():
                for x in DOMAINS:  # direction x -> y
                    y = OTHER[x]
                    shown = self._augment(fake[y].flatten(0, 1))
                    add("adv", G.generator_adv_loss(getattr(nets, f"disc_{y}")(shown), mode))
                    if self.rl and cfg.lambda_v > 0:
                        add("video", G.generator_adv_loss(getattr(nets, f"vdisc_{y}")(self._augment(fake[y])), mode))
                    if cfg.cycle_weight > 0:  # --cycle_detach: back-translation, only gen_yx learns from it
                        back_in = fake[y].detach() if cfg.cycle_detach else fake[y]
                        add("cyc", G.cycle_loss(self.net(f"gen_{y}{x}")(back_in), real[x]))
                    if cfg.tc_weight > 0:  # no flicker the input does not have (beyond the target domain's own)
                        add("tc", G.relative_temporal_consistency_loss(fake[y], real[x], real[y]) if cfg.tc_relative
                            else G.temporal_consistency_loss(fake[y], real[x]))
                    if cfg.lambda_idt > 0:  # gen_xy on a real y frame should leave it as it is
                        add("idt", G.identity_loss(self.net(f"gen_{x}{y}")(real[y]), real[y]))
                    if nets.pred_a is not None:
                        w, next_frames = G.windows(real[x], self.p)  # [N,p,C,H,W], [N,C,H,W]
                        w_y, _ = G.windows(fake[y], self.p)  # gen_xy(w_t): [N,p,C,H,W]
                        add("rr", G.recurrent_loss(self.net(f"pred_{x}")(w), next_frames))
                        recycled = self.net(f"gen_{y}{x}")(self.net(f"pred_{y}")(w_y)[:, None])[:, 0]
                        add("rc", G.recycle_loss(recycled, next_frames))
                    if actor_on:
                        # DDPG: mu(s) on the critic's own minibatch states, Q frozen; the choice
                        # between the candidates is not differentiated, the chosen action is.
                        policy = policy_for(nets, x, get=lambda name: self.net(name) if name[0] != "q" else
                                            getattr(nets, name))
                        # Minibatch states hold generated and replayed frames: like the rollouts, they
                        # must not shape the policy's batch-norm running statistics.
                        with running_stats_frozen(self._norms["G"]):
                            mb = minibatch[x]
                            left = steps_left(mb.t[:cfg.actor_batch], cfg.clip_length, self.p)
                            q = greedy_action(policy, mb.state[:cfg.actor_batch], left)[1].float()
                        add("actor", actor_loss(q))
                        logs[f"rl/actor_q_{x}"] = q.detach().mean()
                weights = self.loss_weights
                total = sum(weights[k] * v for k, v in terms.items())
                for k, v in terms.items():
                    if k != "actor":
                        logs[f"loss/G/{k}"] = v.detach()
                # The scale-free actor loss is 1 per domain by construction (q >= 0): what informs is the
                # expected cost of the policy's own actions, mean Q(s, mu(s)); the logged total leaves the
                # constant out (the optimised total differs from it by lambda_pg per domain).
                if "actor" in terms:
                    logs["loss/G/actor"] = sum(logs[f"rl/actor_q_{x}"] for x in DOMAINS) / len(DOMAINS)
                logs["loss/G/total"] = sum(weights[k] * logs[f"loss/G/{k}"] for k in terms if k != "actor")
            return self._update("G", total)

    # --- state for checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict:
        if self._pending:  # the non-finite counts saved must include every step taken
            raise RuntimeError(f"Trainer.state_dict: {len(self._pending)} steps' logs are unread; call read_logs() first")
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "scaler": self.scaler.state_dict(), "step": self.step,
                "nonfinite": [self.nonfinite_streak, self.nonfinite_total], "base_lr": dict(self.base_lr),
                "loss_weights": dict(self.loss_weights), "loss_switches": dict(self.loss_switches),
                "pools": {d: pool.state_dict() for d, pool in self.pools.items()}}

    def _note_loss_weights(self, saved: dict | None, log, switches: dict | None = None) -> None:
        """Say when the generators' objective differs from the one the checkpoint was trained with
        (``saved``: its loss weights; ``switches``: its LOSS_SWITCHES, None where not recorded)."""
        flipped = [f"--{k} {str(switches[k]).lower()} -> {str(v).lower()}" for k, v in self.loss_switches.items()
                   if switches is not None and k in switches and bool(switches[k]) != v]
        if flipped:
            log(f"note: the loss's form differs from the checkpoint's ({', '.join(flipped)}): training continues "
                f"with the new one")
        if saved is None:  # saved before the weights were recorded (2026-12-07)
            if self.cfg.lambda_cyc is None and self.cfg.method != "cycle_gan":
                log(f"note: the checkpoint does not record its loss weights (it predates them): if it was trained "
                    f"with the default --lambda_cyc from before 2026-12-07, {self.cfg.method} had no cycle loss "
                    f"then and has --lambda_cyc {self.loss_weights['cyc']:g} now: pass --lambda_cyc 0 to keep "
                    f"that objective")
            return
        changed = [f"--{LOSS_FLAGS[k]} {saved[k]:g} -> {v:g}" for k, v in self.loss_weights.items()
                   if k in saved and k in LOSS_FLAGS and saved[k] != v]
        if changed:
            log(f"note: the loss weights differ from the checkpoint's ({', '.join(changed)}): training continues "
                f"with the new values")

    def load_state_dict(self, state: dict, log=print) -> None:
        """Restore; the flags given now win over the saved ones: a changed learning rate is applied
        (the optimizers' saved values are overwritten every step) and said so."""
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        changed = [f"{role} {old:g} -> {self.base_lr[role]:g}" for role, old in state.get("base_lr", {}).items()
                   if role in self.optimizers and old != self.base_lr[role]]
        if changed:
            log(f"note: the learning rates differ from the checkpoint's ({', '.join(changed)}): training continues "
                f"with the new values of --learning_rate / --learning_rate_d")
        self._note_loss_weights(state.get("loss_weights"), log, state.get("loss_switches"))
        saved_pools = state.get("pools", {})
        for d, pool in self.pools.items():
            if d in saved_pools:
                pool.load_state_dict(saved_pools[d], self.device)
        if state["scaler"]:  # empty when saved without fp16
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.nonfinite_streak, self.nonfinite_total = (int(v) for v in state["nonfinite"])
