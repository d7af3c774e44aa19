"""The font with CJK glyphs a Chinese or bilingual report is drawn in (PDF and charts): WenQuanYi Micro Hei, from
the Debian package fonts-wqy-microhei (debian-packages.txt). Missing, the export stops with a message naming the
package, rather than drawing every Chinese character as an empty box."""

from __future__ import annotations

from pathlib import Path

from rmm_monitor.core.errors import ConfigError

PACKAGE = "fonts-wqy-microhei"
FAMILY = "WenQuanYi Micro Hei"
CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # Debian, Ubuntu
    Path("/usr/share/fonts/wqy-microhei/wqy-microhei.ttc"),  # Fedora, Arch
)


def cjk_font(candidates: tuple[Path, ...] = CANDIDATES) -> Path:
    """The font file (a TrueType collection; its first face is the proportional one)."""
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"a Chinese report needs the font {FAMILY} ({' or '.join(str(p) for p in candidates)}): install the "
        f"Debian package {PACKAGE} (apt-get install {PACKAGE})"
    )
