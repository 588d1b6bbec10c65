"""Image references as the Distribution project defines them (distribution/reference):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path
    domain     := host [ ":" port ]         host: a DNS name, an IPv4 address or [IPv6]
    path       := component ( "/" component )*
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex          sha256 has 64 hex digits, sha512 128

As Docker decides: the first component is a registry domain only when it contains "." or ":",
is "localhost", or has an upper-case letter; otherwise the name is on Docker Hub. Renovate
and Dependabot pin a base image as `nginx:1.27.3-bookworm@sha256:...`: the tag is kept for
people, the digest decides what is pulled.

Pure functions; errors are ConfigError, said in one line with what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipit.errors import ConfigError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+(?:%[a-zA-Z0-9]+)?\]"
_HOST_RE = re.compile(rf"^(?:{_DOMAIN_NAME}|{_IPV6})(?::(?P<port>[0-9]{{1,5}}))?$")
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
MAX_NAME_LENGTH = 255

TAG_HINT = "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
NAME_HINT = (
    "use lowercase letters, digits and . _ - separators, e.g. 'shipit-site', "
    "'registry.example.com/team/site', '127.0.0.1:5000/team/site' or '[::1]:5000/team/site'"
)


@dataclass(frozen=True)
class Reference:
    domain: str  # "" when the name has no registry part (Docker Hub)
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        """The name: domain and path, without tag or digest."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def pull_version(self) -> str:
        """What to ask the engine for: the digest when pinned, else the tag (or latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_valid_host(host: str) -> bool:
    """host[:port], where host is a DNS name, an IPv4 address or a bracketed IPv6 address."""
    matched = _HOST_RE.match(host)
    if matched is None:
        return False
    port = matched.group("port")
    return port is None or 0 < int(port) <= 65535


def split_domain(name: str) -> tuple[str, str]:
    """'host:5000/team/site' -> ('host:5000', 'team/site'); 'team/site' -> ('', 'team/site')."""
    first, slash, rest = name.partition("/")
    if slash and (
        any(mark in first for mark in ".:[") or first == "localhost" or first != first.lower()
    ):
        return first, rest
    return "", name


def is_valid_name(name: str) -> bool:
    if not name or len(name) > MAX_NAME_LENGTH:
        return False
    domain, path = split_domain(name)
    if domain and not is_valid_host(domain):
        return False
    return bool(_PATH_RE.match(path))


def is_valid_tag(tag: str) -> bool:
    return bool(TAG_RE.match(tag))


def is_valid_digest(digest: str) -> bool:
    if not _DIGEST_RE.match(digest):
        return False
    algorithm, _, hex_part = digest.partition(":")
    wanted = _DIGEST_LENGTHS.get(algorithm)
    return wanted is None or len(hex_part) == wanted


def parse_name(name: str, what: str = "image name") -> Reference:
    """A repository name alone: no tag, no digest."""
    if not is_valid_name(name):
        raise ConfigError(f"{what} {name!r} is not a valid image repository name", NAME_HINT)
    domain, path = split_domain(name)
    return Reference(domain=domain, path=path)


def parse_reference(text: str, what: str = "image reference") -> Reference:
    """name[:tag][@digest]; neither is required."""
    rest, at, digest = text.partition("@")
    if at and not is_valid_digest(digest):
        raise ConfigError(
            f"{what} {text!r} has a digest that is not valid: {digest!r}",
            "a digest is sha256: and 64 hex digits, as `docker inspect` shows it",
        )
    # A tag follows the last ':' only when no '/' comes after it (a port is not a tag).
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
        if not is_valid_tag(tag):
            raise ConfigError(f"{what} {text!r} has a tag that is not valid: {tag!r}", TAG_HINT)
    parsed = parse_name(name, what)
    return Reference(domain=parsed.domain, path=parsed.path, tag=tag, digest=digest)
