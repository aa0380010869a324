"""Every strategy on every backbone (CHGNet 0.3.0, SevenNet-0, the tiny MACE) on a handful of EMT cells for one epoch:
it trains what it should, leaves the rest alone, and the saved directory reloads as a plain Potential. Plus the backbone
traps: LoRA keeps forces equivariant on e3nn models, CHGNet trains on ASE-unit stresses, E0 re-estimation moves
foundation models onto the EMT energy scale and travels into each backbone's native file."""

import numpy as np
import pytest
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from atomtune.finetune import Freeze, Full, LoRA, Replay, Trainer, TrainingSettings
from atomtune.finetune.strategies.lora import layer_kind

BACKBONES = ("chgnet", "sevennet", "mace")
STRATEGIES = ("full", "freeze", "lora", "replay")
ONE_EPOCH = dict(epochs=1, learning_rate=2e-3, batch_size=4, progress=False, ema_decay=None, restore_best=False)
#: Backbone-fixed parameters that E0 re-estimation itself writes (SevenNet's per-element shift).
E0_TARGETS = {"model.rescale_atomic_energy.shift"}


def _strategy(name):
    return {
        "full": Full(),
        "freeze": Freeze(1),
        "lora": LoRA(rank=2, alpha=4.0),
        "replay": Replay(generate=2, weight=0.5, base=Freeze(1)),
    }[name]


def _tiny_split(make_emt):
    # Four-atom cells only (k % 3 != 2): cheap for SevenNet-0's lmax-2 five-layer network.
    structures = [atoms for k, atoms in enumerate(make_emt(6, seed=11)) if k % 3 != 2]
    return structures[:3], structures[3:]


@pytest.mark.parametrize("strategy_name", STRATEGIES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_strategy_on_each_backbone(backbone, strategy_name, backbone_potential, make_emt, tmp_path):
    potential = backbone_potential(backbone)
    before = {name: p.detach().clone() for name, p in potential.named_parameters()}
    backbone_fixed = {name for name, p in potential.named_parameters() if not p.requires_grad}
    train, valid = _tiny_split(make_emt)
    strategy = _strategy(strategy_name)
    result = Trainer(TrainingSettings(**ONE_EPOCH)).fit(potential, train, valid, strategy, out=tmp_path / "ft")

    assert np.isfinite(result.history[-1]["train_loss"]) and np.isfinite(result.history[-1]["valid_loss"])
    after = {name: p.detach() for name, p in result.potential.named_parameters()}
    assert set(after) == set(before)  # merged back: the backbone's own parameters, nothing else
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed - E0_TARGETS and not (changed & backbone_fixed) - E0_TARGETS
    changed -= E0_TARGETS
    blocks = potential.blocks()
    readout = {id(p) for p in blocks[-1][1].parameters()}
    counts = result.metrics["parameters"]
    if strategy_name in ("freeze", "replay"):
        assert {name for name in changed if id(dict(potential.named_parameters())[name]) not in readout} == set()
        assert counts["trainable"] == sum(p.numel() for p in blocks[-1][1].parameters() if p.requires_grad)
    elif strategy_name == "lora":
        adapted = [m for _, m in potential.named_modules() if layer_kind(m)]
        assert {name.rsplit(".", 1)[-1] for name in changed} <= {"weight"}  # only adapted weights move
        assert 0 < counts["trainable"] < 0.3 * (counts["total"] - counts["trainable"])
        assert adapted
    else:
        assert counts["trainable"] == counts["total"] - sum(before[name].numel() for name in backbone_fixed)
    if strategy_name == "full" and backbone != "sevennet":  # SevenNet's rebuild costs ~10 s: its own slow test
        from atomtune.models import load_potential

        reloaded = load_potential(str(tmp_path / "ft"))
        assert type(reloaded) is type(potential)
        expected, got = result.potential.predict(valid), reloaded.predict(valid)
        for a, b in zip(expected, got):
            assert b["energy"] == pytest.approx(a["energy"], abs=1e-4)
            np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-4)


def _random_lora(potential, seed=0):
    """LoRA with non-zero updates (the trained state after some steps), still unmerged."""
    lora = LoRA(rank=2, alpha=4.0)
    lora.apply(potential)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in potential.named_parameters():
            if name.endswith(".right"):
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return lora


@pytest.mark.parametrize("backbone", BACKBONES)
def test_lora_update_keeps_forces_equivariant_and_merges_exactly(backbone, backbone_potential, make_emt):
    from scipy.spatial.transform import Rotation

    potential = backbone_potential(backbone)
    atoms = make_emt(3, seed=5)[2]  # 8 atoms, rattled: forces are non-trivial
    reference = potential.predict([atoms])[0]
    lora = _random_lora(potential)
    unmerged = potential.predict([atoms])[0]
    assert np.abs(unmerged["forces"] - reference["forces"]).max() > 1e-4  # the update does something
    rotation = Rotation.random(random_state=3).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell[:] @ rotation.T, scale_atoms=True)
    turned = potential.predict([rotated])[0]
    np.testing.assert_allclose(turned["forces"], unmerged["forces"] @ rotation.T, atol=2e-4)
    assert turned["energy"] == pytest.approx(unmerged["energy"], abs=2e-4)
    lora.merge(potential)
    merged = potential.predict([atoms])[0]
    assert merged["energy"] == pytest.approx(unmerged["energy"], abs=1e-4)
    np.testing.assert_allclose(merged["forces"], unmerged["forces"], atol=1e-4)


def test_chgnet_trains_on_ase_unit_stress(backbone_potential, make_emt):
    """CHGNet's own StructureData multiplies stresses by −0.1 (it expects VASP kbar); atomtune's target is ASE eV/Å³."""
    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.loss import EnergyForceStressLoss, LossWeights

    potential = backbone_potential("chgnet")
    structures = make_emt(4, seed=6)
    data = FeaturizedSet.build("train", structures, potential)
    labelled = data.batch(range(4), potential)
    expected = np.stack([voigt_6_to_full_3x3_stress(atoms.get_stress()) for atoms in structures])
    np.testing.assert_allclose(labelled.target["stress"].numpy(), expected)
    _, terms = EnergyForceStressLoss(LossWeights(stress=1.0))(potential(labelled.batch), labelled.target,
                                                               labelled.batch.n_atoms)
    predicted = np.stack([record["stress"] for record in potential.predict(structures)])
    assert float(terms["stress"]) == pytest.approx(((predicted - expected) ** 2).mean(), rel=1e-3)
    # CHGNet-0.3.0 on EMT cells: stress errors of a few GPa, not the ×(−0.1)/×10 of a unit slip.
    assert np.sqrt(((predicted - expected) ** 2).mean()) * 160.2 < 10.0


def test_e0_reestimation_moves_chgnet_onto_emt_energies(backbone_potential, make_emt):
    potential = backbone_potential("chgnet")
    structures = make_emt(12, seed=8)
    train, valid = structures[:9], structures[9:]
    result = Trainer(TrainingSettings(**{**ONE_EPOCH, "learning_rate": 1e-6})).fit(potential, train, valid)
    zero_shot = result.metrics["zero_shot"]
    assert zero_shot["valid"]["energy_mae_mev_per_atom"] > 3000  # EMT's energy zero is eV/atom away from PBE's
    # What is left is EMT-vs-PBE physics on strained, substituted cells (~0.1–0.2 eV/atom here), not the offset.
    assert zero_shot["valid_after_e0"]["energy_mae_mev_per_atom"] < 300


def test_mace_native_file_carries_the_e0_shift(backbone_potential, make_emt, tmp_path):
    """mace's own single-head fine-tuning keeps the foundation's atomic energies; atomtune writes them into the model."""
    from mace.calculators import MACECalculator

    from atomtune.data.dataset import attach_labels

    potential = backbone_potential("mace")
    structures = make_emt(9, seed=2)
    for atoms in structures:  # move the reference by −2 eV per atom: only a native E0 change can follow
        attach_labels(atoms, atoms.get_potential_energy() - 2.0 * len(atoms), atoms.get_forces(), atoms.get_stress())
    result = Trainer(TrainingSettings(**ONE_EPOCH)).fit(potential, structures[:6], structures[6:], out=tmp_path)
    for atoms, record in zip(structures[6:], result.potential.predict(structures[6:])):
        assert abs(record["energy"] - atoms.get_potential_energy()) / len(atoms) < 1.0  # the −2 eV/atom is in
    calculator = MACECalculator(model_paths=str(tmp_path / "mace-native.model"), device="cpu", default_dtype="float64")
    atoms = structures[7].copy()
    atoms.calc = calculator
    assert atoms.get_potential_energy() == pytest.approx(result.potential.predict([atoms])[0]["energy"], abs=1e-3)


def test_chgnet_native_file_carries_the_e0_shift(backbone_potential, make_emt, tmp_path):
    from chgnet.model import CHGNet, CHGNetCalculator

    potential = backbone_potential("chgnet")
    structures = make_emt(6, seed=2)
    result = Trainer(TrainingSettings(**ONE_EPOCH)).fit(potential, structures[:4], structures[4:], out=tmp_path)
    native = CHGNet.from_file(str(tmp_path / "chgnet.pth.tar"))
    atoms = structures[5].copy()
    atoms.calc = CHGNetCalculator(native, use_device="cpu")
    assert atoms.get_potential_energy() == pytest.approx(result.potential.predict([atoms])[0]["energy"], abs=2e-3)


@pytest.mark.slow
def test_sevennet_native_checkpoint_carries_the_e0_shift(backbone_potential, make_emt, tmp_path):
    """SevenNet's fine_tune preset cannot learn an eV-sized per-element offset (train_shift_scale: False); atomtune
    writes E0 into its per-element shift, so sevenn's own calculator on the saved checkpoint agrees."""
    from sevenn.calculator import SevenNetCalculator

    potential = backbone_potential("sevennet")
    train, valid = _tiny_split(make_emt)
    result = Trainer(TrainingSettings(**ONE_EPOCH)).fit(potential, train, valid, Freeze(1), out=tmp_path)
    assert result.metrics["e0"]["applied_to"] == "native"
    assert result.potential.get_element_energy_shift() == {}
    atoms = valid[0].copy()
    expected = result.potential.predict([atoms])[0]
    atoms.calc = SevenNetCalculator(str(tmp_path / "checkpoint_sevennet.pth"), device="cpu")
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], abs=2e-3)
    from atomtune.models import load_potential

    reloaded = load_potential(str(tmp_path)).predict([atoms])[0]
    assert reloaded["energy"] == pytest.approx(expected["energy"], abs=1e-4)
    np.testing.assert_allclose(reloaded["forces"], expected["forces"], atol=1e-4)
