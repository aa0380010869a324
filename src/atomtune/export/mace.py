"""Export a MACE Potential to LAMMPS the way mace's ``create_lammps_model`` does.

Formats: ``mace-libtorch`` (mace's ``LAMMPS_MACE`` wrapper compiled with ``e3nn.util.jit.compile``, saved as
``<name>-lammps.pt``, for ``pair_style mace``: LAMMPS built with mace's LibTorch pair style, the ML-MACE package of the
ACEsuit LAMMPS fork) and ``mliap`` (mace's ``LAMMPS_MLIAP_MACE`` pickled, for ``pair_style mliap unified``: LAMMPS with
ML-IAP + Python + Kokkos; mace converts the model to cuequivariance first, so ``cuequivariance-torch`` must be
installed, which it is not in atomtune's default environment).

Before writing, the Potential is copied and made native: LoRA adapters still attached are merged into the weights, and
atomtune's ``element_energy_shift`` is added to the model's own atomic energies (``MacePotential.native_model``), so the
exported model gives the Potential's energies. The selected readout head is the one the Potential uses.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from ase import Atoms

from atomtune.exceptions import AtomtuneError

FORMATS = ("mace-libtorch", "mliap")
LIBTORCH_FILE = "mace-lammps.pt"
MLIAP_FILE = "mace-mliap_lammps.pt"


def native_model(potential) -> torch.nn.Module:
    """The MACE module alone giving ``potential``'s energies: LoRA merged, E0 shift in its atomic energies (a copy)."""
    from atomtune.export import merged_copy

    return merged_copy(potential).native_model()


def export(potential, out_dir: Path, formats) -> list:
    """Write the requested formats into ``out_dir`` with mace's LAMMPS wrappers; return their records."""
    from e3nn.util import jit
    from mace.calculators import LAMMPS_MACE

    from atomtune.export import ExportedModel

    model = native_model(potential).to("cpu")
    elements = sorted(potential.supported_elements, key=_atomic_number)
    precision = str(potential.dtype).removeprefix("torch.")
    records = []
    for name in formats:
        if name == "mace-libtorch":
            wrapper = LAMMPS_MACE(copy.deepcopy(model), head=potential.head)
            path = out_dir / LIBTORCH_FILE
            jit.compile(wrapper).save(str(path))
            records.append(
                ExportedModel(
                    format=name,
                    path=path,
                    backbone="mace",
                    pair_style="mace",
                    elements=elements,
                    cutoff_angstrom=float(potential.cutoff),
                    lammps_build="LAMMPS with mace's LibTorch pair style (ACEsuit/lammps, ML-MACE package)",
                    notes=[f"{precision} (the Potential's dtype; load it as float64 for mace's default)"],
                )
            )
        elif name == "mliap":
            try:
                from mace.calculators.lammps_mliap_mace import LAMMPS_MLIAP_MACE
                from mace.cli.convert_e3nn_cueq import run as e3nn_to_cueq

                converted = e3nn_to_cueq(copy.deepcopy(model))
            except Exception as error:  # ImportError, or cuequivariance's own errors when it is missing
                raise AtomtuneError(
                    f"MACE's ML-IAP export converts the model to cuequivariance, which is not usable here "
                    f"({type(error).__name__}: {error}). Install cuequivariance-torch (GPU) for mliap, or export "
                    f"format mace-libtorch (pair_style mace), which needs nothing extra."
                ) from None
            converted.lammps_mliap = True
            path = out_dir / MLIAP_FILE
            torch.save(LAMMPS_MLIAP_MACE(converted, head=potential.head), path)
            records.append(
                ExportedModel(
                    format=name,
                    path=path,
                    backbone="mace",
                    pair_style="mliap unified",
                    elements=elements,
                    cutoff_angstrom=float(potential.cutoff),
                    lammps_build="LAMMPS with ML-IAP, PYTHON and Kokkos (ML-IAP unified Python models)",
                    notes=["a pickle: LAMMPS's Python loads it with torch.load; keep mace installed beside LAMMPS"],
                )
            )
        else:  # checked by atomtune.export.export
            raise AtomtuneError(f"unknown MACE export format {name!r}; use one of {', '.join(FORMATS)}.")
    return records


def evaluate_deployed(path: str | Path, atoms: Atoms) -> dict:
    """Energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign) of ``atoms`` from a compiled ``LAMMPS_MACE`` file,
    called as LAMMPS's ``pair_style mace`` calls it (every atom local, ``compute_virials``); the graph is mace's own
    (periodic images as shifts where LAMMPS would pass ghost atoms). For checking an export in Python."""
    from mace import data as mace_data
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    model = torch.jit.load(str(path), map_location="cpu")
    numbers = [int(z) for z in model.atomic_numbers]
    dtype = next(iter(model.parameters()), torch.zeros((), dtype=torch.float64)).dtype
    table = AtomicNumberTable(numbers)
    unknown = sorted(set(atoms.numbers.tolist()) - set(numbers))
    if unknown:
        raise AtomtuneError(f"{path}: the exported MACE model has no element(s) with Z = {unknown}.")
    from mace.tools.torch_tools import default_dtype

    with default_dtype(torch.float64):  # positions and shifts in double, then cast to the model's dtype
        config = mace_data.config_from_atoms(atoms, key_specification=mace_data.KeySpecification())
        graph = mace_data.AtomicData.from_config(config, z_table=table, cutoff=float(model.r_max))
    batch = torch_geometric.batch.Batch.from_data_list([graph]).to_dict()
    batch = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in batch.items()}
    batch["positions"].requires_grad_(True)
    local = torch.ones(len(atoms), dtype=dtype)
    output = model(batch, local, compute_virials=bool(atoms.pbc.all()))
    result = {
        "energy": float(output["total_energy_local"].detach().sum()),
        "forces": output["forces"].detach().double().numpy(),
    }
    if atoms.pbc.all():
        virials = output["virials"].detach().double().numpy().reshape(3, 3)
        result["stress"] = -virials / atoms.get_volume()
    return result


def _atomic_number(symbol: str) -> int:
    from ase.data import chemical_symbols

    return chemical_symbols.index(symbol)


__all__ = ["FORMATS", "evaluate_deployed", "export", "native_model"]
