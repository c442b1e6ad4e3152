"""Role directions: difference of means between role prompts and generic prompts, per layer.

``d[role, pos, layer] = mean(D_role) - mean(D_base)`` of the residual stream at the input of
each block (``hook_resid_pre``), at each post-instruction position, accumulated in float64
and kept *unnormalised*: activation addition uses the raw vector (its norm is the natural
scale of the role signal at that layer), ablation uses the unit vector.

:class:`RoleDirections` keeps the per-set means and counts next to the directions, with the
provenance needed to reuse them safely (model name and weight fingerprint, hook point,
positions and their tokens, prompt-set hashes, roleprobe version, and the chat format: the
system-turn policy and the exact text of one rendered prompt, since a default system turn
or the date in Llama-3's template changes every direction). It saves as a
safetensors file plus a JSON file, never pickle, and refuses to load onto a model with
other weights or another width.

Footguns it refuses rather than passes on: means that are not finite floating-point
tensors with values (NaN, inf, integers, the ``meta`` device), a saved file whose checksum
manifest is missing or does not match (an unkeyed SHA-256: it catches accidents such as a
truncated copy, swapped files or a relabelled layer, not a deliberate forgery), and use on
a model with other weights (:meth:`RoleDirections.check_model`; the experiments that take
directions check it too, with an explicit ``check_model=False`` opt-out).

Example:
    >>> rd = compute_directions(model, roles=["lawyer", "nurse"])  # built-in prompts
    >>> rd.vectors.shape  # [role, pos, layer, d_model]
    >>> rd.cosine_similarity(layer=12)
    >>> rd.save("runs/smollm2/directions"); RoleDirections.load("runs/smollm2/directions", model)
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from roleprobe.core.hooks import check_hook, check_layers
from roleprobe.core.io import atomic_write_bytes, file_digest, write_json
from roleprobe.core.progress import bar
from roleprobe.core.types import Model, check_model_arg
from roleprobe.data.prompts import BASE_NAME, RolePrompts, load_prompts
from roleprobe.data.roles import ROLES, get_role
from roleprobe.model.chat import PLACEHOLDER, ChatTemplate
from roleprobe.model.models import model_fingerprint, model_name
from roleprobe.model.system_turn import normalize_system
from roleprobe.vectors.activations import PositionLabel, collect_means

TENSORS_FILE = "directions.safetensors"
METADATA_FILE = "directions.json"
logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST_KEY = "manifest_sha256"
"""The metadata field holding a SHA-256 over every other field (the tensor checksum
included): relabelled roles or layers, or another model's fingerprint, are refused on load,
and so is a file without it (unless loaded with ``strict=False``: files saved before it
existed). Unkeyed: it catches accidents, not a deliberate forgery."""
_DOMAIN = {role.name: role.domain for role in ROLES}


class NonFiniteDirectionsError(ValueError):
    """Means holding NaN or inf (raised by :class:`RoleDirections` at construction).

    Attributes:
        problem: which tensor, how many bad values, and where the first one is.
    """

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


def manifest_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of a directions manifest: every field but :data:`MANIFEST_KEY`, canonical JSON."""
    body = {k: v for k, v in meta.items() if k != MANIFEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RoleDirections:
    """Per-role, per-position, per-layer difference-of-means directions.

    Attributes:
        role_means: float64 mean activation of each role's prompts.
        base_mean: float64 mean activation of the baseline prompts.
        role_counts: prompts averaged per role.
        base_count: baseline prompts averaged.
        roles: role names, in order.
        layers: the layer of each slice along ``layer``.
        positions: position labels (offsets from the end, or ``"instruction_mean"``).
        hook: the hook point read, e.g. ``"hook_resid_pre"``.
        model_name: the model the means come from.
        model_fingerprint: a hash of its weights (see ``roleprobe.model.models.model_fingerprint``).
        position_tokens: the template token at each position (``""`` for a mean).
        prompt_hashes: content hash of each prompt set (roles and ``"base"``).
        source: where the prompts came from.
        version: the roleprobe version that computed them.
        system: the system-turn policy prompts were formatted with (``"default"``,
            ``"none"`` or the system text); directions saved before it was recorded load
            as ``"default"``.
        chat_format: the exact text of one prompt as formatted, with the instruction
            ``"{instruction}"`` (``""`` when unknown).
        chat_date: the date passed to date-dependent chat templates (``""`` when unknown).
    """

    role_means: Float[Tensor, "role pos layer d_model"]
    base_mean: Float[Tensor, "pos layer d_model"]
    role_counts: tuple[int, ...]
    base_count: int
    roles: tuple[str, ...]
    layers: tuple[int, ...]
    positions: tuple[PositionLabel, ...]
    hook: str = "hook_resid_pre"
    model_name: str = ""
    model_fingerprint: str = ""
    position_tokens: tuple[str, ...] = ()
    prompt_hashes: dict[str, str] = field(default_factory=dict)
    source: str = ""
    version: str = ""
    system: str = "default"
    chat_format: str = ""
    chat_date: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "system", normalize_system(self.system))
        _check_means("role_means", self.role_means, 4, "[role, pos, layer, d_model]")
        _check_means("base_mean", self.base_mean, 3, "[pos, layer, d_model]")
        if self.base_mean.device != self.role_means.device:
            raise ValueError(
                f"base_mean is on {self.base_mean.device} but role_means on "
                f"{self.role_means.device}; move both to one device (.to(device))"
            )
        n_role, n_pos, n_layer, _ = self.role_means.shape
        if (n_role, n_pos, n_layer) != (len(self.roles), len(self.positions), len(self.layers)):
            raise ValueError(
                f"role_means has shape {tuple(self.role_means.shape)} but there are "
                f"{len(self.roles)} roles, {len(self.positions)} positions, "
                f"{len(self.layers)} layers"
            )
        if self.base_mean.shape != self.role_means.shape[1:]:
            raise ValueError(
                f"base_mean shape {tuple(self.base_mean.shape)} does not match role_means"
            )
        if len(self.role_counts) != n_role:
            raise ValueError("role_counts needs one count per role")
        for name, means in (("role_means", self.role_means), ("base_mean", self.base_mean)):
            problem = _nonfinite(name, means, self.roles, self.positions, self.layers)
            if problem:
                raise NonFiniteDirectionsError(
                    problem,
                    "build directions from finite means (recompute them with "
                    "compute_directions on a model whose activations are finite)",
                )

    # ---------------------------------------------------------------- access ----------------
    @cached_property
    def vectors(self) -> Float[Tensor, "role pos layer d_model"]:
        """The unnormalised directions (float32): role mean minus base mean.

        Computed once per object and kept (the means are not meant to change in place; a
        new object — e.g. :func:`dataclasses.replace` — computes its own). For one or a
        few directions use :meth:`vector` / :meth:`layer_vectors`, which read only those.
        """
        return (self.role_means - self.base_mean).float()

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(self.role_means.shape[-1])

    def role_index(self, role: str) -> int:
        """Index of ``role`` along the ``role`` axis (close names are suggested)."""
        if role in self.roles:
            return self.roles.index(role)
        try:
            canonical = get_role(role).name
        except ValueError:
            canonical = None
        if canonical in self.roles:
            return self.roles.index(canonical)
        raise ValueError(f"role {role!r} is not in these directions; they have {list(self.roles)}")

    def layer_index(self, layer: int) -> int:
        """Index of ``layer`` along the ``layer`` axis."""
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer} is not in these directions (layers {list(self.layers)})"
            )
        return self.layers.index(layer)

    def position_index(self, position: PositionLabel) -> int:
        """Index of a position label along the ``pos`` axis."""
        if position not in self.positions:
            raise ValueError(
                f"position {position!r} is not in these directions "
                f"(positions {list(self.positions)})"
            )
        return self.positions.index(position)

    def vector(self, role: str, layer: int, pos: PositionLabel = -1) -> Float[Tensor, " d_model"]:
        """One raw direction, e.g. ``rd.vector("lawyer", layer=12, pos=-1)``."""
        r, p, li = self.role_index(role), self.position_index(pos), self.layer_index(layer)
        return (self.role_means[r, p, li] - self.base_mean[p, li]).float()

    def layer_vectors(
        self, roles: Sequence[str], layer: int, positions: Sequence[PositionLabel]
    ) -> Float[Tensor, "role pos d_model"]:
        """The raw directions of ``roles`` × ``positions`` at one layer, in one tensor.

        Reads only those slices of the means (work independent of the number of layers and
        of the other roles); equal to ``vectors[roles][:, positions, layer]``.
        """
        r = [self.role_index(role) for role in roles]
        p = [self.position_index(pos) for pos in positions]
        li = self.layer_index(layer)
        means = self.role_means[:, :, li][r][:, p]
        return (means - self.base_mean[p, li]).float()

    # ----------------------------------------------------------------- geometry --------------
    def _d64(self) -> Float[Tensor, "role pos layer d_model"]:
        return self.role_means - self.base_mean

    def norms(self) -> Float[Tensor, "role pos layer"]:
        """L2 norm of every direction."""
        return self._d64().norm(dim=-1)

    def base_cosine(self) -> Float[Tensor, "role pos layer"]:
        """Cosine between each direction and the baseline mean activation."""
        return _cosine(self._d64(), self.base_mean.expand_as(self.role_means))

    def cosine_similarity(
        self, layer: int, pos: PositionLabel = -1, centered: bool = False
    ) -> Float[Tensor, "role role"]:
        """Cosine similarity between the roles' directions at one layer and position.

        Args:
            layer: the layer.
            pos: the position label (default: the last token).
            centered: subtract the mean direction across roles first (removes the shared
                "any role vs generic" component, leaving what distinguishes roles).
        """
        d = self._d64()[:, self.position_index(pos), self.layer_index(layer)]
        if centered:
            if len(self.roles) < 3:
                raise ValueError("mean-centred cosines need at least 3 roles")
            d = d - d.mean(dim=0, keepdim=True)
        unit = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return unit @ unit.T

    def layer_cosine(self, role: str, pos: PositionLabel = -1) -> Float[Tensor, "layer layer"]:
        """Cosine between one role's directions at every pair of layers."""
        d = self._d64()[self.role_index(role), self.position_index(pos)]
        unit = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return unit @ unit.T

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (role, position, layer): domain, norm, cosine to the base mean, counts.

        The system-turn policy is a column (``system``); it, the chat format and the date are
        also in ``df.attrs``.
        """
        norms, base_cos = self.norms(), self.base_cosine()
        rows = []
        for r, role in enumerate(self.roles):
            for p, pos in enumerate(self.positions):
                for li, layer in enumerate(self.layers):
                    rows.append(
                        {
                            "role": role,
                            "domain": _DOMAIN.get(role, ""),
                            "position": pos,
                            "token": self.position_tokens[p] if self.position_tokens else "",
                            "layer": layer,
                            "norm": float(norms[r, p, li]),
                            "base_cosine": float(base_cos[r, p, li]),
                            "n_role": self.role_counts[r],
                            "n_base": self.base_count,
                            "system": self.system,
                        }
                    )
        df = pd.DataFrame(rows)
        df.attrs.update(system=self.system, chat_format=self.chat_format, chat_date=self.chat_date)
        return df

    def frame(self, values: Float[Tensor, "role pos layer"], name: str = "value") -> pd.DataFrame:
        """Label a ``[role, pos, layer]`` tensor with these directions' roles, positions, layers.

        For any per-direction quantity: :meth:`norms`, :func:`roleprobe.separation_auroc`,
        :func:`roleprobe.split_half_stability`, ... One row per (role, position, layer), in
        the tensor's own (C) order, so ``df[name].to_numpy()`` equals
        ``values.flatten().numpy()``; the frame merges with :meth:`to_dataframe` on
        ``["role", "position", "layer"]``. Pivot it for a role × layer grid.

        Args:
            values: ``[role, pos, layer]`` with this object's role, position and layer counts.
            name: the value column's name (e.g. ``"auroc"``).

        Returns:
            A DataFrame with columns ``role, position, layer, <name>``.

        Example:
            >>> auc = rp.separation_auroc(model, rd, heldout)
            >>> rd.frame(auc, "auroc").pivot_table(index="role", columns="layer", values="auroc")
        """
        expected = tuple(self.role_means.shape[:3])
        if tuple(values.shape) != expected:
            raise ValueError(
                f"values has shape {tuple(values.shape)} but these directions have {expected} "
                f"(role {len(self.roles)}, position {len(self.positions)}, layer "
                f"{len(self.layers)})"
            )
        if name in ("role", "position", "layer"):
            raise ValueError(f"name {name!r} would overwrite a label column; pick another name")
        index = pd.MultiIndex.from_product(
            [list(self.roles), list(self.positions), list(self.layers)],
            names=["role", "position", "layer"],
        )
        flat = values.detach().double().cpu().reshape(-1).numpy()
        return pd.DataFrame({name: flat}, index=index).reset_index()

    def __repr__(self) -> str:
        """A few lines: sizes, model, roles, positions, layers, source, system (no tensors)."""
        system = self.system if len(self.system) <= 40 else self.system[:39] + "…"
        return (
            f"RoleDirections({_count(self.roles, 'role')} × {_count(self.positions, 'position')}"
            f" × {_count(self.layers, 'layer')}, d_model={self.d_model}, "
            f"model={self.model_name!r})\n"
            f"  roles: {_preview(self.roles)}\n"
            f"  positions: {_span(self.positions)}; layers: {_span(self.layers)}; "
            f"hook: {self.hook}\n"
            f"  source: {self.source or '?'}; system: {system!r}; "
            f"prompts: {self.base_count} base, {sum(self.role_counts)} role"
        )

    # --------------------------------------------------------------- persistence -------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``directions.safetensors`` and ``directions.json`` into folder ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "role_means": self.role_means.contiguous(),
            "base_mean": self.base_mean.contiguous(),
            "role_counts": torch.tensor(self.role_counts, dtype=torch.int64),
        }
        atomic_write_bytes(folder / TENSORS_FILE, safetensors_bytes(tensors))
        meta = self._metadata()
        meta["tensors_sha256"] = file_digest(folder / TENSORS_FILE)
        meta[MANIFEST_KEY] = manifest_digest(meta)
        write_json(folder / METADATA_FILE, meta)
        return folder

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "roles": list(self.roles),
            "layers": list(self.layers),
            "positions": list(self.positions),
            "position_tokens": list(self.position_tokens),
            "hook": self.hook,
            "base_count": self.base_count,
            "d_model": self.d_model,
            "model_name": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "prompt_hashes": self.prompt_hashes,
            "source": self.source,
            "roleprobe_version": self.version,
            "system": self.system,
            "chat_format": self.chat_format,
            "chat_date": self.chat_date,
        }

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: Model | None = None, strict: bool = True
    ) -> "RoleDirections":
        """Load directions saved by :meth:`save`, optionally checking them against ``model``.

        Args:
            path: the folder given to :meth:`save`.
            model: when given, its width and layers must match, and (``strict``) its weights.
            strict: require the metadata checksum (:data:`MANIFEST_KEY`) and, with
                ``model``, the same weight fingerprint. ``False`` loads a file saved before
                the checksum existed (with a warning) and skips the fingerprint.

        Raises:
            ValueError: a truncated, edited or malformed file, one without its metadata
                checksum (``strict``), means holding NaN or inf (naming the tensor and the
                first bad role, position and layer), or a model mismatch.
        """
        folder = Path(path)
        meta_path, tensor_path = folder / METADATA_FILE, folder / TENSORS_FILE
        for needed in (meta_path, tensor_path):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed} does not exist (not a saved RoleDirections?)")
        try:
            meta = json.loads(meta_path.read_text())
            expected = meta["tensors_sha256"]
        except (ValueError, KeyError) as err:
            raise ValueError(f"{meta_path} is not valid RoleDirections metadata ({err})") from err
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT}")
        if MANIFEST_KEY not in meta:
            if strict:
                raise ValueError(
                    f"{meta_path} has no {MANIFEST_KEY}, so its roles, layers and model cannot "
                    "be verified; pass strict=False to load a file written before the check "
                    "existed"
                )
            logger.warning(
                "%s predates metadata checksums: its roles, layers and model are not verified "
                "(loaded with strict=False)",
                meta_path,
            )
        elif meta[MANIFEST_KEY] != manifest_digest(meta):
            raise ValueError(
                f"{meta_path} was modified after saving (its {MANIFEST_KEY} does not match its "
                "roles, layers, positions, model or tensor checksum); save the directions again"
            )
        if file_digest(tensor_path) != expected:
            raise ValueError(
                f"{tensor_path} does not match the checksum in {METADATA_FILE}: the file is "
                "truncated or was modified after saving"
            )
        try:
            tensors = load_file(str(tensor_path))
            directions = cls(
                role_means=tensors["role_means"],
                base_mean=tensors["base_mean"],
                role_counts=tuple(int(c) for c in tensors["role_counts"]),
                base_count=int(meta["base_count"]),
                roles=tuple(meta["roles"]),
                layers=tuple(meta["layers"]),
                positions=tuple(meta["positions"]),
                hook=meta["hook"],
                model_name=meta["model_name"],
                model_fingerprint=meta["model_fingerprint"],
                position_tokens=tuple(meta["position_tokens"]),
                prompt_hashes=dict(meta["prompt_hashes"]),
                source=meta["source"],
                version=meta["roleprobe_version"],
                system=meta.get("system", "default"),
                chat_format=meta.get("chat_format", ""),
                chat_date=meta.get("chat_date", ""),
            )
        except NonFiniteDirectionsError as err:
            raise NonFiniteDirectionsError(
                f"{tensor_path}: {err.problem}", "compute and save the directions again"
            ) from err
        except (SafetensorError, KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{folder} holds malformed RoleDirections ({err})") from err
        if model is not None:
            directions.check_model(model, strict=strict)
        return directions

    def check_model(self, model: Model, strict: bool = True, opt_out: str | None = None) -> None:
        """Raise unless these directions were computed on ``model``.

        The width and the layers are always checked; with ``strict``, the weights too (their
        fingerprint, :func:`roleprobe.model_fingerprint`: the same checkpoint loaded under
        another name or dtype matches, another checkpoint of the same shape does not).

        Args:
            model: the model the directions are about to be used on.
            strict: compare the weight fingerprint.
            opt_out: for a function that checks on its user's behalf: how that user turns
                the weight check off, in their words (e.g. ``"sweep(check_model=False)"``),
                named in the error, and in a warning logged when ``strict`` is False (the
                check was skipped). ``""``: the function has no opt-out (the error says to
                compute the directions on this model). ``None``: ``strict=False``, and no
                warning.

        Raises:
            ValueError: another width, too few layers, or (``strict``) other weights.

        Example:
            >>> rd.check_model(model)  # before steering ``model`` with ``rd``
        """
        if model.cfg.d_model != self.d_model:
            raise ValueError(
                f"these directions have d_model={self.d_model} but the model has "
                f"d_model={model.cfg.d_model}"
            )
        if max(self.layers) >= model.cfg.n_layers:
            raise ValueError(
                f"these directions use layer {max(self.layers)}; the model has "
                f"{model.cfg.n_layers} layers"
            )
        if not strict:
            if opt_out:
                logger.warning(
                    "%s: the weights of these directions' model (%r) were not compared with "
                    "this model's (%r); if they differ, the results mean nothing",
                    opt_out,
                    self.model_name,
                    model_name(model),
                )
            return
        fingerprint = model_fingerprint(model)
        if fingerprint == self.model_fingerprint:
            return
        if opt_out is None:
            fix = "Pass strict=False to use them anyway"
        elif opt_out:
            fix = f"Compute them on this model, or pass {opt_out} to use them anyway"
        else:
            fix = "Compute them on this model (compute_directions)"
        if not self.model_fingerprint:
            raise ValueError(
                f"these directions record no weight fingerprint (built by hand?), so they "
                f"cannot be matched to {model_name(model)!r} (weights {fingerprint}). Set "
                f"model_fingerprint=rp.model_fingerprint(model) when building them. {fix}"
            )
        raise ValueError(
            f"these directions were computed on {self.model_name!r} (weights "
            f"{self.model_fingerprint}); this model is {model_name(model)!r} (weights "
            f"{fingerprint}). {fix}"
        )


def _check_means(name: str, means: Any, ndim: int, axes: str) -> None:
    """A tensor of means: a floating-point torch tensor with values, of ``ndim`` axes."""
    if not isinstance(means, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor {axes}, got {type(means).__name__}; "
            "convert it with torch.as_tensor"
        )
    if means.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device (a shape without values); compute the means on a "
            "real device (a model loaded with its weights)"
        )
    if not means.is_floating_point():
        raise ValueError(
            f"{name} has dtype {means.dtype}; means must be floating point, e.g. {name}.double()"
        )
    if means.ndim != ndim:
        raise ValueError(f"{name} must have shape {axes}, got {tuple(means.shape)}")


def _nonfinite(
    name: str,
    means: Tensor,
    roles: Sequence[str],
    positions: Sequence[PositionLabel],
    layers: Sequence[int],
) -> str:
    """``""`` when every value of ``means`` is finite, else where the first bad one is.

    ``means`` is ``[role, pos, layer, d_model]`` or ``[pos, layer, d_model]``; it is read one
    role at a time, so the check needs no copy of the whole tensor.
    """
    slices = means.unbind(0) if means.ndim == 4 else (means,)
    for r, part in enumerate(slices):
        bad = ~torch.isfinite(part)
        if not bool(bad.any()):
            continue
        p, li, d = (int(i) for i in bad.nonzero()[0])
        where = f"position {positions[p]!r}, layer {layers[li]}"
        if means.ndim == 4:
            where = f"role {roles[r]!r}, {where}"
            count = sum(int((~torch.isfinite(s)).sum()) for s in slices[r:])
        else:
            count = int(bad.sum())
        return (
            f"{name} holds {count} non-finite value{'' if count == 1 else 's'}, the first "
            f"({float(part[p, li, d])}) at {where}"
        )
    return ""


def _preview(items: Sequence[Any], head: int = 4) -> str:
    """``a, b, c, d, … (+n)``: the first few items of a long tuple."""
    shown = ", ".join(str(item) for item in items[:head])
    return shown + (f", … (+{len(items) - head})" if len(items) > head else "")


def _count(items: Sequence[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _span(labels: Sequence[Any]) -> str:
    """``0..23`` for a contiguous run of integers (layers, offsets), else the first few."""
    ints = [x for x in labels if isinstance(x, int)]
    if len(ints) == len(labels) > 2 and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{ints[0]}..{ints[-1]}"
    return _preview(labels, 6)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)


def compute_directions(
    model: Model,
    roles: str | Sequence[str] | None = None,
    source: "str | Path | RolePrompts" = "builtin",
    positions: str | Sequence[int] = "post_instruction",
    batch_size: int = 16,
    data_dir: str | Path | None = None,
    layers: Sequence[int] | None = None,
    hook: str = "hook_resid_pre",
    progress: bool = True,
    system: str | None = "default",
    revision: str | None = None,
) -> RoleDirections:
    """Difference-of-means role directions at every layer, from any prompt source.

    The baseline set is streamed once; each role's set once. Nothing per prompt is kept.

    Args:
        model: a TransformerLens ``TransformerBridge`` with a chat tokenizer.
        roles: role names (default: every role in the source).
        source: ``"builtin"``, ``"paper"``, a folder, or a :class:`RolePrompts`.
        positions: ``"post_instruction"``, ``"last"``, ``"instruction_mean"`` or offsets.
        batch_size: prompts per forward pass.
        data_dir: the paper's data folder or URL (``source="paper"``).
        layers: which layers (default: all).
        hook: per-block hook point (default the residual stream entering the block).
        progress: one tqdm bar over the prompt sets (each set's batches show below it
            while they run).
        system: the system-turn policy: ``"default"`` (or ``None``: the template's own,
            with a fixed date for date-dependent templates), ``"none"`` (no system turn, the
            paper's format) or a system prompt text. Recorded with the directions, together
            with the exact text of one formatted prompt.
        revision: which published prompt set ``source="paper"`` reads: ``"final"`` (the
            official release, default) or ``"v1"`` (the first pipeline's, commit cfa1e6e);
            recorded in ``source``.

    Returns:
        :class:`RoleDirections` with ``vectors`` of shape ``[role, pos, layer, d_model]``.
    """
    from roleprobe import __version__

    check_model_arg(model)
    prompts = load_prompts(source, roles, data_dir, revision)
    layer_tuple, hook = check_layers(model, layers), check_hook(hook)
    template = ChatTemplate.from_tokenizer(model.tokenizer, system)  # fails before any forward
    kwargs: dict[str, Any] = dict(
        layers=layer_tuple,
        hook=hook,
        positions=positions,
        batch_size=batch_size,
        progress=progress,
        system=template.system,
    )
    # one bar per call: the prompt sets; each set's batches show below it, then vanish
    with bar(total=1 + len(prompts.roles), enabled=progress, desc="directions", unit="set") as sets:
        base = collect_means(model, list(prompts.base.instructions), desc=BASE_NAME, **kwargs)
        sets.update()
        role_means = []
        for name, p in prompts.roles.items():
            role_means.append(collect_means(model, list(p.instructions), desc=name, **kwargs))
            sets.update()
    tokens = template.post_instruction_tokens(model.tokenizer)
    position_tokens = tuple(tokens[p] if isinstance(p, int) else "" for p in base.positions)
    return RoleDirections(
        role_means=torch.stack([m.mean for m in role_means]),
        base_mean=base.mean,
        role_counts=tuple(m.count for m in role_means),
        base_count=base.count,
        roles=tuple(prompts.roles),
        layers=layer_tuple,
        positions=base.positions,
        hook=hook,
        model_name=model_name(model),
        model_fingerprint=model_fingerprint(model),
        position_tokens=position_tokens,
        prompt_hashes=prompts.hashes(),
        source=prompts.source,
        version=__version__,
        system=template.system,
        chat_format=template.render(model.tokenizer, PLACEHOLDER),
        chat_date=template.date_string,
    )
