"""The MobileNet space (docs/METHOD.md, "The MobileNet space"): a ProxylessNAS-style backbone whose
searchable layers each choose an inverted residual of kernel {3, 5, 7} x expansion {3, 6}, or a skip
where the layer is residual.

Modules: `settings` (its `[model]` keys), `space` (`SPACE`, what the registry hands out), `blocks`
(conv-BN-ReLU6, MBConv, choice names), `backbone` (the recipe's macro structure and the fixed skeleton),
`genotype` (per-layer choices, known architectures), `network` (the plain network of a genotype),
`supernet` (every choice, only the active one runs), `fold` (supernet -> child), `latency` (the blocks
of the latency table), `plots` (one box per layer).
"""
