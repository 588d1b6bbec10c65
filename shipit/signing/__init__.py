"""Signatures and attestations on a pushed image, in the layout cosign reads: the key that
signs (keys.py: a PEM file, cosign's own cosign.key, or an AWS KMS key), what cosign's
signature and attestation manifests hold (layout.py), attaching them in a registry before
any tag names the image (attach.py), and checking them again (verify.py).

What the attestations say (an SBOM, provenance, the smoke test) is `shipit/attest/`'s: this
package signs whatever list of `Attestation` it is given.
"""
