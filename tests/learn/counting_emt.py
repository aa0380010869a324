"""EMT that appends one line per calculation (structure hash, formula) to the file ``log`` (the SIGKILL test counts labeller calls with it), and
can be told to fail on structures with a given number of atoms (a calculator that fails on some frames)."""

from __future__ import annotations

import os

from ase.calculators.emt import EMT

from atomtune.data.dataset import structure_id


class CountingEMT(EMT):
    def __init__(self, log: str = "", fail_n_atoms: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.log = log
        self.fail_n_atoms = fail_n_atoms
        # Not a setting (it would change the loop's fingerprint): the SIGKILL test slows labelling down from outside.
        self.sleep_s = float(os.environ.get("COUNTING_EMT_SLEEP_S", "0"))

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{structure_id(atoms)} {atoms.get_chemical_formula()}\n")
        if self.fail_n_atoms and len(atoms) == self.fail_n_atoms:
            raise RuntimeError(f"refusing {len(atoms)}-atom cells (test)")
        if system_changes is None:
            super().calculate(atoms, properties)
        else:
            super().calculate(atoms, properties, system_changes)
        if self.sleep_s:
            import time

            time.sleep(self.sleep_s)
