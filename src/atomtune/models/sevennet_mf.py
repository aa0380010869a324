"""Multi-fidelity SevenNet (SevenNet-MF-0 in the sevenn wheel; 7net-mf-ompa downloaded by sevenn) with the fidelity
("modal") chosen by name: ``sevennet-mf-0`` (PBE head, the MPtrj fidelity), ``sevennet-mf-0-r2scan``,
``sevennet-mf-ompa`` / ``sevennet-mf-ompa-omat24``; from Python any checkpoint and modal with
``SevennetMultiFidelityPotential.from_checkpoint("7net-mf-ompa:omat24")``.

A multi-fidelity SevenNet is a single-fidelity one plus a one-hot of the fidelity fed to its linear layers and a
per-fidelity shift/scale. Everything else (graph, convolutions, forces and stress from edge vectors, blocks, save) is
:class:`~atomtune.models.sevennet.SevennetPotential`; here the checkpoint string carries the modal
(``"7net-mf-0:PBE"``), and every collated batch gets the modal's index per structure (``KEY.MODAL_TYPE``), which is what
sevenn's own calculator sets from its ``modal=`` argument.
"""

from __future__ import annotations

import torch

from atomtune.exceptions import AtomtuneError, ModelNotFoundError
from atomtune.models.sevennet import (
    SevennetPotential,
    _build_model,
    _elements_of_checkpoint_file,
    _local_checkpoint_path,
    _native_checkpoint,
)

#: the modal a checkpoint is used with when none is named: PBE(+U), the fidelity of MPtrj and of most users' data
DEFAULT_MODAL = "PBE"


def split_checkpoint(checkpoint: str) -> tuple[str, str]:
    """``"7net-mf-0:R2SCAN"`` → ``("7net-mf-0", "R2SCAN")``; no modal → :data:`DEFAULT_MODAL`."""
    name, _, modal = checkpoint.rpartition(":") if ":" in checkpoint else (checkpoint, "", "")
    return name, (modal or DEFAULT_MODAL)


class SevennetMultiFidelityPotential(SevennetPotential):
    """A multi-fidelity SevenNet evaluated at one fidelity (``modal``) for every structure."""

    backbone = "sevennet-mf"

    def __init__(self, checkpoint: str, model: torch.nn.Module, config: dict, fast_convolution: bool = True):
        super().__init__(checkpoint, model, config, fast_convolution)
        self.modal = split_checkpoint(checkpoint)[1]
        self.modal_index = int(model.modal_map[self.modal])

    @classmethod
    def from_checkpoint(cls, checkpoint: str = "7net-mf-0:PBE", trust: bool = False) -> SevennetMultiFidelityPotential:
        """``"7net-mf-0:PBE"`` (shipped in the wheel), ``"7net-mf-ompa:mpa"`` (sevenn downloads it), or a ``.pth``
        file with ``:MODAL``."""
        name, modal = split_checkpoint(checkpoint)
        try:
            native = _native_checkpoint(name, trust)
        except (ValueError, FileNotFoundError) as error:
            raise ModelNotFoundError(
                f"SevenNet checkpoint {name!r} not found: give 7net-mf-0 (in the sevenn wheel), 7net-mf-ompa "
                f"(downloaded by sevenn) or a multi-fidelity .pth file. ({error})"
            ) from None
        return cls._from_native(f"{name}:{modal}", _build_model(native), native.config)

    @classmethod
    def _from_native(cls, checkpoint: str, model: torch.nn.Module, config: dict) -> SevennetMultiFidelityPotential:
        import sevenn._keys as KEY

        modal_map = getattr(model, "modal_map", None)
        if not modal_map:
            raise AtomtuneError(
                f"SevenNet checkpoint {checkpoint!r} has one fidelity; use it as a sevennet model, not sevennet-mf."
            )
        name, modal = split_checkpoint(checkpoint)
        # sevenn matches fidelity names case-insensitively (7net-mf-0: "PBE", "R2SCAN"; 7net-mf-ompa: "mpa", "omat24")
        modal = next((known for known in modal_map if known.lower() == modal.lower()), modal)
        checkpoint = f"{name}:{modal}"
        if modal not in modal_map:
            raise ModelNotFoundError(
                f"SevenNet checkpoint {name!r} has no fidelity {modal!r}; its fidelities: {', '.join(modal_map)} "
                f"(e.g. --model sevennet-mf:{name}:{next(iter(modal_map))})."
            )
        if model.key_grad != KEY.EDGE_VEC:
            raise AtomtuneError(f"SevenNet checkpoint {checkpoint!r} does not differentiate by edge vectors.")
        model.set_is_batch_data(True)
        return cls(checkpoint, model, config)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        """True when the weights are on disk (7net-mf-0 in the wheel, or a file); never downloads."""
        return _local_checkpoint_path(split_checkpoint(checkpoint)[0]) is not None

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        path = _local_checkpoint_path(split_checkpoint(checkpoint)[0])
        if path is None:
            raise ModelNotFoundError(f"SevenNet checkpoint {checkpoint!r} is not on disk (sevenn downloads it on use).")
        return _elements_of_checkpoint_file(path)

    def collate(self, graphs):
        """sevenn's batch plus the fidelity index of every structure (``KEY.MODAL_TYPE``, shape ``(B,)``)."""
        import sevenn._keys as KEY

        batch = super().collate(graphs)
        batch[KEY.MODAL_TYPE] = torch.full((batch.num_graphs,), self.modal_index, dtype=torch.long, device=self.device)
        return batch
