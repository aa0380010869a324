"""Strategies on the toy potential and on bare e3nn layers: what trains, what is counted, and that merging is exact."""

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from atomtune.exceptions import AtomtuneError
from atomtune.finetune import Freeze, Full, LoRA, Trainer, TrainingSettings, count_parameters

QUICK = dict(learning_rate=2e-2, progress=False, ema_decay=None)


def _snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_freeze_trains_only_the_last_blocks(toy_backbone, emt_split):
    potential = toy_backbone()
    assert Freeze(2).trained_blocks(potential) == ["interaction", "readout"]
    assert Freeze("all").trained_blocks(potential) == ["embedding", "interaction", "readout"]
    before = _snapshot(potential)
    result = Trainer(TrainingSettings(epochs=2, **QUICK)).fit(potential, *emt_split, strategy=Freeze(1))
    after = _snapshot(result.potential)
    assert torch.equal(before["embedding.weight"], after["embedding.weight"])
    assert torch.equal(before["interaction.weight"], after["interaction.weight"])
    assert not torch.equal(before["readout.weight"], after["readout.weight"])
    assert result.metrics["parameters"] == {"trainable": 9, "total": 1105}
    assert all(p.requires_grad for p in result.potential.parameters())  # merged back to a plain potential


@pytest.mark.parametrize("depth", [0, 4, "two"])
def test_freeze_depth_out_of_range_lists_the_blocks(toy_backbone, depth):
    with pytest.raises(AtomtuneError, match="embedding, interaction, readout|give a number"):
        Freeze(depth).apply(toy_backbone())


def test_lora_counts_trains_only_adapters_and_merges_exactly(toy_backbone, emt_split):
    potential = toy_backbone()
    base = _snapshot(potential)
    plain_keys = set(potential.state_dict())
    lora = LoRA(rank=2, alpha=4.0)
    lora.apply(potential)
    # interaction: Linear(17 → 8): 8·2 + 2·17; readout: Linear(8 → 1): rank capped at 1: 1·1 + 1·8
    assert count_parameters(potential) == {"trainable": 8 * 2 + 2 * 17 + 1 + 8, "total": 1105 + 50 + 9}
    Trainer(TrainingSettings(epochs=2, **QUICK)).fit(potential, *emt_split, strategy=_AlreadyApplied(lora))
    for name in ("interaction", "readout"):
        original = getattr(potential, name).parametrizations.weight.original
        assert torch.equal(original, base[f"{name}.weight"])  # the foundation weights never move
    unmerged = potential.predict(emt_split[1])
    lora.merge(potential)
    assert not parametrize.is_parametrized(potential.interaction)
    assert set(potential.state_dict()) == plain_keys
    merged = potential.predict(emt_split[1])
    for a, b in zip(unmerged, merged):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-5)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-5)
    assert not torch.equal(potential.interaction.weight, base["interaction.weight"])  # the update is in the weight


class _AlreadyApplied(Full):
    """Lets a test inspect the LoRA-wrapped potential after training (Trainer would merge a LoRA strategy)."""

    name = "lora"

    def __init__(self, lora):
        self.lora = lora

    def apply(self, potential):
        return potential

    def merge(self, potential):
        return potential


def test_lora_fit_reports_trainable_count_and_saves_merged(toy_backbone, emt_split, tmp_path):
    from atomtune.models import load_potential

    result = Trainer(TrainingSettings(epochs=1, **QUICK)).fit(
        toy_backbone(), *emt_split, strategy=LoRA(rank=2, alpha=4.0), out=tmp_path / "ft"
    )
    assert result.metrics["parameters"]["trainable"] == 59
    assert result.record["strategy"]["lora_rank"] == 2
    reloaded = load_potential(str(tmp_path / "ft"))
    np.testing.assert_allclose(
        reloaded.predict(emt_split[1][:2])[0]["forces"], result.potential.predict(emt_split[1][:2])[0]["forces"],
        atol=1e-5,
    )


def test_lora_bad_settings_raise(toy_backbone):
    for strategy, match in ((LoRA(rank=0), "rank"), (LoRA(alpha=-1), "alpha"), (LoRA(targets=("conv",)), "target")):
        with pytest.raises(AtomtuneError, match=match):
            strategy.apply(toy_backbone())
    with pytest.raises(AtomtuneError, match="no layer"):
        LoRA(targets=("e3nn_linear",)).apply(toy_backbone())


def _randomise_adapters(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith(".right"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def test_lora_on_e3nn_linear_is_per_path_low_rank_equivariant_and_merges():
    from e3nn import o3

    torch.manual_seed(0)
    irreps_in, irreps_out = o3.Irreps("6x0e+5x1o+4x2e"), o3.Irreps("7x0e+6x1o+3x2e")
    layer = o3.Linear(irreps_in, irreps_out)
    model = torch.nn.Sequential(layer)
    base = layer.weight.detach().clone()
    LoRA(rank=2, alpha=2.0).apply(model)
    _randomise_adapters(model)
    delta = layer.weight.detach() - base
    for block in layer.weight_views(delta):
        assert torch.linalg.matrix_rank(block) <= 2  # low rank within each irrep path
        assert block.abs().max() > 0  # and a non-zero update
    rotation = o3.rand_matrix()
    x = irreps_in.randn(5, -1)
    rotated_then = model(x @ irreps_in.D_from_matrix(rotation).T)
    then_rotated = model(x) @ irreps_out.D_from_matrix(rotation).T
    torch.testing.assert_close(rotated_then, then_rotated, atol=1e-5, rtol=1e-5)
    unmerged = model(x)
    LoRA().merge(model)
    assert not parametrize.is_parametrized(layer)
    torch.testing.assert_close(model(x), unmerged)


def test_lora_on_e3nn_mlp_layers():
    from e3nn.nn import FullyConnectedNet

    mlp = torch.nn.Sequential(FullyConnectedNet([4, 16, 8], torch.nn.functional.silu))
    lora = LoRA(rank=3, alpha=3.0)
    kinds = [kind for _, kind, _ in lora.adapted_layers(mlp)]
    assert kinds == ["e3nn_mlp", "e3nn_mlp"]
    lora.apply(mlp)
    _randomise_adapters(mlp)
    x = torch.randn(5, 4)
    unmerged = mlp(x)
    lora.merge(mlp)
    torch.testing.assert_close(mlp(x), unmerged)


# -- issue 16: a rank larger than a layer's dimensions ------------------------------------------------------------------


def _trained_change(toy_backbone, emt_split, rank):
    """How far LoRA training at ``rank`` moves the merged weights and the predicted energies of the toy potential."""
    potential = toy_backbone()
    before = _snapshot(potential)
    energies_before = np.array([r["energy"] for r in potential.predict(emt_split[1])])
    # restore_best=False: the last epoch's weights, whether or not validation improved in two epochs
    result = Trainer(TrainingSettings(epochs=2, restore_best=False, **QUICK)).fit(
        potential, *emt_split, strategy=LoRA(rank=rank, alpha=4.0)
    )
    after = _snapshot(result.potential)
    energies_after = np.array([r["energy"] for r in result.potential.predict(emt_split[1])])
    moved = {name: float((after[name] - before[name]).abs().max()) for name in ("interaction.weight", "readout.weight")}
    return moved, energies_after - energies_before


def test_lora_rank_above_the_layer_sizes_trains_like_the_full_rank(toy_backbone, emt_split):
    # toy layers: interaction (8 × 17), readout (1 × 8): rank 8 is already full rank for both, 1000 is far above
    full, full_energies = _trained_change(toy_backbone, emt_split, 8)
    huge, huge_energies = _trained_change(toy_backbone, emt_split, 1000)
    assert full["readout.weight"] > 1e-3 and np.abs(full_energies).max() > 1e-3  # training does something
    for name in full:  # rank 1000 is clipped to the same effective ranks and the same α / r_eff: the same training
        assert huge[name] == pytest.approx(full[name], rel=1e-4)
    np.testing.assert_allclose(huge_energies, full_energies, rtol=1e-4, atol=1e-6)


def test_lora_scale_is_alpha_over_each_updates_effective_rank(toy_backbone):
    from e3nn import o3

    potential = toy_backbone()
    LoRA(rank=4, alpha=8.0).apply(potential)
    interaction = potential.interaction.parametrizations.weight[0].update  # (8 × 17) at rank 4: α / 4
    readout = potential.readout.parametrizations.weight[0].update  # (1 × 8): rank 1, α / 1
    assert (interaction.rank, interaction.scale) == (4, 2.0)
    assert (readout.rank, readout.scale) == (1, 8.0)
    layer = o3.Linear(o3.Irreps("6x0e+2x1o"), o3.Irreps("7x0e+3x1o"))
    LoRA(rank=4, alpha=8.0).apply(torch.nn.Sequential(layer))
    paths = layer.parametrizations.weight[0].paths
    assert [(path.rank, path.scale) for path in paths] == [(4, 2.0), (2, 4.0)]


def test_freeze_without_a_depth_takes_the_backbones_default(toy_backbone, backbone_potential):
    """CHGNet's last interaction is an atom convolution only: its default depth (3) also trains the last bond and angle
    updates; a backbone without its own default trains the last two blocks."""
    toy = toy_backbone()
    assert Freeze().trained_blocks(toy) == Freeze(toy.default_freeze_depth).trained_blocks(toy) == [
        "interaction", "readout"]
    chgnet = backbone_potential("chgnet")
    trained = Freeze().trained_blocks(chgnet)
    assert trained == [name for name, _ in chgnet.blocks()][-3:]
    blocks = dict(chgnet.blocks())
    assert {"bond_conv", "angle_update"} <= set(blocks[trained[0]].keys())
    from atomtune.finetune.spec import FinetuneSpec

    assert FinetuneSpec(strategy="freeze").strategy_object().trained_blocks(chgnet) == trained
