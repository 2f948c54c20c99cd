"""``python -m kzprobe.simnet blockpage --html FILE --status N``: a custom page and status."""

from __future__ import annotations

from pathlib import Path

import pytest

from kzprobe.simnet.blockpage import BLOCKPAGE_PHRASE
from kzprobe.simnet.cli import main
from kzprobe.simnet.common import parse_hostport

from .clients import http_get, split
from .test_cli import component

CUSTOM = "<html><head><title>Restricted</title></head><body>Access is restricted</body></html>"


async def test_custom_html_and_status_are_served(tmp_path: Path) -> None:
    """--html and --status replace the built-in page and 200, byte for byte, for every Host."""
    page = tmp_path / "page.html"
    page.write_text(CUSTOM, encoding="utf-8")
    async with component("blockpage", "--listen", "127.0.0.1:0", "--block-all",
                         "--html", str(page), "--status", "403") as (_, box):
        status, headers, body = split(await http_get(parse_hostport(box["tcp"]), "any.demo"))
    assert (status, body.decode("utf-8")) == (403, CUSTOM)
    assert headers["content-length"] == str(len(CUSTOM.encode("utf-8")))


async def test_defaults_are_the_builtin_page_with_200(tmp_path: Path) -> None:
    """Without the options the box still serves the fingerprinted KZ blockpage with 200."""
    async with component("blockpage", "--listen", "127.0.0.1:0", "--block-all") as (_, box):
        status, _, body = split(await http_get(parse_hostport(box["tcp"]), "any.demo"))
    assert status == 200 and BLOCKPAGE_PHRASE in body.decode("utf-8")


def test_missing_html_file_is_a_usage_error(tmp_path: Path) -> None:
    """An --html file that cannot be read is a one-line error and exit status 2."""
    argv = ["blockpage", "--listen", "127.0.0.1:0", "--html", str(tmp_path / "none.html")]
    assert main(argv) == 2


@pytest.mark.parametrize("status", ["42", "600", "forbidden"])
def test_status_outside_http_range_is_rejected(status: str) -> None:
    """--status must be an integer from 100 to 599; anything else exits 2 before starting."""
    with pytest.raises(SystemExit) as exc:
        main(["blockpage", "--listen", "127.0.0.1:0", "--status", status])
    assert exc.value.code == 2
