"""The CIFAR-10 protocol in the MobileNet space (docs/BENCHMARKS.md): manual MBV2, NAS only and DHA at one
parameter budget, one command.

The data, split, epochs and batch are the cell-space protocol's (bench/cifar10_variants.py: 1,000
stratified training images, 1,000 more as val, 50 epochs of batch 64, the full test set once by
onnxruntime); the network is `recipes/cifar10_mobilenet.toml`'s. The budget is equal for all: the
searches may not propose a child with more parameters than the manual MBV2 network has
(`search.max_params`, measured here from the recipe). Rows are appended to
docs/results/cifar10_variants.csv with space = mobilenet; rerunning skips them.

    tar xzf ../shared/data/cifar10/cifar10-jpeg.tar.gz -C /tmp/data    # /tmp/data/{train,test}/<class>/
    python bench/cifar10_mobilenet.py --data /tmp/data
"""

from __future__ import annotations

from pathlib import Path

from cifar10_variants import protocol_parser, protocol_run_overrides, run_seeds

from dha_pipeline.recipe import load_recipe
from dha_pipeline.spaces.base import DataShape
from dha_pipeline.spaces.cost import count_params
from dha_pipeline.spaces.registry import get_space

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "cifar10_mobilenet.toml"
SEEDS = {"manual": 2, "nas_only": 2, "dha": 2}
CLASSES = 10


def manual_params() -> int:
    """Parameters of the recipe's manual network (MBV2 choices in every layer) for CIFAR-10."""
    recipe = load_recipe(RECIPE)
    space = get_space(recipe.model.space)
    shape = DataShape(CLASSES, 3, recipe.data.image_size)
    genotype = space.known_genotype(space.default_genotype, recipe.model)
    return count_params(space.network(recipe.model, shape, genotype))


def main() -> None:
    parser = protocol_parser(__doc__.splitlines()[0], SEEDS, subset=1000, epochs=50,
                             csv_path=ROOT / "docs" / "results" / "cifar10_variants.csv",
                             work_dir=Path("/tmp/dha_cifar10_mobilenet"))
    args = parser.parse_args()
    budget = f"search.max_params={manual_params()}"
    run_seeds(SEEDS, args, [*protocol_run_overrides(args), budget], RECIPE)


if __name__ == "__main__":
    main()
