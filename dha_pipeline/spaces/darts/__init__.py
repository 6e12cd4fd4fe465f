"""The DARTS cell space (docs/METHOD.md, "The cell space"): normal and reduction cells of 4
intermediate nodes; node i reads 2 + i earlier states through one of 7 ops and keeps 2 edges.

Modules: `settings` (its `[model]` keys), `space` (`SPACE`, what the registry hands out), `operations`
(name -> op constructor), `genotype` (Genotype, published ones), `network` (the plain network of a
genotype), `supernet` (every candidate, only the active ones run), `fold` (supernet -> child), `plots`
(cell diagrams).
"""
