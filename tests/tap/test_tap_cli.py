"""``lifeguard tap`` refuses bad settings with a message naming the option, before serving."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from daemon.cli import app


@pytest.mark.parametrize(("args", "option"), [
    (["--upstream", "ftp://example"], "--upstream"),
    (["--upstream", "http://127.0.0.1:1", "--content", "some"], "--content"),
    (["--upstream", "http://127.0.0.1:1", "--buffer", "0"], "--buffer"),
])
def test_bad_settings_exit_2_naming_the_option(args: list[str], option: str) -> None:
    result = CliRunner().invoke(app, ["tap", *args])
    assert result.exit_code == 2 and option in result.output


def test_help_documents_the_privacy_and_buffer_options() -> None:
    result = CliRunner().invoke(app, ["tap", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--upstream", "--content", "--max-content-chars", "--buffer",
                   "--kafka-timeout-s", "--no-stream-usage"):
        assert option in result.output
