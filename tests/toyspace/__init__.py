"""A third search space, made by the tests to show that adding a space touches spaces' own kind of package
and one registry line, nothing else: one decision point choosing the kernel of a convolution."""
