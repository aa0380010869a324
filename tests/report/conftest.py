import pytest


def _png(path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(3, 2))
    axis.plot([0, 1, 2], [1, 0, 2])
    axis.set_title(title)
    figure.savefig(path, dpi=60)
    plt.close(figure)
    return str(path)


@pytest.fixture
def campaign_results(tmp_path):
    """A results dict as assembled by atomtune.campaign.assemble, with real small PNGs."""
    return {
        "name": "ni-demo",
        "title": "Ni <alloy> demo",
        "atomtune_version": "0.1.0",
        "machine": "2 CPU cores",
        "created": "2026-11-21T10:30:00",
        "wall_time_s": 600.0,
        "data": {"n_structures": 240, "n_atoms": 1100, "elements": ["Al", "Ni"], "sources": ["ni.extxyz"],
                 "splits": {"train": 170, "valid": 20, "test": 50}, "split_by": "random",
                 "plots": [_png(tmp_path / "elements.png", "elements")]},
        "models": [
            {"label": "chgnet-0.3.0", "kind": "zero-shot", "backbone": "chgnet-0.3.0"},
            {"label": "chgnet-0.3.0+lora", "kind": "fine-tuned", "strategy": "lora", "base": "chgnet-0.3.0"},
            {"label": "chgnet-0.3.0+freeze", "kind": "fine-tuned", "strategy": "freeze", "base": "chgnet-0.3.0"},
        ],
        "errors": {
            "chgnet-0.3.0": {"energy_mae_mev_per_atom": 900.0, "force_mae_mev_per_a": 180.0, "stress_mae_gpa": 1.2,
                             "aligned_note": "aligned: one energy offset per element",
                             "per_element": {"Ni": {"force_mae_mev_per_a": 170.0}, "Al": {"force_mae_mev_per_a": 200.0}}},
            "chgnet-0.3.0+lora": {"energy_mae_mev_per_atom": 12.0, "force_mae_mev_per_a": 40.0, "stress_mae_gpa": 0.4,
                                  "per_element": {"Ni": {"force_mae_mev_per_a": 38.0}, "Al": {"force_mae_mev_per_a": 44.0}}},
        },
        "error_plots": {"chgnet-0.3.0": _png(tmp_path / "parity.png", "parity")},
        "finetune": {"chgnet-0.3.0+lora": {"strategy": "lora", "epochs": 4, "trainable_parameters": 1200,
                                           "total_parameters": 400000, "wall_time_s": 61.0,
                                           "e0_shift_ev": {"Ni": -0.8},
                                           "learning_curve_png": _png(tmp_path / "lc.png", "learning curve")}},
        "scans": {"chgnet-0.3.0+freeze freeze_depth": {"parameter": "freeze_depth",
                                                      "rows": [{"value": 1, "label": "a", "force_mae_mev_per_a": 60.0},
                                                               {"value": 2, "label": "b", "force_mae_mev_per_a": 50.0}],
                                                      "plot": _png(tmp_path / "scan.png", "scan")}},
        "tasks": {"eos": {"reference": "GPAW PBE", "missing": [],
                          "rows": [{"id": "Ni-fcc", "property": "bulk_modulus_gpa", "GPAW PBE": 195.0,
                                    "chgnet-0.3.0": 170.0, "chgnet-0.3.0+lora": 190.0},
                                   {"id": "Ni-fcc", "property": "lattice_constant", "GPAW PBE": 3.52,
                                    "chgnet-0.3.0": 3.55, "chgnet-0.3.0+lora": 3.53}],
                          "plots": [_png(tmp_path / "eos.png", "eos")]}},
        "failures": [{"step": "finetune chgnet-0.3.0+freeze", "error": "AtomtuneError: learning rate 5 makes no sense",
                      "skipped_dependants": ["errors chgnet-0.3.0+freeze"]}],
    }
