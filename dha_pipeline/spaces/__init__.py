"""Search spaces: operations, genotypes and the networks built from them."""
