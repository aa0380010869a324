"""A tiny pure-torch Potential used by unit tests (fast, no backbone package): per-element embeddings, a smooth pair
term through two small layers. It implements the full protocol, forces and stress by autograd, so strategies, the training
loop and tasks can be tested in seconds. Test-only: never behind a user-facing command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list

from atomtune.models.base import Potential

ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


class ToyPotential(Potential):
    backbone = "toy"
    cpu_batch_size = 8

    def __init__(self, checkpoint: str = "toy", width: int = 8, cutoff: float = 4.5, seed: int = 0):
        super().__init__(checkpoint)
        generator = torch.Generator().manual_seed(seed)
        self.width = width
        self._cutoff = cutoff
        self.embedding = torch.nn.Embedding(len(chemical_symbols), width)
        torch.nn.init.normal_(self.embedding.weight, std=0.3, generator=generator)
        self.interaction = torch.nn.Linear(2 * width + 1, width)
        self.readout = torch.nn.Linear(width, 1)

    # protocol ------------------------------------------------------------------------------------------------------
    def featurize(self, atoms):
        i, j, shift = neighbor_list("ijS", atoms, self._cutoff)
        return {
            "numbers": torch.as_tensor(atoms.numbers, dtype=torch.long),
            "positions": torch.as_tensor(atoms.positions, dtype=torch.float64),
            "cell": torch.as_tensor(np.asarray(atoms.cell[:]), dtype=torch.float64),
            "edge_index": torch.as_tensor(np.stack([i, j]), dtype=torch.long),
            "shift": torch.as_tensor(shift, dtype=torch.float64),
            "periodic": bool(atoms.pbc.all()),
        }

    def collate(self, graphs):
        dtype = self.readout.weight.dtype
        offsets = np.concatenate([[0], np.cumsum([len(g["numbers"]) for g in graphs])])
        return {
            "numbers": torch.cat([g["numbers"] for g in graphs]),
            "positions": torch.cat([g["positions"] for g in graphs]).to(dtype),
            "cells": torch.stack([g["cell"] for g in graphs]).to(dtype),
            "edge_index": torch.cat([g["edge_index"] + int(o) for g, o in zip(graphs, offsets)], dim=1),
            "shift": torch.cat([g["shift"] for g in graphs]).to(dtype),
            "edge_structure": torch.cat(
                [torch.full((g["edge_index"].shape[1],), k, dtype=torch.long) for k, g in enumerate(graphs)]
            ),
            "atom_structure": torch.repeat_interleave(
                torch.arange(len(graphs)), torch.tensor([len(g["numbers"]) for g in graphs])
            ),
            "periodic": [g["periodic"] for g in graphs],
        }

    def _energies(self, data, positions, cells):
        i, j = data["edge_index"]
        edge_cells = cells[data["edge_structure"]]
        vectors = positions[j] - positions[i] + torch.einsum("ek,ekl->el", data["shift"], edge_cells)
        distance = vectors.norm(dim=1, keepdim=True)
        envelope = 0.5 * (torch.cos(torch.pi * distance / self._cutoff) + 1.0)
        embed = self.embedding(data["numbers"])
        pair = torch.cat([embed[i], embed[j], torch.exp(-distance)], dim=1)
        messages = torch.tanh(self.interaction(pair)) * envelope
        atom = torch.zeros(len(data["numbers"]), self.width, dtype=positions.dtype).index_add(0, i, messages)
        atom_energy = self.readout(atom).squeeze(-1)
        n_structures = cells.shape[0]
        return torch.zeros(n_structures, dtype=positions.dtype).index_add(0, data["atom_structure"], atom_energy), atom

    def compute(self, data, forces=True, stress=True):
        positions = data["positions"]
        cells = data["cells"]
        n_structures = cells.shape[0]
        strain = torch.zeros(n_structures, 3, 3, dtype=positions.dtype, requires_grad=stress)
        if forces:
            positions = positions.clone().requires_grad_(True)
        deformation = torch.eye(3, dtype=positions.dtype) + 0.5 * (strain + strain.transpose(1, 2))
        positions_s = torch.einsum("ni,nij->nj", positions, deformation[data["atom_structure"]])
        cells_s = torch.bmm(cells, deformation)
        energy, _ = self._energies(data, positions_s, cells_s)
        output = {"energy": energy}
        inputs = [t for t, want in ((positions, forces), (strain, stress)) if want]
        if inputs:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training)
            if forces:
                output["forces"] = -grads[0]
            if stress:
                volumes = torch.linalg.det(cells).abs().clamp_min(1e-12)
                output["stress"] = grads[-1] / volumes[:, None, None]
        return output

    def blocks(self):
        return [("embedding", self.embedding), ("interaction", self.interaction), ("readout", self.readout)]

    @property
    def supported_elements(self):
        return frozenset(ELEMENTS)

    @property
    def cutoff(self):
        return self._cutoff

    def atom_features(self, data):
        _, atom = self._energies(data, data["positions"], data["cells"])
        return atom

    def save_weights(self, directory: Path) -> dict:
        torch.save(self.state_dict(), directory / "toy.pt")
        return {"file": "toy.pt", "width": self.width, "cutoff": self._cutoff}

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False):
        weights = metadata["weights"]
        potential = cls(metadata["checkpoint"], width=weights["width"], cutoff=weights["cutoff"])
        state = torch.load(directory / weights["file"], weights_only=True)
        if any(t.dtype == torch.float64 for t in state.values()):
            potential = potential.double()  # load float64 weights without rounding them through float32
        potential.load_state_dict(state)
        return potential

    @classmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False):
        return cls(checkpoint)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        return True

    @classmethod
    def checkpoint_elements(cls, checkpoint: str):
        return frozenset(ELEMENTS)
