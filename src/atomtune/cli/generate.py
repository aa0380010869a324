"""``atomtune generate …``: build unlabelled structures (bulk, strain, rattle, defects, slabs, faults, adsorbates, MD).

Each subcommand writes an extxyz; the transformations read one (``--data``) and apply themselves to every structure
in it, so they chain: ``bulk`` → ``supercell`` → ``rattle`` → ``atomtune label``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from atomtune.exceptions import AtomtuneError

generate_app = typer.Typer(
    help=(
        "Build structures to label: bulk prototypes, supercells, substitutions, strains, rattles, vacancies, "
        "slabs, stacking faults, adsorbates, MD snapshots. Each records how it was made in its info.\n\n"
        "Example: atomtune generate bulk --prototype L12 --elements Ni,Al --a 3.57 --out ni3al.extxyz"
    ),
    no_args_is_help=True,
)

DATA = typer.Option(..., "--data", help="input structures (extxyz or ASE db)")
OUT = typer.Option(..., "--out", help="output extxyz")


def register(app: typer.Typer) -> None:
    app.add_typer(generate_app, name="generate")


@generate_app.command("bulk")
def bulk_command(
    prototype: str = typer.Option(..., "--prototype", help="fcc, bcc, hcp, sc, diamond, B2, L12, rocksalt, perovskite"),
    elements: str = typer.Option(..., "--elements", help="comma-separated, e.g. Ni,Al (L12: majority first)"),
    a: float = typer.Option(..., "--a", help="lattice constant in Å (hcp: in-plane a)"),
    c_over_a: float = typer.Option(None, "--c-over-a", help="hcp c/a (default ideal 1.633)"),
    cubic: bool = typer.Option(False, "--cubic", help="conventional cubic cell for fcc/bcc/diamond/rocksalt"),
    out: Path = OUT,
) -> None:
    """A bulk crystal of a prototype.

    Example: atomtune generate bulk --prototype rocksalt --elements Mg,O --a 4.21 --cubic --out mgo.extxyz
    """
    from atomtune.data import generate

    _write([generate.bulk_prototype(prototype, _split(elements), a, c_over_a, cubic)], out)


@generate_app.command("supercell")
def supercell_command(
    data: Path = DATA,
    size: str = typer.Option(..., "--size", help="repeats: 2 or 2,2,1"),
    out: Path = OUT,
) -> None:
    """Repeat every structure.

    Example: atomtune generate supercell --data mgo.extxyz --size 2,2,2 --out mgo222.extxyz
    """
    from atomtune.data import generate

    repeats = [int(n) for n in _split(size)]
    _write([generate.supercell(atoms, repeats if len(repeats) == 3 else repeats[0]) for atoms in _read(data)], out)


@generate_app.command("substitute")
def substitute_command(
    data: Path = DATA,
    composition: str = typer.Option(..., "--composition", help="site fractions, e.g. Ni:0.75,Cu:0.25"),
    sublattice: str = typer.Option(None, "--sublattice", help="only replace sites of this element (e.g. Mg in MgO)"),
    count: int = typer.Option(1, "--count", help="random arrangements per input structure"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = OUT,
) -> None:
    """Random substitution at a target composition.

    Example (rock-salt high-entropy oxide): atomtune generate substitute --data mgo222.extxyz --sublattice Mg --composition Mg:1,Co:1,Ni:1,Cu:1,Zn:1 --count 5 --out heo.extxyz
    """
    from atomtune.data import generate

    fractions = {}
    for part in _split(composition):
        symbol, _, value = part.partition(":")
        try:
            fractions[symbol.strip()] = float(value)
        except ValueError as error:
            raise AtomtuneError(f"--composition entries look like Ni:0.75, got {part!r}.") from error
    frames = [
        generate.substitute(atoms, fractions, sublattice, seed=seed + i) for atoms in _read(data) for i in range(count)
    ]
    _write(frames, out)


@generate_app.command("strain")
def strain_command(
    data: Path = DATA,
    strains: str = typer.Option(None, "--strains", help="isotropic linear strains, e.g. -0.02,-0.01,0,0.01,0.02"),
    random: int = typer.Option(0, "--random", help="number of random symmetric strains per structure"),
    max_strain: float = typer.Option(0.02, "--max-strain", help="largest random strain component"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = OUT,
) -> None:
    """Isotropic and/or random strains.

    Example: atomtune generate strain --data ni3al.extxyz --strains -0.02,0,0.02 --random 5 --out strained.extxyz
    """
    from atomtune.data import generate

    if not strains and random <= 0:
        raise AtomtuneError("give --strains, --random N, or both.")
    frames = []
    for atoms in _read(data):
        if strains:
            frames += generate.isotropic_strains(atoms, [float(s) for s in _split(strains)])
        if random > 0:
            frames += generate.random_strains(atoms, random, max_strain, seed=seed)
    _write(frames, out)


@generate_app.command("rattle")
def rattle_command(
    data: Path = DATA,
    count: int = typer.Option(5, "--count", help="rattled copies per structure"),
    stdev: float = typer.Option(0.05, "--stdev", help="Gaussian displacement per component, Å"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = OUT,
) -> None:
    """Random atomic displacements.

    Example: atomtune generate rattle --data ni3al_222.extxyz --count 10 --stdev 0.05 --out rattled.extxyz
    """
    from atomtune.data import generate

    _write([frame for atoms in _read(data) for frame in generate.rattles(atoms, count, stdev, seed)], out)


@generate_app.command("vacancy")
def vacancy_command(
    data: Path = DATA,
    element: str = typer.Option(None, "--element", help="remove an atom of this element (default: site 0)"),
    site: int = typer.Option(None, "--site", help="index of the atom to remove"),
    out: Path = OUT,
) -> None:
    """Remove one atom (use a supercell first).

    Example: atomtune generate vacancy --data ni222.extxyz --element Ni --out vacancy.extxyz
    """
    from atomtune.data import generate

    frames = []
    for atoms in _read(data):
        index = site if site is not None else 0
        if element is not None:
            symbols = atoms.get_chemical_symbols()
            if element not in symbols:
                raise AtomtuneError(f"{atoms.info.get('id')}: no {element} atom to remove.")
            index = symbols.index(element)
        frames.append(generate.vacancy(atoms, index))
    _write(frames, out)


@generate_app.command("antisite")
def antisite_command(
    data: Path = DATA,
    first: int = typer.Option(..., "--first", help="index of one site"),
    second: int = typer.Option(..., "--second", help="index of a site of another element"),
    out: Path = OUT,
) -> None:
    """Swap the species of two sites.

    Example: atomtune generate antisite --data nial222.extxyz --first 0 --second 1 --out antisite.extxyz
    """
    from atomtune.data import generate

    _write([generate.antisite(atoms, first, second) for atoms in _read(data)], out)


@generate_app.command("slab")
def slab_command(
    data: Path = DATA,
    miller: str = typer.Option(..., "--miller", help="Miller index, e.g. 1,1,1"),
    layers: int = typer.Option(4, "--layers", help="atomic planes"),
    vacuum: float = typer.Option(10.0, "--vacuum", help="vacuum thickness, Å"),
    termination: int = typer.Option(0, "--termination", help="which of pymatgen's terminations"),
    out: Path = OUT,
) -> None:
    """Slabs by Miller index (pymatgen SlabGenerator), periodic with vacuum.

    Example: atomtune generate slab --data ni.extxyz --miller 1,1,1 --layers 4 --vacuum 10 --out ni111.extxyz
    """
    from atomtune.data import generate

    index = [int(i) for i in _split(miller)]
    _write([generate.slab(atoms, index, layers, vacuum, termination) for atoms in _read(data)], out)


@generate_app.command("stacking-fault")
def stacking_fault_command(
    element: str = typer.Option(..., "--element", help="an fcc element"),
    a: float = typer.Option(..., "--a", help="fcc lattice constant, Å"),
    layers: int = typer.Option(6, "--layers", help="(111) planes, a multiple of 3"),
    fractions: str = typer.Option("0,1", "--fractions", help="of the a/6<112> partial: 0 perfect, 1 intrinsic fault"),
    out: Path = OUT,
) -> None:
    """fcc (111) stacking-fault cells (tilted-cell method), with the perfect reference.

    Example: atomtune generate stacking-fault --element Ni --a 3.52 --fractions 0,0.5,1 --out sf.extxyz
    """
    from atomtune.data import generate

    _write([generate.stacking_fault(element, a, layers, float(f)) for f in _split(fractions)], out)


@generate_app.command("adsorbate")
def adsorbate_command(
    data: Path = DATA,
    molecule: str = typer.Option(..., "--molecule", help="element (O) or ASE molecule name (CO)"),
    site: str = typer.Option("ontop", "--site", help="top, bridge or hollow"),
    height: float = typer.Option(2.0, "--height", help="height above the site, Å"),
    out: Path = OUT,
) -> None:
    """Put an adsorbate on a slab site (pymatgen AdsorbateSiteFinder).

    Example: atomtune generate adsorbate --data cu111_2x2.extxyz --molecule O --site hollow --out o_cu.extxyz
    """
    from atomtune.data import generate

    _write([generate.adsorbate(atoms, molecule, site, height) for atoms in _read(data)], out)


@generate_app.command("md")
def md_command(
    data: Path = DATA,
    calculator: str = typer.Option("emt", "--calculator", help="emt, gpaw or module:Class driving the MD"),
    kwargs: str = typer.Option("{}", "--kwargs", help="JSON keyword arguments of the calculator"),
    count: int = typer.Option(10, "--count", help="snapshots per structure"),
    interval: int = typer.Option(10, "--interval", help="MD steps between snapshots"),
    temperature: float = typer.Option(300.0, "--temperature", help="Langevin temperature, K"),
    timestep: float = typer.Option(2.0, "--timestep", help="fs"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = OUT,
) -> None:
    """Short Langevin MD snapshots driven by any ASE calculator.

    Example: atomtune generate md --data cu_333.extxyz --calculator emt --count 20 --temperature 800 --out md.extxyz
    """
    from atomtune.data import generate
    from atomtune.data.label import CalculatorSpec

    spec = CalculatorSpec.from_json(calculator, kwargs)
    frames = []
    for atoms in _read(data):
        frames += generate.md_snapshots(atoms, spec.build(atoms.copy()), count, interval, temperature, timestep, seed)
    _write(frames, out)


def _read(path: Path):
    from atomtune.data.dataset import Dataset

    return list(Dataset.read(path, require=()))


def _write(frames, out: Path) -> None:
    from atomtune.data.dataset import Dataset

    Dataset(frames, name=out.stem).write(out)
    typer.echo(f"wrote {len(frames)} structures to {out}")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
