"""What shipit says about an image beside it: in-toto statements (an SBOM, SLSA provenance, the
smoke test's result), signed and attached to the pushed digest in the layout cosign verifies.

This package builds the statements (pure data, no registry, no key); signing and attaching
them is `shipit/signing/`'s job.
"""
