"""Builds the model repository: models/<name>/<version>/{model.yaml, artefacts}.

    python models/build.py [--out models] [--seed 0] [--force] [--service S] [name ...]

Deterministic: the same recipe, seed and package versions give the same bytes. A model whose
recipe and package versions have not changed since it was built is left as it is. Each card names
the service that serves the model (the recipe's SERVICE): that is the only place it is said.
"""

import argparse
import hashlib
import importlib
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml
from tqdm import tqdm

from tandem.card import ModelCard

HERE = Path(__file__).resolve().parent
# Every module in recipes/ builds one model: NAME, VERSION, SERVICE and build(seed, folder) -> card fields.
RECIPES = sorted(path.stem for path in (HERE / "recipes").glob("*.py") if not path.stem.startswith("_"))
PACKAGES = ["numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime"]


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def sources(recipe) -> list[Path]:
    """The files a model may be built from: every recipe (they import each other), its service's code and the kit."""
    apps = HERE.parent / "apps"
    return sorted(
        [*(HERE / "recipes").glob("*.py"), *(apps / recipe.SERVICE).glob("*.py"), *(apps / "tandem").glob("*.py")]
    )


def provenance(recipe, recipe_name: str, seed: int) -> dict:
    digest = hashlib.sha256()
    for path in sources(recipe):
        digest.update(path.relative_to(HERE.parent).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "recipe": f"models/recipes/{recipe_name}.py",
        "sources_sha256": digest.hexdigest(),
        "seed": seed,
        "packages": {package: version(package) for package in PACKAGES + list(getattr(recipe, "PACKAGES", []))},
        "python": sys.version.split()[0],
    }


def up_to_date(card_file: Path, wanted: dict) -> bool:
    if not card_file.is_file():
        return False
    built = yaml.safe_load(card_file.read_text()).get("provenance", {})
    artefacts_present = all((card_file.parent / name).is_file() for name in built.get("artefacts_sha256", {}))
    return artefacts_present and all(built.get(key) == value for key, value in wanted.items())


def build_one(recipe_name: str, out: Path, seed: int, force: bool) -> str:
    recipe = importlib.import_module(f"recipes.{recipe_name}")
    folder = out / recipe.NAME / recipe.VERSION
    wanted = provenance(recipe, recipe_name, seed)
    if not force and up_to_date(folder / "model.yaml", wanted):
        return "up to date"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    card = recipe.build(seed, folder)
    card = {
        "name": recipe.NAME,
        "version": recipe.VERSION,
        "service": recipe.SERVICE,
        "platform": "onnxruntime_onnx",
        "artefact": "model.onnx",
        **card,
        "provenance": {
            **wanted,
            "artefacts_sha256": {
                path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())
            },
            "git_commit": git_commit(),
        },
    }
    # A recipe that writes a card the servers would refuse fails here, at build time.
    ModelCard.parse(card, folder / "model.yaml")
    (folder / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return "built"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"models to build (default: all of {', '.join(RECIPES)})")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--service", help="only the models of this service (vision, nlp, regression)")
    args = parser.parse_args()
    unknown = set(args.names) - set(RECIPES)
    if unknown:
        parser.error(f"no recipe for {sorted(unknown)}; recipes: {RECIPES}")
    names = args.names or RECIPES
    if args.service:
        names = [name for name in names if importlib.import_module(f"recipes.{name}").SERVICE == args.service]
        if not names:
            parser.error(f"no recipe of service {args.service!r}")
    with tqdm(names, desc="models", unit="model") as bar:
        for name in bar:
            bar.set_postfix_str(name)
            outcome = build_one(name, args.out, args.seed, args.force)
            bar.write(f"{name}: {outcome}")


if __name__ == "__main__":
    main()
