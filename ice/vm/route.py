"""How this host reaches the package registries, so the box's guest takes the same route.

The guest's traffic leaves through QEMU's user-mode network stack, i.e. from the host's own sockets: it reaches
whatever the host reaches, provided the guest resolves, trusts and configures the registries as the host does. So the
box copies the host's Debian mirror (from its apt sources), its apt ``Acquire`` settings (proxies, validity checks of
a snapshot mirror), the ``/etc/hosts`` lines that pin registry names to addresses, the certificate authorities added
locally (a TLS-inspecting proxy's), proxy variables, and the pip and npm index settings that point at HTTP(S) URLs.
Nothing here changes the host.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class Route:
    """What the guest needs to reach the registries the way the host does."""

    mirror: str = DEFAULT_MIRROR
    security: str = DEFAULT_SECURITY
    hosts_lines: tuple[str, ...] = ()
    ca_files: tuple[Path, ...] = ()
    apt_conf_files: tuple[Path, ...] = ()
    proxy_env: Mapping[str, str] = field(default_factory=dict)
    pip_index: str | None = None
    npm_registry: str | None = None


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields:
            yield fields


def apt_mirrors(sources: Iterable[tuple[str, str]], release: str = "bookworm") -> tuple[str, str]:
    """The Debian mirror and security mirror for ``release`` in apt sources given as ``(file name, text)``:
    deb822 ``.sources`` files and one-line ``.list`` files. Debian's own mirrors when none is configured."""
    mirror = security = None
    for name, text in sources:
        entries: list[tuple[str, list[str]]] = []
        if name.endswith(".sources"):
            for st in _deb822_stanzas(text):
                if "deb" not in st.get("types", "").split() or st.get("enabled", "yes").lower() == "no":
                    continue
                entries += [(uri, st.get("suites", "").split()) for uri in st.get("uris", "").split()]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
        for uri, suites in entries:
            uri = uri.rstrip("/")
            if mirror is None and release in suites:
                mirror = uri
            if security is None and f"{release}-security" in suites:
                security = uri
    return mirror or DEFAULT_MIRROR, security or DEFAULT_SECURITY


def registry_hosts(hosts_text: str, own_names: Iterable[str] = ()) -> tuple[str, ...]:
    """The ``/etc/hosts`` lines that pin names to addresses outside loopback and link-local (how this host finds a
    mirror or registry without DNS), less the lines naming this host itself."""
    own = {n.lower() for n in own_names if n}
    kept = []
    for line in hosts_text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        try:
            addr = ipaddress.ip_address(words[0])
        except ValueError:
            continue
        if addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified:
            continue
        if addr.version == 6 and words[0].lower().startswith(("fe00:", "ff00:", "ff02:")):
            continue
        if any(w.lower() in own for w in words[1:]):
            continue
        kept.append(" ".join(words))
    return tuple(kept)


def http_setting(value: str | None) -> str | None:
    """``value`` when it is an HTTP(S) URL (a local ``file://`` index means nothing inside the guest)."""
    return value if value and value.startswith(("http://", "https://")) else None


def _ini_value(path: Path, section: str, key: str) -> str | None:
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, OSError):
        return None
    return parser.get(section, key, fallback=None)


def _npmrc_value(path: Path, key: str) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            return v.strip()
    return None


def host_route(etc: Path = Path("/etc"), ca_dir: Path = Path("/usr/local/share/ca-certificates"),
               environ: Mapping[str, str] | None = None, home: Path | None = None) -> Route:
    """This host's route to the registries, read from ``etc`` (``/etc``), the locally added authorities in
    ``ca_dir``, the environment and ``home``."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME", "/root")) if home is None else home
    apt = etc / "apt"
    source_files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
                    *sorted((apt / "sources.list.d").glob("*.sources"))]
    sources = [(p.name, p.read_text()) for p in source_files if p.is_file()]
    mirror, security = apt_mirrors(sources)
    try:
        hosts_text = (etc / "hosts").read_text()
    except OSError:
        hosts_text = ""
    own = {os.uname().nodename}
    try:
        own.add((etc / "hostname").read_text().strip())
    except OSError:
        pass
    cas = tuple(sorted(ca_dir.rglob("*.crt")))
    conf = [p for p in [apt / "apt.conf", *sorted((apt / "apt.conf.d").glob("*"))]
            if p.is_file() and "Acquire::" in p.read_text(errors="replace")]
    pip_index = http_setting(env.get("PIP_INDEX_URL")) or http_setting(_ini_value(etc / "pip.conf", "global",
                                                                                   "index-url"))
    npm = http_setting(env.get("npm_config_registry")) or http_setting(_npmrc_value(home / ".npmrc", "registry")) \
        or http_setting(_npmrc_value(etc / "npmrc", "registry"))
    return Route(mirror=mirror, security=security, hosts_lines=registry_hosts(hosts_text, own), ca_files=cas,
                 apt_conf_files=tuple(conf), proxy_env={k: env[k] for k in PROXY_VARIABLES if env.get(k)},
                 pip_index=pip_index, npm_registry=npm)


def guest_files(route: Route, hostname: str = "icelab") -> dict[str, str]:
    """The text files the box's root file system gets for ``route``: ``{path inside the guest: content}``
    (the CA certificates and apt settings are copied as files besides these)."""
    files = {
        "etc/apt/sources.list.d/debian.sources": (
            f"Types: deb\nURIs: {route.mirror}\nSuites: bookworm bookworm-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            f"Types: deb\nURIs: {route.security}\nSuites: bookworm-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        "etc/hosts": (f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                      + "".join(f"{line}\n" for line in route.hosts_lines)),
        # pip's own certifi bundle would not hold the locally added authorities; Debian's bundle does.
        "etc/pip.conf": "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
                        + (f"index-url = {route.pip_index}\n" if route.pip_index else ""),
        "etc/npmrc": "cafile=/etc/ssl/certs/ca-certificates.crt\n"
                     + (f"registry={route.npm_registry}\n" if route.npm_registry else ""),
    }
    if route.proxy_env:
        files["etc/environment"] = "".join(f'{k}="{v}"\n' for k, v in route.proxy_env.items())
    return files
