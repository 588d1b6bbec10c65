"""The SBOM of one platform's image: an SPDX 2.3 JSON document (predicate type
https://spdx.dev/Document, `cosign verify-attestation --type spdxjson`).

It names what the image holds: the OS packages its package manager recorded (nginx among
them, attest/packages.py) and every file of the site layer with its SHA-1 and SHA-256
(attest/site_files.py). The image CONTAINS each package and the site; the site CONTAINS each
file. Nothing in it depends on when or where it is written: its namespace comes from the
image's digest and its time is the image's own (`created`, from SOURCE_DATE_EPOCH or the
commit, source_date.py), so the same image gives the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from shipit import __version__
from shipit.attest.packages import Package, distribution, purl
from shipit.attest.site_files import SiteFile
from shipit.attest.statement import PROJECT_URL

SPDX_VERSION = "SPDX-2.3"
DOCUMENT_ID = "SPDXRef-DOCUMENT"
IMAGE_ID = "SPDXRef-Image"
SITE_ID = "SPDXRef-Site"
NOASSERTION = "NOASSERTION"
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9.-]+")


def _element_id(kind: str, *words: str) -> str:
    """An SPDX id (letters, digits, '.' and '-') that says what it names; the hash of the
    words keeps two names that differ only in other characters apart."""
    readable = _NOT_IN_ID.sub("-", "-".join(words)).strip("-")[:80]
    tail = hashlib.sha256("\0".join(words).encode()).hexdigest()[:8]
    return f"SPDXRef-{kind}-{readable}-{tail}"


def _license_ref(text: str) -> str:
    return (
        "LicenseRef-"
        + (_NOT_IN_ID.sub("-", text).strip("-")[:60] or "unnamed")
        + ("-" + hashlib.sha256(text.encode()).hexdigest()[:8])
    )


def _unasserted(**fields: Any) -> dict[str, Any]:
    """What SPDX asks of every package, not known for these."""
    return {
        "downloadLocation": NOASSERTION,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        **fields,
    }


def _os_package(
    package: Package, spdx_id: str, namespace: str, distro: str, licenses: dict[str, str]
) -> dict[str, Any]:
    entry = _unasserted(
        SPDXID=spdx_id,
        name=package.name,
        versionInfo=package.version or NOASSERTION,
        filesAnalyzed=False,
        supplier=NOASSERTION,
        externalRefs=[
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(package, namespace, distro),
            }
        ],
    )
    if package.homepage.startswith(("http://", "https://")):
        entry["homepage"] = package.homepage
    if package.source:
        version = package.source_version or package.version
        entry["sourceInfo"] = f"built from the source package {package.source} {version}".strip()
    if package.license:
        # apk's license words are not always SPDX ids (a list, "custom"): kept as written,
        # under a reference of this document, which is valid whatever they are.
        reference = licenses.setdefault(package.license, _license_ref(package.license))
        entry["licenseDeclared"] = reference
    return entry


def spdx_sbom(
    image_digest: str,
    platform: str,
    packages: Sequence[Package],
    site_files: Sequence[SiteFile],
    created: str,
    *,
    image_name: str,
) -> dict[str, Any]:
    """The SPDX document of one platform's image `image_name@image_digest` (its manifest's
    digest): `created` is the image's own time (its org.opencontainers.image.created label,
    RFC 3339), `packages` what attest/packages.py read from it (none for a base without a
    package database), `site_files` attest/site_files.site_files of its rendered site."""
    hexdigits = image_digest.removeprefix("sha256:")
    namespace, distro = distribution(tuple(packages))
    licenses: dict[str, str] = {}
    os_packages = []
    for package in packages:
        spdx_id = _element_id("Package", package.kind, package.name, package.architecture)
        os_packages.append(_os_package(package, spdx_id, namespace, distro, licenses))
    # A file's id is short (a site may have tens of thousands, each named twice): its
    # fileName says what it is. SPDX 2.3 asks nothing more of a file than its checksums.
    files: list[dict[str, Any]] = [
        {
            "SPDXID": "SPDXRef-File-" + hashlib.sha256(each.path.encode()).hexdigest()[:20],
            "fileName": "./" + each.path.lstrip("/"),
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": each.sha1},
                {"algorithm": "SHA256", "checksumValue": each.sha256},
            ],
        }
        for each in sorted(site_files, key=lambda each: each.path)
    ]
    os_name, _, architecture = platform.partition("/")
    repository = image_name.rsplit("/", 1)[-1].lower()
    image = _unasserted(
        SPDXID=IMAGE_ID,
        name=image_name,
        versionInfo=image_digest,
        filesAnalyzed=False,
        primaryPackagePurpose="CONTAINER",
        checksums=[{"algorithm": "SHA256", "checksumValue": hexdigits}],
        externalRefs=[
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": f"pkg:oci/{quote(repository, safe='')}@sha256%3A{hexdigits}"
                + f"?arch={quote(architecture, safe='')}&os={quote(os_name, safe='')}",
            }
        ],
    )
    site = _unasserted(
        SPDXID=SITE_ID,
        name="site",
        filesAnalyzed=True,
        packageVerificationCode={
            "packageVerificationCodeValue": hashlib.sha1(  # noqa: S324 - as SPDX defines it
                "".join(sorted(each.sha1 for each in site_files)).encode()
            ).hexdigest()
        },
        primaryPackagePurpose="FILE",
        comment="the site layer shipit rendered: its pages, static files and nginx.conf",
    )
    relationships = [_relationship(DOCUMENT_ID, "DESCRIBES", IMAGE_ID)]
    relationships += [
        _relationship(IMAGE_ID, "CONTAINS", each["SPDXID"]) for each in [site, *os_packages]
    ]
    relationships += [_relationship(SITE_ID, "CONTAINS", each["SPDXID"]) for each in files]
    document: dict[str, Any] = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT_ID,
        "name": f"{image_name}@{image_digest}",
        "documentNamespace": f"{PROJECT_URL}/spdx/{quote(image_name, safe='')}/"
        f"{quote(platform, safe='')}/sha256-{hexdigits}",
        "creationInfo": {"created": created, "creators": [f"Tool: shipit-{__version__}"]},
        "packages": [image, site, *os_packages],
        "files": files,
        "relationships": relationships,
    }
    if licenses:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": reference, "name": text, "extractedText": text}
            for text, reference in sorted(licenses.items())
        ]
    return document


def _relationship(element: str, kind: str, related: str) -> dict[str, str]:
    return {"spdxElementId": element, "relationshipType": kind, "relatedSpdxElement": related}
