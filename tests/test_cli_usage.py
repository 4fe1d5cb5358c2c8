"""A usage error prints its one line and where to read more, not the whole usage block."""

from __future__ import annotations

import pytest

from fcnet.cli import main


@pytest.mark.parametrize("argv, prog, needle", [
    (["train", "--hidden", "abc"], "fcnet train", "--hidden: expected comma-separated integers"),
    (["train", "--lr", "fast"], "fcnet train", "--lr"),
    (["data", "info"], "fcnet data info", "DATASET"),
    (["no-such-command"], "fcnet", "invalid choice"),
])
def test_usage_error_is_one_line_then_a_pointer_to_help(argv, prog, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"{prog}: error: ") and needle in lines[0]
    assert lines[1] == f"see '{prog} --help'"
    assert "usage:" not in err
